"""Checkpoints: safetensors for tensors, JSON for the rest, never pickle.

A checkpoint folder is self-contained: ``tvolib.predict`` needs nothing else to tag new tweets.

    <ckpt>/model.safetensors     the model's weights
    <ckpt>/checkpoint.json       format, label set, every config (data, model, train and the resource
                                 sub-configs), input meta (pad id, feature widths, vocabulary), the
                                 precision the run used
    <ckpt>/encoder/              the transformer's config and tokenizer (``arch="tvomner"``)
    <ckpt>/tagger/               the candidate tagger of the TFO (``use_candidates``), see
                                 ``tvolib.tfo.tagger.save_tagger``
    <ckpt>/kb.sqlite             the local knowledge base the model was trained with
                                 (``knowledge_source="local"``), so new tweets get the same knowledge

``checkpoint.json`` records the sha256 of every file in the folder (``files``); loading verifies them
and names a file that differs (damaged or replaced weights never load silently). Hashing costs about
0.35 s per 100 MB here (``benchmarks/checkpoint_hash.py``: 87 MB in 0.32 s on a busy 2-core machine),
about 0.6 s for a MiniLM-L6 checkpoint with its tagger.

``<output_dir>/last`` adds the training state (``optimizer.safetensors``, ``rng.safetensors``,
``state.json``) for resumption. Folders are written beside their target (``<name>.tmp``) and swapped
in with two renames; a kill between them leaves ``<name>.old``, which ``resolve_checkpoint`` finds.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, PreTrainedModel

from .assemble import build_model
from .cache import atomic_write_json
from .config import DataConfig, ModelConfig, TrainConfig, config_diff, from_dict, to_dict, upgrade_train_dict
from .data import LABELS, file_sha256

FORMAT = "tvomner-checkpoint/1"
# meta entries that only make sense on the machine that trained (paths, live objects)
LOCAL_META = ("tokenizer_path", "tagger_dir", "tagger_path", "kb_path")


def _hf_config(model: nn.Module):
    for m in model.modules():
        if isinstance(m, PreTrainedModel):
            return m.config
    return None


def _link_or_copy(src, dst) -> None:
    """A hard link where the file system allows it (a tagger is ~100 MB), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _link_or_copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=_link_or_copy)


def save_checkpoint(path: str | Path, model: nn.Module, data_cfg: DataConfig, model_cfg: ModelConfig,
                    train_cfg: TrainConfig | None, meta: dict, extra: dict | None = None) -> Path:
    """A self-contained checkpoint folder (see the module docstring); ``extra`` goes into
    ``checkpoint.json`` (epoch, valid scores, precision, resources). ``meta["kb_path"]``: the local
    knowledge base to carry along."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(sd, str(tmp / "model.safetensors"))
    info = {"format": FORMAT, "labels": list(LABELS), "data": to_dict(data_cfg),
            "model": to_dict(model_cfg), "train": to_dict(train_cfg) if train_cfg else None,
            "meta": {k: v for k, v in meta.items() if not k.startswith("_") and k not in LOCAL_META},
            **(extra or {})}
    cfg = _hf_config(model)
    if cfg is not None:
        cfg.save_pretrained(tmp / "encoder")
        if meta.get("_tokenizer") is not None:
            meta["_tokenizer"].save_pretrained(str(tmp / "encoder"))
        info["encoder"] = "encoder"
    if meta.get("tagger_dir"):
        _link_or_copy_tree(Path(meta["tagger_dir"]), tmp / "tagger")
        info["tagger"] = "tagger"
    if meta.get("kb_path"):
        _link_or_copy(Path(meta["kb_path"]), tmp / "kb.sqlite")
        info["kb"] = "kb.sqlite"
    info["files"] = file_hashes(tmp)
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


def file_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file below ``folder`` but ``checkpoint.json``."""
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "checkpoint.json"}


def verify_files(path: Path, info: dict, names=None) -> None:
    """Raise ``ValueError`` naming the first file whose sha256 differs from the one recorded."""
    recorded = info.get("files")
    if recorded is None:
        raise ValueError(f"{path / 'checkpoint.json'}: no file hashes recorded (a checkpoint of the first format); "
                         f"record them with `tvomner rehash {path}` once you trust its files")
    for name, want in recorded.items():
        if names is not None and not any(name == n or name.startswith(n + "/") for n in names):
            continue
        f = path / name
        if not f.exists():
            raise FileNotFoundError(f"{f}: missing from the checkpoint folder")
        if file_sha256(f) != want:
            raise ValueError(f"{f}: sha256 differs from the one recorded in checkpoint.json (damaged or replaced)")


def rehash(path: str | Path) -> Path:
    """Record the sha256 of every file of a checkpoint saved without them (the first format)."""
    path = resolve_checkpoint(path)
    info = read_info(path)
    info["files"] = file_hashes(path)
    atomic_write_json(path / "checkpoint.json", info)
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or its ``.old`` twin when a kill fell between the two renames."""
    path = Path(path)
    if (path / "checkpoint.json").exists():
        return path
    old = path.with_name(path.name + ".old")
    if (old / "checkpoint.json").exists():
        return old
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint folder")
    raise FileNotFoundError(f"{path}: no checkpoint.json (not a tvomner checkpoint)")


def read_info(path: str | Path) -> dict:
    """``checkpoint.json`` of a checkpoint folder, checked."""
    f = resolve_checkpoint(path) / "checkpoint.json"
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{f}: not a readable checkpoint.json ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{f}: unknown checkpoint format {info.get('format') if isinstance(info, dict) else None!r}")
    return info


def load_tensors(f: Path) -> dict:
    """A safetensors file; a missing or damaged one is an error naming it."""
    if not f.exists():
        raise FileNotFoundError(f"{f}: missing")
    try:
        return load_file(str(f))
    except Exception as e:   # safetensors raises its own error types for damaged headers
        raise ValueError(f"{f}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """(model, info, meta) from a checkpoint folder; needs nothing but the folder (and, for the
    full model on new tweets, the TFO/VFO resources). Every file is checked against its recorded
    sha256 first."""
    path = resolve_checkpoint(path)
    info = read_info(path)
    verify_files(path, info)
    model_cfg = from_dict(ModelConfig, info["model"])
    meta = dict(info["meta"])
    enc_cfg = None
    if info.get("encoder"):
        enc_dir = path / info["encoder"]
        if not (enc_dir / "config.json").exists():
            raise FileNotFoundError(f"{enc_dir}: missing (the encoder's config and tokenizer belong in the "
                                    f"checkpoint folder)")
        try:
            enc_cfg = AutoConfig.from_pretrained(enc_dir)
        except (OSError, ValueError) as e:
            raise ValueError(f"{enc_dir / 'config.json'}: not a readable encoder config ({e})") from None
        meta["tokenizer_path"] = str(enc_dir)
    if info.get("tagger"):
        meta["tagger_path"] = str(path / info["tagger"])
    if info.get("kb"):
        meta["kb_path"] = str(path / info["kb"])
    model = build_model(model_cfg, meta, len(info["labels"]), encoder_config=enc_cfg, pretrained=False)
    weights = path / "model.safetensors"
    missing, unexpected = model.load_state_dict(load_tensors(weights), strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not fit the config (missing {missing[:3]}, "
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


def save_training_state(path: Path, model, opt, sched, state: dict, data_cfg, model_cfg, train_cfg, meta,
                        extra: dict | None = None):
    """``<output_dir>/last``: the checkpoint plus optimizer, scheduler and RNG states."""
    save_checkpoint(path, model, data_cfg, model_cfg, train_cfg, meta, extra)
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
# goes on. Every other field of the three configs must match the checkpoint's. ``train.precision``
# is compared by what it resolved to (``"auto"`` and ``"bf16"`` on a bf16 machine are the same run).
RESUME_FREE = {"data": {"cache_dir"},
               "train": {"output_dir", "epochs", "patience", "resume", "progress", "num_threads", "device",
                         "eval_batch_size", "max_epoch_steps", "precision", "missing_inputs",
                         "adamw"}}           # a resumed run keeps the optimizer it saved (load_state_dict)


def check_resumable(path: Path, data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig,
                    precision: str | None = None) -> None:
    """Raise ``ValueError`` when ``path/checkpoint.json`` was trained with other settings than the
    ones asked for now (resuming would silently mix two experiments in one folder). ``precision``:
    the resolved precision of this run (``"fp32"`` / ``"bf16"``)."""
    info = json.loads((path / "checkpoint.json").read_text())
    saved_train = upgrade_train_dict(info.get("train") or {})

    def upgraded(cls, d: dict) -> dict:   # a config of the first format, read as today's
        try:
            return to_dict(from_dict(cls, d))
        except (TypeError, ValueError):
            return d
    saved = {"data": upgraded(DataConfig, info.get("data") or {}), "model": upgraded(ModelConfig, info.get("model") or {}),
             "train": upgraded(TrainConfig, saved_train)}
    now = {"data": to_dict(data_cfg), "model": to_dict(model_cfg), "train": to_dict(train_cfg)}
    diffs = [d.replace(": saved ", ": checkpoint ", 1) for d in config_diff(saved, now, RESUME_FREE)]
    if precision is not None:
        ran = info.get("precision") or saved_train.get("precision", "fp32")
        if ran != precision:
            legacy = " (a run of the old bf16 setting: autocast on a GPU only)" if "bf16" in (info.get("train") or {}) else ""
            diffs.append(f"train.precision: checkpoint ran in {ran}{legacy}, now {precision} "
                         f"(precision={train_cfg.precision!r}); pass precision={ran!r} to resume it")
    if diffs:
        raise ValueError(f"{path.parent}: cannot resume, this folder holds a run with other settings ("
                         + "; ".join(diffs) + "). Choose another output_dir, or set resume=False to start over.")


def load_training_state(path: Path, model, opt, sched) -> dict:
    model.load_state_dict(load_tensors(path / "model.safetensors"))
    st = json.loads((path / "state.json").read_text())
    _load_optimizer(opt, load_tensors(path / "optimizer.safetensors"), st["optimizer"])
    sched_state = dict(st["scheduler"])
    sched_state["lr_lambdas"] = [None] * len(opt.param_groups)
    sched.load_state_dict(sched_state)
    rng = load_tensors(path / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    v, s, g = st["python_rng"]
    random.setstate((v, tuple(s), g))
    return st
