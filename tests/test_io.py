"""tvolib.io: the JSONL reader, the tweet readers of prediction and the strict output writers."""
import json
import math

import pytest

from tvolib.data import DataFormatError as DataDataFormatError
from tvolib.io import (DataFormatError, as_tweets, format_output, iter_jsonl, load_captions, read_jsonl,
                       read_tweets, write_output)
from tvolib.sample import SAMPLE_DIR


def write(tmp_path, text, name="in.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


# ------------------------------------------------------------------------------------------ JSONL


def test_read_jsonl_objects_blank_lines_bom_and_line_separators(tmp_path):
    p = write(tmp_path, '\ufeff{"a": 1}\n\n  \n{"b": "x\u2028y"}\r\n', "r.jsonl")
    assert read_jsonl(p) == [{"a": 1}, {"b": "x\u2028y"}]
    assert [n for n, _ in iter_jsonl(p)] == [1, 4]
    assert DataFormatError is DataDataFormatError                    # one error type for data files


@pytest.mark.parametrize("text, line, msg", [
    ('{"a": 1}\n{"a": \n', 2, "not valid JSON"),
    ('{"a": 1}\n\n[1, 2]\n', 3, "expected a JSON object, got list"),
    ('"text"\n', 1, "expected a JSON object, got str"),
])
def test_read_jsonl_errors_name_file_and_line(tmp_path, text, line, msg):
    p = write(tmp_path, text, "bad.jsonl")
    with pytest.raises(DataFormatError, match=rf"bad\.jsonl:{line}: {msg}") as e:
        read_jsonl(p)
    assert e.value.line == line and e.value.path == str(p)


def test_read_jsonl_not_utf8_and_missing_file(tmp_path):
    p = tmp_path / "l1.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"l1\.jsonl:2: not UTF-8"):
        read_jsonl(p)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_load_captions(tmp_path):
    p = write(tmp_path, '{"a": "x",\n "b": }', name="c.json")
    with pytest.raises(DataFormatError, match=r"c.json:2"):
        load_captions(p)
    p = write(tmp_path, '{"imgid": "1", "caption": "x"}\n{"imgid": "2"}\n', name="c.jsonl")
    with pytest.raises(DataFormatError, match=r"c.jsonl:2"):
        load_captions(p)
    p = write(tmp_path, '{"imgid": 1, "caption": "x"}\n', name="ok.jsonl")
    assert load_captions(p) == {"1": "x"}
    assert load_captions(SAMPLE_DIR / "captions.json")["s0001"]
    assert load_captions(None) == {}


# ------------------------------------------------------------------------------------------ text


def test_text_lines_and_imgid_prefix(tmp_path):
    p = write(tmp_path, "Steph Curry drops 40\n\n123\tI love  Paris\nIMGID:abc_1\tNBA finals\n")
    tw = read_tweets(p)
    assert [(t.id, t.tokens) for t in tw] == [("line1", ["Steph", "Curry", "drops", "40"]),
                                             ("123", ["I", "love", "Paris"]), ("abc_1", ["NBA", "finals"])]
    assert all(t.labels == ["O"] * len(t.tokens) and t.split == "test" for t in tw)
    assert tw[1].source == f"{p}:3"


def test_a_tab_that_would_drop_words_is_an_error(tmp_path):
    # printf 'I love\tNew York\n'
    p = write(tmp_path, "I love\tNew York\n")
    with pytest.raises(DataFormatError, match=r"in\.txt:1: IMGID 'I love' holds spaces.*replace the tab by a space"):
        read_tweets(p)
    with pytest.raises(DataFormatError, match=r"in\.txt:1:"):
        read_tweets(p, "text")
    p = write(tmp_path, "fine\tok tweet\n\tNew York\n")
    with pytest.raises(DataFormatError, match=r"in\.txt:2: empty IMGID before the tab"):
        read_tweets(p)


def test_text_errors(tmp_path):
    p = write(tmp_path, "ok\tfine tweet\n/etc/passwd\tObama speaks\n")
    with pytest.raises(DataFormatError, match=r"in\.txt:2: IMGID '/etc/passwd' is not a plain file name"):
        read_tweets(p)
    p = write(tmp_path, "Obama\tB-PER\nspeaks\tO\n")
    with pytest.raises(DataFormatError, match=r"in\.txt:1: looks like CoNLL"):
        read_tweets(p)
    p = tmp_path / "latin1.txt"
    p.write_bytes("Caf\xe9 in M\xfcnchen\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1\.txt:1: not UTF-8"):
        read_tweets(p)
    with pytest.raises(DataFormatError, match="no tweets"):
        read_tweets(write(tmp_path, "\n  \n"))
    with pytest.raises(ValueError, match="unknown input format"):
        read_tweets(p, "csv")


# ------------------------------------------------------------------------------------------ JSONL tweets


def test_jsonl_tweets_auto_detected_and_by_flag(tmp_path):
    (tmp_path / "img.jpg").write_bytes(b"x")
    recs = [{"id": "7", "text": "Obama in Paris"}, {"id": 8, "tokens": ["NBA", "finals"], "image": "img.jpg"},
            {"id": "9", "text": "I love\tNew York", "image": None}]
    p = write(tmp_path, "\n".join(json.dumps(r) for r in recs) + "\n", "tweets.jsonl")
    for fmt in ("auto", "jsonl"):
        tw = read_tweets(p, fmt)
        assert [(t.id, t.tokens) for t in tw] == [("7", ["Obama", "in", "Paris"]), ("8", ["NBA", "finals"]),
                                                 ("9", ["I", "love", "New", "York"])]
        assert tw[1].image_path == tmp_path / "img.jpg" and tw[0].image_path is None
        assert tw[1].source == f"{p}:2"
    # no token looks like JSON (the old reader took such a file for text)
    assert not any(w.startswith(("{", '"')) or w.endswith("}") for t in tw for w in t.tokens)
    # a .txt name does not matter: the first line decides
    q = write(tmp_path, json.dumps(recs[0]) + "\n", "tweets.txt")
    assert read_tweets(q)[0].tokens == ["Obama", "in", "Paris"]


@pytest.mark.parametrize("rec, msg", [
    ({"text": "x"}, "missing field 'id'"),
    ({"id": ["1"], "text": "x"}, "'id' must be a string"),
    ({"id": True, "text": "x"}, "'id' must be a string"),
    ({"id": "a b", "text": "x"}, "IMGID 'a b' holds spaces"),
    ({"id": "../x", "text": "x"}, "not a plain file name"),
    ({"id": "", "text": "x"}, "empty 'id'"),
    ({"id": "1"}, "exactly one of 'text'"),
    ({"id": "1", "text": "x", "tokens": ["x"]}, "exactly one of 'text'"),
    ({"id": "1", "text": 5}, "'text' must be a string"),
    ({"id": "1", "tokens": "a b"}, "'tokens' must be a list of strings"),
    ({"id": "1", "tokens": ["a", 3]}, "'tokens' must be a list of strings"),
    ({"id": "1", "tokens": ["a b"]}, "one with spaces inside"),
    ({"id": "1", "text": "   "}, "has no tokens"),
    ({"id": "1", "txt": "x"}, r"unknown field\(s\) \['txt'\]"),
    ({"id": "1", "text": "x", "image": 3}, "'image' must be a path"),
    ({"id": "1", "text": "x", "image": "nope.jpg"}, "image 'nope.jpg' not found"),
])
def test_jsonl_tweet_errors_name_file_and_line(tmp_path, rec, msg):
    p = write(tmp_path, json.dumps({"id": "0", "text": "fine"}) + "\n" + json.dumps(rec) + "\n", "t.jsonl")
    with pytest.raises(DataFormatError, match=rf"t\.jsonl:2: .*{msg}"):
        read_tweets(p)


def test_text_starting_with_a_brace(tmp_path):
    p = write(tmp_path, "{Breaking} news from Paris\n")
    with pytest.raises(DataFormatError, match=r"in\.txt:1: not valid JSON .*give fmt='text'"):
        read_tweets(p)
    assert read_tweets(p, "text")[0].tokens == ["{Breaking}", "news", "from", "Paris"]


def test_jsonl_bad_line(tmp_path):
    p = write(tmp_path, '{"id": "1", "text": "x"}\n{"id": "2", "text": \n', "t.jsonl")
    with pytest.raises(DataFormatError, match=r"t\.jsonl:2: not valid JSON"):
        read_tweets(p)


# ------------------------------------------------------------------------------------------ CoNLL


def test_conll_labelled_and_label_less(tmp_path):
    labelled = write(tmp_path, "IMGID:1\nObama\tB-PER\nspeaks\tO\n\nIMGID:2\nNBA\tB-ORG\n", "a.conll")
    plain = write(tmp_path, "IMGID:1\nObama\nspeaks\n\nIMGID:2\nNBA\n", "b.conll")
    for p in (labelled, plain):
        for fmt in ("auto", "conll"):
            tw = read_tweets(p, fmt)
            assert [(t.id, t.tokens, t.labels) for t in tw] == [("1", ["Obama", "speaks"], ["O", "O"]),
                                                               ("2", ["NBA"], ["O"])]
    with pytest.raises(DataFormatError, match=r"c\.conll:2: expected one token per line"):
        read_tweets(write(tmp_path, "IMGID:1\nObama speaks\n", "c.conll"))
    with pytest.raises(DataFormatError, match=r"d\.conll:1: IMGID 'a b' holds spaces"):
        read_tweets(write(tmp_path, "IMGID:a b\nObama\n", "d.conll"))
    with pytest.raises(DataFormatError, match=r"e\.conll:1: token line before any 'IMGID:' line"):
        read_tweets(write(tmp_path, "Obama\tB-PER\n", "e.conll"), "conll")
    with pytest.raises(DataFormatError, match=r"f\.conll:1: IMGID '\.\./outside/x' is not a plain file name"):
        read_tweets(write(tmp_path, "IMGID:../outside/x\nObama\tB-PER\n", "f.conll"))


def test_training_files_still_need_labels(tmp_path):
    from tvolib.data import read_conll
    p = write(tmp_path, "IMGID:1\nObama\nspeaks\tO\n", "train.txt")
    with pytest.raises(DataFormatError, match=r"train\.txt:2: expected 'token<TAB>label'"):
        read_conll(p)


def test_as_tweets():
    tw = as_tweets(["Steph Curry", ["NBA", "finals"]])
    assert [(t.id, t.tokens, t.labels) for t in tw] == [("t1", ["Steph", "Curry"], ["O", "O"]),
                                                       ("t2", ["NBA", "finals"], ["O", "O"])]
    with pytest.raises(ValueError, match="tweet 2 has no tokens"):
        as_tweets(["x", "  "])


# ------------------------------------------------------------------------------------------ output


RESULTS = [{"id": "7", "tokens": ["Obama", "speaks"], "labels": ["B-PER", "O"],
            "entities": [{"start": 0, "end": 1, "type": "PER", "text": "Obama"}], "gate": 0.25,
            "fusion_weights": [0.5, 0.25, 0.25]}]


def test_output_json_and_conll(tmp_path):
    assert json.loads(format_output(RESULTS, "json")) == RESULTS
    assert format_output(RESULTS, "conll") == "IMGID:7\nObama\tB-PER\nspeaks\tO\n"
    assert json.loads(write_output(RESULTS, tmp_path / "o.json").read_text()) == RESULTS
    assert write_output(RESULTS, tmp_path / "o.conll").read_text().startswith("IMGID:7\n")
    with pytest.raises(ValueError, match="unknown output format"):
        format_output(RESULTS, "xml")


@pytest.mark.parametrize("field, value, where", [
    ("gate", math.nan, "gate"), ("fusion_weights", [0.5, math.inf, 0.0], r"fusion_weights\[1\]"),
    ("gate", -math.inf, "gate"),
])
def test_output_json_is_strict(tmp_path, field, value, where):
    bad = [RESULTS[0], {**RESULTS[0], "id": "8", field: value}]
    with pytest.raises(ValueError, match=rf"tweet 2 \(id '8'\): {where} is not a finite number"):
        format_output(bad, "json")
    with pytest.raises(ValueError):
        write_output(bad, tmp_path / "o.json")
    assert not (tmp_path / "o.json").exists()
