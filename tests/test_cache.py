import json
import os
import subprocess
import sys

import pytest
import torch

from tvolib.cache import FeatureCache, JsonlCache, atomic_write_text


def test_append_resume_and_last_wins(tmp_path):
    p = tmp_path / "k.jsonl"
    c = JsonlCache(p, key="q")
    c.append({"q": "NBA", "v": 1})
    c.append({"q": "Paris", "v": 2})
    c.append({"q": "NBA", "v": 3})
    c2 = JsonlCache(p, key="q")
    assert len(c2) == 2 and c2["NBA"]["v"] == 3
    assert c2.missing(["NBA", "Rome", "Rome", "Oslo"]) == ["Rome", "Oslo"]


def test_torn_last_line_is_dropped_and_recomputed(tmp_path):
    p = tmp_path / "k.jsonl"
    p.write_text('{"id": "a", "v": 1}\n{"id": "b", "v": 2}\n{"id": "c", "v"')
    with pytest.warns(UserWarning, match=r"k.jsonl:3: dropping an incomplete last record"):
        c = JsonlCache(p)
    assert c.keys() == ["a", "b"]
    assert c.fill(["a", "b", "c"], lambda k: {"v": 9}) == 1
    assert [json.loads(l)["id"] for l in p.read_text().splitlines()] == ["a", "b", "c"]


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    p = tmp_path / "k.jsonl"
    p.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(ValueError, match=r"k.jsonl:2: corrupt cache record"):
        JsonlCache(p)


def test_killed_writer_loses_nothing_finished(tmp_path):
    """A process killed mid-run keeps every record it finished; a re-run completes the rest."""
    p = tmp_path / "k.jsonl"
    script = (f"import os, sys\nfrom tvolib.cache import JsonlCache\nc = JsonlCache({str(p)!r})\n"
              "for i in range(100):\n"
              "    c.append({'id': str(i), 'x': 'y' * 1000})\n"
              "    if i == 41: os._exit(9)\n")
    r = subprocess.run([sys.executable, "-c", script])
    assert r.returncode == 9
    c = JsonlCache(p)
    assert len(c) == 42
    assert c.fill([str(i) for i in range(100)], lambda k: {"x": "z"}) == 58
    assert len(JsonlCache(p)) == 100


def test_feature_cache_roundtrip_and_settings_guard(tmp_path):
    p = tmp_path / "features-x.safetensors"
    fc = FeatureCache(p, metadata={"encoder": "x", "dim": 4})
    fc.put("s1", torch.ones(4))
    fc.flush()
    fc2 = FeatureCache(p, metadata={"encoder": "x"})
    assert "s1" in fc2 and torch.equal(fc2["s1"], torch.ones(4))
    assert fc2.metadata["dim"] == "4"
    with pytest.raises(ValueError, match="other settings"):
        FeatureCache(p, metadata={"encoder": "y"})


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    p = tmp_path / "out.txt"
    atomic_write_text(p, "old")

    def boom(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", boom)     # fails after the temp file was written
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(p, "new" * 1000)
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_text(p, "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask
