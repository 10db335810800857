import pytest

from tvolib.data import Tweet
from tvolib.evaluate import (read_predictions, score, score_tweets, table1_markdown, table2_markdown,
                             write_predictions)


def test_hand_counted_example():
    gold = [["B-PER", "I-PER", "O", "B-LOC"],          # Steph Curry (PER), Oakland (LOC)
            ["B-ORG", "O", "B-MISC", "I-MISC"]]         # NBA (ORG), Final Four (MISC)
    pred = [["B-PER", "O", "O", "B-LOC"],              # partial span: PER wrong; LOC right
            ["B-LOC", "O", "B-MISC", "I-MISC"]]         # wrong type: ORG→LOC; MISC right
    s = score(gold, pred)
    # gold 4, predicted 4, correct 2 (Oakland, Final Four)
    assert (s.n_gold, s.n_pred, s.n_correct) == (4, 4, 2)
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(0.5)
    assert s.f1 == pytest.approx(0.5)
    # LOC: gold 1, pred 2 (Oakland + wrong-type NBA), correct 1 → P .5 R 1 F .667
    assert s.per_type["LOC"]["f1"] == pytest.approx(2 / 3)
    assert s.per_type["PER"]["f1"] == 0.0 and s.per_type["ORG"]["f1"] == 0.0
    assert s.per_type["MISC"]["f1"] == pytest.approx(1.0)
    row = s.row()
    assert list(row) == ["PER", "LOC", "ORG", "MISC", "Pre.", "Rec.", "F1"]
    assert row["F1"] == pytest.approx(50.0) and row["LOC"] == pytest.approx(66.6667, abs=1e-3)


def test_orphan_i_counts_as_entity():
    gold = [["O", "I-PER", "I-PER"]]
    assert score(gold, [["O", "B-PER", "I-PER"]]).f1 == 1.0
    assert score(gold, [["O", "B-PER", "O"]]).f1 == 0.0


def test_empty_and_length_errors():
    s = score([["O", "O"]], [["O", "O"]])
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="sequence 0: 2 gold labels but 1 predicted"):
        score([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 gold sequences but 2"):
        score([["O"]], [["O"], ["O"]])


def test_tables_render():
    s = score([["B-PER"]], [["B-PER"]])
    t1 = table1_markdown({"TVOMNER": s})
    assert "| PER | LOC | ORG | MISC | Pre. | Rec. | F1 |" in t1
    assert "| TVOMNER | 100.00 | 0.00 | 0.00 | 0.00 | 100.00 | 100.00 | 100.00 |" in t1
    t2 = table2_markdown({"full": {"twitter2015": s}, "w/o VAE": {"twitter2017": s}})
    assert "twitter2015 F1" in t2 and "| w/o VAE | – | – | – | 100.00 |" in t2


def test_conll_writer_roundtrip(tmp_path):
    tweets = [Tweet("1", ["Steph", "Curry", "rules"], ["B-PER", "I-PER", "O"]),
              Tweet("2", ["NBA"], ["B-ORG"])]
    pred = [["B-PER", "O", "O"], ["B-ORG"]]
    p = tmp_path / "pred.conll"
    write_predictions(p, tweets, pred)
    lines = p.read_text().splitlines()
    assert lines[:3] == ["IMGID:1", "Steph\tB-PER\tB-PER", "Curry\tI-PER\tO"]
    gold, back = read_predictions(p)
    assert back == pred and gold == [t.labels for t in tweets]
    assert score_tweets(tweets, pred).n_correct == 1


def test_paired_bootstrap():
    from tvolib.evaluate import paired_bootstrap
    gold = [["B-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"], ["O", "B-MISC"], ["B-PER", "O", "O"]] * 10
    worse = [["B-PER", "O", "O"], ["B-ORG", "O", "O"], ["O", "O"], ["B-PER", "O", "O"]] * 10
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
    from tvolib.evaluate import paired_bootstrap, paired_bootstrap_seeds
    gold = [["B-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"], ["O", "B-MISC"], ["B-PER", "O", "O"]] * 10
    worse = [["B-PER", "O", "O"], ["B-ORG", "O", "O"], ["O", "O"], ["B-PER", "O", "O"]] * 10
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


def test_micro_f1_is_the_harmonic_mean_when_precision_and_recall_differ():
    """Precision 1, recall 1/2: a scorer that returned P or R as "F1" fails here."""
    gold = [["B-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC"]]
    pred = [["B-PER", "O", "O"], ["B-ORG", "O", "O"]]            # 2 predicted, both right; 4 gold
    s = score(gold, pred)
    assert (s.precision, s.recall) == (pytest.approx(1.0), pytest.approx(0.5))
    assert s.f1 == pytest.approx(2 / 3)
    row = s.row()
    assert (row["Pre."], row["Rec."], row["F1"]) == (pytest.approx(100.0), pytest.approx(50.0),
                                                      pytest.approx(200 / 3))
    # recall above precision: 1 gold, 3 predicted (1 right)
    s = score([["B-PER", "O", "O"]], [["B-PER", "B-LOC", "B-ORG"]])
    assert (s.precision, s.recall, s.f1) == (pytest.approx(1 / 3), pytest.approx(1.0), pytest.approx(0.5))


def test_paired_bootstrap_resamples_both_systems_with_the_same_tweets():
    """Two identical imperfect systems differ by exactly 0 on every resample, and a system that is
    better on every tweet where they differ is better on every resample. Drawing the two systems'
    tweets independently breaks both."""
    from tvolib.evaluate import paired_bootstrap, paired_bootstrap_seeds
    gold = [["B-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"], ["O", "B-MISC"], ["B-PER", "O", "O"]] * 10
    worse = [["B-PER", "O", "O"], ["B-ORG", "O", "O"], ["O", "O"], ["B-PER", "O", "O"]] * 10
    mixed = [g if i % 3 else w for i, (g, w) in enumerate(zip(gold, worse))]
    same = paired_bootstrap(gold, mixed, [list(p) for p in mixed], n=300, seed=2)
    assert same["delta_f1"] == 0 and same["ci95"] == [0, 0] and same["p_b_not_better"] == 1.0
    # b = a with one more correct span on 1 tweet in 6: better on every resample that draws such a tweet
    plus = [g if i % 6 == 0 else p for i, (g, p) in enumerate(zip(gold, mixed))]
    r = paired_bootstrap_seeds(gold, [mixed, mixed], [plus, plus], n=300, seed=2)
    assert r["ci95"][0] >= 0 and r["p_b_not_better"] < 0.05


def test_seed_interval_is_a_t_interval_and_undefined_for_one_seed():
    from tvolib.evaluate import seed_interval, t_quantile_975
    # the three Twitter-2017 deltas of issue 13: mean 1.54, t(2) interval about [-1.05, +4.12]
    r = seed_interval([0.61, 2.67, 1.33])
    assert r["mean"] == pytest.approx(1.537, abs=1e-3) and r["n_seeds"] == 3
    assert r["ci95"] == [pytest.approx(-1.06, abs=0.02), pytest.approx(4.13, abs=0.02)]
    assert r["sd"] == pytest.approx(1.045, abs=1e-3)
    one = seed_interval([2.0])
    assert one["ci95"] is None and one["sd"] is None and "one seed" in one["note"]
    assert t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=2e-4)       # expansion beyond the table
    assert t_quantile_975(120) == pytest.approx(1.9799, abs=2e-4)
    with pytest.raises(ValueError):
        seed_interval([])


def test_beats_needs_both_intervals_above_zero():
    from tvolib.evaluate import beats
    boot_up, boot_straddle = {"ci95": [0.4, 2.5]}, {"ci95": [-0.2, 1.0]}
    seeds_up, seeds_straddle, one_seed = {"ci95": [0.1, 3.0]}, {"ci95": [-1.05, 4.12]}, {"ci95": None}
    assert beats(boot_up, seeds_up)
    assert not beats(boot_up, seeds_straddle)          # the Twitter-2017 case of issue 13
    assert not beats(boot_straddle, seeds_up)
    assert not beats(boot_up, one_seed) and not beats(boot_up, None)


def test_read_predictions_reads_gzip(tmp_path):
    import gzip
    tweets = [Tweet("1", ["NBA"], ["B-ORG"])]
    write_predictions(tmp_path / "p.txt", tweets, [["O"]])
    (tmp_path / "p.txt.gz").write_bytes(gzip.compress((tmp_path / "p.txt").read_bytes()))
    assert read_predictions(tmp_path / "p.txt.gz") == ([["B-ORG"]], [["O"]])
