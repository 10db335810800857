"""``tvomner`` command line: help texts, one-line errors, --debug, the ablation flag."""
from __future__ import annotations

import dataclasses
import json

import pytest

from tvolib.cli import main, train_parser
from tvolib.config import DataConfig, ModelConfig, TrainConfig
from test_predict import trained  # noqa: F401  (fixture: a tiny trained checkpoint)


def test_top_level_help_lists_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "predict", "ablations"):
        assert f"  {cmd} " in out
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_every_train_flag_has_a_help_text_and_its_default():
    parser = train_parser()
    by_dest = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    for cls in (DataConfig, ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert f.name in by_dest, f.name
            assert by_dest[f.name].help and by_dest[f.name].help.strip(), f"--{f.name} has no help text"
    text = parser.format_help()
    assert "--ablation" in text and "w/o VAE" in text
    assert "(default: 64)" in text and "(default: auto)" in text


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    assert main(["predict", "--checkpoint", str(tmp_path), "--input", str(missing)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError):
        main(["predict", "--checkpoint", str(tmp_path), "--input", str(missing), "--debug"])
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--epochs" in err


def test_ablation_flag_with_explicit_overrides(tmp_path, monkeypatch):
    import tvolib.cli
    seen = {}
    monkeypatch.setattr(tvolib.cli, "train", lambda d, m, t, **kw: seen.update(d=d, m=m, t=t, **kw) or {})
    assert main(["train", "--ablation", "w/o O-T-V", "--use_knowledge", "true", "--output_dir", str(tmp_path),
                 "--precision", "bf16"]) == 0
    assert seen["m"].visual == "global" and seen["m"].use_candidates is False and seen["m"].use_knowledge is True
    assert seen["t"].precision == "bf16"
    assert seen["tracking_tags"] == {"setting": "w/o O-T-V"}     # the MLflow run's tag


def test_predict_writes_only_data_on_stdout(trained, tmp_path, capsys, monkeypatch):
    from transformers.utils import logging as hf_logging
    ckpt, _, _, _ = trained
    inp = tmp_path / "t.txt"
    inp.write_text("Steph Curry drops 40\n", encoding="utf-8")
    capsys.readouterr()
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    hf_logging.enable_progress_bar()
    try:
        assert main(["predict", "--checkpoint", str(ckpt), "--input", str(inp), "--cache_dir", str(tmp_path / "c")]) == 0
        assert not hf_logging.is_progress_bar_enabled()        # no "Loading weights" bar per model opened
    finally:
        hf_logging.enable_progress_bar()
    got = capsys.readouterr()
    out = json.loads(got.out)                          # stdout is the JSON and nothing else
    assert out[0]["id"] == "line1" and len(out[0]["labels"]) == 4 and "Loading weights" not in got.err
