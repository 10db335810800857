"""Local knowledge base (SQLite FTS5), its inputs and build command, and per-tweet files."""
import gzip
import json

import pytest

from tvolib.weights import ResourceMissing
from tvolib.io import DataFormatError
from tvolib.tfo.knowledge import (LocalKB, Passage, TweetFileSource, build_kb, camel_split,
                                  clean_query, fts_terms, iter_records, main)

ABSTRACTS = """<feed>
<doc><title>Wikipedia: Golden State Warriors</title><url>https://en.wikipedia.org/wiki/Golden_State_Warriors</url>
<abstract>The Golden State Warriors are an American professional basketball team based in San Francisco.</abstract>
<links><sublink linktype="nav"><anchor>History</anchor><link>x</link></sublink></links></doc>
<doc><title>Wikipedia: Template junk</title><abstract>| infobox = yes</abstract></doc>
<doc><title>Wikipedia: Minion</title><abstract>Minions are small yellow cartoon characters from Despicable Me.</abstract></doc>
</feed>
"""


@pytest.fixture
def kb_inputs(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"title": "Steph Curry", "text": "Steph Curry is an American basketball player. He plays for Golden State."}) + "\n"
        + json.dumps({"title": "NBA", "text": "The National Basketball Association is a professional basketball league."}) + "\n"
        + json.dumps({"title": "Apple Inc.", "text": "Apple is a technology company in Cupertino."}) + "\n")
    (tmp_path / "b.json").write_text(json.dumps({
        "Paris": {"title": "Paris", "extract": "Paris is the capital of France.", "description": "city"},
        "Curry": {"title": "Curry", "extract": "Curry is a spicy dish.", "description": "dish"}}))
    (tmp_path / "c.json").write_text(json.dumps([{"title": "London", "text": "London is the capital of England."}]))
    (tmp_path / "d.tsv").write_text("lemma\tsynset_offset\tgloss\nNew_York\t1\ta city in New York State\n"
                                    "paris\t2\ta town in Texas\n")
    with gzip.open(tmp_path / "enwiki-20240101-abstract.xml.gz", "wt") as f:
        f.write(ABSTRACTS)
    return [tmp_path / n for n in ("a.jsonl", "b.json", "c.json", "d.tsv", "enwiki-20240101-abstract.xml.gz")]


@pytest.fixture
def kb(tmp_path, kb_inputs):
    out = tmp_path / "kb.sqlite"
    info = build_kb(out, kb_inputs)
    assert info["counts"]["enwiki-20240101-abstract.xml.gz"] == 2        # the template line is skipped
    assert info["n_docs"] == 3 + 2 + 1 + 2 + 2
    return LocalKB(out)


def test_input_formats(kb_inputs):
    recs = {p.name: list(iter_records(p)) for p in kb_inputs}
    assert recs["b.json"][0] == ("Paris", "Paris is the capital of France.")
    assert recs["d.tsv"][0] == ("New York", "a city in New York State")
    assert recs["enwiki-20240101-abstract.xml.gz"][0][0] == "Golden State Warriors"


def test_lookup_order_exact_casefold_bm25(kb):
    p = kb.lookup("Paris", k=3)
    assert [x.match for x in p][:1] == ["exact"] and p[0].title == "Paris"
    assert any(x.match == "casefold" and x.title == "paris" for x in p)          # the TSV's lower-case title
    c = kb.lookup("steph curry", k=1)
    assert c[0].title == "Steph Curry" and c[0].match == "casefold"
    b = kb.lookup("Warriors basketball", k=2)
    assert b and b[0].match == "bm25" and b[0].title == "Golden State Warriors"
    assert all(isinstance(x, Passage) and x.source.startswith("local:") for x in p + c + b)
    # hashtags, mentions and CamelCase reach the title
    assert kb.lookup("#StephCurry", k=1)[0].title == "Steph Curry"
    assert kb.lookup("@NBA", k=1)[0].title == "NBA"


@pytest.mark.parametrize("q", ['"', 'say "hi', "AND", "OR NOT", "NEAR(a b)", "*", "-", "a - b", "^x", "col:val",
                               "😀🔥", "#", "@", "", "   ", "'; DROP TABLE docs; --", "NBA*", "(", "NEAR/2"])
def test_unsafe_queries(kb, q):
    out = kb.lookup(q, k=3)
    assert isinstance(out, list) and len(out) <= 3
    assert len(kb) == 10          # the base is intact


def test_query_helpers():
    assert clean_query("  #NBAAwards  @foo ") == "NBAAwards foo"
    assert camel_split("NBAAwards") == "NBA Awards"
    assert camel_split("StephCurry30") == "Steph Curry 30"
    assert fts_terms('"AND" NEAR * 😀') == ["AND", "NEAR"]


def test_bad_inputs_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "a", "text": "b"}\n{not json}\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2"):
        build_kb(tmp_path / "x.sqlite", [bad])
    assert not (tmp_path / "x.sqlite").exists()            # no half-built base left behind
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("lemma\tgloss\nonly-one-column\n")
    with pytest.raises(DataFormatError, match=r"bad.tsv:2"):
        list(iter_records(tsv))
    notext = tmp_path / "n.jsonl"
    notext.write_text('{"title": "a"}\n')
    with pytest.raises(DataFormatError, match=r"n.jsonl:1"):
        list(iter_records(notext))
    with pytest.raises(DataFormatError, match="unknown input format"):
        list(iter_records(_touch(tmp_path / "z.csv")))
    with pytest.raises(ResourceMissing, match="build"):
        LocalKB(tmp_path / "absent.sqlite")


def _touch(p):
    p.write_text("x")
    return p


def test_cli_build_and_lookup(tmp_path, kb_inputs, capsys):
    out = tmp_path / "cli.sqlite"
    assert main(["build", "--out", str(out)] + [str(p) for p in kb_inputs]) == 0
    assert main(["lookup", "--kb", str(out), "Paris"]) == 0
    assert "capital of France" in capsys.readouterr().out
    assert main(["build", "--out", str(out), str(tmp_path / "missing.json")]) == 2


def test_tweet_file_source(tmp_path):
    f = tmp_path / "k.jsonl"
    f.write_text(json.dumps({"split": "train", "imgid": "1", "aux": "Named entities: 1. Kawhi Leonard (person). "
                             "Kawhi Leonard is a basketball player. The NBA is a league."}) + "\n"
                 + json.dumps({"split": "test", "imgid": "2", "aux": ""}) + "\n")
    src = TweetFileSource(f)
    hit = src.lookup("Kawhi Leonard", 3, tweet_id="1")
    assert len(hit) == 1 and "basketball player" in hit[0].text and "league" not in hit[0].text
    assert "league" in src.lookup("Spurs", 3, tweet_id="1")[0].text      # no mention: the whole text
    assert src.lookup("x", 3, tweet_id="2") == [] and src.lookup("x", 3, tweet_id="404") == []
    with pytest.raises(ValueError):
        src.lookup("x", 3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"split": "train", "imgid": "1", "aux": "x"}\n{"imgid": "2"}\n')
    with pytest.raises(DataFormatError, match="bad.jsonl:2"):
        TweetFileSource(bad)
    with pytest.raises(ResourceMissing):
        TweetFileSource(tmp_path / "none.jsonl")
