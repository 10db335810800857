"""LLM stage against a real HTTP server on 127.0.0.1 speaking /v1/chat/completions, with injected
429s, 500s, slow answers (past the client timeout), unreadable bodies and malformed answers."""
from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tvolib.cache import JsonlCache
from tvolib.weights import ResourceMissing
from tvolib.vfo import prompts
from tvolib.vfo.llm import LLMClient, LLMConfig, generate_captions, generate_phrases
from tvolib.vfo.prompts import ENTITY_OBJECT_PROMPT_HASH, ParseError, parse_phrases


def expected_phrases(text: str) -> list[str]:
    """What the fake model answers for a tweet: deterministic, so records can be checked."""
    words = re.findall(r"[a-z]+", text.lower())
    return [] if "unrelated" in words else [f"{w} object" for w in words[:2]]


def send_json(handler, code: int, body: bytes, headers=()) -> None:
    """One JSON reply of a fake OpenAI-compatible server (a client that gave up is ignored)."""
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    for k, v in headers:
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    try:
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass


class LocalServer:
    """A fake HTTP server on a free local port, serving ``handler`` on a thread while in a ``with``."""

    def serve(self, handler) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.host}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.server.shutdown()
        self.server.server_close()


class FakeLLM(LocalServer):
    """A chat-completions server. ``faults``: probabilities of each fault per request."""

    def __init__(self, faults: dict | None = None, seed: int = 0, slow_s: float = 0.0):
        self.faults = faults or {}
        self.rng = random.Random(seed)
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.log: list[tuple[str, str]] = []          # (key, outcome)
        self.usage = Counter()                       # tokens of every readable 200 answer
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body: bytes, headers=()):
                send_json(self, code, body, headers)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(n))
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": {"message": "not found"}}')
                content = req["messages"][0]["content"]
                if isinstance(content, list):      # captioning: text + image_url parts
                    url = [p for p in content if p["type"] == "image_url"][0]["image_url"]["url"]
                    from PIL import Image
                    im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
                    key = f"img{im.size[0]}x{im.size[1]}"
                    answer = f"an image of {im.size[0]} by {im.size[1]} pixels"
                else:
                    text = content.rsplit("Text: ", 1)[1].split("\nCaption:")[0]
                    key = text
                    ph = expected_phrases(text)
                    style = fake.rng.choice(["json", "python", "bullets", "fence", "prose"])
                    if not ph:
                        answer = "[]"
                    elif style == "json":
                        answer = json.dumps(ph)
                    elif style == "python":
                        answer = repr(ph)
                    elif style == "bullets":
                        answer = "\n".join(f"- {p}" for p in ph)
                    elif style == "fence":
                        answer = "```json\n" + json.dumps(ph) + "\n```"
                    else:
                        answer = "Sure! Here are the objects: " + json.dumps(ph) + " Hope it helps."
                with fake.lock:
                    r = fake.rng.random()
                    outcome = "ok"
                    acc = 0.0
                    for name, p in fake.faults.items():
                        acc += p
                        if r < acc:
                            outcome = name
                            break
                    fake.log.append((key, outcome))
                if outcome == "429":
                    return self._send(429, b'{"error": {"message": "rate limited"}}', [("Retry-After", "0.01")])
                if outcome == "500":
                    return self._send(500, b'{"error": {"message": "boom"}}')
                if outcome == "503":
                    return self._send(503, b'{"error": {"message": "overloaded"}}')
                if outcome == "slow":
                    time.sleep(1.0)              # past the client timeout
                if outcome == "garbage":
                    return self._send(200, b'{"id": "x", "choices": [ {"mess')
                if outcome == "malformed":
                    answer = "I am not sure what you mean."
                if fake.slow_s:
                    time.sleep(fake.slow_s)
                pt, ct = len(str(content)) // 4, len(answer) // 4 + 1
                with fake.lock:
                    if outcome == "slow":        # the client has given up on this answer
                        fake.usage["unread"] += pt
                        pt = 0
                    fake.usage["prompt"] += pt
                    fake.usage["completion"] += ct if pt else 0
                body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                        "model": req["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": answer}}],
                        "usage": {"prompt_tokens": pt, "completion_tokens": ct,
                                  "total_tokens": pt + ct}}
                self._send(200, json.dumps(body).encode())

        self.serve(Handler)


def client_for(url, **kw) -> LLMClient:
    cfg = LLMConfig(base_url=url, model="fake-model", api_key="sk-test", timeout=kw.pop("timeout", 0.5), **kw)
    return LLMClient(cfg)


TWEETS = {f"t{i:03d}": (f"{w1} meets {w2} at {i}" if i % 7 else f"an unrelated picture {i}",
                        "a photo of things")
          for i, (w1, w2) in enumerate(zip(["alpha", "bravo", "charlie", "delta", "echo"] * 12,
                                           ["kilo", "lima", "mike", "oscar", "papa", "romeo"] * 10))}


def lines_per_key(path) -> Counter:
    c = Counter()
    for line in open(path, encoding="utf-8"):
        if line.strip():
            c[json.loads(line)["imgid"]] += 1
    return c


# ------------------------------------------------------------------ parser
@pytest.mark.parametrize("answer,expected", [
    ('["a red circle", "NBA logo on the jersey"]', ["a red circle", "NBA logo on the jersey"]),
    ("['a red circle', \"'Golden State Warriors' logo\"]", ["a red circle", "'Golden State Warriors' logo"]),
    ("```json\n[\"x one\", \"y two\"]\n```", ["x one", "y two"]),
    ("Outputs: [\"x one\"]", ["x one"]),
    ("Here you go:\n- red circle\n- blue square\n", ["red circle", "blue square"]),
    ("1. red circle\n2) blue square", ["red circle", "blue square"]),
    ('{"outputs": ["red circle"]}', ["red circle"]),
    ('[{"entity": "player", "attribute": "celebrating"}]', ["player celebrating"]),
    ("Sure: [\"a\", \"b b\"] and that's it", ["a", "b b"]),
    ("[]", []), ("None", []), ("No relevant entities.", []),
    ('["dup", "Dup", " dup "]', ["dup"]),
    ("<think>hmm [\"no\"]</think>[\"yes\"]", ["yes"]),
])
def test_parse_phrases_formats(answer, expected):
    assert parse_phrases(answer) == expected


@pytest.mark.parametrize("answer", ["", "I am not sure what you mean.", "[unclosed", None])
def test_parse_phrases_rejects_garbage(answer):
    with pytest.raises(ParseError):
        parse_phrases(answer)


def test_prompt_is_appendix_a():
    p = prompts.entity_object_prompt("my tweet", "my caption")
    assert p.startswith("Given a sentence and the description of its corresponding image.")
    assert "Steph Curry" in p and '"NBA logo on the jersey"]' in p
    assert p.endswith("Text: my tweet\nCaption: my caption\nOutputs:")
    assert "#I" in prompts.CAPTION_PROMPT and "describe this picture in detail." in prompts.CAPTION_PROMPT


def test_no_endpoint_is_resource_missing():
    with pytest.raises(ResourceMissing, match="TVOMNER_LLM_BASE_URL"):
        LLMClient(LLMConfig.from_env({"TVOMNER_LLM_MODEL": "m"}))
    cfg = LLMConfig.from_env({"TVOMNER_LLM_BASE_URL": "http://h/v1", "TVOMNER_LLM_MODEL": "m",
                              "OPENAI_API_KEY": "k", "TVOMNER_LLM_CONCURRENCY": "2"}, timeout=3.0)
    assert (cfg.configured, cfg.api_key, cfg.concurrency, cfg.timeout) == (True, "k", 2, 3.0)
    assert LLMClient(cfg).client.max_retries == cfg.max_retries      # the client's own retries


# ------------------------------------------------------------------ server runs
def test_clean_run_records_and_tokens(tmp_path):
    with FakeLLM() as fake:
        client = client_for(fake.url, concurrency=3)
        s = generate_phrases(TWEETS, tmp_path / "phrases.jsonl", client)
    cache = JsonlCache(tmp_path / "phrases.jsonl", key="imgid")
    assert s.computed == len(TWEETS) and not s.failed
    for k, (text, _) in TWEETS.items():
        rec = cache[k]
        assert rec["phrases"] == expected_phrases(text)
        assert rec["prompt_hash"] == ENTITY_OBJECT_PROMPT_HASH and rec["model"] == "fake-model"
        assert rec["source"] == "llm" and rec["prompt_tokens"] > 0
    assert s.prompt_tokens == fake.usage["prompt"] and s.completion_tokens == fake.usage["completion"]
    # warm: nothing requested again
    with FakeLLM() as fake2:
        s2 = generate_phrases(TWEETS, tmp_path / "phrases.jsonl", client_for(fake2.url))
    assert s2.computed == 0 and s2.cached == len(TWEETS) and fake2.log == []


def test_fault_injection_loses_no_record(tmp_path):
    faults = {"429": 0.15, "500": 0.1, "503": 0.05, "slow": 0.04, "garbage": 0.08, "malformed": 0.12}
    with FakeLLM(faults=faults, seed=1) as fake:
        client = client_for(fake.url, concurrency=4, max_retries=12, parse_retries=6, timeout=0.3)
        s = generate_phrases(TWEETS, tmp_path / "p.jsonl", client)
    outcomes = Counter(o for _, o in fake.log)
    for f in faults:                       # every fault really happened
        assert outcomes[f] > 0, outcomes
    cache = JsonlCache(tmp_path / "p.jsonl", key="imgid")
    lost = len(TWEETS) - len(cache)
    print(f"fault injection: {len(fake.log)} requests, {dict(outcomes)}, records lost: {lost}")
    assert lost == 0 and not s.failed, s.failed
    assert max(lines_per_key(tmp_path / "p.jsonl").values()) == 1     # nothing written twice
    for k, (text, _) in TWEETS.items():
        assert cache[k]["phrases"] == expected_phrases(text)          # no answers mixed up
    assert s.prompt_tokens == fake.usage["prompt"] and s.completion_tokens == fake.usage["completion"]
    assert client.retries > 0


def test_permanent_failure_is_reported_not_written(tmp_path):
    with FakeLLM(faults={"500": 1.0}) as fake:
        client = client_for(fake.url, max_retries=2)
        with pytest.warns(UserWarning, match="failed"):
            s = generate_phrases(dict(list(TWEETS.items())[:3]), tmp_path / "p.jsonl", client)
    assert len(s.failed) == 3 and s.computed == 0
    assert not (tmp_path / "p.jsonl").exists() or len(JsonlCache(tmp_path / "p.jsonl", key="imgid")) == 0
    assert len(fake.log) == 3 * 3


@pytest.mark.parametrize("fault, requests", [("garbage", 3), ("malformed", 2)])
def test_unreadable_or_malformed_answers_are_reported_never_invented(tmp_path, fault, requests):
    """Unreadable bodies are asked again up to ``max_retries`` times, unparseable answers up to
    ``parse_retries`` times; then the key is reported as failed and nothing is written."""
    with FakeLLM(faults={fault: 1.0}) as fake:
        client = client_for(fake.url, max_retries=2, parse_retries=1)
        with pytest.warns(UserWarning, match="failed"):
            s = generate_phrases(dict(list(TWEETS.items())[:1]), tmp_path / "p.jsonl", client)
    assert len(s.failed) == 1 and s.computed == 0 and len(fake.log) == requests
    assert not (tmp_path / "p.jsonl").exists() or len(JsonlCache(tmp_path / "p.jsonl", key="imgid")) == 0


def test_stale_prompt_hash_is_recomputed(tmp_path):
    items = dict(list(TWEETS.items())[:2])
    c = JsonlCache(tmp_path / "p.jsonl", key="imgid")
    for k in items:
        c.append({"imgid": k, "phrases": ["old"], "source": "llm", "prompt_hash": "other"})
    with FakeLLM() as fake:
        s = generate_phrases(items, tmp_path / "p.jsonl", client_for(fake.url))
    assert s.computed == 2
    assert JsonlCache(tmp_path / "p.jsonl", key="imgid")[list(items)[0]]["phrases"] != ["old"]


def test_captions_send_the_image_as_data_url(tmp_path):
    from tvolib.sample import SAMPLE_DIR
    imgs = {k: SAMPLE_DIR / "images" / f"{k}.png" for k in ("s0001", "s0002")}
    with FakeLLM(faults={"429": 0.3}, seed=3) as fake:
        s = generate_captions(imgs, tmp_path / "captions.jsonl", client_for(fake.url, max_retries=10))
    c = JsonlCache(tmp_path / "captions.jsonl", key="imgid")
    assert s.computed == 2 and c["s0001"]["caption"] == "an image of 256 by 256 pixels"
    assert c["s0001"]["prompt_hash"] == prompts.CAPTION_PROMPT_HASH


KILL_SCRIPT = """
import sys, json
from tvolib.vfo.llm import LLMClient, LLMConfig, generate_phrases
items = json.loads(open(sys.argv[2]).read())
cfg = LLMConfig(base_url=sys.argv[1], model="fake-model", api_key="k", concurrency=2, timeout=5)
generate_phrases({k: tuple(v) for k, v in items.items()}, sys.argv[3], LLMClient(cfg))
"""


def test_killed_run_resumes_without_losing_or_repeating(tmp_path):
    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps(TWEETS))
    cache_path = tmp_path / "p.jsonl"
    with FakeLLM(slow_s=0.05, faults={"429": 0.1}, seed=5) as fake:
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, fake.url, str(items_file),
                                 str(cache_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline:
            if cache_path.exists() and sum(1 for _ in open(cache_path)) >= 8:
                break
            time.sleep(0.02)
        proc.kill()                                   # SIGKILL mid-run
        proc.wait()
        before = set(lines_per_key(cache_path))       # the finished records (a torn line is dropped)
        assert 8 <= len(before) < len(TWEETS)
        n_log = len(fake.log)
        s = generate_phrases(TWEETS, cache_path, client_for(fake.url, concurrency=3))
        asked_again = {k for k, _ in fake.log[n_log:]}
    done = JsonlCache(cache_path, key="imgid")
    assert len(done) == len(TWEETS)                                   # nothing lost
    assert max(lines_per_key(cache_path).values()) == 1               # nothing repeated
    finished_texts = {TWEETS[k][0] for k in before}
    assert not (asked_again & finished_texts)                         # finished ones not re-asked
    assert s.cached == len(before)
