"""The candidate tagger (section 4.1, first stage): an untyped B/I/O span tagger, its training, and
the folder it is saved in.

Any Hugging Face encoder (a name or a local path; ``roberta-large`` where the user has it, the
offline default is MiniLM-L6) with a linear B/I/O head on the FIRST sub-token of every word,
trained with cross-entropy (the paper, after Ok et al. 2024). Gold labels are turned into untyped
spans with the same lenient rule as scoring (``tvolib.data.entity_spans``).

The tagger trained on all of train (the one that tags valid, test and any new tweet) is saved in
``<dataset_cache>/tagger-<config hash>-<train hash>/`` (``save_tagger``: safetensors weights, the backbone's
config and tokenizer, ``tagger.json``); a training run copies it into its checkpoint, so that
``tvolib.predict`` tags new tweets with exactly this tagger and never retrains it. Several processes
sharing a cache folder train it once: ``build_tagger`` holds ``tagger-....lock`` (``filelock``), and a
process that waits loads the saved tagger. The candidates it makes: ``tvolib.tfo.candidates``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from ..cache import atomic_write_bytes, atomic_write_json, stable_hash
from ..data import Tweet, entity_spans
from ..weights import ResourceMissing, resolve_text_encoder
from .encoder import build_inputs, load_tokenizer

log = logging.getLogger(__name__)

SPAN_TAGS = ("O", "B", "I")


@dataclass
class TaggerConfig:
    encoder: str = "minilm"          # HF name or local path ("roberta-large")
    epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-4                 # encoder (few epochs: a little above the usual 5e-5)
    head_lr: float = 1e-3            # B/I/O head
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = 128
    dropout: float = 0.1
    k_folds: int = 2                 # out-of-fold predictions on train (see module docstring)
    max_train_samples: int | None = None   # train each tagger on at most N tweets (quick runs)
    seed: int = 42
    eval_batch_size: int = 64
    threads: int | None = None       # CPU threads of the tagger's training (None: the caller's)

    def hash(self) -> str:
        """The tagger's identity. The thread count is part of it: CPU kernels sum in another order
        under another count, so taggers trained with 1 and 2 threads differ (by about 2e-6 in the
        weights on the sample), and so can their spans on a large dataset."""
        d = dataclasses.asdict(self)
        d.pop("eval_batch_size")
        d["threads"] = self.threads or torch.get_num_threads()
        return stable_hash(d)


def span_tags(labels: list[str]) -> list[int]:
    """Gold BIO labels → untyped tag ids (0=O, 1=B, 2=I) over the lenient spans."""
    tags = [0] * len(labels)
    for s, e, _ in entity_spans(labels):
        tags[s] = 1
        for i in range(s + 1, e):
            tags[i] = 2
    return tags


def tags_to_spans(tags: list[int]) -> list[tuple[int, int]]:
    """Untyped tag ids → spans (start, end_exclusive); an I after O starts a span (lenient)."""
    spans, start = [], None
    for i, t in enumerate(list(tags) + [0]):
        if start is not None and t != 2:
            spans.append((start, i))
            start = None
        if t in (1, 2) and start is None:
            start = i
    return spans


class CandidateTagger(nn.Module):
    """HF encoder + linear untyped B/I/O head on the first sub-token of each word."""

    def __init__(self, name_or_path: str = "minilm", dropout: float = 0.1, _backbone=None, _tokenizer=None):
        super().__init__()
        if _backbone is None:
            path = resolve_text_encoder(name_or_path)
            try:
                _tokenizer = load_tokenizer(path)
                _backbone = AutoModel.from_pretrained(path)
            except OSError as e:
                raise ResourceMissing(f"candidate tagger encoder {name_or_path!r} at {path}: {e}") from None
        self.name = name_or_path
        self.tokenizer = _tokenizer
        self.backbone = _backbone
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(_backbone.config.hidden_size, len(SPAN_TAGS))

    @classmethod
    def from_config(cls, config, tokenizer=None, dropout: float = 0.1) -> "CandidateTagger":
        """Random weights (tests); the tokenizer defaults to MiniLM's local vocabulary."""
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
        return cls(f"random:{config.model_type}", dropout, _backbone=AutoModel.from_config(config),
                   _tokenizer=tokenizer)

    def forward(self, input_ids, attention_mask, word_index, word_mask):
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        h = torch.gather(h, 1, word_index.unsqueeze(-1).expand(-1, -1, h.size(-1)))
        return self.head(self.drop(h))                                   # (B, W, 3)

    def batch(self, tokens: list[list[str]], max_length: int) -> dict:
        return build_inputs(self.tokenizer, tokens, [[] for _ in tokens], max_length)

    @torch.no_grad()
    def predict(self, tokens: list[list[str]], batch_size: int = 64,
                max_length: int = TaggerConfig.max_length) -> list[list[tuple[int, int]]]:
        self.eval()
        order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))   # length-sorted batches
        out: list = [None] * len(tokens)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            b = self.batch([tokens[j] for j in idx], max_length)
            pred = self(**b).argmax(-1)
            for r, j in enumerate(idx):
                out[j] = tags_to_spans(pred[r, :len(tokens[j])].tolist())
        return out


def train_tagger(tweets: list[Tweet], cfg: TaggerConfig,
                 model_factory: Callable[[], CandidateTagger] | None = None,
                 checkpoint: str | Path | None = None, checkpoint_every: float = 600.0,
                 _stop_after_steps: int | None = None) -> CandidateTagger:
    """Fine-tune a fresh tagger on ``tweets`` with cross-entropy over the first sub-tokens (with
    ``cfg.threads`` CPU threads when set; the caller's count is restored after).

    With ``checkpoint`` (a file), the training state (weights, optimizer, schedule, data order and
    random states) is written there every ``checkpoint_every`` seconds and at the end of every
    epoch, and a stopped training resumes from it to the same weights as one without a stop; the
    file is removed once training ends. An unreadable checkpoint is set aside with a warning and
    training starts again. (``_stop_after_steps``: stop there, as a kill would; tests.)"""
    caller_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train_tagger(tweets, cfg, model_factory, None if checkpoint is None else Path(checkpoint),
                             checkpoint_every, _stop_after_steps)
    finally:
        torch.set_num_threads(caller_threads)


class _Stopped(Exception):
    """Training stopped on purpose (``_stop_after_steps``), its state in the checkpoint."""


def _load_training_state(path: Path | None) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # a file cut short by a kill, or damaged: start again, keep the file to look at
        bad = path.with_name(path.name + ".unreadable")
        os.replace(path, bad)
        log.warning("%s: unreadable tagger checkpoint (%s: %s), moved to %s; training starts again",
                    path, type(e).__name__, e, bad.name)
        return None


def _train_tagger(tweets: list[Tweet], cfg: TaggerConfig,
                  model_factory: Callable[[], CandidateTagger] | None = None,
                  checkpoint: Path | None = None, checkpoint_every: float = 600.0,
                  stop_after_steps: int | None = None) -> CandidateTagger:
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = model_factory() if model_factory else CandidateTagger(cfg.encoder, cfg.dropout)
    tweets = list(tweets)
    if cfg.max_train_samples:
        tweets = tweets[: cfg.max_train_samples]
    if not tweets:
        raise ValueError("no training tweets for the candidate tagger")
    data = [(t.tokens, span_tags(t.labels)) for t in tweets]
    head = set(id(p) for p in model.head.parameters())
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n
    groups = [
        {"params": [p for n, p in model.backbone.named_parameters() if not no_decay(n)], "lr": cfg.lr,
         "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in model.backbone.named_parameters() if no_decay(n)], "lr": cfg.lr, "weight_decay": 0.0},
        {"params": list(model.head.parameters()), "lr": cfg.head_lr, "weight_decay": 0.0},
    ]
    assert all(id(p) not in head for g in groups[:2] for p in g["params"])
    opt = torch.optim.AdamW(groups)
    steps = cfg.epochs * math.ceil(len(data) / cfg.batch_size)
    warm = max(1, int(cfg.warmup_ratio * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    loss_fn = nn.CrossEntropyLoss()
    # the data order is kept as indices (shuffled in place every epoch, as the list itself would be)
    step, first_epoch, start, order, tot = 0, 0, 0, list(range(len(data))), 0.0
    state = _load_training_state(checkpoint)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, first_epoch, start, order, tot = (state["step"], state["epoch"], state["position"],
                                                list(state["order"]), state["loss_sum"])
        rng.setstate((state["py_rng"][0], tuple(state["py_rng"][1]), state["py_rng"][2]))
        torch.set_rng_state(state["torch_rng"])
        log.info("  tagger: resuming from %s (epoch %d, tweet %d of %d)", checkpoint, first_epoch + 1, start,
                 len(data))

    def save(epoch: int, position: int) -> None:
        tmp = checkpoint.with_name(checkpoint.name + ".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "step": step, "epoch": epoch, "position": position, "order": order, "loss_sum": tot,
                    "py_rng": list(rng.getstate()), "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, checkpoint)

    last_save = time.time()
    for ep in range(first_epoch, cfg.epochs):
        model.train()
        if start == 0:
            rng.shuffle(order)
            tot = 0.0
        t0 = time.time()
        for i in range(start, len(data), cfg.batch_size):
            chunk = [data[j] for j in order[i:i + cfg.batch_size]]
            b = model.batch([c[0] for c in chunk], cfg.max_length)
            logits = model(**b)
            gold = torch.zeros(b["word_mask"].shape, dtype=torch.long)
            for r, (_, tags) in enumerate(chunk):
                gold[r, :len(tags)] = torch.tensor(tags)
            loss = loss_fn(logits[b["word_mask"]], gold[b["word_mask"]])      # cross-entropy
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(); sched.step(); step += 1
            tot += loss.item() * len(chunk)
            done = i + cfg.batch_size >= len(data)
            if checkpoint is not None and (done or time.time() - last_save >= checkpoint_every
                                           or step == stop_after_steps):
                save(ep + 1, 0) if done else save(ep, i + cfg.batch_size)
                last_save = time.time()
            if step == stop_after_steps:
                raise _Stopped(f"stopped after {step} steps")
        start = 0
        dt = time.time() - t0
        log.info("  tagger epoch %d/%d: loss %.4f, %.1f tweets/s", ep + 1, cfg.epochs, tot / len(data),
                 len(data) / max(dt, 1e-9))
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return model.eval()


def training_checkpoint(cache_dir: str | Path, cfg: TaggerConfig, train: list[Tweet]) -> Path:
    """Where the training of a tagger on ``train`` with ``cfg`` keeps its state until it ends (a
    stopped run resumes from it): ``<dataset_cache>/tagger-<config hash>-<train hash>.training.pt``."""
    return Path(cache_dir) / f"tagger-{cfg.hash()}-{train_hash(train)}.training.pt"


def lock_path(path: str | Path) -> Path:
    """The lock file beside a cache file or a tagger folder (``<name>.lock``)."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


# ---------------------------------------------------------------------------------------------- saved taggers

TAGGER_FORMAT = "tvomner-tagger/1"


def train_hash(train: list[Tweet]) -> str:
    """Hash of a tagger's training tweets (ids, tokens, labels): a cut training split is another tagger."""
    return stable_hash([(t.id, t.tokens, t.labels) for t in train], n=8)


def tagger_dir(cache_dir: str | Path, cfg: TaggerConfig, train: list[Tweet]) -> Path:
    """Where the tagger trained on ``train`` (all of it) with ``cfg`` is kept in a dataset cache: the
    name holds the config hash and a hash of the training tweets (a cut training split is another tagger)."""
    return Path(cache_dir) / f"tagger-{cfg.hash()}-{train_hash(train)}"


def _weights_bytes(model: CandidateTagger) -> bytes:
    return save_tensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def weights_hash(model: CandidateTagger) -> str:
    """Hash of a tagger's weights as ``save_tagger`` writes them (``tagger.json``'s ``weights_hash``)."""
    return hashlib.sha256(_weights_bytes(model)).hexdigest()[:16]


def save_tagger(model: CandidateTagger, path: str | Path, cfg: TaggerConfig, trained_on: int | None = None) -> Path:
    """``path/``: ``tagger.safetensors`` (weights), ``backbone/`` (the encoder's config and tokenizer)
    and ``tagger.json`` (format, config, its hash, a hash of the weights). Written beside and renamed."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = _weights_bytes(model)
    atomic_write_bytes(tmp / "tagger.safetensors", weights)
    model.backbone.config.save_pretrained(tmp / "backbone")
    model.tokenizer.save_pretrained(str(tmp / "backbone"))
    atomic_write_json(tmp / "tagger.json", {"format": TAGGER_FORMAT, "name": model.name,
                                            "config": dataclasses.asdict(cfg), "config_hash": cfg.hash(),
                                            "weights_hash": hashlib.sha256(weights).hexdigest()[:16],
                                            "trained_on": trained_on, "dropout": model.drop.p})
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def read_tagger_info(path: str | Path) -> dict | None:
    """A saved tagger's ``tagger.json`` (None when the folder holds no saved tagger)."""
    info_file = Path(path) / "tagger.json"
    if not info_file.exists():
        return None
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{info_file}: not readable JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != TAGGER_FORMAT:
        raise ValueError(f"{info_file}: unknown tagger format {info.get('format') if isinstance(info, dict) else info!r}")
    return info


def load_tagger(path: str | Path) -> tuple[CandidateTagger, dict]:
    """A saved tagger (``save_tagger``) and its ``tagger.json``; a missing or damaged part is an
    error naming the file. The weights must hash to ``tagger.json``'s ``weights_hash`` (one SHA-256
    pass over the file, which is read once anyway)."""
    path = Path(path)
    info = read_tagger_info(path)
    if info is None:
        raise FileNotFoundError(f"{path / 'tagger.json'}: missing (not a saved candidate tagger)")
    backbone = path / "backbone"
    try:
        config = AutoConfig.from_pretrained(backbone)
        tokenizer = AutoTokenizer.from_pretrained(str(backbone))
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{backbone}: the tagger's encoder config and tokenizer are missing or "
                                f"damaged ({e})") from None
    model = CandidateTagger(info.get("name", "tagger"), info.get("dropout", 0.1),
                            _backbone=AutoModel.from_config(config), _tokenizer=tokenizer)
    weights = path / "tagger.safetensors"
    if not weights.is_file():
        raise ValueError(f"{weights}: not a readable safetensors file (missing)")
    data = weights.read_bytes()
    try:
        state = load_tensors(data)
    except Exception as e:   # a damaged header
        raise ValueError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    got = hashlib.sha256(data).hexdigest()[:16]
    if info.get("weights_hash") not in (None, got):
        raise ValueError(f"{weights}: the weights hash to {got}, not to {info['weights_hash']} as tagger.json "
                         f"records: the file is damaged or was replaced; copy the tagger folder again")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not fit the tagger (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), info


def build_tagger(train: list[Tweet], cfg: TaggerConfig, path: str | Path,
                 model_factory: Callable[[], CandidateTagger] | None = None) -> tuple[CandidateTagger, dict]:
    """The tagger trained on all of ``train`` with ``cfg``, kept in ``path``: loaded when it is there,
    else trained and saved. Built once: a process that finds another one training it (the
    ``<path>.lock`` file lock) waits, then loads the saved tagger."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(path)):
        if read_tagger_info(path) is not None:
            return load_tagger(path)
        log.info("candidate tagger [all]: training on %d tweets", len(train))
        model = train_tagger(train, cfg, model_factory, checkpoint=training_checkpoint(path.parent, cfg, train))
        save_tagger(model, path, cfg, len(train))
        return model, read_tagger_info(path)


def ensure_tagger(train: list[Tweet], cfg: TaggerConfig, path: str | Path,
                  model_factory: Callable[[], CandidateTagger] | None = None) -> Path:
    """``path`` holding the tagger trained on all of ``train`` with ``cfg`` (``make_candidates``
    saves it when it trains it); trained and saved when it is not there (``build_tagger``)."""
    path = Path(path)
    if read_tagger_info(path) is None:
        build_tagger(train, cfg, path, model_factory)
    return path
