"""Candidate entities (section 4.1, first stage): the spans the tagger (``tvolib.tfo.tagger``) finds
in every tweet of a dataset, cached.

Leakage on train (why k-fold): a tagger that predicts the tweets it was trained on returns
near-gold spans, so the NER model would learn to trust candidates more on train than it can on
valid/test. We therefore split train into ``k`` folds; the tagger trained on the other ``k-1``
folds predicts each fold (out-of-fold predictions, with test-like errors). valid and test are
predicted by a tagger trained on all of train, and never see gold labels. The default ``k=2`` keeps
the CPU cost at ``k`` fold models + 1 full model = 2x one full training per epoch; each fold model
sees half of train, so train candidates are slightly noisier than valid/test ones (a conservative
bias: the NER model is not taught to over-trust candidates). Use ``k_folds=5`` on a GPU.

Cache: ``<dataset_cache>/candidates.jsonl``, one record per (tagger, tweet), appended as soon as it
is predicted, keyed ``"<tagger>|<IMGID>"`` where ``tagger`` is the hash of the weights that made it,
with provenance (model, fold, epochs, config hash, a hash of the tagger's training tweets, a hash of
the tweet's tokens). Records of another tagger (other settings, other training tweets: another run
sharing the cache folder) are never reused, and both runs' records live side by side. The full
tagger's records are reused when their weights hash is the saved tagger's; a fold tagger is not kept,
so its records are reused when its config hash and training-tweets hash match. Another tweet under
the same id (other tokens) is predicted again. Records without a tagger and a config hash, put
there by hand, are kept as given. Records are grouped by the tagger that makes them (fold f, or
"all"). A group is tagged in length-sorted batches, and a tweet's logits depend (in their last
bits) on the other tweets of its batch, so a group's records are made whole and carry a hash of
its members: an interrupted run, or a quick run on a subset, never leaves part of a group to
another set of tweets; a group with missing records is made again whole, and a complete cache
makes a re-run do no work. A tagger's training keeps its state until it ends
(``tvolib.tfo.tagger.training_checkpoint``): a stopped run resumes it.

The full tagger is kept in its folder (``tvolib.tfo.tagger.tagger_dir``, ``build_tagger``). Several
processes sharing a cache folder build each thing once and work side by side: a process finding a
group's tagger being made by another goes on to the next group, and comes back for the records. The
file is read and appended to under ``candidates.jsonl.lock`` (held for moments), a group's records
are made under ``candidates.jsonl.<config>-<train>.lock`` (one lock per tagger, its recipe and training
tweets: a run training an MPNet-base tagger for hours does not hold up a MiniLM run whose candidates are
cached), and the full tagger's training holds ``tagger-....lock`` (``filelock``); a process that waits
finds the records or the saved tagger and uses them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from ..cache import JsonlCache, stable_hash
from ..data import Tweet, entity_spans
from .tagger import (CandidateTagger, TaggerConfig, build_tagger, lock_path, read_tagger_info, tagger_dir,
                     train_hash, train_tagger, training_checkpoint, weights_hash)

log = logging.getLogger(__name__)

def fold_of(tweet_id: str, k: int, seed: int = 42) -> int:
    """Deterministic fold of a train tweet (hash of seed and IMGID)."""
    return int(stable_hash(seed, tweet_id), 16) % k


def make_candidates(ds, cache_path: str | Path, cfg: TaggerConfig | None = None, progress: bool = False,
                    model_factory: Callable[[], CandidateTagger] | None = None) -> dict[str, dict]:
    """Fill ``candidates.jsonl`` for every tweet of every split (see the module docstring) and
    return ``{IMGID: record}`` of the taggers this dataset and ``cfg`` make.

    Record: ``{"key": "<tagger>|<IMGID>", "id", "split", "spans": [[s, e], ...], "candidates": [str, ...],
    "source": "tagger", "model", "fold" (int for train, "all" for valid/test), "epochs", "k_folds",
    "config_hash", "tokens_hash", "tagger" (weights hash), "train_hash" (the tagger's training tweets)}``.
    """
    cfg = cfg or TaggerConfig()
    cache_path = Path(cache_path)
    train = ds.splits.get("train", [])
    if not train:
        raise ValueError("the dataset has no train split: the candidate tagger needs one")
    k = max(1, cfg.k_folds)
    groups: dict = {}
    if k >= 2:
        for t in train:
            groups.setdefault(fold_of(t.id, k, cfg.seed), []).append(t)
    else:   # k = 1: no out-of-fold predictions; train candidates come from the full tagger (leaks)
        groups["all"] = list(train)
    for s, tweets in ds.splits.items():
        if s != "train":
            groups.setdefault("all", []).extend(tweets)
    chash = cfg.hash()
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}

    def reusable(t: Tweet, rec: dict | None) -> bool:
        return rec is not None and rec.get("tokens_hash", tokens_hash(t.tokens)) == tokens_hash(t.tokens)

    def read() -> JsonlCache:
        with FileLock(lock_path(cache_path)):       # held while the file is read or appended to
            return JsonlCache(cache_path, key=("key", "id"))

    def settle(g, cache: JsonlCache, wait: bool) -> tuple[JsonlCache, bool]:
        """Put group ``g``'s records in ``out``, making the missing ones; ``wait=False``: leave a
        group another process is making (False back) so that this one takes the next group."""
        fit_on = train if g == "all" else [t for t in train if fold_of(t.id, k, cfg.seed) != g]
        th = train_hash(fit_on)
        path = tagger_dir(cache_path.parent, cfg, fit_on) if g == "all" else None
        members = stable_hash([t.id for t in groups[g]], n=12)     # tagged in batches: a group is made whole

        def look_up(cache: JsonlCache) -> tuple[dict, dict | None]:
            """Each tweet's record in ``cache`` (None: to tag), and the saved full tagger."""
            saved = read_tagger_info(path) if path is not None else None
            by_recipe = {(r.get("train_hash"), r.get("id")): r for r in cache
                         if "tagger" in r and r.get("config_hash") == chash} if g != "all" else {}

            def find(t: Tweet) -> dict | None:
                rec = (cache.get(f"{saved['weights_hash']}|{t.id}") if saved else None) if g == "all" \
                    else by_recipe.get((th, t.id))
                if rec is not None and "tagger" in rec and rec.get("members") != members:
                    rec = None
                if reusable(t, rec):
                    return rec
                rec = cache.get(t.id)      # no tagger, no config hash: put there by hand, kept as given
                return rec if rec is not None and "tagger" not in rec and "config_hash" not in rec else None
            return {t.id: find(t) for t in groups[g]}, saved

        found, saved = look_up(cache)
        if any(r is None for r in found.values()):
            # one process makes a group's records (a tagger's training can take hours); a run with
            # another tagger reads and appends to the same file meanwhile
            lock = FileLock(cache_path.with_name(f"{cache_path.name}.{chash}-{th}.lock"))
            try:
                lock.acquire(timeout=-1 if wait else 0)
            except Timeout:
                return cache, False
            try:
                cache = read()                          # made by another process while this one waited?
                found, saved = look_up(cache)
                if any(r is None for r in found.values()):
                    found.update(_tag_group(g, groups[g], fit_on, found, cfg, cache, cache_path, path, saved,
                                            model_factory, chash, th, k, members))
            finally:
                lock.release()
        out.update(found)
        return cache, True

    # a group another process is making is left for later, so that two runs sharing the cache build
    # different taggers side by side; then each group left is waited for (its records, read back)
    cache = read()
    left = []
    for g in sorted(groups, key=lambda g: (g == "all", str(g))):
        cache, done = settle(g, cache, wait=False)
        if not done:
            left.append(g)
    for g in left:
        cache, _ = settle(g, read(), wait=True)
    return {t.id: out[t.id] for t in ds.all()}


def _tag_group(g, tweets: list[Tweet], fit_on: list[Tweet], found: dict, cfg: TaggerConfig, cache: JsonlCache,
               cache_path: Path, path: Path | None, saved: dict | None, model_factory, chash: str, th: str,
               k: int, members: str) -> dict[str, dict]:
    """Train (or load) group ``g``'s tagger and append a record for each of its tweets without one."""
    todo = [t for t in tweets if found[t.id] is None or "tagger" in found[t.id]]
    log.info("candidate tagger [%s]: %s on %d tweets, predicting %d", g,
             "loading the one trained" if saved else "training",
             min(len(fit_on), cfg.max_train_samples or len(fit_on)), len(todo))
    if g == "all":
        model, info = build_tagger(fit_on, cfg, path, model_factory)
        wh = info["weights_hash"]
    else:
        model = train_tagger(fit_on, cfg, model_factory, checkpoint=training_checkpoint(cache_path.parent, cfg, fit_on))
        wh = weights_hash(model)
    preds = model.predict([t.tokens for t in todo], cfg.eval_batch_size, cfg.max_length)
    made = {}
    with FileLock(lock_path(cache_path)):
        for t, spans in zip(todo, preds):
            made[t.id] = cache.append({
                "key": f"{wh}|{t.id}", "id": t.id, "split": t.split, "spans": [list(x) for x in spans],
                "candidates": [" ".join(t.tokens[s:e]) for s, e in spans],
                "source": "tagger", "model": model.name, "fold": g, "epochs": cfg.epochs,
                "k_folds": k, "config_hash": chash, "tokens_hash": tokens_hash(t.tokens),
                "tagger": wh, "train_hash": th, "members": members})
    return made


def tokens_hash(tokens: list[str]) -> str:
    return stable_hash(list(tokens))


def span_scores(tweets: list[Tweet], cache) -> dict:
    """Untyped span precision / recall / F1 (percent) of the cached candidates against gold."""
    tp = n_pred = n_gold = 0
    for t in tweets:
        gold = {(s, e) for s, e, _ in entity_spans(t.labels)}
        pred = {tuple(x) for x in cache[t.id]["spans"]}
        tp += len(gold & pred); n_pred += len(pred); n_gold += len(gold)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(100 * p, 2), "recall": round(100 * r, 2), "f1": round(100 * f, 2),
            "n_gold": n_gold, "n_pred": n_pred, "n_correct": tp}
