"""Statistics of a difference in span F1 between two systems (b − a) on one test set.

Two 95 % intervals, each for a different source of variation:

* :func:`paired_bootstrap_seeds` resamples the **test tweets** (the same tweets for both systems and
  every seed) and carries the test-set sampling of the mean difference over seeds;
* :func:`seed_interval` is the t-interval of the per-seed differences and carries the
  **seed-to-seed** spread that the bootstrap leaves out.

:func:`beats` asks for both above zero. Differences are in F1 points (percent).
"""
from __future__ import annotations

import statistics
from typing import Sequence

import numpy as np
from scipy.stats import t as student_t
from seqeval.metrics.sequence_labeling import get_entities


def paired_bootstrap(gold: Sequence[Sequence[str]], pred_a: Sequence[Sequence[str]],
                     pred_b: Sequence[Sequence[str]], n: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap over tweets (Koehn 2004; Berg-Kirkpatrick et al. 2012) of the micro span F1
    difference ``F1(b) − F1(a)``, in points.

    Tweets are resampled with replacement ``n`` times; each resample recomputes both systems' F1 from
    per-tweet counts (correct, predicted, gold spans). Returns the observed difference, its 95 %
    percentile interval and ``p_b_not_better``: the share of resamples in which b does not beat a
    (a one-sided p-value for "b is better than a")."""
    return paired_bootstrap_seeds(gold, [pred_a], [pred_b], n=n, seed=seed)


def _span_counts(gold_spans: list[set], pred: Sequence[Sequence[str]]) -> np.ndarray:
    """Per tweet: (correct, predicted, gold) span counts, shape (tweets, 3)."""
    rows = []
    for ge, p in zip(gold_spans, pred):
        pe = set(get_entities(list(p)))
        rows.append((len(ge & pe), len(pe), len(ge)))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _f1(c: np.ndarray) -> np.ndarray:
    """Span F1 in points from summed counts ``c`` (..., 3): 2PR/(P+R) = 2 tp / (predicted + gold)."""
    tp, n_pred, n_gold = c[..., 0], c[..., 1], c[..., 2]
    denom = n_pred + n_gold
    return np.where(denom > 0, 200.0 * tp / np.maximum(denom, 1), 0.0)


def paired_bootstrap_seeds(gold: Sequence[Sequence[str]], runs_a: Sequence[Sequence[Sequence[str]]],
                           runs_b: Sequence[Sequence[Sequence[str]]], n: int = 2000, seed: int = 0) -> dict:
    """The paired bootstrap of :func:`paired_bootstrap` for several seeds at once: ``runs_a[i]`` and
    ``runs_b[i]`` are the predictions of seed i. The statistic is the mean over seeds of
    ``F1(b_i) − F1(a_i)``; ``delta_f1`` is that mean on the full test set, ``per_seed`` the
    differences it averages.

    Each resample draws one set of **tweets** (the same indices for both systems and every seed)
    and scores every seed on it. The seeds themselves are fixed, not resampled: the interval
    carries the test-set sampling of this mean only, not the seed-to-seed spread (a new seed could
    land outside it). For the spread over seeds use :func:`seed_interval` on ``per_seed``, and
    :func:`beats` to require both intervals above zero."""
    if len(runs_a) != len(runs_b) or not runs_a:
        raise ValueError(f"need the same number of runs on both sides, got {len(runs_a)} and {len(runs_b)}")
    m = len(gold)
    for pred in (*runs_a, *runs_b):
        if len(pred) != m:
            raise ValueError(f"{m} gold sequences but {len(pred)} predicted")
        bad = next((i for i, (g, p) in enumerate(zip(gold, pred)) if len(g) != len(p)), None)
        if bad is not None:
            raise ValueError(f"sequence {bad}: {len(gold[bad])} gold labels but {len(pred[bad])} predicted")
    if m == 0:
        raise ValueError("no tweets to resample")
    gold_spans = [set(get_entities(list(g))) for g in gold]
    ca = np.stack([_span_counts(gold_spans, p) for p in runs_a])      # (seeds, tweets, 3)
    cb = np.stack([_span_counts(gold_spans, p) for p in runs_b])
    per_seed = _f1(cb.sum(1)) - _f1(ca.sum(1))
    obs = float(per_seed.mean())
    rng = np.random.default_rng(seed)
    diffs = np.empty(n)
    for i in range(n):
        idx = rng.integers(0, m, m)
        diffs[i] = (_f1(cb[:, idx].sum(1)) - _f1(ca[:, idx].sum(1))).mean()
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"delta_f1": round(obs, 6), "ci95": [round(float(lo), 6), round(float(hi), 6)],
            "p_b_not_better": round(float((diffs <= 0).mean()), 4), "n_resamples": n, "n_tweets": m,
            "per_seed": [round(float(d), 6) for d in per_seed]}


def seed_interval(deltas: Sequence[float]) -> dict:
    """95 % t-interval of the mean of paired per-seed differences (e.g. ``F1(b, seed i) − F1(a,
    seed i)``): mean ± t(0.975, n−1) · sd / √n. It carries the seed-to-seed spread that the tweet
    bootstrap leaves out. With one seed the spread is unknown and the interval is undefined
    (``ci95`` None, said in ``note``)."""
    xs = [float(d) for d in deltas]
    if not xs:
        raise ValueError("no per-seed differences")
    mean = statistics.fmean(xs)
    out = {"n_seeds": len(xs), "mean": round(mean, 6), "per_seed": [round(x, 6) for x in xs]}
    if len(xs) < 2:
        return {**out, "sd": None, "ci95": None, "note": "one seed: no interval over seeds"}
    sd = statistics.stdev(xs)
    half = float(student_t.ppf(0.975, len(xs) - 1)) * sd / len(xs) ** 0.5
    return {**out, "sd": round(sd, 6), "ci95": [round(mean - half, 6), round(mean + half, 6)], "note": ""}


def beats(tweet_bootstrap: dict | None, over_seeds: dict | None) -> bool:
    """True only when both 95 % intervals lie above zero: the paired tweet bootstrap
    (:func:`paired_bootstrap_seeds`, ``ci95``) and the t-interval over seeds
    (:func:`seed_interval`, ``ci95``). A missing or undefined interval (one seed) is not evidence."""
    def above(r):
        return bool(r) and r.get("ci95") is not None and r["ci95"][0] > 0
    return above(tweet_bootstrap) and above(over_seeds)
