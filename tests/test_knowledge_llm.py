"""Per-tweet knowledge for new tweets from an OpenAI-compatible endpoint (``tvolib.tfo.knowledge.llm_texts``),
against a real HTTP server on 127.0.0.1 speaking /v1/chat/completions: answers, rate limits, server
errors, slow replies past the client timeout, empty and refusing answers, the cache, the key; then
``Predictor`` and ``tvomner predict`` with a checkpoint trained on per-tweet texts."""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import torch

from tvolib.cache import JsonlCache
from tvolib.config import DataConfig, ModelConfig, TrainConfig
from tvolib.llm_client import LLMClient, LLMConfig, ParseError
from tvolib.tfo.knowledge import LLMKnowledgeSource, knowledge_client, knowledge_messages, parse_knowledge
from tvolib.tfo.knowledge.llm_texts import KNOWLEDGE_EXAMPLES, KNOWLEDGE_PROMPT_HASH, NO_CAPTION
from tvolib.weights import ResourceMissing
from test_vfo_llm import LocalServer, send_json

KEY = "sk-test-SECRET-0123456789"


def fake_answer(text: str) -> str:
    """What the fake model answers: the runs of capitalised words, typed, and one sentence each."""
    names = [m.group(0) for m in re.finditer(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*", text)]
    if not names:
        return "Named entities: none. Reasoning: the sentence names no entity."
    listed = " ".join(f"{i}. {n} (other/thing)" for i, n in enumerate(names, 1))
    return f"Named entities: {listed} Reasoning: " + " ".join(f"{n} is named in a tweet saying {text}." for n in names)


class FakeLLM(LocalServer):
    """/v1/chat/completions; what happens depends on a word of the tweet:

    RATELIMIT: 429 once, then an answer; BOOM: 500 always (its body echoes the Authorization header);
    SLOW: every reply past the client timeout; SLOWONCE: the first one only; EMPTY: an empty answer;
    REFUSE: a refusal. ``down=True``: every request is a 500."""

    def __init__(self, down: bool = False, slow_s: float = 1.0):
        self.lock = threading.Lock()
        self.log: list[tuple[str, str]] = []          # (tweet text, outcome)
        self.requests: list[dict] = []
        self.auth: set[str] = set()
        seen: dict[str, int] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body: dict, headers=()):
                send_json(self, code, json.dumps(body).encode(), headers)

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                auth = self.headers.get("Authorization", "")
                text = req["messages"][-1]["content"].split("\n")[0].removeprefix("Text: ")
                with fake.lock:
                    n = seen[text] = seen.get(text, 0) + 1
                    fake.requests.append(req)
                    fake.auth.add(auth)
                words = set(text.split())
                outcome = ("500" if down or "BOOM" in words else "429" if "RATELIMIT" in words and n == 1
                           else "slow" if "SLOW" in words or ("SLOWONCE" in words and n == 1)
                           else "empty" if "EMPTY" in words else "refuse" if "REFUSE" in words else "ok")
                with fake.lock:
                    fake.log.append((text, outcome))
                if outcome == "500":
                    return self._send(500, {"error": {"message": f"boom (you sent {auth})"}},
                                      [("retry-after-ms", "1")])
                if outcome == "429":
                    return self._send(429, {"error": {"message": "rate limited"}}, [("retry-after-ms", "10")])
                if outcome == "slow":
                    time.sleep(slow_s)
                answer = {"empty": "", "refuse": "I'm sorry, but I can't help with that request."}.get(
                    outcome, fake_answer(text))
                self._send(200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": req["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": answer}}],
                                 "usage": {"prompt_tokens": 100, "completion_tokens": len(answer) // 4,
                                           "total_tokens": 100 + len(answer) // 4}})

        self.serve(Handler)

    def asked(self, text: str) -> int:
        return sum(1 for t, _ in self.log if t == text)


def source(url, cache, **kw) -> LLMKnowledgeSource:
    cfg = LLMConfig(base_url=url, model=kw.pop("model", "fake-model"), api_key=KEY, timeout=kw.pop("timeout", 0.5),
                    **{"max_retries": 2, "parse_retries": 1, "concurrency": 2, **kw})
    return LLMKnowledgeSource(knowledge_client(cfg), cache)


def no_key_in(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f"the API key was written to {f}"


# ------------------------------------------------------------------ prompt and answers
def test_prompt_has_instruction_fixed_examples_tweet_and_caption():
    msgs = knowledge_messages("Obama visits   Paris", "a man at a podium")
    assert msgs[0]["role"] == "system" and "named entities" in msgs[0]["content"]
    assert [m["role"] for m in msgs[1:-1]] == ["user", "assistant"] * len(KNOWLEDGE_EXAMPLES)
    assert all(m["content"].startswith("Named entities:") for m in msgs[2:-1:2])
    assert msgs[-1]["content"].startswith("Text: Obama visits Paris\nImage: a man at a podium\n")
    assert f"Image: {NO_CAPTION}" in knowledge_messages("Obama", None)[-1]["content"]
    assert len(KNOWLEDGE_PROMPT_HASH) == 12


@pytest.mark.parametrize("answer", ["", "   ", None, "I'm sorry, but I can't help with that.",
                                    "As an AI language model, I cannot browse Twitter.", "I cannot do that",
                                    "Sorry, no.", "<think>let me see</think>", "Obama", "x" * 5000])
def test_malformed_answers_are_rejected(answer):
    with pytest.raises(ParseError):
        parse_knowledge(answer)


def test_answers_are_cleaned():
    assert parse_knowledge("<think>hmm</think>\nAnswer: Named entities: 1. Obama (person)\n Reasoning: a.") == \
        "Named entities: 1. Obama (person) Reasoning: a."
    assert parse_knowledge("Named entities: none. Reasoning: nothing named.").startswith("Named entities: none")


def test_no_endpoint_is_resource_missing_and_the_model_can_be_set_apart():
    with pytest.raises(ResourceMissing, match="TVOMNER_LLM_BASE_URL"):
        knowledge_client(LLMConfig.from_env({}))
    cfg = LLMConfig.from_env({"TVOMNER_LLM_BASE_URL": "http://u:p@h:1/v1", "TVOMNER_LLM_MODEL": "m",
                              "TVOMNER_LLM_KNOWLEDGE_MODEL": "k", "OPENAI_API_KEY": KEY})
    src = LLMKnowledgeSource(knowledge_client(cfg), "unused.jsonl")
    assert (src.model, src.endpoint, src.client.cfg.max_tokens) == ("k", "h:1", 512)
    assert KEY not in repr(cfg) and KEY not in src.origin


# ------------------------------------------------------------------ server runs
def test_answers_are_cached_by_content_prompt_and_model(tmp_path):
    cache = tmp_path / "k.jsonl"
    tweets = {"a": ("Obama visits Paris", None), "b": ("Obama visits Paris", None),     # same content: asked once
              "c": ("Obama visits Paris", "a man at a podium"), "d": ("what a day", None)}
    with FakeLLM() as fake:
        src = source(fake.url, cache)
        s = src.fetch(tweets)
        assert (s.total, s.computed, s.cached, len(s.failed)) == (3, 3, 0, 0) and len(fake.log) == 3
        assert src.aux["a"] == src.aux["b"] == fake_answer("Obama visits Paris") and not src.failed
        assert any("Image: a man at a podium" in r["messages"][-1]["content"] for r in fake.requests)
        assert fake.auth == {f"Bearer {KEY}"}
        recs = list(JsonlCache(cache, key="key"))
        assert {r["status"] for r in recs} == {"ok"} and all(r["model"] == "fake-model" for r in recs)
        assert all(r["prompt_hash"] == KNOWLEDGE_PROMPT_HASH and r["endpoint"] == fake.host for r in recs)
        # warm: another source over the same cache, other ids, asks nothing
        again = source(fake.url, cache)
        s2 = again.fetch({"x": ("Obama visits Paris", None), "y": ("what a day", None)})
        assert s2.cached == 2 and s2.computed == 0 and len(fake.log) == 3
        assert again.aux["x"] == src.aux["a"] and [p.text for p in again.lookup("Paris", tweet_id="x")]
        # another model is another key
        other = source(fake.url, cache, model="other-model")
        other.fetch({"x": ("Obama visits Paris", None)})
        assert len(fake.log) == 4 and fake.requests[-1]["model"] == "other-model"
    no_key_in(tmp_path)


def test_a_rate_limit_is_retried(tmp_path):
    with FakeLLM() as fake:
        src = source(fake.url, tmp_path / "k.jsonl")
        s = src.fetch({"t": ("RATELIMIT at Wembley", None)})
    assert [o for _, o in fake.log] == ["429", "ok"] and not s.failed
    assert src.aux["t"] == fake_answer("RATELIMIT at Wembley")
    assert [r["attempts"] for r in JsonlCache(tmp_path / "k.jsonl", key="key")] == [2]


def test_a_server_error_is_recorded_never_invented_and_retried_next_run(tmp_path):
    cache = tmp_path / "k.jsonl"
    with FakeLLM() as fake:
        src = source(fake.url, cache)
        with pytest.warns(UserWarning, match="failed"):
            s = src.fetch({"good": ("Obama visits Paris", None), "bad": ("BOOM goes London", None)})
        assert fake.asked("BOOM goes London") == 3                    # max_retries=2: three attempts
        assert "bad" not in src.aux and "InternalServerError" in src.failed["bad"] and len(s.failed) == 1
        assert KEY not in src.failed["bad"] and "***" in src.failed["bad"]   # the echoed key is scrubbed
        assert src.aux["good"] == fake_answer("Obama visits Paris")
        recs = {r["text"]: r for r in JsonlCache(cache, key="key")}
        assert recs["BOOM goes London"]["status"] == "failed" and "aux" not in recs["BOOM goes London"]
        # the failure is not an answer: the next run asks again
        with pytest.warns(UserWarning):
            source(fake.url, cache).fetch({"bad": ("BOOM goes London", None)})
        assert fake.asked("BOOM goes London") == 6
    no_key_in(tmp_path)


def test_an_endpoint_that_is_down_is_asked_once_not_per_tweet(tmp_path):
    with FakeLLM(down=True) as fake:
        src = source(fake.url, tmp_path / "k.jsonl")
        with pytest.warns(UserWarning):
            s = src.fetch({f"t{i}": (f"Tweet number {i}", None) for i in range(5)})
    assert len(fake.log) == 3 and len(s.failed) == 5 and src.aux == {}
    assert sum("not asked: the endpoint failed on the first tweet" in r for r in src.failed.values()) == 4
    assert len(JsonlCache(tmp_path / "k.jsonl", key="key")) == 1         # only the one asked is recorded


def test_a_reply_past_the_timeout_is_retried_then_reported(tmp_path):
    with FakeLLM(slow_s=1.0) as fake:
        src = source(fake.url, tmp_path / "k.jsonl", timeout=0.3, max_retries=1)
        t0 = time.perf_counter()
        with pytest.warns(UserWarning):
            src.fetch({"slow": ("SLOW news from Rome", None)})
        assert time.perf_counter() - t0 < 10
        assert fake.asked("SLOW news from Rome") == 2 and "Timeout" in src.failed["slow"] and "slow" not in src.aux
        src.fetch({"once": ("SLOWONCE news from Rome", None)})
        assert fake.asked("SLOWONCE news from Rome") == 2 and src.aux["once"] == fake_answer("SLOWONCE news from Rome")


@pytest.mark.parametrize("word", ["EMPTY", "REFUSE"])
def test_empty_or_refusing_answers_are_asked_again_then_reported(tmp_path, word):
    with FakeLLM() as fake:
        src = source(fake.url, tmp_path / "k.jsonl", parse_retries=1)
        with pytest.warns(UserWarning):
            src.fetch({"m": (f"{word} answer for Berlin", None), "ok": ("Obama visits Paris", None)})
    assert fake.asked(f"{word} answer for Berlin") == 2                # parse_retries=1: asked twice
    assert src.failed["m"].startswith("no usable answer") and "m" not in src.aux
    assert src.aux["ok"] == fake_answer("Obama visits Paris")          # a bad answer does not stop the others


# ------------------------------------------------------------------ prediction
@pytest.fixture(scope="module")
def pgim_checkpoint(tmp_path_factory):
    """A tiny text model trained on the sample's per-tweet texts (knowledge_source='tweet_files'), with a
    saved random candidate tagger (stand-in augmentations in training)."""
    import tvolib.inputs
    from test_model import tiny_encoder_config
    from test_train import fake_augmentations
    from tvolib.tfo.tagger import CandidateTagger, TaggerConfig, save_tagger
    from tvolib.train import train
    tmp = tmp_path_factory.mktemp("pgim")
    torch.manual_seed(0)
    tagger = save_tagger(CandidateTagger.from_config(tiny_encoder_config(16)), tmp / "tagger",
                         TaggerConfig(encoder="random:bert", max_length=64))
    mp = pytest.MonkeyPatch()
    mp.setattr(tvolib.inputs, "augmentations", fake_augmentations)
    mp.setattr(tvolib.inputs, "candidate_tagger", lambda *a, **k: tagger)
    try:
        res = train(DataConfig(cache_dir=str(tmp / "cache"), max_length=64, max_train_samples=16, max_eval_samples=8),
                    ModelConfig(num_heads=4, lstm_hidden=8, visual="none", knowledge_source="tweet_files"),
                    TrainConfig(output_dir=str(tmp / "run"), epochs=1, batch_size=8, micro_batch_size=8,
                                progress=False, precision="fp32"), encoder_config=tiny_encoder_config())
    finally:
        mp.undo()
    return Path(res["checkpoint"])


def test_predictor_asks_the_endpoint_for_tweets_without_texts(pgim_checkpoint, tmp_path, monkeypatch):
    from test_predict import CapitalisedTagger
    from tvolib.data import Tweet
    from tvolib.predict import Predictor
    tweets = ["Barack Obama visits Paris", "what a day", Tweet("s0001", ["Steph", "Curry"], ["O", "O"])]
    for k in ("TVOMNER_LLM_BASE_URL", "TVOMNER_LLM_MODEL", "TVOMNER_LLM_KNOWLEDGE_MODEL"):
        monkeypatch.delenv(k, raising=False)
    p = Predictor.from_checkpoint(pgim_checkpoint, cache_dir=str(tmp_path / "pc"))
    p.tagger = (CapitalisedTagger(), {"weights_hash": "capitalised"})
    out = p.predict(tweets)                                            # no endpoint: said, per tweet and once
    assert out[0]["knowledge_note"].startswith("no knowledge: no endpoint configured (set TVOMNER_LLM_BASE_URL")
    assert out[2]["knowledge_note"] == "per-tweet texts from llm_knowledge.jsonl"   # the sample's own text
    assert [c["knowledge"] for c in out[0]["candidates"]] == ["", ""]
    assert p.knowledge_summary.startswith("knowledge: 1 of 3 tweets got per-tweet texts")
    assert any("1 of 3 input tweets have knowledge" in n for n in p.notes)

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeLLM() as fake:
        monkeypatch.setenv("TVOMNER_LLM_BASE_URL", fake.url)
        monkeypatch.setenv("TVOMNER_LLM_MODEL", "fake-model")
        out = p.predict(tweets)
        assert len(fake.log) == 2                                      # the sample tweet has its file text
        got = f"per-tweet texts from fake-model at {fake.host}"
        assert [r["knowledge_note"] for r in out[:2]] == [got, got]
        obama = out[0]["candidates"][0]
        assert obama["text"] == "Barack Obama" and "named in a tweet" in obama["knowledge"]
        assert p.knowledge_summary == (f"knowledge: 3 of 3 tweets got per-tweet texts; 2: {got}; "
                                       f"1: per-tweet texts from llm_knowledge.jsonl")
        assert p.predict(tweets) == out and len(fake.log) == 2          # cached: no request
    assert (tmp_path / "pc" / "predict" / "llm_knowledge.jsonl").exists()
    with FakeLLM(down=True) as fake:                                   # a new tweet, the endpoint down
        monkeypatch.setenv("TVOMNER_LLM_BASE_URL", fake.url)
        with pytest.warns(UserWarning):
            out = p.predict(["Lakers beat Boston"])
    assert out[0]["knowledge_note"].startswith("no knowledge: endpoint failed (")
    assert [c["knowledge"] for c in out[0]["candidates"]] == ["", ""]
    no_key_in(tmp_path)


def test_cli_predict_says_what_knowledge_the_tweets_got(pgim_checkpoint, tmp_path, monkeypatch, capsys):
    from tvolib.cli import main
    inp = tmp_path / "tweets.txt"
    inp.write_text("Barack Obama visits Paris\nwhat a day\n", encoding="utf-8")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeLLM() as fake:
        monkeypatch.setenv("TVOMNER_LLM_BASE_URL", fake.url)
        monkeypatch.setenv("TVOMNER_LLM_MODEL", "fake-model")
        assert main(["predict", "--checkpoint", str(pgim_checkpoint), "--input", str(inp),
                     "--cache_dir", str(tmp_path / "pc"), "--output", str(tmp_path / "o.json")]) == 0
    err = capsys.readouterr().err
    assert f"knowledge: 2 of 2 tweets got per-tweet texts; 2: per-tweet texts from fake-model at {fake.host}" in err
    res = json.loads((tmp_path / "o.json").read_text())
    assert all(r["knowledge_note"].startswith("per-tweet texts from fake-model") for r in res)
    monkeypatch.delenv("TVOMNER_LLM_BASE_URL")
    assert main(["predict", "--checkpoint", str(pgim_checkpoint), "--input", str(inp),
                 "--cache_dir", str(tmp_path / "pc2"), "--output", str(tmp_path / "o2.json")]) == 0
    assert "knowledge: 0 of 2 tweets got per-tweet texts; 2: no knowledge: no endpoint configured" in \
        capsys.readouterr().err
    no_key_in(tmp_path)
