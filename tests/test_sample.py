"""Checks of the embedded synthetic sample dataset (tvolib/sample/)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tvolib.sample import SAMPLE_DIR, sample_paths
from tvolib.sample.make_sample import SIZE, generate

SPLITS = ("train", "valid", "test")
TYPES = ("PER", "LOC", "ORG", "MISC")
ALLOWED = {"O"} | {f"{p}-{t}" for t in TYPES for p in "BI"}
SHIPPED_FILES = ["data/train.txt", "data/valid.txt", "data/test.txt", "captions.json",
                 "objects.jsonl", "kb.jsonl", "llm_knowledge.jsonl", "phrases.jsonl"]
MISSING = {"s0063": "train", "s0105": "test"}   # documented in README.md


def read_conll(path: Path):
    tweets, cur = [], None
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("IMGID:"):
            cur = {"id": line[6:], "tokens": [], "labels": []}
            tweets.append(cur)
        elif line:
            tok, lab = line.split("\t")
            cur["tokens"].append(tok)
            cur["labels"].append(lab)
    return tweets


def entities(labels):
    out = []
    for lab in labels:
        if lab.startswith("B-"):
            out.append(lab[2:])
    return out


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    generate(out)
    return out


@pytest.fixture(scope="module")
def splits():
    return {s: read_conll(SAMPLE_DIR / "data" / f"{s}.txt") for s in SPLITS}


def test_paths_exist():
    for key, p in sample_paths().items():
        assert Path(p).exists(), key


@pytest.mark.parametrize("rel", SHIPPED_FILES)
def test_text_files_byte_identical(regenerated, rel):
    assert (regenerated / rel).read_bytes() == (SAMPLE_DIR / rel).read_bytes(), rel


def test_images_pixel_identical(regenerated):
    # pixels, not bytes: the PNG encoder of another Pillow/zlib build may compress differently
    import numpy as np
    shipped = sorted(p.name for p in (SAMPLE_DIR / "images").iterdir())
    fresh = sorted(p.name for p in (regenerated / "images").iterdir())
    assert shipped == fresh
    for name in shipped:
        with Image.open(regenerated / "images" / name) as a, Image.open(SAMPLE_DIR / "images" / name) as b:
            assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))), name


def test_format_and_labels(splits):
    for s in SPLITS:
        raw = (SAMPLE_DIR / "data" / f"{s}.txt").read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n") and not raw.endswith(b"\n\n")
        assert b"OTHER" not in raw
        for tw in splits[s]:
            assert tw["tokens"], tw["id"]
            prev = "O"
            for tok, lab in zip(tw["tokens"], tw["labels"]):
                assert tok and not any(c.isspace() for c in tok)
                assert lab in ALLOWED, (tw["id"], lab)
                if lab.startswith("I-"):
                    assert prev[:2] in ("B-", "I-") and prev[2:] == lab[2:], (tw["id"], tok)
                prev = lab
    ids = [tw["id"] for s in SPLITS for tw in splits[s]]
    assert len(ids) == len(set(ids))
    assert 100 <= len(ids) <= 150


def test_every_type_in_every_split(splits):
    for s in SPLITS:
        c = Counter(t for tw in splits[s] for t in entities(tw["labels"]))
        assert all(c[t] > 0 for t in TYPES), (s, c)


def test_captions_and_images(splits):
    caps = json.loads((SAMPLE_DIR / "captions.json").read_text())
    ids = {tw["id"]: s for s in SPLITS for tw in splits[s]}
    assert set(caps) == set(ids)
    assert all(isinstance(c, str) and c for c in caps.values())
    missing = {i: ids[i] for i in ids if not (SAMPLE_DIR / "images" / f"{i}.png").exists()}
    assert missing == MISSING
    assert {p.stem for p in (SAMPLE_DIR / "images").glob("*.png")} == set(ids) - set(MISSING)


def test_objects_match_annotations(splits):
    from PIL import Image
    objs = {}
    for line in (SAMPLE_DIR / "objects.jsonl").read_text().splitlines():
        r = json.loads(line)
        objs[r["imgid"]] = r
    n_unrelated = 0
    for s in SPLITS:
        for tw in splits[s]:
            r = objs[tw["id"]]
            typed = Counter(o["type"] for o in r["objects"] if o["type"])
            if r["related"]:
                assert set(typed) == set(entities(tw["labels"])), tw["id"]
            else:
                n_unrelated += 1
                assert not typed
            for o in r["objects"]:
                x0, y0, x1, y1 = o["box"]
                assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
    assert 0.05 <= n_unrelated / len(objs) <= 0.15
    with Image.open(SAMPLE_DIR / "images" / "s0001.png") as im:
        assert im.size == (SIZE, SIZE) and im.convert("RGB").mode == "RGB"


def test_jsonl_cover_every_tweet(splits):
    ids = [tw["id"] for s in SPLITS for tw in splits[s]]
    aux = [json.loads(l) for l in (SAMPLE_DIR / "llm_knowledge.jsonl").read_text().splitlines()]
    assert [a["imgid"] for a in aux] == ids and all(a["aux"] for a in aux)
    phr = [json.loads(l) for l in (SAMPLE_DIR / "phrases.jsonl").read_text().splitlines()]
    assert [p["imgid"] for p in phr] == ids
    assert all(p["source"] == "sample-template" for p in phr)
    kb = [json.loads(l) for l in (SAMPLE_DIR / "kb.jsonl").read_text().splitlines()]
    assert len({k["title"] for k in kb}) == len(kb) and all(k["text"] for k in kb)


def test_total_size_under_2mb():
    total = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts)
    assert total < 2 * 1024 * 1024, total
