"""Trainer: determinism, resume after a kill, gradient accumulation, selection/early stopping on valid
F1, safetensors-only checkpoints, DDP (torchrun, gloo, 2 processes). Tiny random encoder on the
sample; TFO augmentations and VFO features are small stand-ins here (their own tests cover them)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tvolib.config import DataConfig, ModelConfig, TrainConfig
from test_model import D_CAP, D_IMG, tiny_encoder_config


def fake_visual_features(ds, data_cfg, model_cfg, progress=False):
    from tvolib.vfo.pipeline import VisualFeatures
    ids = [t.id for t in ds.all()]
    g = torch.Generator().manual_seed(1)
    N = len(ids)
    kinds = ["image" if t.image_path else "none" for t in ds.all()]
    return VisualFeatures(ids=ids, index={k: i for i, k in enumerate(ids)}, glob=torch.randn(N, D_IMG, generator=g),
                          glob_kind=kinds, obj=torch.randn(N, D_IMG, generator=g),
                          obj_mask=torch.tensor([k == "image" for k in kinds]), d_v=D_IMG,
                          glob_caption=torch.randn(N, D_CAP, generator=g), obj_text=torch.randn(N, D_CAP, generator=g),
                          obj_kind=kinds, d_caption=D_CAP)


def fake_augmentations(ds, data_cfg, model_cfg, progress=False):
    return {t.id: [(" ".join(t.tokens[s:e]), f"{typ.lower()} entity" if model_cfg.use_knowledge else "")
                   for s, e, typ in t.spans()][:2] for t in ds.all()}


@pytest.fixture
def stand_ins(monkeypatch):
    import tvolib.train
    import tvolib.vfo.pipeline
    monkeypatch.setattr(tvolib.vfo.pipeline, "visual_features", fake_visual_features)
    monkeypatch.setattr(tvolib.train, "_augmentations", fake_augmentations)


def cfgs(tmp_path, name="run", **train_kw):
    data = DataConfig(cache_dir=str(tmp_path / "cache"), max_length=64, max_train_samples=32, max_eval_samples=10)
    model = ModelConfig(num_heads=4, lstm_hidden=8, latent_dim=6)
    kw = dict(output_dir=str(tmp_path / name), epochs=2, batch_size=16, micro_batch_size=8, lr=1e-3,
              head_lr=1e-2, progress=False, resume=True, seed=3)
    kw.update(train_kw)
    return data, model, TrainConfig(**kw)


def weights(path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(Path(path) / "model.safetensors"))


def same_weights(a: dict, b: dict, atol=0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def test_deterministic_and_resume_after_kill_gives_same_weights(tmp_path, stand_ins):
    from tvolib.train import train
    torch.set_num_threads(1)
    enc = tiny_encoder_config()
    data, model, tr = cfgs(tmp_path, "a")
    ra = train(data, model, tr, encoder_config=enc)
    data, model, tr = cfgs(tmp_path, "b")
    rb = train(data, model, tr, encoder_config=enc)
    assert [h["step_losses"] for h in ra["history"]] == [h["step_losses"] for h in rb["history"]]
    # killed after epoch 1, started again with the same command
    data, model, tr = cfgs(tmp_path, "c")
    part = train(data, model, tr, encoder_config=enc, stop_after=1)
    assert part["interrupted"] and part["epoch"] == 1
    state = json.loads((tmp_path / "c" / "last" / "state.json").read_text())
    assert state["epoch"] == 1
    # the same folder with other settings is refused, naming what differs, and left as it was
    import dataclasses
    for d, m, t, field in ((data, model, dataclasses.replace(tr, lr=5e-4), "train.lr"),
                           (dataclasses.replace(data, max_length=48), model, tr, "data.max_length"),
                           (data, dataclasses.replace(model, gate_init=0.5), tr, "model.gate_init")):
        with pytest.raises(ValueError, match=rf"cannot resume.*{field}: checkpoint"):
            train(d, m, t, encoder_config=enc)
    assert json.loads((tmp_path / "c" / "last" / "state.json").read_text())["epoch"] == 1
    rc = train(data, model, tr, encoder_config=enc)
    assert same_weights(weights(tmp_path / "a" / "last"), weights(tmp_path / "c" / "last"))
    assert [h["step_losses"] for h in ra["history"]] == [h["step_losses"] for h in rc["history"]]
    assert ra["test"] == rc["test"]
    # full model (VFO + CFF) was trained: losses include the VAE term
    assert ra["history"][0]["l_vae"] > 0


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    from tvolib.train import train
    enc = tiny_encoder_config()
    enc.hidden_dropout_prob = enc.attention_probs_dropout_prob = 0.0
    runs = {}
    for micro in (16, 4):
        data, model, tr = cfgs(tmp_path, f"m{micro}", epochs=1, micro_batch_size=micro, max_epoch_steps=1)
        model = ModelConfig(num_heads=4, lstm_hidden=8, dropout=0.0, visual="none", use_candidates=False)
        train(data, model, tr, encoder_config=enc)
        runs[micro] = weights(tmp_path / f"m{micro}" / "last")
    # Adam's first step is lr * sign(grad): attention key biases, whose gradient is zero in exact
    # arithmetic (softmax is shift-invariant) and float noise in practice, are left out
    keep = lambda w: {k: v for k, v in w.items() if not k.endswith(("key.bias", "qkv.bias"))}
    assert same_weights(keep(runs[16]), keep(runs[4]), atol=1e-5)


def test_selection_and_early_stopping_use_valid_f1_only(tmp_path):
    from tvolib.train import train
    enc = tiny_encoder_config()
    data, model, tr = cfgs(tmp_path, "es", epochs=6, patience=2, lr=0.0, head_lr=0.0)
    model = ModelConfig(num_heads=4, lstm_hidden=8, visual="none", use_candidates=False)
    res = train(data, model, tr, encoder_config=enc)
    # nothing can improve with lr = 0: epoch 1 stays best, training stops after 1 + patience epochs
    assert res["best_epoch"] == 1 and res["epochs_run"] == 3 and res["early_stopped"]
    f1s = [h["valid_f1"] for h in res["history"]]
    assert len(set(round(f, 6) for f in f1s)) == 1
    assert "test" not in json.dumps([h.keys() for h in res["history"]], default=list)

    data, model, tr = cfgs(tmp_path, "sel", epochs=3, patience=5)
    model = ModelConfig(num_heads=4, lstm_hidden=8, visual="none", use_candidates=False)
    res = train(data, model, tr, encoder_config=enc)
    f1s = [h["valid_f1"] for h in res["history"]]
    assert res["best_epoch"] == 1 + f1s.index(max(f1s))
    assert abs(res["valid"]["F1"] - max(f1s)) < 1e-6        # best/ holds the selected epoch


def test_checkpoints_are_safetensors_and_json_only(tmp_path):
    from tvolib.train import load_checkpoint, train
    data, model, tr = cfgs(tmp_path, "ck", epochs=1)
    model = ModelConfig(num_heads=4, lstm_hidden=8, visual="none", use_candidates=False)
    train(data, model, tr, encoder_config=tiny_encoder_config())
    files = [p for p in (tmp_path / "ck").rglob("*") if p.is_file()]
    bad = [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")]
    assert not bad
    for p in files:
        assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"
    assert {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"} <= \
        {p.name for p in (tmp_path / "ck" / "last").iterdir()}
    m, info, meta = load_checkpoint(tmp_path / "ck" / "best")
    assert info["labels"][0] == "O" and info["model"]["visual"] == "none"
    assert (tmp_path / "ck" / "curves.png").stat().st_size > 0


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from tvolib.config import DataConfig, ModelConfig, TrainConfig
from tvolib.train import train
from test_model import tiny_encoder_config
enc = tiny_encoder_config()
enc.hidden_dropout_prob = enc.attention_probs_dropout_prob = 0.0
train(DataConfig(cache_dir={cache!r}, max_length=64, max_train_samples=32, max_eval_samples=10),
      ModelConfig(num_heads=4, lstm_hidden=8, dropout=0.0, visual="none", use_candidates=False),
      TrainConfig(output_dir=sys.argv[1], epochs=1, batch_size=16, micro_batch_size=8, lr=1e-3, head_lr=1e-2,
                  progress=False, seed=3, max_epoch_steps=1),
      encoder_config=enc)
"""


@pytest.mark.slow
def test_ddp_two_processes_gloo_matches_single_process(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), cache=str(tmp_path / "cache")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    r = subprocess.run(torchrun + [str(script), str(tmp_path / "ddp")], env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    r1 = subprocess.run([sys.executable, str(script), str(tmp_path / "single")], env=env, capture_output=True,
                        text=True, timeout=240)
    assert r1.returncode == 0, r1.stderr[-3000:]
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert cfg["world_size"] == 2
    # same effective batch (2 processes x 8 vs 2 micro-batches x 8), no dropout: same weights
    keep = lambda w: {k: v for k, v in w.items() if not k.endswith(("key.bias", "qkv.bias"))}
    assert same_weights(keep(weights(tmp_path / "ddp" / "last")), keep(weights(tmp_path / "single" / "last")),
                        atol=1e-5)
    assert (tmp_path / "ddp" / "results.json").exists()
