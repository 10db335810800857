"""WikipediaSource against a local HTTP server on 127.0.0.1 that answers the MediaWiki API calls of
the ``wikipedia`` package (search, page info, disambiguation revisions, extracts), including
errors (HTTP 500, 429 with Retry-After), slow answers (timeouts) and missing pages."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from tvolib.weights import ResourceMissing
from tvolib.tfo.knowledge import WikipediaConfig, WikipediaSource

PAGES = {
    "Stephen Curry": (101, "Wardell Stephen Curry is an American basketball player. He plays for the Golden State Warriors."),
    "Minion": (102, "Minions are small yellow cartoon characters."),
    "Mercury (planet)": (103, "Mercury is the first planet from the Sun."),
    "Freddie Mercury": (104, "Freddie Mercury was a British singer."),
    "Slow Page": (105, "A page behind a slow server."),
    "Flaky Page": (106, "A page behind a flaky server."),
    "Limited Page": (107, "A page behind a rate limit."),
}
SEARCH = {"Steph Curry": ["Stephen Curry"], "Minion": ["Minion"], "Mercury": ["Mercury", "Ghost Page"],
          "Slow": ["Slow Page"], "Flaky": ["Flaky Page"], "Limited": ["Limited Page"], "Nothing": [],
          "Down": ["Down"], "Redirected": ["Curry (redirect)"], "Refused": ["Refused"]}


class Wiki:
    def __init__(self):
        self.log = []            # (params) of every request
        self.first_seen = set()


def make_handler(state: Wiki):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send(self, obj, status=200, headers=None):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def once(self, tag):
            first = tag not in state.first_seen
            state.first_seen.add(tag)
            return first

        def do_GET(self):
            q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query, keep_blank_values=True).items()}
            state.log.append(q)
            assert q.get("format") == "json" and q.get("action") == "query"
            if q.get("list") == "search":
                s = q["srsearch"]
                if s == "Down":
                    return self.send({"error": "down"}, status=503)
                if s == "Refused":
                    return self.send({"error": {"code": "badvalue", "info": "Unrecognized value"}})
                if s == "Slow" and self.once("slow-search"):
                    time.sleep(1.0)                      # longer than the client's timeout
                if s == "Flaky" and self.once("flaky-search"):
                    return self.send({"error": "boom"}, status=500)
                if s == "Limited" and self.once("limited-search"):
                    return self.send({"error": {"code": "ratelimited"}}, status=429, headers={"Retry-After": "0.2"})
                return self.send({"query": {"search": [{"title": t} for t in SEARCH.get(s, [])]}})
            title = q.get("titles")
            if q.get("prop") == "info|pageprops":
                if title == "Curry (redirect)":
                    pid, _ = PAGES["Stephen Curry"]
                    return self.send({"query": {"redirects": [{"from": title, "to": "Stephen Curry"}],
                                                "pages": {str(pid): {"pageid": pid, "title": "Stephen Curry"}}}})
                if title == "Mercury":
                    return self.send({"query": {"pages": {"200": {"pageid": 200, "title": "Mercury",
                                                                   "pageprops": {"disambiguation": ""}}}}})
                if title not in PAGES:
                    return self.send({"query": {"pages": {"-1": {"title": title, "missing": ""}}}})
                pid, _ = PAGES[title]
                return self.send({"query": {"pages": {str(pid): {"pageid": pid, "title": title,
                                                                  "fullurl": f"http://wiki/{title}"}}}})
            if q.get("prop") == "revisions":
                html = "<ul><li><a href='/a'>Ghost Option</a></li><li><a href='/b'>Mercury (planet)</a></li>" \
                       "<li><a href='/c'>Freddie Mercury</a></li></ul>"
                return self.send({"query": {"pages": {"200": {"revisions": [{"*": html}]}}}})
            if q.get("prop") == "extracts":
                pid, text = PAGES[title]
                return self.send({"query": {"pages": {str(pid): {"pageid": pid, "extract": text}}}})
            self.send({"error": {"info": "unknown call"}}, status=400)
    return H


@pytest.fixture
def wiki():
    state = Wiki()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/w/api.php"
    yield state
    server.shutdown()
    server.server_close()


def source(wiki, tmp_path, **kw):
    cfg = WikipediaConfig(api_url=wiki.url, timeout=kw.pop("timeout", 0.5), retries=kw.pop("retries", 2),
                          backoff=0.05, min_interval=kw.pop("min_interval", 0.0), **kw)
    return WikipediaSource(tmp_path / "wikipedia.jsonl", cfg)


def test_search_then_summary_and_persistent_cache(wiki, tmp_path):
    src = source(wiki, tmp_path)
    p = src.lookup("Steph Curry", k=2)
    assert len(p) == 1 and p[0].title == "Stephen Curry" and "basketball" in p[0].text
    assert p[0].source == "wikipedia" and p[0].url == "http://wiki/Stephen Curry"
    n = len(wiki.log)
    assert src.lookup("Steph Curry", k=1)[0].title == "Stephen Curry"
    assert len(wiki.log) == n                                    # answered from the cache
    rec = json.loads((tmp_path / "wikipedia.jsonl").read_text().splitlines()[0])
    assert rec["query"] == "Steph Curry" and rec["api_url"] == wiki.url and rec["passages"][0]["title"] == "Stephen Curry"
    # a new instance (a new run) reads the file; offline mode makes no request at all
    off = WikipediaSource(tmp_path / "wikipedia.jsonl", WikipediaConfig(api_url=wiki.url), offline=True)
    assert off.lookup("Steph Curry", k=1)[0].title == "Stephen Curry"
    with pytest.warns(UserWarning, match="offline"):
        assert off.lookup("Minion", k=1) == []
    assert off.stats["offline_miss"] == 1 and len(wiki.log) == n


def test_disambiguation_and_missing_pages(wiki, tmp_path):
    src = source(wiki, tmp_path)
    p = src.lookup("Mercury", k=2)     # hit 1: disambiguation (first option missing), hit 2: missing page
    assert [x.title for x in p] == ["Mercury (planet)"] and p[0].match == "disambiguation"
    assert src.lookup("Nothing", k=3) == []
    assert src.lookup("", k=3) == [] and src.lookup("   ", k=3) == []


def test_timeout_then_retry(wiki, tmp_path):
    src = source(wiki, tmp_path, timeout=0.3)
    t = time.time()
    p = src.lookup("Slow", k=1)
    assert p[0].title == "Slow Page" and src.stats["retries"] >= 1
    assert time.time() - t < 5


def test_server_error_and_rate_limit_are_retried(wiki, tmp_path):
    src = source(wiki, tmp_path)
    assert src.lookup("Flaky", k=1)[0].title == "Flaky Page"
    t = time.time()
    assert src.lookup("Limited", k=1)[0].title == "Limited Page"
    assert time.time() - t >= 0.2                                # Retry-After honoured
    assert src.stats["retries"] == 2


def test_gives_up_with_resource_missing_and_caches_nothing(wiki, tmp_path):
    src = source(wiki, tmp_path, retries=1)
    with pytest.raises(ResourceMissing, match="did not answer"):
        src.lookup("Down", k=1)
    assert "Down" not in src.cache
    dead = WikipediaSource(tmp_path / "w2.jsonl", WikipediaConfig(api_url="http://127.0.0.1:9/w/api.php", timeout=0.2,
                                                                  retries=1, backoff=0.01))
    with pytest.raises(ResourceMissing):
        dead.lookup("Steph Curry", k=1)


def test_polite_rate_limit(wiki, tmp_path):
    src = source(wiki, tmp_path, min_interval=0.15)
    t = time.time()
    src.lookup("Minion", k=1)          # 3 requests: search, info, extracts
    assert time.time() - t >= 0.29
    assert [q.get("list") or q.get("prop") for q in wiki.log] == ["search", "info|pageprops", "extracts"]


def test_redirects_are_followed_and_a_refused_query_is_not_retried(wiki, tmp_path):
    src = source(wiki, tmp_path)
    p = src.lookup("Redirected", k=1)
    assert p[0].title == "Stephen Curry" and p[0].url == "http://wiki/Stephen Curry"
    n = len(wiki.log)
    with pytest.raises(ResourceMissing, match="refused the query: Unrecognized value"):
        src.lookup("Refused", k=1)
    assert len(wiki.log) == n + 1 and src.stats["retries"] == 0 and "Refused" not in src.cache
