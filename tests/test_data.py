import warnings

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from tvolib.data import (DataFormatError, LABELS, entity_spans, load_dataset, read_conll, repair_bio,
                         statistics, statistics_markdown)
from tvolib.sample import SAMPLE_DIR

GOOD = "IMGID:1\nRT\tO\nSteph\tB-PER\nCurry\tI-PER\n\nIMGID:2\nNBA\tB-ORG\nin\tO\nParis\tB-OTHER\n"


def write(tmp_path, text, name="train.txt", raw=None):
    p = tmp_path / name
    p.write_bytes(raw if raw is not None else text.encode("utf-8"))
    return p


def test_reads_tweets_and_maps_other_to_misc(tmp_path):
    tweets = read_conll(write(tmp_path, GOOD))
    assert [t.id for t in tweets] == ["1", "2"]
    assert tweets[0].tokens == ["RT", "Steph", "Curry"]
    assert tweets[1].labels == ["B-ORG", "O", "B-MISC"]
    assert tweets[0].entities() == [("Steph Curry", "PER")]
    assert tweets[0].split == "train"


def test_crlf_and_bom_accepted(tmp_path):
    raw = b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode()
    tweets = read_conll(write(tmp_path, "", raw=raw))
    assert tweets[0].id == "1" and tweets[1].tokens[-1] == "Paris"


@pytest.mark.parametrize("text,line,what", [
    ("IMGID:1\nRT O\n", 2, "token<TAB>label"),
    ("IMGID:1\nRT\tO\tX\n", 2, "token<TAB>label"),
    ("IMGID:1\nRT\tB-FOO\n", 2, "unknown label"),
    ("IMGID:1\nRT\tO\n\nIMGID:2\n\nIMGID:3\nx\tO\n", 4, "no tokens"),
    ("RT\tO\n", 1, "before any"),
    ("IMGID:\nRT\tO\n", 1, "empty IMGID"),
])
def test_errors_name_file_and_line(tmp_path, text, line, what):
    p = write(tmp_path, text)
    with pytest.raises(DataFormatError) as e:
        read_conll(p)
    assert f"{p}:{line}" in str(e.value) and what in str(e.value)
    assert e.value.line == line


def test_empty_file_and_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match="empty file"):
        read_conll(write(tmp_path, "\n\n"))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_conll(tmp_path / "nope.txt")


def test_duplicate_imgid_warns(tmp_path):
    p = write(tmp_path, "IMGID:7\na\tO\n\nIMGID:7\nb\tO\n")
    with pytest.warns(UserWarning, match=r"duplicate IMGID:7 .*:1\)"):
        tweets = read_conll(p)
    assert len(tweets) == 2


def test_orphan_i_rule_matches_seqeval():
    cases = [["I-PER", "I-PER", "O"], ["O", "I-LOC", "B-LOC", "I-LOC"], ["B-PER", "I-LOC", "I-LOC"],
             ["B-ORG", "B-ORG", "I-ORG", "O", "I-MISC"]]
    for labels in cases:
        ours = [(t, s, e - 1) for s, e, t in entity_spans(labels)]
        assert ours == get_entities(labels), labels
        assert entity_spans(repair_bio(labels)) == entity_spans(labels)
        assert all(l in LABELS for l in repair_bio(labels))


def test_statistics_on_sample():
    ds = load_dataset(SAMPLE_DIR / "data", SAMPLE_DIR / "images", check_images=True)
    st = statistics(ds)
    assert st["train"]["Total tweets"] == len(ds["train"])
    assert st["test"]["Images missing"] == sum(t.image_path is None for t in ds["test"])
    total = sum(st["train"][t] for t in ("PER", "LOC", "ORG", "MISC"))
    assert total == st["train"]["Total entities"] == sum(len(t.spans()) for t in ds["train"])
    assert "| PER |" in statistics_markdown(ds)


def test_max_samples(tmp_path):
    ds = load_dataset(SAMPLE_DIR / "data", max_samples=5)
    assert all(len(v) == 5 for v in ds.splits.values())


# The B-tag counts listed in shared/data/README.md (PER, LOC, ORG, MISC).
EXPECTED = {
    "twitter2015": {"train": (2217, 2091, 927, 931), "valid": (552, 522, 247, 220),
                    "test": (1816, 1697, 839, 720)},
    "twitter2017": {"train": (2943, 731, 1674, 701), "valid": (626, 173, 375, 150),
                    "test": (621, 178, 395, 157)},
}
TWEETS = {"twitter2015": (4000, 1000, 3257), "twitter2017": (3373, 723, 723)}


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["twitter2015", "twitter2017"])
def test_table3_on_real_data(shared_data, name):
    ds = load_dataset(shared_data / name, name=name)
    st = statistics(ds)
    for split, counts in EXPECTED[name].items():
        assert tuple(st[split][t] for t in ("PER", "LOC", "ORG", "MISC")) == counts, split
    assert tuple(st[s]["Total tweets"] for s in ("train", "valid", "test")) == TWEETS[name]
    # every orphan I- becomes an entity, as seqeval counts them
    for split in ("train", "test"):
        n_seqeval = sum(len(get_entities(t.labels)) for t in ds[split])
        assert n_seqeval == st[split]["Total entities"] + st[split]["Orphan I- (read as B-)"]
