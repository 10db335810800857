"""Stage caches: nothing a user computed is lost, and a complete cache makes a re-run do no work.

* ``JsonlCache``: one JSON object per line, keyed by a field (``key``). Records are appended one
  at a time, flushed and fsync'ed, so a run killed at any point loses at most the record being
  written; a torn last line is detected on open, dropped (the file is truncated back to the last
  complete record, with a warning) and recomputed. Every record should carry its provenance
  (source, model, prompt hash, score...).
* ``FeatureCache``: tensors keyed by IMGID in a safetensors file (never pickle), written
  atomically (temp file + ``os.replace``). ``flush`` may be called every N items, so an
  interrupted extraction resumes from the last flush.
* ``atomic_write_text`` / ``atomic_write_json``: whole-file writes that never leave half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from safetensors import safe_open
from safetensors.torch import save as save_tensors
from tqdm.auto import tqdm


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        # mkstemp makes 0600 files; keep an existing file's mode, else the usual umask default
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def stable_hash(*parts: Any, n: int = 12) -> str:
    """Short hash of JSON-serialisable parts, for provenance (prompt hash, config hash)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


class JsonlCache:
    """Append-only JSONL cache keyed by ``record[key]`` (last record of a key wins).

    >>> c = JsonlCache("cache/knowledge.jsonl", key="query")
    >>> if "NBA" not in c: c.append({"query": "NBA", "passages": [...], "source": "wikipedia"})

    ``key`` may name several fields, e.g. ``("key", "id")``: a record is indexed by the first of them
    it holds, so records keyed by one field and records keyed by another can share a file.
    """

    def __init__(self, path: str | Path, key: str | tuple[str, ...] = "id"):
        self.path = Path(path)
        self.key = key
        self._fields = (key,) if isinstance(key, str) else tuple(key)
        self._lock = threading.Lock()
        self._records: dict[str, dict] = {}
        self.dropped_lines = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        good_end = 0
        with open(self.path, "rb") as f:
            data = f.read()
        pos = 0
        for lineno, raw in enumerate(data.splitlines(keepends=True), start=1):
            pos += len(raw)
            if not raw.strip():
                good_end = pos
                continue
            complete = raw.endswith(b"\n")
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict) or self._key_of(rec) is None:
                    raise ValueError(f"not an object with a {' or '.join(map(repr, self._fields))} field")
            except ValueError as e:
                if not complete:  # torn write at the end: drop it, it will be recomputed
                    warnings.warn(f"{self.path}:{lineno}: dropping an incomplete last record "
                                  f"(interrupted write); it will be recomputed")
                    self.dropped_lines += 1
                    break
                raise ValueError(f"{self.path}:{lineno}: corrupt cache record ({e}); "
                                 f"delete the line or the file to recompute it") from None
            if not complete:
                # a complete JSON object without its newline: keep it, and end the line
                with open(self.path, "ab") as f:
                    f.write(b"\n")
                pos += 1
            self._records[self._key_of(rec)] = rec
            good_end = pos
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    def _key_of(self, rec: dict) -> str | None:
        return next((str(rec[f]) for f in self._fields if f in rec), None)

    def __contains__(self, k: Any) -> bool:
        return str(k) in self._records

    def __getitem__(self, k: Any) -> dict:
        return self._records[str(k)]

    def get(self, k: Any, default=None):
        return self._records.get(str(k), default)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[dict]:
        return iter(list(self._records.values()))

    def keys(self) -> list[str]:
        return list(self._records)

    def append(self, record: dict) -> dict:
        """Write one record durably (flush + fsync) and index it."""
        key = self._key_of(record)
        if key is None:
            raise KeyError(f"record has no {' or '.join(map(repr, self._fields))} field: {record!r:.200}")
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._records[key] = record
        return record

    def missing(self, keys: Iterable[Any]) -> list:
        """The keys (in order, without repeats) that still need computing."""
        seen, out = set(), []
        for k in keys:
            if str(k) not in self._records and str(k) not in seen:
                seen.add(str(k))
                out.append(k)
        return out

    def fill(self, keys: Iterable[Any], compute: Callable[[Any], dict], progress: bool = False) -> int:
        """Compute and append the records of the missing keys; returns how many were computed."""
        todo = self.missing(keys)
        it = todo
        if progress and todo:
            it = tqdm(todo, desc=self.path.name)
        for k in it:
            rec = compute(k)
            rec.setdefault(self._fields[0], k)
            self.append(rec)
        return len(todo)


class FeatureCache:
    """Tensors keyed by IMGID in one safetensors file, with JSON metadata (encoder, dim...)."""

    def __init__(self, path: str | Path, metadata: dict | None = None):
        self.path = Path(path)
        self.metadata: dict[str, str] = {k: str(v) for k, v in (metadata or {}).items()}
        self.tensors: dict = {}
        self._dirty = False
        if self.path.exists():
            with safe_open(str(self.path), framework="pt") as f:
                stored = f.metadata() or {}
                if metadata:
                    clash = {k: (stored.get(k), v) for k, v in self.metadata.items()
                             if k in stored and stored[k] != v}
                    if clash:
                        raise ValueError(f"{self.path}: cache was made with other settings {clash}; "
                                         f"use another cache folder or delete the file")
                self.metadata = {**stored, **self.metadata}
                for k in f.keys():
                    self.tensors[k] = f.get_tensor(k)

    def __contains__(self, k) -> bool:
        return str(k) in self.tensors

    def __getitem__(self, k):
        return self.tensors[str(k)]

    def __len__(self) -> int:
        return len(self.tensors)

    def keys(self) -> list[str]:
        return list(self.tensors)

    def put(self, k, tensor) -> None:
        self.tensors[str(k)] = tensor.detach().to("cpu").contiguous()
        self._dirty = True

    def flush(self) -> None:
        if not self._dirty and self.path.exists():
            return
        atomic_write_bytes(self.path, save_tensors(self.tensors, metadata=self.metadata))
        self._dirty = False
