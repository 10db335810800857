"""TFO pipeline: candidates → knowledge → relevance filter → ``(candidate, knowledge)`` per tweet.

``augmentations(ds, model_cfg, res)`` is what the input builder calls, for training and prediction
alike; ``res`` (``tvolib.resources.Resources``) says where the caches are and which knowledge source
the model reads. Two caches under ``res.dataset_cache``:

* ``candidates.jsonl`` — one record per tweet. Training: ``tvolib.tfo.candidates.make_candidates``
  (k-fold on train, the full tagger on valid/test; trained only when tweets are missing). Prediction
  (a ``tagger`` is given, the checkpoint's): keyed by the tagger's weights hash and the tweet's id.
* ``knowledge.jsonl`` — one record per (source, settings, set of tweets, tweet), key
  ``"<source>|<settings>|<members>|<IMGID>"``: for every candidate the query, the retrieved passages
  (title, source, score, match) and the kept sentences with their relevance scores. ``settings``
  hashes the filter settings, k and the source's identity (for per-tweet files, their content), so two
  sources of one kind (e.g. PGIM's texts with and without type labels) keep their own records side by
  side. ``members`` hashes the tweets computed together (ids, texts, candidates): sentence embeddings
  are shared between the tweets of a set and depend on the batch they were computed in, so the
  records of a set are made whole, in its order, from no embedding; a set with any record missing
  (an interrupted build) is made again whole, and a quick run's subset never lends its records to
  the full set.

Knowledge sources (``res.knowledge``): ``"local"`` (the base ``res.kb``, built once from
``res.kb_inputs``), ``"wikipedia"`` (live, cached in ``res.wiki_cache``), ``"tweet_files"``
(``res.knowledge_file``).
"""
from __future__ import annotations

import logging
from pathlib import Path

from tqdm.auto import tqdm

from ..cache import JsonlCache, stable_hash
from .candidates import make_candidates
from .knowledge import KnowledgeSource, LocalKB, TweetFileSource, WikipediaSource, build_kb
from .relevance import RelevanceConfig, RelevanceFilter
from .tagger import CandidateTagger

log = logging.getLogger(__name__)


def ensure_kb(out: Path, inputs: list[Path]) -> Path:
    """Build ``out`` from ``inputs`` unless it exists and was built from the same files."""
    inputs = [Path(p).resolve() for p in inputs]
    if out.exists():
        try:
            kb = LocalKB(out)
            same = kb.meta.get("inputs") == [str(p) for p in inputs]
            kb.close()
            if same:
                return out
        except Exception:
            pass
    build_kb(out, inputs)
    return out


def knowledge_source(res) -> KnowledgeSource:
    """The knowledge source that ``res`` names (``tvolib.resources.Resources``)."""
    if res.knowledge == "local":
        return LocalKB(ensure_kb(res.kb, list(res.kb_inputs)) if res.kb_inputs else res.kb)
    if res.knowledge == "wikipedia":
        return WikipediaSource(res.wiki_cache, res.wikipedia, offline=res.wiki_offline)
    if res.knowledge == "tweet_files":
        return TweetFileSource(res.knowledge_file)
    raise ValueError(f"no knowledge source to open (knowledge={res.knowledge!r})")


def _source_id(src: KnowledgeSource) -> str:
    if isinstance(src, LocalKB):
        return f"local:{src.meta.get('built_at')}:{src.meta.get('n_docs')}"
    if isinstance(src, TweetFileSource):
        return f"tweet_files:{','.join(p.name for p in src.paths)}@{src.fingerprint}"
    if isinstance(src, WikipediaSource):
        return f"wikipedia:{src.cfg.api_url}"
    return src.name


def retrieve(ds, cache_path: str | Path, candidates, source: KnowledgeSource, filt_cfg: RelevanceConfig | None = None,
             k: int = 3, progress: bool = False, filt: RelevanceFilter | None = None) -> dict[str, dict]:
    """Fill ``knowledge.jsonl`` (passages and kept sentences for every candidate of every tweet) and
    return each tweet's record: ``{tweet id: record}``."""
    filt_cfg = filt.cfg if filt is not None else (filt_cfg or RelevanceConfig())
    cache = JsonlCache(cache_path, key="key")
    settings = stable_hash(filt_cfg.hash(), k, _source_id(source))
    tweets = ds.all()
    # the tweets computed together: a sentence embedded for one tweet is reused by the next ones,
    # and an embedding depends on its batch, so records are made for the whole set in its order
    members = stable_hash([(t.id, t.text, candidates[t.id]["candidates"]) for t in tweets], n=12)
    out = {}
    for t in tweets:
        rec = cache.get(f"{source.name}|{settings}|{members}|{t.id}")
        if rec is None or rec.get("candidates") != candidates[t.id]["candidates"]:
            break
        out[t.id] = rec
    else:
        return out
    filt = filt or RelevanceFilter(cfg=filt_cfg)
    filt.forget()                                   # the set starts from no embedding, as a fresh process
    out = {}
    for t in tqdm(tweets, desc=f"knowledge ({source.name})", disable=not progress):
        cands = candidates[t.id]["candidates"]
        items = []
        if cands:
            found = [source.lookup(c, k, tweet_id=t.id) for c in cands]
            sents = [s["text"] for ps in found for s in filt.sentences(ps)]
            embs = filt.embed([t.text] + sents)          # one batch per tweet (cached sentences skipped)
            for c, ps in zip(cands, found):
                kept = filt.filter(t.text, ps, tweet_emb=embs[0])
                items.append({"candidate": c, "query": c,
                              "passages": [{"title": p.title, "source": p.source, "score": p.score,
                                            "match": p.match} for p in ps],
                              "kept": kept, "knowledge": " ".join(s["text"] for s in kept)})
        rec = {"key": f"{source.name}|{settings}|{members}|{t.id}", "id": t.id, "split": t.split,
               "source": source.name, "source_id": _source_id(source), "candidates": cands, "items": items,
               "settings": settings, "members": members,
               "filter": {"threshold": filt_cfg.threshold, "budget": filt_cfg.budget, "encoder": filt_cfg.encoder,
                          "k": k}}
        cache.append(rec)
        out[t.id] = rec
    return out


def tag_candidates(tweets, tagger: CandidateTagger, tagger_info: dict, cache_path: Path) -> dict[str, dict]:
    """Candidates of new tweets from a trained tagger (a checkpoint's), cached by the tagger's
    weights hash, the set of tweets tagged together (tagged in batches, so made whole) and the tweet
    id (prediction ids are content hashes): ``{tweet id: record}``."""
    tag_id = tagger_info.get("weights_hash") or stable_hash(tagger_info)
    tag_id = f"{tag_id}|{stable_hash([t.id for t in tweets], n=12)}"
    cache = JsonlCache(cache_path, key="key")
    todo = list(tweets) if any(f"{tag_id}|{t.id}" not in cache for t in tweets) else []
    if todo:
        tcfg = tagger_info.get("config", {})
        spans = tagger.predict([t.tokens for t in todo], tcfg.get("eval_batch_size", 64), tcfg.get("max_length", 128))
        for t, sp in zip(todo, spans):
            cache.append({"key": f"{tag_id}|{t.id}", "tagger": tag_id, "spans": [list(x) for x in sp],
                          "candidates": [" ".join(t.tokens[s:e]) for s, e in sp]})
    return {t.id: cache[f"{tag_id}|{t.id}"] for t in tweets}


def augmentations(ds, model_cfg, res, progress: bool = False, tagger: tuple[CandidateTagger, dict] | None = None,
                  k: int = 3, source: KnowledgeSource | None = None,
                  relevance_filter: RelevanceFilter | None = None) -> dict[str, list[tuple[str, str]]]:
    """For every tweet id of every split: ``[(candidate, kept knowledge), ...]`` in tweet order.

    ``use_candidates=False`` → empty lists; ``use_knowledge=False`` → knowledge ``""``. Candidates
    come from ``tagger`` (a trained ``(model, info)``, prediction) or from the dataset's own tagger
    (``res.tagger``, training); ``source`` replaces the knowledge source that ``res`` names.
    """
    tweets = ds.all()
    if not model_cfg.use_candidates:
        return {t.id: [] for t in tweets}
    cache_dir = Path(res.dataset_cache)
    if tagger is not None:
        cands = tag_candidates(tweets, tagger[0], tagger[1], cache_dir / "candidates.jsonl")
    else:
        cands = make_candidates(ds, cache_dir / "candidates.jsonl", res.tagger, progress=progress)
    if not model_cfg.use_knowledge:
        return {t.id: [(c, "") for c in cands[t.id]["candidates"]] for t in tweets}
    own = source is None
    source = source or knowledge_source(res)
    try:
        kc = retrieve(ds, cache_dir / "knowledge.jsonl", cands, source, res.relevance, k, progress,
                      filt=relevance_filter)
    finally:
        if own:
            source.close()
    return {t.id: [(it["candidate"], it["knowledge"]) for it in kc[t.id]["items"]] for t in tweets}


def coverage(augs: dict[str, list[tuple[str, str]]], ids=None) -> dict:
    """Share of candidates with at least one kept passage sentence (non-empty knowledge)."""
    ids = list(augs) if ids is None else list(ids)
    n = sum(len(augs[i]) for i in ids)
    hit = sum(1 for i in ids for _, kn in augs[i] if kn)
    return {"candidates": n, "with_knowledge": hit, "coverage": round(hit / n, 4) if n else 0.0,
            "tweets": len(ids), "tweets_with_candidates": sum(1 for i in ids if augs[i])}
