"""Candidate tagger: span tags, out-of-fold predictions (no leakage), caching and resuming, cache
identity (records of another tagger are never reused) and one build when several processes need it."""
import dataclasses
import json
import logging
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import torch

import tvolib.tfo.candidates as C
import tvolib.tfo.tagger as T
from tvolib.data import Dataset, Tweet, load_dataset
from tvolib.sample import SAMPLE_DIR
from tvolib.tfo.candidates import fold_of, make_candidates, span_scores
from tvolib.tfo.tagger import (CandidateTagger, TaggerConfig, ensure_tagger, load_tagger, read_tagger_info,
                               span_tags, tagger_dir, tags_to_spans, train_hash)


def tiny_config():
    from transformers import BertConfig
    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)


def factory():
    return CandidateTagger.from_config(tiny_config())


def patch_training(monkeypatch, fn):
    """``fn`` trains every tagger: the fold taggers (``make_candidates``) and the full one (``build_tagger``)."""
    for module in (C, T):
        monkeypatch.setattr(module, "train_tagger", fn)


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
    real = T.train_tagger

    def spy(tweets, cfg, model_factory=None, **kw):
        seen.append({t.id for t in tweets})
        return real(tweets, cfg, model_factory, **kw)
    patch_training(monkeypatch, spy)
    cfg = TaggerConfig(epochs=1, k_folds=2, batch_size=4)
    path = tmp_path / "candidates.jsonl"
    cache = make_candidates(ds, path, cfg, model_factory=factory)
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
    patch_training(monkeypatch, lambda *a, **k: pytest.fail("retrained with a complete cache"))
    assert make_candidates(ds, path, cfg, model_factory=factory) == cache
    # interrupted run: the last records of a fold group and a torn line are lost → only that fold is redone
    lines = path.read_text().splitlines()
    folds = [json.loads(l)["fold"] for l in lines]
    last_fold = max(i for i, f in enumerate(folds) if f != "all")
    kept = lines[:last_fold - 1] + lines[last_fold + 1:]
    path.write_text("\n".join(kept) + "\n" + lines[last_fold][:10])
    seen.clear()
    patch_training(monkeypatch, spy)
    with pytest.warns(UserWarning, match="incomplete"):
        again = make_candidates(ds, path, cfg, model_factory=factory)
    assert len(seen) == 1 and seen[0] != train_ids and len(again) == len(ds.all())
    assert again == cache                                       # the fold tagger is retrained identically


def test_training_lowers_the_loss(ds, caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="tvolib.tfo.tagger"):
        T.train_tagger(ds["train"], TaggerConfig(epochs=6, batch_size=4, lr=1e-3, head_lr=3e-3, max_train_samples=8),
                       factory)
    losses = [float(r.getMessage().split("loss ")[1].split(",")[0]) for r in caplog.records if "loss" in r.getMessage()]
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
        make_candidates(ds, tmp_path / "c.jsonl", TaggerConfig(), model_factory=factory)


# ---------------------------------------------------------------------------------------------- cache identity


def cut(full, n_train):
    """The sample cut as ``--max_train_samples n_train`` cuts it: the first tweets of train, the same
    valid and test."""
    return Dataset("sample", full.data_dir, None, {"train": full["train"][:n_train], "valid": full["valid"],
                                                   "test": full["test"]})


def test_runs_with_other_training_tweets_never_share_candidates(tmp_path, monkeypatch):
    """Run A (4 training tweets), then run B (10) with the same cache: B's valid/test candidates are
    those of B's own tagger (the one its checkpoint ships), its train candidates come from folds of
    B's training tweets, and A's records stay usable by A."""
    full = load_dataset(SAMPLE_DIR / "data", None, "sample", max_samples=10)
    a, b = cut(full, 4), cut(full, 10)
    cfg = TaggerConfig(epochs=3, k_folds=2, batch_size=4, lr=1e-2, head_lr=1e-2)
    path = tmp_path / "candidates.jsonl"
    made = []
    real = T.train_tagger
    patch_training(monkeypatch, lambda tw, c, f=None, **kw: made.append(train_hash(tw)) or real(tw, c, f, **kw))
    cand_a = make_candidates(a, path, cfg, model_factory=factory)
    cand_b = make_candidates(b, path, cfg, model_factory=factory)
    dir_a, dir_b = tagger_dir(tmp_path, cfg, a["train"]), tagger_dir(tmp_path, cfg, b["train"])
    assert dir_a != dir_b                                        # the tagger folder follows the training tweets
    assert len(made) == 6 and len(set(made)) == 6                # B trained its own two folds and full tagger
    tagger_b, info_b = load_tagger(ensure_tagger(b["train"], cfg, dir_b, factory))
    assert len(made) == 6                                        # the shipped tagger is the one that made them
    info_a = read_tagger_info(dir_a)
    assert info_a["weights_hash"] != info_b["weights_hash"]
    for split in ("valid", "test"):
        spans = tagger_b.predict([t.tokens for t in b[split]], cfg.eval_batch_size, cfg.max_length)
        for t, sp in zip(b[split], spans):
            rec = cand_b[t.id]
            assert rec["tagger"] == info_b["weights_hash"] and rec["key"] == f"{info_b['weights_hash']}|{t.id}"
            assert rec["spans"] == [list(x) for x in sp]
            assert cand_a[t.id]["tagger"] == info_a["weights_hash"]
    for t in b["train"]:
        fold_train = [u for u in b["train"] if fold_of(u.id, 2, cfg.seed) != fold_of(t.id, 2, cfg.seed)]
        assert cand_b[t.id]["train_hash"] == train_hash(fold_train) and cand_b[t.id]["tagger"] != info_b["weights_hash"]
    print("A/B: tweets whose candidates differ between the two taggers:",
          sum(cand_a[t.id]["spans"] != cand_b[t.id]["spans"] for t in b["valid"] + b["test"]))
    # both runs' records are kept: A again, and B again, do no work and get their own candidates
    assert make_candidates(a, path, cfg, model_factory=factory) == cand_a
    assert make_candidates(b, path, cfg, model_factory=factory) == cand_b
    assert len(made) == 6
    recs = [json.loads(l) for l in path.read_text().splitlines()]
    assert max(Counter(r["key"] for r in recs).values()) == 1


def test_a_saved_tagger_is_loaded_not_retrained(tmp_path, monkeypatch):
    """A cache that lost its valid/test records but kept the saved tagger: they are predicted again
    by that tagger (no training), exactly as before."""
    full = load_dataset(SAMPLE_DIR / "data", None, "sample", max_samples=6)
    cfg = TaggerConfig(epochs=1, k_folds=2, batch_size=4)
    path = tmp_path / "candidates.jsonl"
    first = make_candidates(full, path, cfg, model_factory=factory)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(l for l in lines if json.loads(l)["fold"] != "all") + "\n")
    patch_training(monkeypatch, lambda *a, **k: pytest.fail("retrained a saved tagger"))
    assert make_candidates(full, path, cfg, model_factory=factory) == first


def test_old_records_without_a_tagger_are_redone_hand_made_ones_kept(tmp_path):
    full = load_dataset(SAMPLE_DIR / "data", None, "sample", max_samples=4)
    cfg = TaggerConfig(epochs=1, k_folds=2, batch_size=4)
    path = tmp_path / "candidates.jsonl"
    t_old, t_hand = full["test"][0], full["test"][1]
    with open(path, "w") as f:
        f.write(json.dumps({"id": t_old.id, "split": "test", "spans": [[0, 1]], "candidates": ["x"],
                            "source": "tagger", "fold": "all", "config_hash": cfg.hash(),
                            "tokens_hash": C.tokens_hash(t_old.tokens)}) + "\n")
        f.write(json.dumps({"id": t_hand.id, "spans": [[0, 1]], "candidates": ["mine"], "source": "me"}) + "\n")
    c = make_candidates(full, path, cfg, model_factory=factory)
    assert "tagger" in c[t_old.id] and c[t_hand.id]["candidates"] == ["mine"]


def test_the_full_tagger_is_built_once_by_two_threads(tmp_path, monkeypatch):
    full = load_dataset(SAMPLE_DIR / "data", None, "sample", max_samples=6)
    cfg = TaggerConfig(epochs=1, k_folds=2, batch_size=4)
    path = tagger_dir(tmp_path, cfg, full["train"])
    started, real = threading.Barrier(2), T.train_tagger
    made = []
    patch_training(monkeypatch, lambda *a, **kw: made.append(1) or real(*a, **kw))
    out, errors = [], []

    def build():
        try:
            started.wait()
            out.append(ensure_tagger(full["train"], cfg, path, factory))
        except Exception as e:       # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=build) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and out == [path, path] and len(made) == 1
    assert read_tagger_info(path)["trained_on"] == 6


def test_a_tagger_in_training_does_not_hold_up_a_run_with_another_tagger(tmp_path, monkeypatch):
    """Two runs sharing a cache folder with other tagger settings (MiniLM and MPNet-base, say): while
    one trains its tagger, the other makes (or reads) its own candidates in the same file."""
    full = load_dataset(SAMPLE_DIR / "data", None, "sample", max_samples=6)
    path = tmp_path / "cache" / "candidates.jsonl"
    slow_cfg, fast_cfg = TaggerConfig(epochs=1, k_folds=2, batch_size=4), TaggerConfig(epochs=2, k_folds=2, batch_size=4)
    in_training, release, real = threading.Event(), threading.Event(), T.train_tagger

    def train(tweets, cfg, *a, **kw):
        if cfg == slow_cfg:
            in_training.set()
            assert release.wait(300)
        return real(tweets, cfg, *a, **kw)
    patch_training(monkeypatch, train)
    out = {}
    slow = threading.Thread(target=lambda: out.update(slow=make_candidates(full, path, slow_cfg, model_factory=factory)))
    slow.start()
    try:
        assert in_training.wait(120)
        fast = threading.Thread(target=lambda: out.update(fast=make_candidates(full, path, fast_cfg, model_factory=factory)))
        fast.start()
        fast.join(120)
        assert not fast.is_alive() and slow.is_alive(), "the second run waited for the first run's tagger"
    finally:
        release.set()
        slow.join(300)
    assert len(out["fast"]) == len(out["slow"]) == 18
    recs = [json.loads(l) for l in path.read_text().splitlines()]
    assert len(recs) == 36 and {r["config_hash"] for r in recs} == {slow_cfg.hash(), fast_cfg.hash()}
    assert make_candidates(full, path, fast_cfg, model_factory=factory) == out["fast"]     # both kept


TWO_PROCESSES = """
import json, sys, time
from pathlib import Path
import tvolib.tfo.candidates as C
import tvolib.tfo.tagger as T
from tvolib.data import load_dataset
from tvolib.sample import SAMPLE_DIR
from transformers import BertConfig
tmp = Path(sys.argv[1]); me = sys.argv[2]
factory = lambda: T.CandidateTagger.from_config(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
    num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
real = T.train_tagger
def counted(*a, **kw):
    start = time.time()
    time.sleep(2)                         # a slow tagger: the other process must not wait for it
    model = real(*a, **kw)
    with open(tmp / "trained.txt", "a") as f:
        f.write(json.dumps([me, len(a[0]), start, time.time()]) + "\\n")
    return model
C.train_tagger = T.train_tagger = counted
ds = load_dataset(SAMPLE_DIR / "data", None, "sample", max_samples=6)
(tmp / f"ready-{me}").touch()
while not (tmp / "go").exists():
    time.sleep(0.01)
c = C.make_candidates(ds, tmp / "cache" / "candidates.jsonl", T.TaggerConfig(epochs=1, k_folds=2, batch_size=4),
                      model_factory=factory)
(tmp / f"out-{me}.json").write_text(json.dumps(c, sort_keys=True))
"""


def test_two_processes_sharing_a_cache_build_everything_once(tmp_path):
    """Two batches starting together on one cache: the taggers are trained once, every record is
    written once, both get the same candidates, and the two fold taggers are trained side by side
    (one by each process), not one after the other."""
    procs = [subprocess.Popen([sys.executable, "-c", TWO_PROCESSES, str(tmp_path), name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("p1", "p2")]
    deadline = time.time() + 300
    while not all((tmp_path / f"ready-{n}").exists() for n in ("p1", "p2")):
        assert time.time() < deadline and all(p.poll() is None for p in procs), \
            [p.communicate()[1].decode()[-2000:] for p in procs if p.poll() is not None]
        time.sleep(0.05)
    (tmp_path / "go").touch()                                    # both start at once
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
    trained = [json.loads(l) for l in (tmp_path / "trained.txt").read_text().splitlines()]
    assert len(trained) == 3                                     # 2 folds + the full tagger, once in all
    folds = [t for t in trained if t[1] < 6]                     # fold taggers train on part of train
    assert len(folds) == 2 and {t[0] for t in folds} == {"p1", "p2"}
    assert max(t[2] for t in folds) < min(t[3] for t in folds)   # they overlap in time
    recs = [json.loads(l) for l in (tmp_path / "cache" / "candidates.jsonl").read_text().splitlines()]
    assert len(recs) == 18 and max(Counter(r["key"] for r in recs).values()) == 1
    assert (tmp_path / "out-p1.json").read_text() == (tmp_path / "out-p2.json").read_text()


def test_a_damaged_tagger_is_refused_naming_the_file(tmp_path):
    full = load_dataset(SAMPLE_DIR / "data", None, "sample", max_samples=4)
    cfg = TaggerConfig(epochs=1, k_folds=2, batch_size=4)
    path = ensure_tagger(full["train"], cfg, tagger_dir(tmp_path, cfg, full["train"]), factory)
    model, info = load_tagger(path)
    assert info["weights_hash"] == T.weights_hash(model)
    f = path / "tagger.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = bytes(4096)            # 4 KB of tensor data overwritten
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"tagger\.safetensors: the weights hash to .* as tagger.json records"):
        load_tagger(path)


def test_the_thread_count_is_part_of_the_taggers_identity_and_is_restored(ds):
    """Taggers trained under 1 and 2 CPU threads differ in their last bits, so the count is part
    of the tagger's identity (its folder and its records' key); training leaves the caller's count."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = TaggerConfig().hash()
        assert one == TaggerConfig(threads=1).hash()
        torch.set_num_threads(2)
        assert TaggerConfig().hash() != one and TaggerConfig(threads=1).hash() == one
        T.train_tagger(ds.splits["train"][:4], TaggerConfig(encoder="random:bert", epochs=1, threads=1), factory)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_candidates_are_the_same_built_at_once_or_resumed_after_a_kill(ds, tmp_path):
    """The cache holds the same records whether it was built in one go or resumed after losing its
    last records (another order of work, a second process)."""
    cfg = TaggerConfig(encoder="random:bert", epochs=1, k_folds=2, batch_size=4, threads=1)
    whole = make_candidates(ds, tmp_path / "a" / "candidates.jsonl", cfg, model_factory=factory)
    part = tmp_path / "b" / "candidates.jsonl"
    make_candidates(ds, part, cfg, model_factory=factory)
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[: len(lines) // 3]) + "\n")           # killed after a third
    code = ("import sys; sys.path.insert(0, 'tests'); from test_tfo_candidates import factory; "
            "from tvolib.data import load_dataset; from tvolib.sample import SAMPLE_DIR; "
            "from tvolib.tfo.candidates import make_candidates; from tvolib.tfo.tagger import TaggerConfig; import json; "
            "ds = load_dataset(SAMPLE_DIR / 'data', None, 'sample', max_samples=12); "
            f"c = make_candidates(ds, {str(part)!r}, TaggerConfig(encoder='random:bert', epochs=1, k_folds=2, "
            "batch_size=4, threads=1), model_factory=factory); print(json.dumps({k: r['spans'] for k, r in c.items()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(SAMPLE_DIR.parents[1]))
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    assert resumed == {k: r["spans"] for k, r in whole.items()}


def test_a_stopped_tagger_training_resumes_to_the_same_weights(ds, tmp_path, caplog):
    cfg = TaggerConfig(epochs=2, batch_size=4)
    straight = T.train_tagger(ds["train"], cfg, factory)
    ckpt = tmp_path / "t.training.pt"
    for stop in (2, 4):        # mid-epoch, then at an epoch's end (9 tweets: 3 steps an epoch)
        with pytest.raises(T._Stopped):
            T.train_tagger(ds["train"], cfg, factory, checkpoint=ckpt, _stop_after_steps=stop)
        assert ckpt.exists()
    with caplog.at_level(logging.INFO, logger="tvolib.tfo.tagger"):
        resumed = T.train_tagger(ds["train"], cfg, factory, checkpoint=ckpt)
    assert "resuming" in caplog.text and not ckpt.exists()             # removed once training ends
    assert T.weights_hash(resumed) == T.weights_hash(straight)
    # a checkpoint cut short by a kill: set aside, training starts again (same weights)
    ckpt.write_bytes(b"PK\x03\x04 torn")
    assert T.weights_hash(T.train_tagger(ds["train"], cfg, factory, checkpoint=ckpt)) == T.weights_hash(straight)
    assert (tmp_path / "t.training.pt.unreadable").exists() and not ckpt.exists()


def test_make_candidates_resumes_a_stopped_fold_tagger(ds, tmp_path, monkeypatch):
    cfg = TaggerConfig(epochs=1, k_folds=2, batch_size=4)
    whole = make_candidates(ds, tmp_path / "a" / "c.jsonl", cfg, model_factory=factory)
    real = T.train_tagger
    monkeypatch.setattr(C, "train_tagger", lambda *a, **k: real(*a, **k, _stop_after_steps=1))
    with pytest.raises(T._Stopped):
        make_candidates(ds, tmp_path / "b" / "c.jsonl", cfg, model_factory=factory)
    assert [p.name for p in (tmp_path / "b").glob("tagger-*.training.pt")]
    monkeypatch.setattr(C, "train_tagger", real)
    assert make_candidates(ds, tmp_path / "b" / "c.jsonl", cfg, model_factory=factory) == whole
    assert not list((tmp_path / "b").glob("tagger-*.training.pt"))
