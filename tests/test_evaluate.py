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


def test_read_predictions_reads_gzip(tmp_path):
    import gzip
    tweets = [Tweet("1", ["NBA"], ["B-ORG"])]
    write_predictions(tmp_path / "p.txt", tweets, [["O"]])
    (tmp_path / "p.txt.gz").write_bytes(gzip.compress((tmp_path / "p.txt").read_bytes()))
    assert read_predictions(tmp_path / "p.txt.gz") == ([["B-ORG"]], [["O"]])
