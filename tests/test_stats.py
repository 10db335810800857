"""tvolib.stats: the paired tweet bootstrap, the t-interval over seeds and the "beats" rule.

Besides properties (identical systems differ by 0 on every resample, the observed difference lies
inside its interval), the bootstrap is checked against a reference written here from its
definition: the same resampled tweet indices for both systems and every seed, F1 from
``tvolib.evaluate.score`` on each resample, and the 2.5th / 97.5th percentiles."""
import statistics

import numpy as np
import pytest

from tvolib.evaluate import score
from tvolib.stats import beats, paired_bootstrap, paired_bootstrap_seeds, seed_interval

GOLD = [["B-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"], ["O", "B-MISC"], ["B-PER", "O", "O"]] * 10
WORSE = [["B-PER", "O", "O"], ["B-ORG", "O", "O"], ["O", "O"], ["B-PER", "O", "O"]] * 10


def reference_bootstrap(gold, runs_a, runs_b, n, seed):
    """The paired bootstrap from its definition, resample by resample."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, len(gold), len(gold))
        g = [gold[i] for i in idx]
        diffs.append(np.mean([100 * (score(g, [b[i] for i in idx]).f1 - score(g, [a[i] for i in idx]).f1)
                              for a, b in zip(runs_a, runs_b)]))
    return np.percentile(diffs, [2.5, 97.5]), float(np.mean(np.array(diffs) <= 0))


def test_bootstrap_matches_its_definition_a_95_percent_paired_interval_of_f1():
    """Other percentiles (a 90 % interval printed as 95 %), tweets drawn apart for the two systems,
    or precision / recall in place of F1 all move the interval away from the reference."""
    # three systems that differ from tweet to tweet in precision and recall, over two seeds
    over = [["B-PER", "B-LOC", "B-LOC"], ["B-ORG", "I-ORG", "B-PER"], ["B-LOC", "B-MISC"], ["O", "O", "O"]] * 10
    mixed = [g if i % 3 == 0 else w if i % 3 == 1 else o for i, (g, w, o) in enumerate(zip(GOLD, WORSE, over))]
    runs_a, runs_b = [WORSE, mixed], [mixed, over]
    r = paired_bootstrap_seeds(GOLD, runs_a, runs_b, n=400, seed=5)
    (lo, hi), p_not_better = reference_bootstrap(GOLD, runs_a, runs_b, n=400, seed=5)
    assert r["ci95"] == [pytest.approx(lo, abs=2e-3), pytest.approx(hi, abs=2e-3)]
    assert r["p_b_not_better"] == pytest.approx(p_not_better, abs=1e-4)
    observed = [100 * (score(GOLD, b).f1 - score(GOLD, a).f1) for a, b in zip(runs_a, runs_b)]
    assert r["per_seed"] == [pytest.approx(x, abs=1e-3) for x in observed]
    assert r["delta_f1"] == pytest.approx(np.mean(observed), abs=1e-3)
    assert r["ci95"][0] < r["delta_f1"] < r["ci95"][1]


def test_paired_bootstrap():
    gold, worse = GOLD, WORSE
    same = paired_bootstrap(gold, gold, gold, n=200)
    assert same["delta_f1"] == 0 and same["ci95"] == [0, 0] and same["p_b_not_better"] == 1.0
    better = paired_bootstrap(gold, worse, gold, n=500)
    # per 4 tweets: 5 gold spans; worse predicts 3 (the ORG span cut short), 2 correct:
    # F1 = 2*2/(3+5) = 50; gold scores 100
    assert better["delta_f1"] == pytest.approx(50.0, abs=1e-3)
    assert better["ci95"][0] > 0 and better["p_b_not_better"] == 0.0
    flipped = paired_bootstrap(gold, gold, worse, n=500)
    assert flipped["delta_f1"] < 0 and flipped["p_b_not_better"] == 1.0
    # a mixed case: the interval must straddle the observed difference
    mixed = [g if i % 2 else w for i, (g, w) in enumerate(zip(gold, worse))]
    m = paired_bootstrap(gold, worse, mixed, n=500, seed=1)
    assert m["ci95"][0] <= m["delta_f1"] <= m["ci95"][1]
    with pytest.raises(ValueError):
        paired_bootstrap(gold, worse[:-1], gold)


def test_paired_bootstrap_over_seeds():
    gold, worse = GOLD, WORSE
    # seed 1: no change; seed 2: worse -> gold (+50 points): the mean over seeds is +25
    r = paired_bootstrap_seeds(gold, [gold, worse], [gold, gold], n=300)
    assert r["per_seed"] == [0.0, 50.0] and r["delta_f1"] == pytest.approx(25.0)
    assert 0 < r["ci95"][0] <= 25.0 <= r["ci95"][1] and r["p_b_not_better"] == 0.0
    # one seed is the plain paired bootstrap, resample for resample
    one = paired_bootstrap_seeds(gold, [worse], [gold], n=300, seed=3)
    plain = paired_bootstrap(gold, worse, gold, n=300, seed=3)
    assert {k: one[k] for k in plain} == plain
    with pytest.raises(ValueError, match="same number of runs"):
        paired_bootstrap_seeds(gold, [gold, worse], [gold])


def test_paired_bootstrap_resamples_both_systems_with_the_same_tweets():
    """Two identical imperfect systems differ by exactly 0 on every resample, and a system that is
    better on every tweet where they differ is better on every resample. Drawing the two systems'
    tweets independently breaks both."""
    gold, worse = GOLD, WORSE
    mixed = [g if i % 3 else w for i, (g, w) in enumerate(zip(gold, worse))]
    same = paired_bootstrap(gold, mixed, [list(p) for p in mixed], n=300, seed=2)
    assert same["delta_f1"] == 0 and same["ci95"] == [0, 0] and same["p_b_not_better"] == 1.0
    # b = a with one more correct span on 1 tweet in 6: better on every resample that draws such a tweet
    plus = [g if i % 6 == 0 else p for i, (g, p) in enumerate(zip(gold, mixed))]
    r = paired_bootstrap_seeds(gold, [mixed, mixed], [plus, plus], n=300, seed=2)
    assert r["ci95"][0] >= 0 and r["p_b_not_better"] < 0.05


def test_seed_interval_is_a_t_interval_and_undefined_for_one_seed():
    # the three Twitter-2017 deltas of issue 13: mean 1.54, t(2) interval about [-1.05, +4.12]
    r = seed_interval([0.61, 2.67, 1.33])
    assert r["mean"] == pytest.approx(1.537, abs=1e-3) and r["n_seeds"] == 3
    assert r["ci95"] == [pytest.approx(-1.06, abs=0.02), pytest.approx(4.13, abs=0.02)]
    assert r["sd"] == pytest.approx(1.045, abs=1e-3)
    one = seed_interval([2.0])
    assert one["ci95"] is None and one["sd"] is None and "one seed" in one["note"]
    # mean ± t(0.975, n−1)·sd/√n with the exact quantiles (12.706 for 1 df, 2.0395 for 31)
    two = seed_interval([1.0, 3.0])
    assert two["ci95"] == [pytest.approx(2 - 12.7062, abs=1e-3),
                           pytest.approx(2 + 12.7062, abs=1e-3)]
    xs = [float(i % 7) for i in range(32)]
    wide = seed_interval(xs)
    half = 2.0395 * statistics.stdev(xs) / 32 ** 0.5
    assert wide["ci95"] == [pytest.approx(statistics.fmean(xs) - half, abs=1e-3),
                            pytest.approx(statistics.fmean(xs) + half, abs=1e-3)]
    with pytest.raises(ValueError):
        seed_interval([])


def test_beats_needs_both_intervals_above_zero():
    boot_up, boot_straddle = {"ci95": [0.4, 2.5]}, {"ci95": [-0.2, 1.0]}
    seeds_up, seeds_straddle, one_seed = {"ci95": [0.1, 3.0]}, {"ci95": [-1.05, 4.12]}, {"ci95": None}
    assert beats(boot_up, seeds_up)
    assert not beats(boot_up, seeds_straddle)          # the Twitter-2017 case of issue 13
    assert not beats(boot_straddle, seeds_up)
    assert not beats(boot_up, one_seed) and not beats(boot_up, None)
