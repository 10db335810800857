"""Knowledge sources for candidate entities (section 4.1): one interface, three back-ends.

``KnowledgeSource.lookup(query, k, tweet_id=None) -> list[Passage]`` — a candidate string in,
ranked passages (title, text, source, score) out.

* ``WikipediaSource`` — live Wikipedia over the MediaWiki API at ``api_url`` (any MediaWiki: the
  real one, a local mirror, the test server): search, then the summary of each hit, with the
  calls the ``wikipedia`` package makes. Redirects are followed, disambiguation pages fall back to
  their first options, missing pages are skipped. Every request gets a timeout and a polite
  minimum interval, and every call one retry policy (``tenacity``: exponential back-off, also on
  HTTP 429/5xx, honouring ``Retry-After``). Every answer goes to a persistent JSONL cache
  (``JsonlCache``); ``offline=True`` reads only that cache.
* ``LocalKB`` — SQLite + FTS5 base built by ``python -m tvolib.tfo.knowledge build --out KB.sqlite
  INPUTS...`` from JSON / JSONL / TSV of (title, text) and from Wikipedia abstract dumps
  (``enwiki-*-abstract.xml.gz``, streamed). Look-up order: exact title, case-folded title (also
  without a leading ``#``/``@`` and with CamelCase split), then BM25 over title (weight 5) and text.
  Queries are reduced to quoted word terms, so quotes, FTS operators (AND, OR, NOT, NEAR, ``*``,
  ``-``, ``^``, ``:``), emoji, ``#``/``@`` and empty strings are all safe.
* ``TweetFileSource`` — per-tweet knowledge files in the PGIM layout (JSONL ``{"split", "imgid",
  "aux"}``), keyed by IMGID: the LLM-knowledge setting of peer work. ``lookup`` needs the tweet id;
  it returns the sentences of the tweet's text that mention the candidate, or the whole text when
  none does (the relevance filter then picks sentences).
"""
from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import hashlib
import json
import logging
import os
import re
import sqlite3
import sys
import threading
import time
import warnings
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import requests
from bs4 import BeautifulSoup
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from ..cache import JsonlCache
from ..io import DataFormatError, iter_jsonl
from ..weights import ResourceMissing

log = logging.getLogger(__name__)


@dataclass
class Passage:
    title: str
    text: str
    source: str
    score: float = 0.0
    match: str = ""             # "exact" | "casefold" | "bm25" | "search" | "disambiguation" | "tweet"
    url: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Passage":
        return cls(**{k: d[k] for k in ("title", "text", "source", "score", "match", "url") if k in d})


class KnowledgeSource:
    """A candidate string in, ranked passages out."""

    name = "base"

    def lookup(self, query: str, k: int = 3, tweet_id: str | None = None) -> list[Passage]:
        raise NotImplementedError

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- query normalisation
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])")
_WORD = re.compile(r"\w+", re.UNICODE)


def clean_query(q: str) -> str:
    """Whitespace collapsed, leading #/@ of every word removed (``#NBAAwards`` → ``NBAAwards``)."""
    return " ".join(w.lstrip("#@") for w in (q or "").split()).strip()


def camel_split(q: str) -> str:
    """``NBAAwards`` → ``NBA Awards``, ``StephCurry30`` → ``Steph Curry 30``; underscores → spaces."""
    return " ".join(_CAMEL.sub(" ", w.replace("_", " ")) for w in q.split())


def title_variants(q: str) -> list[str]:
    raw = " ".join((q or "").split())
    out = []
    for v in (raw, clean_query(raw), camel_split(clean_query(raw))):
        if v and v not in out:
            out.append(v)
    return out


STOPWORDS = frozenset("a an and are as at be by for from has he in is it its of on or that the to was were will "
                      "with i you we they my your our rt de la el le les des du".split())


def fts_terms(q: str) -> list[str]:
    """Word terms of a query, each safe to put inside double quotes in an FTS5 MATCH."""
    return [t for t in _WORD.findall(camel_split(clean_query(q))) if t]


# ----------------------------------------------------------------------------- local knowledge base
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


# ----------------------------------------------------------------------------- per-tweet files
_SENT = re.compile(r"(?<=[.!?])\s+|(?<=[a-z.)])(?=\d+\.\s)|\s*\n+\s*")


class TweetFileSource(KnowledgeSource):
    """Per-tweet knowledge (PGIM layout: JSONL ``{"split", "imgid", "aux"}``), keyed by IMGID."""

    name = "tweet_files"

    def __init__(self, *paths: str | Path):
        if not paths:
            raise ValueError("TweetFileSource needs at least one JSONL file")
        self.paths = [Path(p) for p in paths]
        self.aux: dict[str, str] = {}
        digest = hashlib.sha256()
        for p in self.paths:
            if not p.exists():
                raise ResourceMissing(f"per-tweet knowledge file {p} not found (JSONL with split, imgid, aux "
                                      f"per line, e.g. <data root>/llm_knowledge/pgim_twitter2017.jsonl)")
            digest.update(p.read_bytes())
            for i, d in iter_jsonl(p):
                if "imgid" not in d or "aux" not in d:
                    raise DataFormatError(p, i, f"expected {{'split', 'imgid', 'aux'}}, got the fields {sorted(d)}")
                if not isinstance(d["aux"], str):
                    raise DataFormatError(p, i, "'aux' must be a string")
                self.aux[str(d["imgid"])] = d["aux"]

        # the files' content, so that knowledge cached from an edited file is not served again
        self.fingerprint = digest.hexdigest()[:12]

    def __contains__(self, tweet_id) -> bool:
        return str(tweet_id) in self.aux

    def lookup(self, query: str, k: int = 3, tweet_id: str | None = None) -> list[Passage]:
        if tweet_id is None:
            raise ValueError("TweetFileSource.lookup needs the tweet id (knowledge is per tweet)")
        aux = self.aux.get(str(tweet_id))
        if not aux or not aux.strip():
            return []
        src = f"tweet_files:{self.paths[0].name}"
        q = clean_query(query).casefold()
        sents = [s.strip() for s in _SENT.split(aux) if s and s.strip()]
        hits = [s for s in sents if q and q in s.casefold()]
        if hits:
            return [Passage(query, " ".join(hits), src, 1.0, "tweet")][:k]
        return [Passage(query, aux, src, 0.5, "tweet")][:k]


# ----------------------------------------------------------------------------- live Wikipedia
class _Retryable(Exception):
    """A fault worth another attempt: HTTP 429/5xx, a timeout, a lost connection, an unreadable answer."""

    def __init__(self, msg, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


class _PageMissing(Exception):
    pass


class _Disambiguation(Exception):
    def __init__(self, title: str, options: list[str]):
        super().__init__(title)
        self.options = options


RETRYABLE_API_ERRORS = ("ratelimit", "maxlag", "timed out", "pool queue")


@dataclass
class WikipediaConfig:
    api_url: str = "https://en.wikipedia.org/w/api.php"
    timeout: float = 10.0            # seconds per HTTP request
    retries: int = 3                 # extra attempts after the first
    backoff: float = 1.0             # seconds, doubled each retry (Retry-After wins when given)
    max_backoff: float = 30.0
    min_interval: float = 0.1        # polite rate limit: at least this long between requests
    results: int = 3                 # search hits fetched per query
    disambiguation_options: int = 2  # options tried when a hit is a disambiguation page
    user_agent: str = "tvomner/0.1 (research; https://github.com/)"


class WikipediaSource(KnowledgeSource):
    """Live Wikipedia (search → summaries) with a persistent JSONL cache and an offline mode.

    Cache record (key ``query``): ``{"query", "passages": [Passage...], "source": "wikipedia",
    "api_url", "fetched_at", "n_requests"}``. Failures after all retries are not cached (a re-run
    tries again) and raise ``ResourceMissing``. Offline: a query not in the cache returns ``[]``
    and is counted in ``stats["offline_miss"]`` (a warning is given once).
    """

    name = "wikipedia"

    def __init__(self, cache_path: str | Path, cfg: WikipediaConfig | None = None, offline: bool = False):
        self.cfg = cfg or WikipediaConfig()
        self.offline = offline
        self.cache = JsonlCache(cache_path, key="query")
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0, "offline_miss": 0, "errors": 0}
        self._last_call = 0.0
        self._warned = False
        self._rate = threading.Lock()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = self.cfg.user_agent
        self._retrying = Retrying(stop=stop_after_attempt(self.cfg.retries + 1), wait=self._wait,
                                  retry=retry_if_exception_type((_Retryable, KeyError)),
                                  before_sleep=self._count_retry, reraise=True)

    # -- one retry policy (tenacity) around every call to the API

    def _wait(self, state: RetryCallState) -> float:
        ra = getattr(state.outcome.exception(), "retry_after", None)
        return min(self.cfg.max_backoff, ra if ra is not None else self.cfg.backoff * 2 ** (state.attempt_number - 1))

    def _count_retry(self, state: RetryCallState) -> None:
        self.stats["retries"] += 1
        log.info("Wikipedia at %s: retrying (%s)", self.cfg.api_url, state.outcome.exception())

    def _call(self, fn, *args):
        """``fn(*args)`` (one search, page or summary call) under the retry policy; giving up is a
        ``ResourceMissing``."""
        def attempt():
            self.stats["requests"] += 1
            return fn(*args)
        try:
            return self._retrying(attempt)
        except (_Retryable, KeyError) as e:
            self.stats["errors"] += 1
            raise ResourceMissing(
                f"Wikipedia at {self.cfg.api_url} did not answer after {self.cfg.retries + 1} attempts "
                f"({type(e).__name__}: {e}). Check the network or run with offline=True to use "
                f"only the cache {self.cache.path}.") from None

    def _query(self, **params) -> dict:
        """One MediaWiki API query (``action=query``, JSON), politely spaced from the previous one."""
        with self._rate:
            wait = self._last_call + self.cfg.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                r = self.session.get(self.cfg.api_url, params={**params, "format": "json", "action": "query"},
                                     timeout=self.cfg.timeout)
            except requests.RequestException as e:
                raise _Retryable(f"{type(e).__name__}: {e}") from None
            finally:
                self._last_call = time.monotonic()
        if r.status_code == 429 or r.status_code >= 500:
            try:
                ra = float(r.headers["Retry-After"]) if "Retry-After" in r.headers else None
            except ValueError:
                ra = None
            raise _Retryable(f"HTTP {r.status_code}", ra)
        try:
            data = r.json()
        except ValueError as e:
            raise _Retryable(f"unreadable answer ({e})") from None
        if "error" in data:
            err = data["error"]
            info = str(err.get("info", err) if isinstance(err, dict) else err)
            if any(w in info.lower() for w in RETRYABLE_API_ERRORS):
                raise _Retryable(info)
            raise ResourceMissing(f"Wikipedia at {self.cfg.api_url} refused the query: {info}")
        return data

    # -- the three calls: search, page (redirects followed, disambiguation options), summary

    def _search(self, q: str, results: int) -> list[str]:
        data = self._query(list="search", srprop="", srlimit=results, limit=results, srsearch=q)
        return [d["title"] for d in data["query"]["search"]]

    def _page_info(self, title: str) -> dict:
        """``{"pageid", "title", "url"}`` of a page; ``_PageMissing`` or ``_Disambiguation`` otherwise."""
        data = self._query(prop="info|pageprops", inprop="url", ppprop="disambiguation", redirects="", titles=title)
        query = data["query"]
        pageid = next(iter(query["pages"]))
        page = query["pages"][pageid]
        if "missing" in page:
            raise _PageMissing(title)
        if "redirects" in query:
            return self._page_info(query["redirects"][0]["to"])
        if "pageprops" in page:
            rev = self._query(prop="revisions", rvprop="content", rvparse="", rvlimit=1, titles=title)
            html = rev["query"]["pages"][pageid]["revisions"][0]["*"]
            items = [li for li in BeautifulSoup(html, "html.parser").find_all("li")
                     if "tocsection" not in "".join(li.get("class", []))]
            raise _Disambiguation(title, [li.a.get_text() for li in items if li.a])
        return {"pageid": pageid, "title": page["title"], "url": page.get("fullurl", "")}

    def _summary(self, page: dict) -> str:
        data = self._query(prop="extracts", explaintext="", exintro="", titles=page["title"])
        return data["query"]["pages"][page["pageid"]]["extract"]

    def _page(self, title: str, match: str, rank: int) -> Passage | None:
        try:
            page = self._call(self._page_info, title)
        except _PageMissing:
            return None
        text = self._call(self._summary, page)
        return Passage(page["title"], " ".join((text or "").split()), "wikipedia", round(1.0 / (rank + 1), 4),
                       match, page["url"])

    def fetch(self, query: str, k: int) -> list[Passage]:
        q = camel_split(clean_query(query))
        if not q:
            return []
        titles = self._call(self._search, q, max(k, self.cfg.results))
        out = []
        for rank, title in enumerate(titles):
            if len(out) >= k:
                break
            try:
                p = self._page(title, "search", rank)
            except _Disambiguation as e:
                p = None
                for opt in list(e.options)[: self.cfg.disambiguation_options]:
                    try:
                        p = self._page(opt, "disambiguation", rank)
                    except (_Disambiguation, _PageMissing):
                        continue
                    if p and p.text:
                        break
            if p and p.text:
                out.append(p)
        return out

    def lookup(self, query: str, k: int = 3, tweet_id: str | None = None) -> list[Passage]:
        key = " ".join((query or "").split())
        if not key:
            return []
        rec = self.cache.get(key)
        if rec is not None and (len(rec["passages"]) >= k or rec.get("k", 0) >= k):
            self.stats["cache_hits"] += 1
            return [Passage.from_dict(p) for p in rec["passages"][:k]]
        if self.offline:
            self.stats["offline_miss"] += 1
            if not self._warned:
                warnings.warn(f"Wikipedia offline: {key!r} (and maybe others) not in {self.cache.path}; "
                              f"returning no passages. Run once online to fill the cache.", stacklevel=2)
                self._warned = True
            return [Passage.from_dict(p) for p in rec["passages"][:k]] if rec else []
        before = self.stats["requests"]
        passages = self.fetch(key, k)
        self.cache.append({"query": key, "k": k, "passages": [p.to_dict() for p in passages],
                           "source": "wikipedia", "api_url": self.cfg.api_url,
                           "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "n_requests": self.stats["requests"] - before})
        return passages


# ----------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tvolib.tfo.knowledge",
                                 description="Build or query a local knowledge base (SQLite FTS5).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a base from JSON/JSONL/TSV of (title, text) and abstract dumps")
    b.add_argument("--out", required=True, help="the .sqlite file to write")
    b.add_argument("inputs", nargs="+", help="input files (.json .jsonl .tsv .xml[.gz|.bz2])")
    q = sub.add_parser("lookup", help="look candidate strings up")
    q.add_argument("--kb", required=True)
    q.add_argument("-k", type=int, default=3)
    q.add_argument("queries", nargs="+")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if a.cmd == "build":
            info = build_kb(a.out, a.inputs)
            print(json.dumps(info, indent=2))
        else:
            kb = LocalKB(a.kb)
            for query in a.queries:
                print(f"== {query!r}")
                for p in kb.lookup(query, a.k):
                    print(f"  [{p.match} {p.score}] {p.title}: {p.text[:150]}")
    except (FileNotFoundError, ResourceMissing, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
