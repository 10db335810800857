"""Trainer: determinism, resume after a kill, gradient accumulation, selection/early stopping on valid
F1, safetensors-only checkpoints, DDP (torchrun, gloo, 2 processes). Tiny random encoder on the
sample; TFO augmentations and VFO features are small stand-ins here (their own tests cover them)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tvolib.config import DataConfig, ModelConfig, TrainConfig
from test_model import D_CAP, D_IMG, tiny_encoder_config


def fake_visual_features(ds, model_cfg, res, side, progress=False):
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


def fake_augmentations(ds, model_cfg, res, progress=False, tagger=None, source=None):
    return {t.id: [(" ".join(t.tokens[s:e]), f"{typ.lower()} entity" if model_cfg.use_knowledge else "")
                   for s, e, typ in t.spans()][:2] for t in ds.all()}


@pytest.fixture
def stand_ins(monkeypatch):
    import tvolib.inputs
    monkeypatch.setattr(tvolib.inputs, "visual_features", fake_visual_features)
    monkeypatch.setattr(tvolib.inputs, "augmentations", fake_augmentations)
    monkeypatch.setattr(tvolib.inputs, "candidate_tagger", lambda *a, **k: None)


def cfgs(tmp_path, name="run", **train_kw):
    data = DataConfig(cache_dir=str(tmp_path / "cache"), max_length=64, max_train_samples=32, max_eval_samples=10)
    model = ModelConfig(num_heads=4, lstm_hidden=8, latent_dim=6)
    kw = dict(output_dir=str(tmp_path / name), epochs=2, batch_size=16, micro_batch_size=8, lr=1e-3,
              head_lr=1e-2, progress=False, resume=True, seed=3, precision="fp32")   # exact comparisons
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
                           (data, dataclasses.replace(model, gate_init=0.75), tr, "model.gate_init")):
        with pytest.raises(ValueError, match=rf"cannot resume.*{field}: checkpoint"):
            train(d, m, t, encoder_config=enc)
    assert json.loads((tmp_path / "c" / "last" / "state.json").read_text())["epoch"] == 1
    rc = train(data, model, tr, encoder_config=enc)
    assert same_weights(weights(tmp_path / "a" / "last"), weights(tmp_path / "c" / "last"))
    assert [h["step_losses"] for h in ra["history"]] == [h["step_losses"] for h in rc["history"]]
    assert ra["test"] == rc["test"]
    # full model (VFO + CFF) was trained: losses include the VAE term
    assert ra["history"][0]["l_vae"] > 0


def test_an_interrupted_scoring_resumes_with_the_next_pass_and_never_reuses_other_weights(tmp_path, stand_ins,
                                                                                          monkeypatch):
    import tvolib.train
    from tvolib.train import train
    torch.set_num_threads(1)
    enc = tiny_encoder_config()
    data, model, tr = cfgs(tmp_path, "s")
    full = train(data, model, tr, encoder_config=enc)
    scoring = tmp_path / "s" / "scoring"
    assert sorted(p.stem for p in scoring.glob("*.json")) == [
        "probe_test", "test", "test.neither", "test.no_knowledge", "test.no_visual",
        "valid.neither", "valid.no_knowledge", "valid.no_visual"]
    # killed during the last passes: two never written, one damaged
    (scoring / "valid.neither.json").unlink()
    (scoring / "valid.no_visual.json").unlink()
    (scoring / "test.no_visual.json").write_text('{"checkpoint": {"best_epoch"')
    # one encoder pass per split and knowledge: the visual variants and the probes share it
    import tvolib.scoring
    passes = []
    variants = tvolib.scoring.predict_visual_variants
    monkeypatch.setattr(tvolib.scoring, "predict_visual_variants",
                        lambda m, ex, v, *a, **k: passes.append(sorted(v)) or variants(m, ex, v, *a, **k))
    again = train(data, model, tr, encoder_config=enc)          # the same command again
    probe = ["probe:gate=0", "probe:gate=1", "probe:learned", "probe:shuffled"]
    assert passes == [probe + ["test", "test.no_visual"], ["valid.no_visual"], ["valid.neither", "valid.no_knowledge"]]
    for key in ("test", "test_scores", "probe", "missing_inputs", "missing_inputs_valid"):
        assert again[key] == full[key], key
    # other weights in best/ (same epoch and valid F1): every pass is run again
    best = tmp_path / "s" / "best" / "model.safetensors"
    os.utime(best, ns=(best.stat().st_atime_ns, best.stat().st_mtime_ns + 1_000_000))
    passes.clear()
    assert train(data, model, tr, encoder_config=enc)["missing_inputs"] == full["missing_inputs"]
    assert len(passes) == 4


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
    now = json.loads((Path(tr.output_dir) / "progress.json").read_text())     # the batch's live line reads it
    assert now["epoch"] == 3 and 0 < now["step"] <= now["steps"] and now["seconds"] >= 0
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
    import matplotlib
    import matplotlib.pyplot as plt
    from tvolib.checkpoint import load_checkpoint
    from tvolib.train import train
    data, model, tr = cfgs(tmp_path, "ck", epochs=1)
    model = ModelConfig(num_heads=4, lstm_hidden=8, visual="none", use_candidates=False)
    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    train(data, model, tr, encoder_config=tiny_encoder_config())
    # the curve plot is written without pyplot: a notebook's backend and figures are left alone
    assert matplotlib.get_backend() == backend and plt.get_fignums() == figures
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
                  progress=False, seed=3, max_epoch_steps=1, precision="fp32"),
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


# ---------------------------------------------------------------------------------------------- precision

FLAGS = "processor\t: 0\nflags\t\t: fpu vme sse2 avx2 {}\nbugs\t\t: spectre\n"


def test_auto_precision_follows_the_cpu_flags():
    from tvolib.device import resolve_precision
    assert resolve_precision("auto", "cpu", FLAGS.format("amx_bf16 amx_tile")) == "bf16"
    assert resolve_precision("auto", "cpu", FLAGS.format("avx512f avx512_bf16")) == "bf16"
    assert resolve_precision("auto", "cpu", FLAGS.format("avx512f")) == "fp32"
    assert resolve_precision("auto", "cpu", "") == "fp32"
    assert resolve_precision("fp32", "cpu", FLAGS.format("amx_bf16")) == "fp32"
    assert resolve_precision("bf16", "cpu", FLAGS.format("")) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")


def test_bf16_without_bf16_units_is_said_in_one_line():
    from tvolib.device import slow_bf16
    assert "emulated" in slow_bf16("bf16", "cpu", FLAGS.format("avx512f"))
    assert slow_bf16("bf16", "cpu", FLAGS.format("avx512_bf16")) is None
    assert slow_bf16("fp32", "cpu", FLAGS.format("")) is None


def test_default_precision_is_fp32_because_bf16_cost_f1():
    # bf16 cost the full model about 0.7 F1 on Twitter-2017; it is opt-in ("auto" / "bf16")
    from tvolib.device import resolve_precision
    assert TrainConfig().precision == "fp32"
    assert resolve_precision(TrainConfig().precision, "cpu", FLAGS.format("amx_bf16")) == "fp32"


def test_old_bf16_field_is_read_as_precision():
    from tvolib.config import from_dict
    old = {k: v for k, v in TrainConfig().__dict__.items() if k != "precision"}
    cfg = from_dict(TrainConfig, {**old, "bf16": True, "device": "cpu"})
    assert cfg.precision == "fp32"            # the old bf16 meant autocast on a GPU only
    assert from_dict(TrainConfig, {**old, "bf16": False}).precision == "fp32"


def test_bf16_on_cpu_runs_the_encoder_in_bf16_and_the_crf_in_fp32():
    from test_model import build, make_batch, tiny_cfg
    from tvolib.device import autocast
    torch.manual_seed(0)
    model = build(tiny_cfg())
    seen = {}
    linear = next(m for n, m in model.text.named_modules() if isinstance(m, torch.nn.Linear))

    def hook(name, get):
        def f(module, inputs, output):
            seen.setdefault(name, get(output))   # returns None: the output is left as it is
        return f
    linear.register_forward_hook(hook("encoder", lambda o: o.dtype))
    model.lstm.register_forward_hook(hook("lstm", lambda o: o[0].data.dtype))
    with autocast("cpu", "bf16"):
        out = model(make_batch())
    assert seen["encoder"] == torch.bfloat16 and seen["lstm"] == torch.float32
    assert out["emissions"].dtype == torch.float32 and out["loss"].dtype == torch.float32
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    seen.clear()
    with autocast("cpu", "fp32"):
        model(make_batch())
    assert seen["encoder"] == torch.float32


def test_resolved_precision_is_recorded_and_resume_checks_it(tmp_path, stand_ins, monkeypatch):
    from tvolib.train import train
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-written")
    monkeypatch.setenv("TVOMNER_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    enc = tiny_encoder_config()
    data, model, tr = cfgs(tmp_path, "p", epochs=2, precision="bf16", max_epoch_steps=1)
    model = ModelConfig(num_heads=4, lstm_hidden=8, visual="none", use_candidates=False)
    part = train(data, model, tr, encoder_config=enc, stop_after=1)
    text = (tmp_path / "p" / "config.json").read_text()
    cfg = json.loads(text)
    assert cfg["precision"] == "bf16"
    # the stages around the model are recorded as nested sub-configs; keys never are
    res = cfg["resources"]
    assert {"tagger", "relevance", "knowledge", "llm", "grounding"} <= set(res)
    assert res["llm"]["base_url"] == "http://127.0.0.1:9/v1" and res["llm"]["api_key_set"] is True
    assert res["knowledge"] == {"source": None} and res["tagger"]["max_length"] > 0   # no knowledge read
    assert "sk-never-written" not in text
    import dataclasses
    with pytest.raises(ValueError, match=r"train.precision: checkpoint ran in bf16, now fp32"):
        train(data, model, dataclasses.replace(tr, precision="fp32"), encoder_config=enc)
    res = train(data, model, tr, encoder_config=enc)
    assert res["precision"] == "bf16" and math.isfinite(res["history"][-1]["train_loss"])
    assert json.loads((tmp_path / "p" / "best" / "checkpoint.json").read_text())["precision"] == "bf16"


def test_zero_valid_f1_is_warned_about_with_the_step_count(tmp_path, caplog, monkeypatch):
    import tvolib.train
    from tvolib.data import LABELS
    from tvolib.evaluate import score
    from tvolib.train import train

    def tags_nothing(model, examples, *a, **k):     # a model that has not learned yet: all "O"
        gold = [[LABELS[j] for j in e["labels"]] for e in examples]
        pred = [["O"] * len(g) for g in gold]
        return score(gold, pred), pred
    monkeypatch.setattr(tvolib.train, "evaluate", tags_nothing)
    data, model, tr = cfgs(tmp_path, "z", epochs=1, batch_size=64, micro_batch_size=16)
    model = ModelConfig(num_heads=4, lstm_hidden=8, visual="none", use_candidates=False)
    with caplog.at_level("INFO", logger="tvolib"):
        res = train(data, model, tr, encoder_config=tiny_encoder_config())
    assert res["best_valid_f1"] == 0.0
    warned = [r for r in caplog.records if r.levelname == "WARNING" and r.name == "tvolib.train"]
    assert any("valid F1 is 0.00 after epoch 1" in r.getMessage() and "32 tweets / batch_size 64 = 1 step(s)"
               in r.getMessage() for r in warned)
    assert any(r.getMessage().startswith("epoch 1:") for r in caplog.records)
    assert any("smaller batch_size" in w for w in res["warnings"])


# ---------------------------------------------------------------------------------------------- refactor parity

# Recorded with the trainer as one module (tvolib/train.py before it was split into inputs, assemble,
# checkpoint, evaluate and viz), 1 thread, fp32, on this project's CPU machine; the split must
# reproduce them. Tiny random encoder, TFO/VFO stand-ins, the whole sample, 12 epochs.
BEFORE_SPLIT = {
    "full": {"train_loss": [20.640726, 11.669011, 10.060388, 9.668194, 9.072502, 7.750702, 6.508398, 5.571439, 4.978897, 4.71468, 4.504636, 4.451953],
             "valid_f1": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.878, 22.2222, 11.3208, 10.9091, 10.5263],
             "test_f1": 7.8431},
    "text": {"train_loss": [21.797046, 12.353414, 10.03872, 9.63061, 9.404423, 8.518922, 7.408503, 6.344404, 5.603629, 5.327273, 4.963421, 4.927177],
             "valid_f1": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 19.5122, 10.2564, 9.7561, 16.6667, 16.6667],
             "test_f1": 5.0},
}


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["full", "text"])
def test_the_split_trainer_reproduces_the_recorded_sample_run(tmp_path, stand_ins, setting):
    from tvolib.train import train
    torch.set_num_threads(1)
    # cross_norm="post", gate_init=0.95: the CFF configuration the figures were recorded with (not the defaults)
    mk = (dict(num_heads=4, lstm_hidden=16, latent_dim=6, dropout=0.1, cross_norm="post", gate_init=0.95)
          if setting == "full" else
          dict(num_heads=4, lstm_hidden=16, dropout=0.1, visual="none", use_candidates=False))
    data = DataConfig(cache_dir=str(tmp_path / "cache"), max_length=64)
    tr = TrainConfig(output_dir=str(tmp_path / setting), epochs=12, patience=20, batch_size=8, micro_batch_size=8,
                     lr=1e-3, head_lr=5e-3, progress=False, seed=11, resume=False, precision="fp32",
                     adamw="torch-default")          # the optimizer of the recording
    res = train(data, ModelConfig(**mk), tr, encoder_config=tiny_encoder_config())
    want = BEFORE_SPLIT[setting]
    assert [h["train_loss"] for h in res["history"]] == pytest.approx(want["train_loss"], rel=1e-4)
    assert [h["valid_f1"] for h in res["history"]] == pytest.approx(want["valid_f1"], abs=1e-3)
    assert res["test"]["F1"] == pytest.approx(want["test_f1"], abs=1e-3)


def test_a_run_saved_with_the_old_bf16_field_resumes_in_fp32_or_is_refused_clearly(tmp_path, stand_ins):
    from tvolib.train import train
    enc = tiny_encoder_config()
    data, model, tr = cfgs(tmp_path, "old", epochs=2, max_epoch_steps=1)
    model = ModelConfig(num_heads=4, lstm_hidden=8, visual="none", use_candidates=False)
    train(data, model, tr, encoder_config=enc, stop_after=1)
    f = tmp_path / "old" / "last" / "checkpoint.json"
    info = json.loads(f.read_text())            # as written before precision existed
    info.pop("precision")
    info["train"].pop("precision")
    info["train"]["bf16"] = True
    f.write_text(json.dumps(info))
    import dataclasses
    with pytest.raises(ValueError, match=r"ran in fp32 \(a run of the old bf16 setting.*pass precision='fp32'"):
        train(data, model, dataclasses.replace(tr, precision="bf16"), encoder_config=enc)
    res = train(data, model, dataclasses.replace(tr, precision="fp32"), encoder_config=enc)
    assert res["epochs_run"] == 2 and res["precision"] == "fp32"


# ---------------------------------------------------------------------------------------------- batching


def test_epoch_batches_keep_the_random_order_unless_grouped_by_length():
    from tvolib.train import epoch_batches
    g = lambda: torch.Generator().manual_seed(5)
    lengths = [int(x) for x in torch.randint(5, 90, (203,), generator=torch.Generator().manual_seed(0))]
    plain = epoch_batches(lengths, 16, g())
    assert plain == [torch.randperm(203, generator=g()).tolist()[k:k + 16] for k in range(0, 203, 16)]
    grouped = epoch_batches(lengths, 16, g(), group_by_length=True, window=4)
    assert sorted(i for b in grouped for i in b) == list(range(203))          # every tweet once
    assert grouped == epoch_batches(lengths, 16, g(), group_by_length=True, window=4)   # deterministic
    assert grouped != epoch_batches(lengths, 16, torch.Generator().manual_seed(6), group_by_length=True, window=4)
    padded = lambda bs: sum(max(lengths[i] for i in b) * len(b) for b in bs)
    assert padded(grouped) < 0.8 * padded(plain)

    first = [b[0] for b in grouped]           # batches are shuffled, not served longest first
    assert [lengths[i] for i in first] != sorted((lengths[i] for i in first), reverse=True)


def test_group_by_length_trains_and_an_older_checkpoint_without_the_field_resumes(tmp_path, stand_ins):
    from tvolib.train import train
    data, model, tr = cfgs(tmp_path, "g", epochs=1, group_by_length=True, max_epoch_steps=1)
    res = train(data, model, tr, encoder_config=tiny_encoder_config())
    assert res["train"]["group_by_length"] is True and res["epochs_run"] == 1
    # a checkpoint written before the field existed resumes under the default
    data, model, tr = cfgs(tmp_path, "old", epochs=2, max_epoch_steps=1)
    train(data, model, tr, encoder_config=tiny_encoder_config(), stop_after=1)
    ck = tmp_path / "old" / "last" / "checkpoint.json"
    info = json.loads(ck.read_text())
    del info["train"]["group_by_length"]
    ck.write_text(json.dumps(info))
    res = train(data, model, tr, encoder_config=tiny_encoder_config())
    assert res["epochs_run"] == 2


def test_predictions_come_back_in_the_examples_order_whatever_the_batching(tmp_path, stand_ins):
    from tvolib.assemble import build_model
    from tvolib.evaluate import predict_examples
    from tvolib.inputs import dataset_from_config, prepare_data
    data, model_cfg, _ = cfgs(tmp_path)
    from tvolib.resources import resolve
    prepared = prepare_data(dataset_from_config(data), data, model_cfg, resolve(data, model_cfg))
    torch.manual_seed(0)
    model = build_model(model_cfg, prepared.meta, encoder_config=tiny_encoder_config())
    ex = prepared.examples["train"]
    assert len({len(e["input_ids"]) for e in ex}) > 3           # lengths differ: sorting reorders them
    one_by_one = [predict_examples(model, [e], prepared.collate, batch_size=1)[0] for e in ex]
    assert predict_examples(model, ex, prepared.collate, batch_size=7) == one_by_one
    assert [len(p) for p in one_by_one] == [len(e["labels"]) for e in ex]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_visual_variants_share_the_encoder_pass_and_predict_as_their_own_passes(tmp_path, stand_ins, precision):
    from tvolib.assemble import build_model
    from tvolib.evaluate import predict_examples, predict_visual_variants
    from tvolib.inputs import dataset_from_config, prepare_data, withheld
    from tvolib.resources import resolve
    data, model_cfg, _ = cfgs(tmp_path)
    prepared = prepare_data(dataset_from_config(data), data, model_cfg, resolve(data, model_cfg))
    torch.manual_seed(0)
    model = build_model(model_cfg, prepared.meta, encoder_config=tiny_encoder_config())
    with torch.no_grad():          # the cross-modal output starts at zero: make the visual input count
        for prm in model.cff.parameters():
            prm.add_(0.2 * torch.randn_like(prm))
    ex = prepared.examples["train"]
    collates = {"all": prepared.collate, "no_visual": withheld(prepared, "train", visual=True)[1]}
    calls = []
    text_features = model.text_features
    model.text_features = lambda b: calls.append(1) or text_features(b)
    together, _ = predict_visual_variants(model, ex, collates, batch_size=7, precision=precision)
    assert len(calls) == math.ceil(len(ex) / 7)                        # one encoder pass a batch
    model.text_features = text_features
    for name, coll in collates.items():
        assert together[name] == predict_examples(model, ex, coll, batch_size=7, precision=precision), name
    assert together["all"] != together["no_visual"]                    # the visual input matters here


def test_fused_adamw_is_the_default_recorded_and_matches_torchs_default(tmp_path, stand_ins):
    from tvolib.config import from_dict
    from tvolib.train import train
    assert TrainConfig().adamw == "fused"
    assert from_dict(TrainConfig, {"output_dir": "x"}).adamw == "torch-default"     # a config of the first format
    runs = {}
    for impl in ("fused", "torch-default"):
        data, model, tr = cfgs(tmp_path, impl, epochs=1, max_epoch_steps=2, adamw=impl)
        res = train(data, model, tr, encoder_config=tiny_encoder_config())
        assert res["train"]["adamw"] == impl
        # the branch probe scores the model as the test split was scored, and keeps every tweet
        assert res["probe"]["f1"]["learned"] == pytest.approx(res["test"]["F1"], abs=0.006)
        per_tweet = json.loads((tmp_path / impl / "probe_test.json").read_text())
        assert len(per_tweet["ids"]) == len(per_tweet["gate"]) == 10 and set(per_tweet["pred"]) >= {"shuffled"}
        runs[impl] = weights(tmp_path / impl / "last")
    # the same update, another kernel. The key third of Eq. 1's qkv bias is left out: softmax ignores a
    # shift shared by every key, so that bias's gradient is rounding noise, which Adam scales up to
    # steps of size lr whose sign either kernel's rounding may flip.
    fused, default = runs["fused"], runs["torch-default"]
    for w in (fused, default):
        bias = w["text.attn.qkv.bias"]
        d = bias.numel() // 3
        w["text.attn.qkv.bias"] = torch.cat([bias[:d], bias[2 * d:]])
    assert same_weights(fused, default, atol=1e-5)
    data, model, tr = cfgs(tmp_path, "bad", adamw="sgd")
    with pytest.raises(ValueError, match="TrainConfig.adamw"):
        train(data, model, tr, encoder_config=tiny_encoder_config())
