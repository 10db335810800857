"""The redesign changed no result: the full model (tvomner+pgim, real MiniLM-L6, the sample) trains to
the figures recorded before it, loss and valid F1 per epoch, test F1, and byte-identical test
predictions, and its checkpoint folder tags the test tweets exactly as before
(``tests/data/parity_sample.json``, written by ``benchmarks/parity.py`` on the code before the change)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_sample_full_model_reproduces_the_recorded_figures_and_predictions(tmp_path):
    spec = importlib.util.spec_from_file_location("parity", REPO / "benchmarks" / "parity.py")
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    want = json.loads((REPO / "tests" / "data" / "parity_sample.json").read_text())["tvomner+pgim"]
    got = parity.snapshot(tmp_path, ("tvomner+pgim",))["tvomner+pgim"]
    assert got["train_loss"] == want["train_loss"] and got["valid_f1"] == want["valid_f1"]
    assert got["test_f1"] == want["test_f1"] and got["test_predictions_sha256"] == want["test_predictions_sha256"]
    assert got["predictor_labels"] == want["predictor_labels"]
    assert got["predictor_conll_sha256"] == want["predictor_conll_sha256"]
