"""Model selection happens on the valid split, never on test.

The data make valid and test disagree on purpose: the test split has the same tweets as the valid
split with PER and LOC swapped in its gold labels. A model that learns the training data gets
valid F1 near 100 and test F1 near 0 at the same time, so selecting on test would keep an early,
untrained epoch. The check reads the trainer's test predictions (the selected model's) against
the un-swapped labels: they must be the predictions of a model that learnt, from the epoch with
the best valid F1. A second check makes the selected epoch an early one, so that scoring test with
the last epoch's model instead of the selected one is caught here too. A tiny word-level BiLSTM-CRF (random word vectors) learns this in a few
seconds; the trainer is the same one every TVOMNER setting uses."""
from __future__ import annotations

import dataclasses

import pytest

from tvolib.config import DataConfig, ModelConfig, TrainConfig
from tvolib.data import LABELS
from tvolib.evaluate import read_predictions, score

PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank"]
PLACES = ["paris", "rome", "oslo", "lima", "cairo", "delhi"]
VERBS = ["visits", "loves", "leaves", "sees"]


def tweets(n: int, offset: int, swap: bool = False) -> str:
    per, loc = ("B-LOC", "B-PER") if swap else ("B-PER", "B-LOC")
    blocks = []
    for i in range(offset, offset + n):
        words = [PEOPLE[i % 6], VERBS[i % 4], PLACES[(i // 6) % 6]]
        blocks.append(f"IMGID:{i}\n{words[0]}\t{per}\n{words[1]}\tO\n{words[2]}\t{loc}")
    return "\n\n".join(blocks) + "\n"


def unswap(labels):
    return [[{"B-PER": "B-LOC", "B-LOC": "B-PER"}.get(l, l) for l in seq] for seq in labels]


def run_trainer(tmp_path):
    """The tiny word-level BiLSTM-CRF on the data above: 6 epochs, no early stop."""
    import torch
    from tvolib.train import train
    torch.set_num_threads(1)
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.txt").write_text(tweets(48, 0))
    (d / "valid.txt").write_text(tweets(12, 100))
    (d / "test.txt").write_text(tweets(12, 100, swap=True))      # the valid tweets, PER and LOC swapped
    data = DataConfig(data_dir=str(d), image_dir=None, captions=None, phrases=None, boxes=None,
                      dataset="selection", cache_dir=str(tmp_path / "cache"))
    model = ModelConfig(arch="bilstm_crf", word_init="random", word_dim=16, lstm_hidden=16, visual="none",
                        use_candidates=False, use_knowledge=False)
    run = TrainConfig(output_dir=str(tmp_path / "run"), seed=1, epochs=6, batch_size=8, micro_batch_size=8,
                      lr=3e-3, head_lr=3e-3, warmup_ratio=0.0, patience=6, progress=False, resume=False)
    return train(data, model, run)


def test_trainer_selects_the_epoch_with_the_best_valid_f1_not_test(tmp_path):
    res = run_trainer(tmp_path)
    valid = [h["valid_f1"] for h in res["history"]]
    # the data do what this test needs: the model learns, and early epochs are worse on valid
    assert max(valid) >= 90 and min(valid) < max(valid) - 20, valid
    best = max(range(len(valid)), key=lambda i: (valid[i], -i)) + 1
    assert res["best_epoch"] == best and res["best_valid_f1"] == pytest.approx(valid[best - 1])
    assert res["valid"]["F1"] == pytest.approx(valid[best - 1])
    # the selected model's test predictions: right on the un-swapped labels, so near 0 on test
    gold, pred = read_predictions(tmp_path / "run" / "test_predictions.txt")
    learnt = score(unswap(gold), pred)
    assert 100 * learnt.f1 == pytest.approx(valid[best - 1], abs=1e-6)   # the same tweets as valid
    assert res["test"]["F1"] == pytest.approx(100 * score(gold, pred).f1) and res["test"]["F1"] < 10


def test_test_is_scored_with_the_selected_model_not_the_last_epochs(tmp_path, monkeypatch):
    """The trainer is told 100 − the real valid F1 of each epoch, so it selects the epoch that
    learnt least, not the last one, which learnt the data. The test predictions must come from
    the selected epoch's model: their F1 on the un-swapped labels (the valid tweets) is that
    epoch's real valid F1, far from the last epoch's."""
    from tvolib import train as train_module
    real_evaluate, real_valid = train_module.evaluate, []

    def told_upside_down(model, examples, *args, **kwargs):
        scores, pred = real_evaluate(model, examples, *args, **kwargs)
        if LABELS[examples[0]["labels"][0]] == "B-PER":            # the valid split (test is swapped)
            real_valid.append(100 * scores.f1)
            scores = dataclasses.replace(scores, f1=1.0 - scores.f1)
        return scores, pred

    monkeypatch.setattr(train_module, "evaluate", told_upside_down)
    res = run_trainer(tmp_path)
    selected = min(range(len(real_valid)), key=lambda i: (real_valid[i], i))
    assert res["best_epoch"] == selected + 1 and len(real_valid) == 6
    assert real_valid[-1] - real_valid[selected] > 20, real_valid        # the last epoch is another model
    gold, pred = read_predictions(tmp_path / "run" / "test_predictions.txt")
    assert 100 * score(unswap(gold), pred).f1 == pytest.approx(real_valid[selected], abs=1e-6)
