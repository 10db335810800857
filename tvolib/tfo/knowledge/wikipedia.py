"""``WikipediaSource``: live Wikipedia over the MediaWiki API, with a persistent JSONL cache."""
from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import requests
from bs4 import BeautifulSoup
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from ...cache import JsonlCache
from ...weights import ResourceMissing
from .base import KnowledgeSource, Passage, camel_split, clean_query

log = logging.getLogger(__name__)


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
