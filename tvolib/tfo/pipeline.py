"""TFO pipeline: candidates → knowledge → relevance filter → ``(candidate, knowledge)`` per tweet.

``augmentations(ds, data_cfg, model_cfg)`` is what the model side (CFF) calls. It reads and fills
two caches under ``data_cfg.dataset_cache``:

* ``candidates.jsonl`` — one record per tweet (``tvolib.tfo.candidates.make_candidates``); the
  candidate tagger is trained only when tweets are missing.
* ``knowledge.jsonl`` — one record per (source, settings, tweet), key
  ``"<source>|<settings>|<IMGID>"``: for every candidate the query, the retrieved passages (title,
  source, score, match) and the kept sentences with their relevance scores. ``settings`` hashes the
  filter settings, k and the source's identity (for per-tweet files, their content), so two sources
  of one kind (e.g. PGIM's texts with and without type labels) keep their own records side by side.
  A record is reused only when its candidates match; otherwise it is recomputed and appended (the
  last record of a key wins).

Knowledge sources (``model_cfg.knowledge_source``), see ``knowledge_source()``:

* ``"local"``: ``data_cfg.kb`` (a .sqlite file, or input files built into ``<dataset_cache>/kb.sqlite``);
  else the sample's ``kb.jsonl`` for the sample; else every file in ``$TVOMNER_KB_DIR`` (default
  ``../shared/data/kb``) built once into ``<cache_dir>/kb/default.sqlite``.
* ``"wikipedia"``: live, cached in ``<cache_dir>/wikipedia.jsonl``; ``TVOMNER_WIKI_API_URL`` points it
  at another MediaWiki, ``TVOMNER_WIKI_OFFLINE=1`` reads the cache only.
* ``"tweet_files"``: ``data_cfg.knowledge_file``; else the sample's ``llm_knowledge.jsonl``; else
  ``$TVOMNER_LLM_KNOWLEDGE_DIR/pgim_<dataset>.jsonl`` (default dir ``../shared/data/llm_knowledge``).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..cache import JsonlCache, stable_hash
from ..weights import ResourceMissing
from ..sample import SAMPLE_DIR
from .candidates import TaggerConfig, make_candidates
from .knowledge import KnowledgeSource, LocalKB, TweetFileSource, WikipediaConfig, WikipediaSource, build_kb
from .relevance import RelevanceConfig, RelevanceFilter

KB_EXTENSIONS = (".json", ".jsonl", ".tsv", ".xml", ".xml.gz", ".xml.bz2")


def _is_sample(data_cfg) -> bool:
    try:
        return Path(data_cfg.data_dir).resolve().is_relative_to(SAMPLE_DIR.resolve())
    except OSError:
        return False


def ensure_kb(out: Path, inputs: list[Path], log=None) -> Path:
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
    build_kb(out, inputs, log=log)
    return out


def default_kb(data_cfg, log=None) -> Path:
    kb = getattr(data_cfg, "kb", None)
    if kb:
        if str(kb).endswith((".sqlite", ".db")):
            return Path(kb)
        return ensure_kb(data_cfg.dataset_cache / "kb.sqlite", [Path(p) for p in str(kb).split(os.pathsep) if p], log)
    if _is_sample(data_cfg):
        return ensure_kb(data_cfg.dataset_cache / "kb.sqlite", [SAMPLE_DIR / "kb.jsonl"], log)
    kb_dir = Path(os.environ.get("TVOMNER_KB_DIR", "../shared/data/kb"))
    files = sorted(p for p in kb_dir.glob("*") if p.name.lower().endswith(KB_EXTENSIONS)) if kb_dir.is_dir() else []
    if not files:
        raise ResourceMissing(f"no local knowledge base: set DataConfig.kb (a .sqlite file or JSON/JSONL/TSV/"
                              f"abstract-dump inputs) or TVOMNER_KB_DIR (a folder of such files; {kb_dir} has none)")
    return ensure_kb(Path(data_cfg.cache_dir) / "kb" / "default.sqlite", files, log)


def default_knowledge_file(data_cfg) -> Path:
    f = getattr(data_cfg, "knowledge_file", None)
    if f:
        return Path(f)
    if _is_sample(data_cfg):
        return SAMPLE_DIR / "llm_knowledge.jsonl"
    d = Path(os.environ.get("TVOMNER_LLM_KNOWLEDGE_DIR", "../shared/data/llm_knowledge"))
    p = d / f"pgim_{data_cfg.dataset}.jsonl"
    if p.exists():
        return p
    raise ResourceMissing(f"no per-tweet knowledge file for dataset {data_cfg.dataset!r}: set "
                          f"DataConfig.knowledge_file (JSONL with split, imgid, aux) or put {p} in place")


def knowledge_source(name: str, data_cfg, log=None) -> KnowledgeSource:
    if name == "local":
        return LocalKB(default_kb(data_cfg, log))
    if name == "wikipedia":
        cfg = WikipediaConfig(api_url=os.environ.get("TVOMNER_WIKI_API_URL", WikipediaConfig.api_url))
        return WikipediaSource(Path(data_cfg.cache_dir) / "wikipedia.jsonl", cfg,
                               offline=os.environ.get("TVOMNER_WIKI_OFFLINE", "") == "1")
    if name == "tweet_files":
        return TweetFileSource(default_knowledge_file(data_cfg))
    raise ValueError(f"unknown knowledge_source {name!r}; choose 'local', 'wikipedia' or 'tweet_files'")


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
    it = todo
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(todo, desc=f"knowledge ({source.name})")
    for t in it:
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


def augmentations(ds, data_cfg, model_cfg, progress: bool = False, tagger_cfg: TaggerConfig | None = None,
                  relevance_cfg: RelevanceConfig | None = None, k: int = 3,
                  source: KnowledgeSource | None = None, relevance_filter: RelevanceFilter | None = None,
                  log=print) -> dict[str, list[tuple[str, str]]]:
    """For every tweet id of every split: ``[(candidate, kept knowledge), ...]`` in tweet order.

    ``use_candidates=False`` → empty lists; ``use_knowledge=False`` → knowledge ``""``. The
    candidate tagger defaults to ``model_cfg.text_encoder`` (``TaggerConfig`` for the rest).
    """
    tweets = ds.all()
    if not model_cfg.use_candidates:
        return {t.id: [] for t in tweets}
    cache_dir = Path(data_cfg.dataset_cache)
    tagger_cfg = tagger_cfg or TaggerConfig(encoder=model_cfg.text_encoder)
    cands = make_candidates(ds, cache_dir / "candidates.jsonl", tagger_cfg, progress=progress, log=log)
    if not model_cfg.use_knowledge:
        return {t.id: [(c, "") for c in cands[t.id]["candidates"]] for t in tweets}
    own = source is None
    source = source or knowledge_source(model_cfg.knowledge_source, data_cfg, log)
    try:
        kc = retrieve(ds, cache_dir / "knowledge.jsonl", cands, source, relevance_cfg, k, progress,
                      filt=relevance_filter)
    finally:
        if own:
            source.close()
    out = {}
    for t in tweets:
        out[t.id] = [(it["candidate"], it["knowledge"]) for it in kc[t.id]["items"]]
    return out


def coverage(augs: dict[str, list[tuple[str, str]]], ids=None) -> dict:
    """Share of candidates with at least one kept passage sentence (non-empty knowledge)."""
    ids = list(augs) if ids is None else list(ids)
    n = sum(len(augs[i]) for i in ids)
    hit = sum(1 for i in ids for _, kn in augs[i] if kn)
    return {"candidates": n, "with_knowledge": hit, "coverage": round(hit / n, 4) if n else 0.0,
            "tweets": len(ids), "tweets_with_candidates": sum(1 for i in ids if augs[i])}
