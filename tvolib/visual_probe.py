"""Training on the visual-probe benchmark (``tvolib.sample.probe``): one setting, one seed, then the
branch probe (``tvolib.probing``) on its test split. Used by notebook 06 and
``benchmarks/visual_probe.py``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .checkpoint import load_checkpoint
from .config import DEFAULT_MAX_LENGTH, DataConfig, ModelConfig, TrainConfig
from .inputs import dataset_from_config, prepare_data
from .probing import ProbeResult, branch_probe
from .resources import resolve
from .sample.probe import load_subsets, probe_json, probe_paths
from .train import train

PROBE_SETTINGS = {"full": {}, "text-only": {"visual": "none"}}


def train_on_probe(data: str, output_dir: str, setting: str = "full", seed: int = 1, *,
                   max_train_samples: int | None = 1000, epochs: int = 2, batch_size: int = 16, lr: float = 3e-5,
                   head_lr: float = 1e-3, max_length: int = DEFAULT_MAX_LENGTH, num_threads: int | None = 1,
                   cache_dir: str = "cache", model_overrides: dict | None = None, precision: str = "auto") -> dict:
    """Train one setting on a generated probe benchmark (``data``: its folder) and probe the best
    checkpoint on the test split. Both settings see the tweet alone on the text side (no candidates,
    no knowledge), so ``full`` and ``text-only`` differ only by the visual half. A finished run
    (``<output_dir>/best``) is loaded, not retrained. Returns ``model``, ``prepared``, ``result`` (the
    trainer's), ``probe`` (``ProbeResult`` on test) and ``subsets`` ({IMGID: subset})."""
    if setting not in PROBE_SETTINGS:
        raise ValueError(f"unknown probe setting {setting!r}: {list(PROBE_SETTINGS)}")
    info = probe_json(data)
    data_cfg = DataConfig(dataset=f"probe-{info['key']}", cache_dir=cache_dir, max_length=max_length,
                          max_train_samples=max_train_samples, **probe_paths(data))
    model_cfg = ModelConfig(use_candidates=False, use_knowledge=False, **PROBE_SETTINGS[setting])
    model_cfg = dataclasses.replace(model_cfg, **(model_overrides or {}))
    train_cfg = TrainConfig(output_dir=str(output_dir), seed=seed, epochs=epochs, batch_size=batch_size,
                            micro_batch_size=batch_size, lr=lr, head_lr=head_lr, num_threads=num_threads,
                            progress=False, patience=epochs, precision=precision)
    ds = dataset_from_config(data_cfg)
    res = resolve(data_cfg, model_cfg)
    prepared = prepare_data(ds, data_cfg, model_cfg, res)
    results_file = Path(output_dir) / "results.json"
    if results_file.exists() and (Path(output_dir) / "best").exists():
        result = json.loads(results_file.read_text())
    else:
        result = train(data_cfg, model_cfg, train_cfg, res=res, ds=ds, prepared=prepared)
    model, _, _ = load_checkpoint(Path(output_dir) / "best")
    saved = Path(output_dir) / "probe_test.json"           # written by the trainer with results.json
    if saved.exists():
        probe = ProbeResult.from_dict(json.loads(saved.read_text()))
    else:
        probe = branch_probe(model, prepared.examples["test"], prepared.collate, prepared.visual)
    return {"model": model, "prepared": prepared, "result": result, "probe": probe, "subsets": load_subsets(data),
            "dataset": ds}
