"""augmentations(): switches, sources, caches (provenance, resume, no work when complete)."""
import dataclasses
import json

import pytest

from tvolib.cache import JsonlCache
from tvolib.config import DataConfig, ModelConfig
from tvolib.data import entity_spans, load_dataset
from tvolib.tfo import pipeline as P
from tvolib.tfo.knowledge import LocalKB, TweetFileSource
from tvolib.resources import resolve
from tvolib.tfo.relevance import RelevanceConfig, RelevanceFilter

from test_tfo_relevance import KeywordEncoder


def aug(ds, dc, mc, **kw):
    """``augmentations`` with the resources resolved at the edge, as the input builder gets them."""
    return P.augmentations(ds, mc, resolve(dc, mc), **kw)


@pytest.fixture
def setup(tmp_path):
    dc = DataConfig(cache_dir=str(tmp_path / "cache"))
    ds = load_dataset(dc.data_dir, None, "sample", max_samples=15)
    # a complete candidate cache (gold spans stand in for the tagger here): no training
    c = JsonlCache(dc.dataset_cache / "candidates.jsonl", key="id")
    for t in ds.all():
        spans = [(s, e) for s, e, _ in entity_spans(t.labels)]
        c.append({"id": t.id, "split": t.split, "spans": spans, "source": "test",
                  "candidates": [" ".join(t.tokens[s:e]) for s, e in spans]})
    filt = RelevanceFilter(KeywordEncoder(), RelevanceConfig(threshold=0.0))
    return ds, dc, filt


def test_switches(setup):
    ds, dc, filt = setup
    none = aug(ds, dc, ModelConfig(use_candidates=False), relevance_filter=filt)
    assert set(none) == {t.id for t in ds.all()} and all(v == [] for v in none.values())
    names = aug(ds, dc, ModelConfig(use_knowledge=False), relevance_filter=filt)
    for t in ds.all():
        assert names[t.id] == [(" ".join(t.tokens[s:e]), "") for s, e, _ in entity_spans(t.labels)]
    assert not (dc.dataset_cache / "knowledge.jsonl").exists()
    with pytest.raises(ValueError, match="knowledge_source"):
        aug(ds, dc, ModelConfig(knowledge_source="bing"), relevance_filter=filt)
    assert resolve(dc, ModelConfig(use_knowledge=False)).knowledge is None       # nothing resolved that is not read


def test_local_source_cache_and_resume(setup, monkeypatch):
    ds, dc, filt = setup
    augs = aug(ds, dc, ModelConfig(knowledge_source="local"), relevance_filter=filt)
    assert (dc.dataset_cache / "kb.sqlite").exists()               # the sample's own base, built on the fly
    cov = P.coverage(augs)
    assert cov["candidates"] > 0 and 0 < cov["coverage"] <= 1
    kpath = dc.dataset_cache / "knowledge.jsonl"
    recs = [json.loads(l) for l in kpath.read_text().splitlines()]
    assert len(recs) == len(ds.all())
    r = next(r for r in recs if r["items"] and r["items"][0]["kept"])
    item = r["items"][0]
    assert r["source"] == "local" and r["settings"] and r["filter"]["k"] == 3
    assert item["passages"][0]["source"].startswith("local:") and "score" in item["kept"][0]
    assert augs[r["id"]][0] == (item["candidate"], item["knowledge"])
    # complete cache: no look-ups at all
    monkeypatch.setattr(LocalKB, "lookup", lambda *a, **k: pytest.fail("looked up with a complete cache"))
    assert aug(ds, dc, ModelConfig(), relevance_filter=filt) == augs
    # interrupted: the set is made again whole (its tweets share embeddings), to the same records
    lines = kpath.read_text().splitlines()
    kpath.write_text("\n".join(lines[:-5]) + "\n")
    calls = []
    monkeypatch.undo()
    real = LocalKB.lookup
    monkeypatch.setattr(LocalKB, "lookup", lambda self, q, k=3, tweet_id=None: calls.append(tweet_id) or real(self, q, k, tweet_id))
    again = aug(ds, dc, ModelConfig(), relevance_filter=filt)
    assert again == augs and {json.loads(l)["id"] for l in lines[-5:]} <= set(calls)
    rebuilt = {r["key"]: r for r in map(json.loads, kpath.read_text().splitlines())}
    assert all(rebuilt[r["key"]]["items"] == r["items"] for r in recs)            # the very same records
    # a quick run on part of the tweets makes its own set, and leaves the full set's records alone
    part = dataclasses.replace(ds, splits={s: t[:4] for s, t in ds.splits.items()})
    aug(part, dc, ModelConfig(), relevance_filter=filt)
    monkeypatch.setattr(LocalKB, "lookup", lambda *a, **k: pytest.fail("the full set was complete"))
    assert aug(ds, dc, ModelConfig(), relevance_filter=filt) == augs
    monkeypatch.undo()
    # other filter settings: recomputed, not served stale
    strict = RelevanceFilter(filt.encoder, RelevanceConfig(threshold=1.01, title_threshold=1.01))
    hi = aug(ds, dc, ModelConfig(), relevance_filter=strict)
    assert P.coverage(hi)["with_knowledge"] == 0 < cov["with_knowledge"]


def test_tweet_files_source(setup):
    ds, dc, filt = setup
    augs = aug(ds, dc, ModelConfig(knowledge_source="tweet_files"), relevance_filter=filt)
    assert P.coverage(augs)["coverage"] > 0.5
    recs = JsonlCache(dc.dataset_cache / "knowledge.jsonl", key="key")
    assert all(k.startswith("tweet_files|") for k in recs.keys())


def test_default_sources(setup, tmp_path, monkeypatch):
    """The edge resolves the sources once; a missing one is a clear message before any work."""
    ds, dc, _ = setup
    assert isinstance(P.knowledge_source(resolve(dc, ModelConfig(knowledge_source="tweet_files"))), TweetFileSource)
    real = DataConfig(data_dir=str(tmp_path), dataset="nowhere", cache_dir=str(tmp_path / "c"))
    monkeypatch.setenv("TVOMNER_KB_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("TVOMNER_LLM_KNOWLEDGE_DIR", str(tmp_path / "empty"))
    from tvolib.weights import ResourceMissing
    with pytest.raises(ResourceMissing, match="TVOMNER_KB_DIR"):
        resolve(real, ModelConfig(knowledge_source="local"))
    with pytest.raises(ResourceMissing, match="knowledge_file"):
        resolve(real, ModelConfig(knowledge_source="tweet_files"))
    monkeypatch.delenv("TVOMNER_KB_DIR")
    monkeypatch.setenv("TVOMNER_DATA", str(tmp_path / "root"))            # the data root's kb/ folder
    (tmp_path / "root" / "kb").mkdir(parents=True)
    (tmp_path / "root" / "kb" / "k.jsonl").write_text('{"title": "Yak", "text": "Yak is an animal."}\n')
    res = resolve(real, ModelConfig(knowledge_source="local"))
    assert res.kb_inputs == ((tmp_path / "root" / "kb" / "k.jsonl").resolve(),)
    kb_in = tmp_path / "kb.jsonl"
    kb_in.write_text('{"title": "Zed", "text": "Zed is a letter."}\n')
    own = DataConfig(data_dir=str(tmp_path), dataset="own", cache_dir=str(tmp_path / "c"), kb=str(kb_in))
    src = P.knowledge_source(resolve(own, ModelConfig(knowledge_source="local")))
    assert src.lookup("zed", 1)[0].title == "Zed"
    described = resolve(own, ModelConfig(knowledge_source="local")).describe()["knowledge"]
    assert described["kb_inputs"] == {str(kb_in.resolve()): __import__("hashlib").sha256(kb_in.read_bytes()).hexdigest()}


def test_two_tweet_files_keep_their_own_records_and_an_edited_file_is_recomputed(setup, tmp_path, monkeypatch):
    """PGIM's texts with and without type labels are two sources of one kind: switching between them
    must not recompute either, and a file edited in place must not be served from the cache."""
    ds, dc, filt = setup
    from tvolib.sample import SAMPLE_DIR
    typed = tmp_path / "typed.jsonl"
    typed.write_text((SAMPLE_DIR / "llm_knowledge.jsonl").read_text())
    untyped = tmp_path / "untyped.jsonl"
    untyped.write_text("".join(json.dumps({**r, "aux": r["aux"].upper()}) + "\n" for r in
                               map(json.loads, typed.read_text().splitlines())))
    run = lambda f: aug(ds, dc, ModelConfig(knowledge_source="tweet_files"),
                                    source=TweetFileSource(f), relevance_filter=filt)
    a, b = run(typed), run(untyped)
    assert P.coverage(a)["with_knowledge"] > 0 and a != b
    looked = []
    real = TweetFileSource.lookup
    monkeypatch.setattr(TweetFileSource, "lookup", lambda self, *x, **k: looked.append(1) or real(self, *x, **k))
    assert run(typed) == a and run(untyped) == b and not looked          # both served from the cache
    recs = [json.loads(l) for l in (dc.dataset_cache / "knowledge.jsonl").read_text().splitlines()]
    assert len(recs) == 2 * len(ds.all())
    # the typed file edited in place: its knowledge is recomputed from the new text
    typed.write_text("".join(json.dumps({**r, "aux": r["aux"].replace(" is ", " WAS ")}) + "\n" for r in
                             map(json.loads, typed.read_text().splitlines())))
    edited = run(typed)
    assert looked and edited != a
    assert any(" WAS " in kn for v in edited.values() for _, kn in v)
