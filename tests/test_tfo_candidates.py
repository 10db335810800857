"""Candidate tagger: span tags, out-of-fold predictions (no leakage), caching and resuming."""

import pytest
import torch

import tvolib.tfo.candidates as C
from tvolib.data import load_dataset
from tvolib.sample import SAMPLE_DIR
from tvolib.tfo.candidates import (CandidateTagger, TaggerConfig, fold_of, make_candidates, span_scores,
                                   span_tags, tags_to_spans)


def tiny_config():
    from transformers import BertConfig
    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)


def factory():
    return CandidateTagger.from_config(tiny_config())


@pytest.fixture
def ds():
    return load_dataset(SAMPLE_DIR / "data", None, "sample", max_samples=12)


def test_span_tags_roundtrip():
    labels = ["O", "B-PER", "I-PER", "O", "I-LOC", "B-ORG", "B-MISC", "I-ORG"]
    tags = span_tags(labels)
    assert tags == [0, 1, 2, 0, 1, 1, 1, 1]               # orphan I- starts a span (lenient rule)
    assert tags_to_spans(tags) == [(1, 3), (4, 5), (5, 6), (6, 7), (7, 8)]
    assert tags_to_spans([2, 2, 0, 1]) == [(0, 2), (3, 4)]
    assert tags_to_spans([]) == []


def test_folds_deterministic_and_used():
    ids = [f"id{i}" for i in range(200)]
    f = [fold_of(i, 3) for i in ids]
    assert f == [fold_of(i, 3) for i in ids] and set(f) == {0, 1, 2}
    assert min(f.count(x) for x in range(3)) > 40


class NoPeek(list):
    """Labels that fail the test if anything reads them (valid/test candidates must not)."""
    def _fail(self, *a, **k):
        raise AssertionError("gold labels of valid/test were read")
    __iter__ = __getitem__ = __len__ = _fail


def test_out_of_fold_no_leakage_and_cache(ds, tmp_path, monkeypatch):
    for s in ("valid", "test"):
        for t in ds[s]:
            t.labels = NoPeek()
    seen = []
    real = C.train_tagger

    def spy(tweets, cfg, model_factory=None, log=None):
        seen.append({t.id for t in tweets})
        return real(tweets, cfg, model_factory, log)
    monkeypatch.setattr(C, "train_tagger", spy)
    cfg = TaggerConfig(epochs=1, k_folds=2, batch_size=4)
    path = tmp_path / "candidates.jsonl"
    cache = make_candidates(ds, path, cfg, model_factory=factory, log=None)
    train_ids = {t.id for t in ds["train"]}
    assert len(seen) == 3 and seen[-1] == train_ids           # fold 0, fold 1, then all of train
    for t in ds.all():
        rec = cache[t.id]
        assert rec["model"] == "random:bert" and rec["config_hash"] == cfg.hash() and rec["epochs"] == 1
        assert rec["candidates"] == [" ".join(t.tokens[s:e]) for s, e in rec["spans"]]
        if t.split == "train":
            assert rec["fold"] == fold_of(t.id, 2) and t.id not in seen[rec["fold"]]   # out-of-fold
        else:
            assert rec["fold"] == "all"
    # a complete cache does no work
    monkeypatch.setattr(C, "train_tagger", lambda *a, **k: pytest.fail("retrained with a complete cache"))
    assert len(make_candidates(ds, path, cfg, model_factory=factory, log=None)) == len(ds.all())
    # interrupted run: the last records and a torn line are lost → only that group is redone
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-3]) + "\n" + lines[-3][:10])
    seen.clear()
    monkeypatch.setattr(C, "train_tagger", spy)
    with pytest.warns(UserWarning, match="incomplete"):
        cache = make_candidates(ds, path, cfg, model_factory=factory, log=None)
    assert len(seen) == 1 and seen[0] == train_ids and len(cache) == len(ds.all())


def test_training_lowers_the_loss(ds):
    torch.manual_seed(0)
    losses = []
    log = lambda m: losses.append(float(m.split("loss ")[1].split(",")[0]))
    C.train_tagger(ds["train"], TaggerConfig(epochs=6, batch_size=4, lr=1e-3, head_lr=3e-3, max_train_samples=8),
                   factory, log)
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]


def test_span_scores():
    from tvolib.data import Tweet
    tw = [Tweet("a", ["x", "y", "z"], ["B-PER", "I-PER", "B-LOC"]), Tweet("b", ["q"], ["O"])]
    cache = {"a": {"spans": [[0, 2], [1, 2]]}, "b": {"spans": [[0, 1]]}}
    s = span_scores(tw, cache)
    assert (s["n_gold"], s["n_pred"], s["n_correct"]) == (2, 3, 1)
    assert s["precision"] == 33.33 and s["recall"] == 50.0 and s["f1"] == 40.0


def test_no_train_split(tmp_path, ds):
    ds.splits.pop("train")
    with pytest.raises(ValueError, match="train"):
        make_candidates(ds, tmp_path / "c.jsonl", TaggerConfig(), model_factory=factory, log=None)
