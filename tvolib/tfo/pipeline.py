"""TFO pipeline: candidates → knowledge → relevance filter → ``(candidate, knowledge)`` per tweet.

``augmentations(ds, model_cfg, res)`` is what the input builder calls, for training and prediction
alike; ``res`` (``tvolib.resources.Resources``) says where the caches are and which knowledge source
the model reads. Two caches under ``res.dataset_cache``:

* ``candidates.jsonl`` — one record per tweet. Training: ``tvolib.tfo.candidates.make_candidates``
  (k-fold on train, the full tagger on valid/test; trained only when tweets are missing). Prediction
  (a ``tagger`` is given, the checkpoint's): keyed by the tagger's weights hash and the tweet's id.
* ``knowledge.jsonl`` — one record per (source, settings, tweet), key
  ``"<source>|<settings>|<IMGID>"``: for every candidate the query, the retrieved passages (title,
  source, score, match) and the kept sentences with their relevance scores. ``settings`` hashes the
  filter settings, k and the source's identity (for per-tweet files, their content), so two sources
  of one kind (e.g. PGIM's texts with and without type labels) keep their own records side by side.
  A record is reused only when its candidates match; otherwise it is recomputed and appended (the
  last record of a key wins).

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
    out, todo = {}, []
    for t in tweets:
        rec = cache.get(f"{source.name}|{settings}|{t.id}")
        if rec is None:         # a record written before the key carried the settings
            rec = cache.get(f"{source.name}|{t.id}")
            rec = rec if rec is not None and rec.get("settings") == settings else None
        if rec is None or rec.get("candidates") != candidates[t.id]["candidates"]:
            todo.append(t)
        else:
            out[t.id] = rec
    if not todo:
        return out
    filt = filt or RelevanceFilter(cfg=filt_cfg)
    for t in tqdm(todo, desc=f"knowledge ({source.name})", disable=not progress):
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
        rec = {"key": f"{source.name}|{settings}|{t.id}", "id": t.id, "split": t.split, "source": source.name,
               "source_id": _source_id(source), "candidates": cands, "items": items,
               "settings": settings, "filter": {"threshold": filt_cfg.threshold, "budget": filt_cfg.budget,
                                                "encoder": filt_cfg.encoder, "k": k}}
        cache.append(rec)
        out[t.id] = rec
    return out


def tag_candidates(tweets, tagger: CandidateTagger, tagger_info: dict, cache_path: Path) -> dict[str, dict]:
    """Candidates of new tweets from a trained tagger (a checkpoint's), cached by the tagger's
    weights hash and the tweet id (prediction ids are content hashes): ``{tweet id: record}``."""
    tag_id = tagger_info.get("weights_hash") or stable_hash(tagger_info)
    cache = JsonlCache(cache_path, key="key")
    todo = [t for t in tweets if f"{tag_id}|{t.id}" not in cache]
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
