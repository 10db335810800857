"""Prediction on a user's own tweets from a checkpoint alone (function and CLI), and the notebooks."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tvolib.config import DataConfig, ModelConfig, TrainConfig
from test_model import tiny_encoder_config
from test_train import stand_ins  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny text-only model trained briefly on the sample; returns (checkpoint, results, ds)."""
    from tvolib.train import dataset_from_config, train
    tmp = tmp_path_factory.mktemp("pred")
    data = DataConfig(cache_dir=str(tmp / "cache"), max_length=64)
    model = ModelConfig(num_heads=4, lstm_hidden=8, visual="none", use_candidates=False)
    tr = TrainConfig(output_dir=str(tmp / "run"), epochs=2, batch_size=16, micro_batch_size=16, lr=1e-3,
                     head_lr=1e-2, progress=False, seed=5)
    ds = dataset_from_config(data)
    res = train(data, model, tr, ds=ds, encoder_config=tiny_encoder_config())
    return Path(res["checkpoint"]), res, ds, tmp


def test_checkpoint_alone_reproduces_test_predictions(trained, tmp_path):
    from tvolib.evaluate import read_predictions
    from tvolib.predict import predict
    ckpt, res, ds, _ = trained
    moved = tmp_path / "moved_ckpt"
    shutil.copytree(ckpt, moved)                       # nothing outside the folder is needed
    out = predict(moved, ds.splits["test"])
    _, want = read_predictions(Path(res["output_dir"]) / "test_predictions.txt")
    assert [r["labels"] for r in out] == want
    for r in out:
        assert len(r["labels"]) == len(r["tokens"])
        for e in r["entities"]:
            assert e["text"] == " ".join(r["tokens"][e["start"]:e["end"]])
            assert e["type"] in ("PER", "LOC", "ORG", "MISC")


def test_read_tweets_text_and_conll(tmp_path):
    from tvolib.predict import read_tweets
    p = tmp_path / "t.txt"
    p.write_text("Obama visits Paris\n\n12345\tRT @nba : Curry scores 40\n", encoding="utf-8")
    tw = read_tweets(p)
    assert [t.id for t in tw] == ["line1", "12345"] and tw[1].tokens[0] == "RT"
    c = tmp_path / "t.conll"
    c.write_text("IMGID:9\nObama\tB-PER\nspeaks\tO\n", encoding="utf-8")
    assert read_tweets(c)[0].tokens == ["Obama", "speaks"]
    with pytest.raises(FileNotFoundError):
        read_tweets(tmp_path / "nope.txt")


def test_cli_predict_json_and_conll(trained, tmp_path):
    ckpt, _, _, _ = trained
    inp = tmp_path / "tweets.txt"
    inp.write_text("Steph Curry drops 40 in Oakland tonight\nhello world\n", encoding="utf-8")
    from tvolib.cli import main
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(inp), "--output", str(tmp_path / "o.json")]) == 0
    res = json.loads((tmp_path / "o.json").read_text())
    assert len(res) == 2 and res[0]["tokens"][0] == "Steph" and len(res[0]["labels"]) == 7
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(inp), "--format", "conll",
                 "--output", str(tmp_path / "o.conll")]) == 0
    from tvolib.data import read_conll
    tw = read_conll(tmp_path / "o.conll")
    assert [t.tokens for t in tw] == [r["tokens"] for r in res]
    assert [t.labels for t in tw] == [r["labels"] for r in res]


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    from tvolib.train import load_checkpoint
    with pytest.raises(FileNotFoundError, match="not a tvomner checkpoint"):
        load_checkpoint(tmp_path)


def test_full_model_checkpoint_predicts_new_tweets(tmp_path, stand_ins):
    """Full model (TFO + VFO stand-ins): user tweets get candidates and visual features too."""
    from tvolib.predict import predict
    from tvolib.train import train
    data = DataConfig(cache_dir=str(tmp_path / "cache"), max_length=64, max_train_samples=16,
                      max_eval_samples=8)
    model = ModelConfig(num_heads=4, lstm_hidden=8, latent_dim=6)
    import dataclasses
    from test_model import D_CAP, D_IMG  # noqa: F401
    res = train(data, model, TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=8,
                                         micro_batch_size=8, progress=False), encoder_config=tiny_encoder_config())
    out = predict(res["checkpoint"], ["Obama visits Paris", "the NBA finals"], cache_dir=str(tmp_path / "cache"))
    assert [len(r["labels"]) for r in out] == [3, 3]


@pytest.mark.slow
@pytest.mark.parametrize("nb,params", [
    ("04_train_tvomner", {"epochs": 1}),
    ("05_ablations", {"epochs": 1, "settings": ["full", "w/o VAE", "text-only"]}),
])
def test_notebook_runs_on_sample(nb, params, tmp_path):
    import papermill as pm
    out = tmp_path / f"{nb}.ipynb"
    params = dict(params, output_root=str(tmp_path / "runs")) if nb.startswith("05") else \
        dict(params, output_dir=str(tmp_path / "run"))
    pm.execute_notebook(str(REPO / "notebooks" / f"{nb}.ipynb"), str(out), parameters=params, cwd=str(REPO),
                        kernel_name="python3", progress_bar=False)
    import nbformat
    text = "".join(o.get("text", "") for c in nbformat.read(out, 4).cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "| F1 |" in text or "F1" in text


def test_cli_train_parses_hf_style_args(tmp_path, monkeypatch):
    """``tvomner train`` builds the three configs from ``--field value`` and ``--ablation``."""
    import tvolib.train
    seen = {}
    monkeypatch.setattr(tvolib.train, "train", lambda d, m, t: seen.update(d=d, m=m, t=t) or {})
    from tvolib.cli import main
    assert main(["train", "--ablation", "w/o O-V", "--image_dir", "none", "--epochs", "2", "--lr", "5e-5",
                 "--use_vae", "false", "--output_dir", str(tmp_path / "r"), "--max_length", "96"]) == 0
    assert seen["m"].visual == "global" and seen["m"].use_vae is False
    assert seen["d"].image_dir is None and seen["d"].max_length == 96
    assert seen["t"].epochs == 2 and seen["t"].lr == 5e-5
    assert main(["nope"]) == 2


def test_word_baseline_checkpoint_is_self_contained(tmp_path, monkeypatch):
    """CNN-BiLSTM-CRF with encoder-initialised word vectors: trained, then loaded and used with
    the text encoder unavailable (vocabulary and table size travel in the checkpoint)."""
    from tvolib.predict import predict
    from tvolib.train import train
    data = DataConfig(cache_dir=str(tmp_path / "cache"), max_train_samples=16, max_eval_samples=8)
    model = ModelConfig(arch="cnn_bilstm_crf", visual="none", use_candidates=False, lstm_hidden=8)
    res = train(data, model, TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=8,
                                         micro_batch_size=8, progress=False))
    import tvolib.resources
    from tvolib.resources import ResourceMissing

    def gone(name):
        raise ResourceMissing("no encoder here")
    monkeypatch.setattr(tvolib.resources, "resolve_text_encoder", gone)
    out = predict(res["checkpoint"], ["Obama visits Paris"])
    assert len(out[0]["labels"]) == 3
