"""Training recipe of section 5.1 for TVOMNER, its ablations and the text-only baselines.

* Inputs are built once per dataset (``prepare_data``): TFO augmentations and tokenisation
  (``tvolib.tfo``), VFO visual features (``tvolib.vfo``) or the word/char vocabularies of the
  baselines; the training loop only pads.
* AdamW with two learning rates: ``TrainConfig.lr`` (paper: 3e-5) for the pretrained text encoder,
  ``TrainConfig.head_lr`` (default 1e-3) for every new layer (Eq. 1 attention, VFO, CFF, BiLSTM,
  CRF) — a randomly initialised CRF/BiLSTM learns far too slowly at 3e-5. Linear warm-up
  (``warmup_ratio``) then linear decay to 0; weight decay 0.01 except biases/LayerNorm.
* Effective batch ``batch_size`` (paper: 64) = micro-batches × accumulation × processes; the loss of
  every micro-batch is weighted by its share of the step, so the gradient is that of the full batch.
* Gradient clipping (``max_grad_norm``); bf16 autocast on CUDA only (CRF in fp32).
* Model selection and early stopping on **valid F1 only** (``patience`` epochs without gain); the
  test set is scored once, with the selected checkpoint.
* Checkpoints: ``<output_dir>/last/`` after every epoch (weights, optimizer and RNG state as
  safetensors, the rest as JSON; never pickle) and ``<output_dir>/best/`` (what ``tvolib.predict``
  loads: weights + config + label set + encoder config/tokenizer or vocabulary). A killed run started
  again with the same command resumes after its last finished epoch and ends with the same weights
  as an uninterrupted run (CPU).
* Deterministic on CPU: seeded, the epoch order comes from ``seed + epoch``.
* DDP with ``torchrun`` (gloo on CPU, nccl on GPU): each process takes its share of every step;
  rank 0 evaluates and writes checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .cache import atomic_write_json
from .config import DataConfig, ModelConfig, TrainConfig, from_dict, to_dict
from .data import LABELS, LABEL2ID, Dataset, load_dataset
from .evaluate import Scores, score, write_predictions
from .model import TVOMNER, encoder_parameter_names

TEXT_KEYS = ("input_ids", "attention_mask", "word_index", "word_mask")
WORD_KEYS = ("word_ids", "word_mask", "char_ids")


# ----------------------------------------------------------------------------------------------
# inputs, built once per dataset


@dataclass
class Prepared:
    """Every split as a list of small per-tweet dicts (unpadded), the collate function that pads
    them, the visual features (or None) and ``meta`` (what a checkpoint needs to rebuild inputs)."""

    examples: dict[str, list[dict]]
    collate: Callable[[list[dict]], dict]
    visual: Any = None
    meta: dict = field(default_factory=dict)


def dataset_from_config(data_cfg: DataConfig) -> Dataset:
    ds = load_dataset(data_cfg.data_dir, data_cfg.image_dir, name=data_cfg.dataset)
    if data_cfg.max_train_samples:
        ds.splits["train"] = ds.splits["train"][:data_cfg.max_train_samples]
    if data_cfg.max_eval_samples:
        for s in ("valid", "test"):
            ds.splits[s] = ds.splits[s][:data_cfg.max_eval_samples]
    return ds


def _augmentations(ds, data_cfg, model_cfg, progress) -> dict[str, list]:
    if not model_cfg.use_candidates:
        return {}
    from .tfo.pipeline import augmentations
    return augmentations(ds, data_cfg, model_cfg, progress=progress)


def _feats_dims(vf) -> dict:
    dims = getattr(vf, "dims", None)   # VisualFeatures.dims: {"image": d_img, "caption": d_cap}
    if dims is None:
        b = vf.batch(vf.ids[:1])
        dims = {k: int(v.shape[-1]) for k, v in b.items() if torch.is_tensor(v) and v.dim() == 2}
    return dict(dims)


def tokenize_tweets(tweets, augs: dict, tokenizer, max_length: int, chunk: int = 256) -> list[dict]:
    """``build_inputs`` over chunks of tweets, unpadded per tweet (tokenised once)."""
    from .tfo.encoder import build_inputs
    out = []
    for i in range(0, len(tweets), chunk):
        part = tweets[i:i + chunk]
        enc = build_inputs(tokenizer, [t.tokens for t in part], [augs.get(t.id, []) for t in part],
                           max_length)
        for b, t in enumerate(part):
            n = int(enc["attention_mask"][b].sum())
            w = int(enc["word_mask"][b].sum())
            if w != len(t.tokens):
                raise ValueError(f"{t.source or t.id}: {len(t.tokens)} words but {w} word positions")
            out.append({"id": t.id, "input_ids": enc["input_ids"][b, :n].tolist(),
                        "word_index": enc["word_index"][b, :w].tolist(),
                        "labels": [LABEL2ID[l] for l in t.labels]})
    return out


def collate_text(examples: list[dict], pad_id: int) -> dict:
    B = len(examples)
    L = max(len(e["input_ids"]) for e in examples)
    W = max(len(e["word_index"]) for e in examples)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(B, L, dtype=torch.long)
    word_index = torch.zeros(B, W, dtype=torch.long)
    word_mask = torch.zeros(B, W, dtype=torch.bool)
    for i, e in enumerate(examples):
        n, w = len(e["input_ids"]), len(e["word_index"])
        input_ids[i, :n] = torch.tensor(e["input_ids"])
        attention_mask[i, :n] = 1
        word_index[i, :w] = torch.tensor(e["word_index"])
        word_mask[i, :w] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "word_index": word_index,
            "word_mask": word_mask}


def _labels(examples: list[dict]) -> torch.Tensor:
    W = max(len(e["labels"]) for e in examples)
    y = torch.zeros(len(examples), W, dtype=torch.long)
    for i, e in enumerate(examples):
        y[i, :len(e["labels"])] = torch.tensor(e["labels"])
    return y


def make_collate(model_cfg: ModelConfig, pad_id: int = 0, visual=None) -> Callable:
    from .baselines import collate_words

    def collate(examples: list[dict]) -> dict:
        if model_cfg.arch == "tvomner":
            batch = collate_text(examples, pad_id)
        else:
            batch = collate_words(examples)
        batch["ids"] = [e["id"] for e in examples]
        if "labels" in examples[0]:
            batch["labels"] = _labels(examples)
        if visual is not None and model_cfg.visual != "none" and model_cfg.arch == "tvomner":
            batch["visual"] = visual.batch(batch["ids"])
        return batch
    return collate


def prepare_data(ds: Dataset, data_cfg: DataConfig, model_cfg: ModelConfig, *, meta: dict | None = None,
                 tokenizer=None, progress: bool = False) -> Prepared:
    """Build every split's inputs once. ``meta`` (from a checkpoint) fixes the tokenizer folder or
    the vocabulary; otherwise they come from ``model_cfg`` (and the training split)."""
    meta = dict(meta or {})
    visual = None
    if model_cfg.arch == "tvomner":
        from transformers import AutoTokenizer
        from .resources import resolve_text_encoder
        if tokenizer is None:
            path = meta.get("tokenizer_path") or resolve_text_encoder(model_cfg.text_encoder)
            tokenizer = AutoTokenizer.from_pretrained(path)
            meta.setdefault("tokenizer_path", str(path))
        augs = _augmentations(ds, data_cfg, model_cfg, progress)
        examples = {s: tokenize_tweets(tw, augs, tokenizer, data_cfg.max_length) for s, tw in ds.splits.items()}
        if model_cfg.visual != "none":
            from .vfo.pipeline import visual_features
            visual = visual_features(ds, data_cfg, model_cfg, progress=progress)
            meta["feats_dims"] = _feats_dims(visual)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        meta["pad_id"] = int(pad)
        meta["_tokenizer"] = tokenizer
        return Prepared(examples, make_collate(model_cfg, pad, visual), visual, meta)
    if model_cfg.arch in ("bilstm_crf", "cnn_bilstm_crf"):
        from .baselines import Vocab, build_vocab
        if "vocab" not in meta:
            train_words = [t.tokens for t in ds.splits["train"]]
            extra = ([t.tokens for t in ds.all()] if model_cfg.word_init == "encoder" else [])
            meta["vocab"] = build_vocab(train_words, extra)
        vocab = Vocab(meta["vocab"])
        examples = {}
        for s, tw in ds.splits.items():
            examples[s] = [dict(id=t.id, labels=[LABEL2ID[l] for l in t.labels], **vocab.encode(t.tokens))
                           for t in tw]
        return Prepared(examples, make_collate(model_cfg), None, meta)
    raise ValueError(f"unknown arch {model_cfg.arch!r}: 'tvomner', 'bilstm_crf' or 'cnn_bilstm_crf'")


def build_model(model_cfg: ModelConfig, meta: dict, num_labels: int = len(LABELS), *,
                encoder_config=None, pretrained: bool = True) -> TVOMNER:
    """The model for a config. ``encoder_config`` (a transformers config) builds the text encoder
    with random weights (tests, checkpoints that bring their own weights)."""
    if model_cfg.arch == "tvomner":
        from .tfo.encoder import TextEncoder
        if encoder_config is not None:
            text = TextEncoder.from_config(encoder_config, num_heads=model_cfg.num_heads, dropout=model_cfg.dropout)
        else:
            text = TextEncoder(model_cfg.text_encoder, num_heads=model_cfg.num_heads, dropout=model_cfg.dropout)
        vfo = None
        if model_cfg.visual != "none":
            from .vfo.fusion import VisualFeatureOptimizer
            vfo = VisualFeatureOptimizer(model_cfg, text.hidden_size, meta["feats_dims"])
        return TVOMNER(model_cfg, num_labels, text, vfo, TEXT_KEYS)
    from .baselines import WordEncoder, encoder_word_vectors
    words, chars = meta["vocab"]["words"], meta["vocab"]["chars"]
    vectors, dim = None, meta.get("word_dim", model_cfg.word_dim)
    if model_cfg.word_init == "encoder" and (pretrained or "word_dim" not in meta):
        from transformers import AutoConfig
        from .resources import resolve_text_encoder
        path = resolve_text_encoder(model_cfg.text_encoder)
        dim = AutoConfig.from_pretrained(path).hidden_size
        if pretrained:
            vectors = encoder_word_vectors(words, path)
    meta["word_dim"] = int(dim)          # checkpoints rebuild the table without the encoder
    text = WordEncoder(len(words), dim, len(chars) if model_cfg.arch == "cnn_bilstm_crf" else 0,
                       model_cfg.char_dim, model_cfg.char_filters, model_cfg.dropout, vectors)
    if model_cfg.visual != "none":
        raise ValueError(f"arch={model_cfg.arch!r} is text-only: set visual='none'")
    return TVOMNER(model_cfg, num_labels, text, None, WORD_KEYS)


# ----------------------------------------------------------------------------------------------
# checkpoints (safetensors + JSON, never pickle)


def _hf_config(model: nn.Module):
    from transformers import PreTrainedModel
    for m in model.modules():
        if isinstance(m, PreTrainedModel):
            return m.config
    return None


def save_checkpoint(path: str | Path, model: TVOMNER, data_cfg: DataConfig, model_cfg: ModelConfig,
                    train_cfg: TrainConfig | None, meta: dict, extra: dict | None = None) -> Path:
    """A self-contained checkpoint folder: ``model.safetensors``, ``checkpoint.json`` (configs,
    label set, input meta) and, for the transformer, ``encoder/`` (its config and tokenizer)."""
    from safetensors.torch import save_file
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(sd, str(tmp / "model.safetensors"))
    info = {"format": "tvomner-checkpoint/1", "labels": list(LABELS), "data": to_dict(data_cfg),
            "model": to_dict(model_cfg), "train": to_dict(train_cfg) if train_cfg else None,
            "meta": {k: v for k, v in meta.items() if not k.startswith("_") and k != "tokenizer_path"},
            **(extra or {})}
    cfg = _hf_config(model)
    if cfg is not None:
        cfg.save_pretrained(tmp / "encoder")
        if meta.get("_tokenizer") is not None:
            meta["_tokenizer"].save_pretrained(str(tmp / "encoder"))
        info["encoder"] = "encoder"
    atomic_write_json(tmp / "checkpoint.json", info)
    _swap_in(tmp, path)
    return path


def _swap_in(tmp: Path, path: Path) -> None:
    old = path.with_name(path.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)


def _resolve_ckpt(path: Path) -> Path:
    """A checkpoint folder, or its ``.old`` twin when a kill fell between the two renames."""
    if (path / "checkpoint.json").exists():
        return path
    old = path.with_name(path.name + ".old")
    if (old / "checkpoint.json").exists():
        return old
    raise FileNotFoundError(f"{path}: no checkpoint.json (not a tvomner checkpoint)")


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """(model, info, meta) from a checkpoint folder; needs nothing but the folder (and, for the
    full model on new tweets, the TFO/VFO resources)."""
    from safetensors.torch import load_file
    path = _resolve_ckpt(Path(path))
    info = json.loads((path / "checkpoint.json").read_text())
    if info.get("format") != "tvomner-checkpoint/1":
        raise ValueError(f"{path}: unknown checkpoint format {info.get('format')!r}")
    model_cfg = from_dict(ModelConfig, info["model"])
    meta = dict(info["meta"])
    enc_cfg = None
    if info.get("encoder"):
        from transformers import AutoConfig
        enc_cfg = AutoConfig.from_pretrained(path / info["encoder"])
        meta["tokenizer_path"] = str(path / info["encoder"])
    model = build_model(model_cfg, meta, len(info["labels"]), encoder_config=enc_cfg, pretrained=False)
    missing, unexpected = model.load_state_dict(load_file(str(path / "model.safetensors")), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the config (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return model.to(device).eval(), info, meta


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors = {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, groups: dict) -> None:
    state: dict = {}
    for k, v in tensors.items():
        i, name = k.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def save_training_state(path: Path, model, opt, sched, state: dict, data_cfg, model_cfg, train_cfg, meta):
    from safetensors.torch import save_file
    save_checkpoint(path, model, data_cfg, model_cfg, train_cfg, meta)
    tensors, groups = _optimizer_tensors(opt)
    save_file(tensors, str(path / "optimizer.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    save_file(rng, str(path / "rng.safetensors"))
    sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    py_state = random.getstate()
    atomic_write_json(path / "state.json", {**state, "optimizer": groups, "scheduler": sched_state,
                                            "python_rng": [py_state[0], list(py_state[1]), py_state[2]]})


# Fields that may change between a run and its resumption: where and how it runs, how long it
# goes on. Every other field of the three configs must match the checkpoint's.
RESUME_FREE = {"data": {"cache_dir"},
               "train": {"output_dir", "epochs", "patience", "resume", "progress", "num_threads", "device",
                         "eval_batch_size", "max_epoch_steps"}}


def check_resumable(path: Path, data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    """Raise ``ValueError`` when ``path/checkpoint.json`` was trained with other settings than the
    ones asked for now (resuming would silently mix two experiments in one folder)."""
    info = json.loads((path / "checkpoint.json").read_text())
    diffs = []
    for part, cfg in (("data", data_cfg), ("model", model_cfg), ("train", train_cfg)):
        saved, now = info.get(part) or {}, to_dict(cfg)
        for k in sorted(set(saved) | set(now)):
            if k in RESUME_FREE.get(part, ()) or saved.get(k) == now.get(k):
                continue
            diffs.append(f"{part}.{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}")
    if diffs:
        raise ValueError(f"{path.parent}: cannot resume, this folder holds a run with other settings ("
                         + "; ".join(diffs) + "). Choose another output_dir, or set resume=False to start over.")


def load_training_state(path: Path, model, opt, sched) -> dict:
    from safetensors.torch import load_file
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    st = json.loads((path / "state.json").read_text())
    _load_optimizer(opt, load_file(str(path / "optimizer.safetensors")), st["optimizer"])
    sched_state = dict(st["scheduler"])
    sched_state["lr_lambdas"] = [None] * len(opt.param_groups)
    sched.load_state_dict(sched_state)
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    v, s, g = st["python_rng"]
    random.setstate((v, tuple(s), g))
    return st


# ----------------------------------------------------------------------------------------------
# evaluation


def _to(batch: dict, device) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            out[k] = _to(v, device)
        else:
            out[k] = v
    return out


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and bf16)


@torch.no_grad()
def predict_examples(model: TVOMNER, examples: list[dict], collate: Callable, batch_size: int = 64,
                     device="cpu", bf16: bool = True, labels=LABELS) -> list[list[str]]:
    """Viterbi label strings for every example (one per word)."""
    model.eval()
    device = torch.device(device)
    preds: list[list[str]] = []
    for i in range(0, len(examples), batch_size):
        batch = _to(collate(examples[i:i + batch_size]), device)
        batch.pop("labels", None)
        with _autocast(device, bf16):
            ids = model.decode(batch)
        preds += [[labels[j] for j in seq] for seq in ids]
    return preds


def evaluate(model: TVOMNER, examples: list[dict], collate: Callable, batch_size: int = 64, device="cpu",
             bf16: bool = True) -> tuple[Scores, list[list[str]]]:
    pred = predict_examples(model, examples, collate, batch_size, device, bf16)
    gold = [[LABELS[j] for j in e["labels"]] for e in examples]
    return score(gold, pred), pred


# ----------------------------------------------------------------------------------------------
# training


def param_groups(model: nn.Module, train_cfg: TrainConfig) -> list[dict]:
    """Encoder parameters at ``lr``, new layers (and CRF) at ``head_lr``; no decay on biases/LN.

    The gate of Eq. 4 (``cff.gate_ln``, ``cff.w_g1``, ``cff.w_g2``) also trains at ``lr``: it is
    two linear maps into one scalar, so at ``head_lr`` Adam moves its logit by ~``head_lr * d`` per
    step and the sigmoid saturates at 0 or 1 within a few steps (measured on the sample), which
    switches one branch of Eq. 5 off for good."""
    enc = encoder_parameter_names(model)
    groups = {(e, d): [] for e in (True, False) for d in (True, False)}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.dim() < 2 or "norm" in n.lower() or n.endswith(".bias") or n.startswith("crf.")
        slow = n in enc or n.startswith(("cff.gate_ln.", "cff.w_g1.", "cff.w_g2."))
        groups[(slow, not no_decay)].append(p)
    out = []
    for (is_enc, decay), ps in groups.items():
        if ps:
            out.append({"params": ps, "lr": train_cfg.lr if is_enc else train_cfg.head_lr,
                        "weight_decay": train_cfg.weight_decay if decay else 0.0,
                        "name": f"{'encoder+gate' if is_enc else 'new'}{'' if decay else '_no_decay'}"})
    return out


def linear_schedule(opt, warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:
        pass


def _dist_info() -> tuple[int, int, int]:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _init_distributed(device_pref: str) -> bool:
    """Join the torchrun group when launched by torchrun (WORLD_SIZE > 1)."""
    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def _device(pref: str, local_rank: int) -> torch.device:
    if pref == "cpu" or (pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but no CUDA device is available")
    return torch.device("cuda", local_rank)


def plot_history(history: list[dict], path: str | Path | None = None):
    """Training curves: loss per step and per epoch, valid F1 per epoch."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [l for h in history for l in h.get("step_losses", [])]
    if steps:
        ax[0].plot(range(1, len(steps) + 1), steps, alpha=0.4, label="step loss")
    per_epoch = [h["train_loss"] for h in history]
    spe = max(1, len(steps) // max(1, len(history)))
    ax[0].plot([spe * (i + 1) for i in range(len(history))], per_epoch, "o-", label="epoch mean")
    ax[0].set_xlabel("optimizer step"); ax[0].set_ylabel("L = L_NER + λ L_VAE"); ax[0].legend()
    ax[1].plot([h["epoch"] for h in history], [h["valid_f1"] for h in history], "o-", label="valid F1")
    ax[1].set_xlabel("epoch"); ax[1].set_ylabel("F1 (%)"); ax[1].legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def train(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, *,
          ds: Dataset | None = None, prepared: Prepared | None = None, encoder_config=None,
          stop_after: int | None = None) -> dict:
    """Train, select on valid F1, score test once; returns the results dict (also written to
    ``<output_dir>/results.json``). ``encoder_config`` builds a random-weight encoder (tests);
    ``stop_after`` stops after that many epochs of this call as a kill would (tests)."""
    from tqdm.auto import tqdm
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    distributed = _init_distributed(train_cfg.device)
    rank, world, local_rank = _dist_info()
    device = _device(train_cfg.device, local_rank)
    is_main = rank == 0
    out_dir = Path(train_cfg.output_dir)
    seed_everything(train_cfg.seed)
    last = out_dir / "last"
    resume_from = None
    if train_cfg.resume and (last.exists() or last.with_name("last.old").exists()):
        resume_from = _resolve_ckpt(last)
        check_resumable(resume_from, data_cfg, model_cfg, train_cfg)   # before any slow preparation

    if prepared is None:
        ds = ds or dataset_from_config(data_cfg)
        prepared = prepare_data(ds, data_cfg, model_cfg, progress=train_cfg.progress and is_main)
    meta = prepared.meta
    seed_everything(train_cfg.seed)   # model init does not depend on what preparation consumed
    model = build_model(model_cfg, meta, encoder_config=encoder_config).to(device)
    train_ex = prepared.examples["train"]
    valid_ex = prepared.examples["valid"]

    bs, micro = train_cfg.batch_size, train_cfg.micro_batch_size
    accum = max(1, math.ceil(bs / (micro * world)))
    steps_per_epoch = math.ceil(len(train_ex) / bs)
    if train_cfg.max_epoch_steps:
        steps_per_epoch = min(steps_per_epoch, train_cfg.max_epoch_steps)
    total_steps = steps_per_epoch * train_cfg.epochs
    opt = torch.optim.AdamW(param_groups(model, train_cfg), lr=train_cfg.lr)
    sched = linear_schedule(opt, int(train_cfg.warmup_ratio * total_steps), total_steps)

    state = {"epoch": 0, "step": 0, "best_f1": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
    if resume_from is not None:
        state = load_training_state(resume_from, model, opt, sched)
        if is_main:
            print(f"resuming {out_dir} after epoch {state['epoch']} (best valid F1 "
                  f"{state['best_f1']:.2f} at epoch {state['best_epoch']})")
    ddp_model = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ddp_model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None,
                        find_unused_parameters=train_cfg.ddp_find_unused)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "config.json", {"data": to_dict(data_cfg), "model": to_dict(model_cfg),
                                                    "train": to_dict(train_cfg), "world_size": world})
    stopped = state.get("stopped", False)
    epochs_this_call = 0
    while state["epoch"] < train_cfg.epochs and not stopped:
        epoch = state["epoch"] + 1
        g = torch.Generator().manual_seed(train_cfg.seed + epoch)
        order = torch.randperm(len(train_ex), generator=g).tolist()
        model.train()
        t0, seen, step_losses, sums = time.time(), 0, [], {"loss": 0.0, "l_ner": 0.0, "l_vae": 0.0}
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}", disable=not (train_cfg.progress and is_main),
                   leave=False)
        for s in bar:
            idx = order[s * bs:(s + 1) * bs]
            shares = [idx[r::world] for r in range(world)]
            if min(len(x) for x in shares) == 0:
                continue                      # a tail too small to give every process a tweet
            mine = shares[rank]
            chunks = [mine[i:i + micro] for i in range(0, len(mine), micro)]
            step_loss = torch.zeros(3)
            for ci, chunk in enumerate(chunks):
                batch = _to(prepared.collate([train_ex[i] for i in chunk]), device)
                sync = ci == len(chunks) - 1
                ctx = ddp_model.no_sync() if (distributed and not sync) else _nullcontext()
                with ctx:
                    with _autocast(device, train_cfg.bf16):
                        out = ddp_model(batch)
                    weight = len(chunk) * world / len(idx)      # share of the effective batch
                    (out["loss"] * weight).backward()
                step_loss += torch.tensor([out["loss"].item(), out["l_ner"].item(), out["l_vae"].item()]) * len(chunk)
            if distributed:
                import torch.distributed as dist
                dist.all_reduce(step_loss)
            step_loss /= len(idx)
            if train_cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            state["step"] += 1
            seen += len(idx)
            step_losses.append(round(step_loss[0].item(), 5))
            for k, v in zip(sums, step_loss.tolist()):
                sums[k] += v * len(idx)
            bar.set_postfix(loss=f"{step_loss[0].item():.3f}")
            if is_main and not train_cfg.progress and (s + 1) % max(1, steps_per_epoch // 10) == 0:
                el = time.time() - t0
                print(f"  epoch {epoch} step {s + 1}/{steps_per_epoch}: loss {step_loss[0].item():.3f}, "
                      f"{seen / el:.1f} tweets/s, {el:.0f} s", flush=True)
        bar.close()
        train_time = time.time() - t0
        # ---- evaluation, selection, checkpoint (rank 0)
        stop_flag = [False]
        if is_main:
            vs, _ = evaluate(model, valid_ex, prepared.collate, train_cfg.eval_batch_size, device, train_cfg.bf16)
            f1 = 100 * vs.f1
            rec = {"epoch": epoch, "train_loss": sums["loss"] / max(1, seen), "l_ner": sums["l_ner"] / max(1, seen),
                   "l_vae": sums["l_vae"] / max(1, seen), "valid_f1": f1, "valid": vs.row(),
                   "train_seconds": round(train_time, 2), "tweets_per_s": round(seen / max(train_time, 1e-9), 2),
                   "lr": [gr["lr"] for gr in opt.param_groups], "step_losses": step_losses}
            state["history"].append(rec)
            if f1 > state["best_f1"]:
                state.update(best_f1=f1, best_epoch=epoch, bad_epochs=0)
                save_checkpoint(out_dir / "best", model, data_cfg, model_cfg, train_cfg, meta,
                                {"epoch": epoch, "valid": vs.row()})
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            stop_flag[0] = state["bad_epochs"] >= train_cfg.patience
            state["stopped"] = stop_flag[0]
            save_training_state(last, model, opt, sched, state, data_cfg, model_cfg, train_cfg, meta)
            atomic_write_json(out_dir / "history.json", state["history"])
            print(f"epoch {epoch}: loss {rec['train_loss']:.4f}  valid F1 {f1:.2f}  "
                  f"({rec['tweets_per_s']:.1f} tweets/s, {train_time:.0f} s)"
                  + ("  *best*" if state["best_epoch"] == epoch else ""), flush=True)
        else:
            state["epoch"] = epoch
        if distributed:
            import torch.distributed as dist
            dist.broadcast_object_list(stop_flag, src=0)
        stopped = stop_flag[0]
        epochs_this_call += 1
        if stop_after is not None and epochs_this_call >= stop_after and state["epoch"] < train_cfg.epochs:
            if distributed:
                import torch.distributed as dist
                dist.barrier()
            return {"interrupted": True, "epoch": state["epoch"], "history": state.get("history", [])}

    result: dict = {"output_dir": str(out_dir)}
    if is_main:
        best_model, _, _ = load_checkpoint(out_dir / "best", device=str(device))
        test_scores, pred = evaluate(best_model, prepared.examples["test"], prepared.collate,
                                     train_cfg.eval_batch_size, device, train_cfg.bf16)
        valid_scores, _ = evaluate(best_model, valid_ex, prepared.collate, train_cfg.eval_batch_size,
                                   device, train_cfg.bf16)
        result.update({"dataset": data_cfg.dataset, "best_epoch": state["best_epoch"],
                       "best_valid_f1": state["best_f1"], "valid": valid_scores.row(),
                       "test": test_scores.row(), "test_scores": test_scores.to_dict(),
                       "epochs_run": state["epoch"], "early_stopped": bool(state.get("stopped")),
                       "history": state["history"], "checkpoint": str(out_dir / "best"),
                       "model": to_dict(model_cfg), "train": to_dict(train_cfg)})
        if ds is not None:
            write_predictions(out_dir / "test_predictions.txt", ds.splits["test"], pred)
        atomic_write_json(out_dir / "results.json", result)
        try:
            plot_history(state["history"], out_dir / "curves.png")
        except Exception as e:   # a plot never fails a run
            print(f"(no curve plot: {e})")
    if distributed:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
    return result


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def type_confusion(gold: list[list[str]], pred: list[list[str]]) -> tuple[list[str], list[list[int]]]:
    """Entity-type confusion over spans: rows = gold type (+ "none" for spurious predictions),
    columns = predicted type at the same span (+ "none" when the gold span was not predicted with
    exactly these boundaries). Returns (names, matrix)."""
    from .data import ENTITY_TYPES, entity_spans
    names = list(ENTITY_TYPES) + ["none"]
    pos = {n: i for i, n in enumerate(names)}
    m = [[0] * len(names) for _ in names]
    for g, p in zip(gold, pred):
        gs = {(s, e): t for s, e, t in entity_spans(g)}
        ps = {(s, e): t for s, e, t in entity_spans(p)}
        for span, t in gs.items():
            m[pos[t]][pos[ps.get(span, "none")]] += 1
        for span, t in ps.items():
            if span not in gs:
                m[pos["none"]][pos[t]] += 1
    return names, m


def plot_confusion(names: list[str], m: list[list[int]], ax=None, title: str = "entity types (test)"):
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(names)), names); ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted"); ax.set_ylabel("gold"); ax.set_title(title)
    hi = max(max(r) for r in m) or 1
    for i, row in enumerate(m):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > hi / 2 else "black")
    return ax
