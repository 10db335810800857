"""``LocalKB``: a SQLite + FTS5 knowledge base, and ``build_kb`` / ``iter_records`` that build it from
JSON / JSONL / TSV of (title, text) and Wikipedia abstract dumps."""
from __future__ import annotations

import bz2
import csv
import gzip
import json
import logging
import os
import sqlite3
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Iterator

from ...io import DataFormatError, iter_jsonl
from ...weights import ResourceMissing
from .base import STOPWORDS, KnowledgeSource, Passage, fts_terms, title_variants

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT NOT NULL, title_fold TEXT NOT NULL,
                   text TEXT NOT NULL, source TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE VIRTUAL TABLE docs_fts USING fts5(title, text, content='docs', content_rowid='id',
                                         tokenize='unicode61 remove_diacritics 2');
"""


def _pick(d: dict, keys: tuple, path, line) -> str:
    for k in keys:
        if k in d and d[k] is not None:
            return str(d[k])
    raise DataFormatError(path, line, f"record has none of the fields {keys}: {str(d)[:120]!r}")


TITLE_KEYS = ("title", "lemma", "name", "entity")
TEXT_KEYS = ("text", "extract", "abstract", "gloss", "summary", "description")


def iter_records(path: str | Path) -> Iterator[tuple[str, str]]:
    """(title, text) pairs of one input file; the format follows the file name.

    * ``.jsonl``: one ``{"title", "text"}`` object a line (also ``extract``/``abstract``/``gloss``).
    * ``.json``: a list of such objects, ``{title: {..., "extract": ...}}`` (the vital-articles
      file: text = extract) or ``{title: text}``.
    * ``.tsv``: a header naming a title column (title/lemma/name) and a text column
      (text/gloss/extract/abstract); underscores in titles become spaces.
    * ``.xml`` / ``.xml.gz`` / ``.xml.bz2``: a Wikipedia abstracts dump, streamed
      (``<doc><title>Wikipedia: X</title><abstract>...</abstract></doc>``).
    """
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such knowledge input file")
    if name.endswith(".jsonl"):
        for i, d in iter_jsonl(path):
            yield _pick(d, TITLE_KEYS, path, i), _pick(d, TEXT_KEYS, path, i)
    elif name.endswith(".json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise DataFormatError(path, getattr(e, "lineno", None), f"not JSON ({e})") from None
        if isinstance(data, dict):
            for title, v in data.items():
                if isinstance(v, dict):
                    yield str(v.get("title") or title), _pick(v, TEXT_KEYS, path, None)
                elif isinstance(v, str):
                    yield str(title), v
                else:
                    raise DataFormatError(path, None, f"entry {title!r}: expected an object or a string")
        elif isinstance(data, list):
            for i, d in enumerate(data):
                if not isinstance(d, dict):
                    raise DataFormatError(path, None, f"item {i}: expected an object")
                yield _pick(d, TITLE_KEYS, path, f"item {i}"), _pick(d, TEXT_KEYS, path, f"item {i}")
        else:
            raise DataFormatError(path, None, "expected a JSON object or list")
    elif name.endswith(".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if not header:
                raise DataFormatError(path, 1, "empty TSV file (a header line is needed)")
            low = [h.strip().lower() for h in header]
            ti = next((low.index(k) for k in TITLE_KEYS if k in low), None)
            xi = next((low.index(k) for k in TEXT_KEYS if k in low), None)
            if ti is None or xi is None:
                raise DataFormatError(path, 1, f"header {header} needs a title column {TITLE_KEYS} "
                                                f"and a text column {TEXT_KEYS}")
            for i, row in enumerate(reader, 2):
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) <= max(ti, xi):
                    raise DataFormatError(path, i, f"expected {len(header)} tab-separated columns, got {len(row)}")
                yield row[ti].replace("_", " "), row[xi].replace("_", " ")
    elif name.endswith((".xml", ".xml.gz", ".xml.bz2")):
        yield from _iter_abstracts(path)
    else:
        raise DataFormatError(path, None, "unknown input format: use .json, .jsonl, .tsv or an "
                                           "abstracts dump .xml[.gz|.bz2]")


def _iter_abstracts(path: Path) -> Iterator[tuple[str, str]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else bz2.open if path.name.lower().endswith(".bz2") else open
    with opener(path, "rb") as f:
        ctx = ET.iterparse(f, events=("start", "end"))
        root = None
        try:
            for ev, el in ctx:
                if root is None and ev == "start":
                    root = el
                if ev == "end" and el.tag == "doc":
                    title = (el.findtext("title") or "").strip()
                    if title.startswith("Wikipedia:"):
                        title = title[len("Wikipedia:"):].strip()
                    text = (el.findtext("abstract") or "").strip()
                    if title and text and not text.startswith(("|", "{{")):
                        yield title, text
                    el.clear()
                    if root is not None:
                        root.clear()     # drop finished <doc>s: constant memory
        except ET.ParseError as e:
            line = e.position[0] if getattr(e, "position", None) else None
            raise DataFormatError(path, line, f"XML error ({e})") from None


def build_kb(out: str | Path, inputs: Iterable[str | Path]) -> dict:
    """Build a LocalKB file from input files (atomic: written to a temp file, then renamed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    if tmp.exists():
        tmp.unlink()
    t0 = time.time()
    con = sqlite3.connect(tmp)
    counts = {}
    try:
        con.executescript(SCHEMA)
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        inputs = [Path(p) for p in inputs]
        if not inputs:
            raise ValueError("no input files given to build the knowledge base")
        for p in inputs:
            n, batch = 0, []
            for title, text in iter_records(p):
                title, text = " ".join(title.split()), " ".join(text.split())
                if not title or not text:
                    continue
                batch.append((title, title.casefold(), text, p.name))
                if len(batch) >= 5000:
                    con.executemany("INSERT INTO docs(title, title_fold, text, source) VALUES (?,?,?,?)", batch)
                    n += len(batch); batch = []
            con.executemany("INSERT INTO docs(title, title_fold, text, source) VALUES (?,?,?,?)", batch)
            n += len(batch)
            counts[p.name] = n
            log.info("  %s: %d entries", p, n)
        con.execute("INSERT INTO docs_fts(docs_fts) VALUES ('rebuild')")
        con.execute("CREATE INDEX docs_title ON docs(title)")
        con.execute("CREATE INDEX docs_title_fold ON docs(title_fold)")
        info = {"inputs": [str(p) for p in inputs], "counts": counts, "n_docs": sum(counts.values()),
                "build_s": round(time.time() - t0, 2), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in info.items()])
        con.commit()
        con.execute("INSERT INTO docs_fts(docs_fts) VALUES ('optimize')")
        con.commit()
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    os.replace(tmp, out)
    info["build_s"] = round(time.time() - t0, 2)
    log.info("built %s: %d entries in %s s", out, info["n_docs"], info["build_s"])
    return info


class LocalKB(KnowledgeSource):
    """SQLite FTS5 knowledge base (read-only): exact → case-folded title → BM25."""

    name = "local"

    def __init__(self, path: str | Path, title_weight: float = 5.0, memo_size: int = 100_000):
        self.path = Path(path)
        if not self.path.exists():
            raise ResourceMissing(f"local knowledge base {self.path} not found; build it with "
                                  f"`python -m tvolib.tfo.knowledge build --out {self.path} INPUTS...`")
        self._local = threading.local()
        self.title_weight = title_weight
        self.memo_size = memo_size                # in-memory memo of answers (candidate strings repeat)
        self._memo: dict = {}
        self.meta = {k: json.loads(v) for k, v in self._con().execute("SELECT key, value FROM meta")}

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._local.con = con
        return con

    def __len__(self) -> int:
        return self._con().execute("SELECT count(*) FROM docs").fetchone()[0]

    def lookup(self, query: str, k: int = 3, tweet_id: str | None = None) -> list[Passage]:
        if not isinstance(query, str) or k <= 0:
            return []
        if self.memo_size:
            hit = self._memo.get((query, k))
            if hit is not None:
                return list(hit)
        out = self._lookup(query, k)
        if self.memo_size:
            if len(self._memo) >= self.memo_size:
                self._memo.clear()
            self._memo[(query, k)] = tuple(out)
        return out

    def _lookup(self, query: str, k: int) -> list[Passage]:
        con = self._con()
        out, seen = [], set()

        def add(rows, match, score_fn):
            for rid, title, text, src, *rest in rows:
                if rid not in seen and len(out) < k:
                    seen.add(rid)
                    out.append(Passage(title, text, f"local:{src}", score_fn(rest), match))

        variants = title_variants(query)
        if variants:
            marks = ",".join("?" * len(variants))
            add(con.execute(f"SELECT id, title, text, source FROM docs WHERE title IN ({marks}) LIMIT ?",
                            (*variants, k)), "exact", lambda r: 3.0)                       # exact title
            if len(out) < k:                                                              # case-folded
                folded = list(dict.fromkeys(v.casefold() for v in variants))
                marks = ",".join("?" * len(folded))
                add(con.execute(f"SELECT id, title, text, source FROM docs WHERE title_fold IN ({marks}) "
                                f"LIMIT ?", (*folded, k + len(out))), "casefold", lambda r: 2.0)
        terms = fts_terms(query)
        if len(out) < k and terms:                                           # BM25
            quoted = ['"' + t.replace('"', '""') + '"' for t in terms]
            exprs = [" ".join(quoted)]                       # all words, anywhere (title weighted)
            rare = ['"' + t + '"' for t in terms if t.casefold() not in STOPWORDS]
            if len(terms) > 1 and rare:                      # fallback: any rare word, in titles only
                exprs.append("{title} : (" + " OR ".join(rare) + ")")
            for expr in exprs:
                rows = con.execute(
                    "SELECT d.id, d.title, d.text, d.source, s FROM (SELECT rowid, bm25(docs_fts, ?, 1.0) AS s "
                    "FROM docs_fts WHERE docs_fts MATCH ? ORDER BY s LIMIT ?) f JOIN docs d ON d.id = f.rowid "
                    "ORDER BY s", (self.title_weight, expr, k + len(out))).fetchall()
                if rows:                                     # the fallback runs only when nothing matched
                    add(rows, "bm25", lambda r: round(-float(r[0]), 4))
                    break
        return out

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
