"""Captions and entity-object referring expressions from an LLM, through the ``openai`` client
(section 4.2 "Entity Object-Level Visual Features", Appendix A; the prompts and the parsing of the
answers: ``tvolib.vfo.prompts``).

Any OpenAI-compatible chat-completions endpoint works: GPT-4o, vLLM, Ollama, a llama.cpp server.
The edge builds the configuration from the environment (``LLMConfig.from_env(os.environ)``):

=============================  ==========================================================
``TVOMNER_LLM_BASE_URL``       e.g. ``http://localhost:8000/v1`` (vLLM), ``https://api.openai.com/v1``
``TVOMNER_LLM_MODEL``          model for the entity-object prompt (e.g. ``gpt-4o``)
``TVOMNER_LLM_CAPTION_MODEL``  vision model for captions (default: ``TVOMNER_LLM_MODEL``)
``OPENAI_API_KEY``             the key (local servers accept any value; ``no-key`` is sent then)
``TVOMNER_LLM_CONCURRENCY``    parallel requests (default 4)
=============================  ==========================================================

Robustness: the openai client retries every request itself (``max_retries``, ``timeout``: exponential
backoff with jitter on 408/409/429/5xx, honouring ``Retry-After``, timeouts and connection errors); an
answer whose body cannot be read is asked again (up to ``max_retries`` times), one whose text cannot be
parsed too (``parse_retries``); nothing is invented: a key still failing is reported and left out of
the cache. Requests run in a thread pool of
``concurrency`` workers. Every finished record is appended to a JSONL cache (``JsonlCache``: one
line per record, flushed and fsync'ed) **by the worker that finished it**, so a run interrupted at
any point (Ctrl-C, kill -9, a crash) resumes where it stopped: finished records are neither lost
nor requested again, and a record whose line was torn by the kill is recomputed. Each record
carries its provenance: source, model, endpoint host, prompt hash, token counts, attempts, raw
answer.
"""
from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlparse

import openai
from openai import OpenAI
from tqdm.auto import tqdm

from ..cache import JsonlCache, stable_hash
from ..io import DataFormatError, iter_jsonl
from ..io import load_captions as read_captions
from ..weights import ResourceMissing
from .prompts import (CAPTION_PROMPT_HASH, ENTITY_OBJECT_PROMPT_HASH, ParseError, caption_messages, parse_caption,
                      parse_phrases, phrase_messages)


# ---------------------------------------------------------------- client
@dataclass
class LLMConfig:
    base_url: str | None = None
    model: str | None = None
    caption_model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 4
    max_retries: int = 6            # per request (the openai client's own: 408/409/429/5xx, timeouts)
    parse_retries: int = 2          # extra requests when the answer cannot be parsed
    timeout: float = 60.0           # seconds per request
    temperature: float = 0.0
    max_tokens: int = 256

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides) -> "LLMConfig":
        """The endpoint named by ``TVOMNER_LLM_*`` and ``OPENAI_API_KEY`` in ``env`` (the edge passes
        ``os.environ``)."""
        cfg = cls(base_url=env.get("TVOMNER_LLM_BASE_URL") or None,
                  model=env.get("TVOMNER_LLM_MODEL") or None,
                  caption_model=env.get("TVOMNER_LLM_CAPTION_MODEL") or None,
                  api_key=env.get("OPENAI_API_KEY") or None,
                  concurrency=int(env.get("TVOMNER_LLM_CONCURRENCY", 4)))
        for k, v in overrides.items():
            setattr(cfg, k, v)
        return cfg

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self.model)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int


class LLMError(RuntimeError):
    """A request that still failed after all retries (the run can simply be repeated)."""


class UnreadableAnswer(ParseError):
    """An HTTP 200 whose body is not a chat completion; asked again like an unparseable answer."""

    def __init__(self, message: str, attempts: int):
        super().__init__(message)
        self.attempts = attempts


RETRIED_STATUS = (408, 409, 429)    # and every 5xx: what the openai client retries


class LLMClient:
    """``chat(messages) -> Completion`` over ``openai.OpenAI``, whose own ``max_retries`` (exponential
    backoff with jitter, ``Retry-After`` honoured) and ``timeout`` handle transport faults."""

    def __init__(self, cfg: LLMConfig):
        if not cfg.configured:
            raise ResourceMissing("no LLM endpoint: set TVOMNER_LLM_BASE_URL (an OpenAI-compatible "
                                  "/v1 URL: GPT-4o, vLLM, Ollama, llama.cpp) and TVOMNER_LLM_MODEL, "
                                  "and OPENAI_API_KEY when the endpoint needs one")
        self.cfg = cfg
        self.client = OpenAI(base_url=cfg.base_url, api_key=cfg.api_key or "no-key",
                             max_retries=cfg.max_retries, timeout=cfg.timeout)
        self.endpoint = urlparse(cfg.base_url).netloc or cfg.base_url
        self.retries = 0            # total retried requests (for reports)
        self._lock = threading.Lock()

    def _count(self, retries: int) -> None:
        with self._lock:
            self.retries += retries

    def chat(self, messages: list[dict], model: str | None = None) -> Completion:
        model = model or self.cfg.model
        try:
            raw = self.client.chat.completions.with_raw_response.create(
                model=model, messages=messages, temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens)
        except openai.APIStatusError as e:   # HTTP error answers
            if e.status_code not in RETRIED_STATUS and e.status_code < 500:
                raise LLMError(f"{self.endpoint}: HTTP {e.status_code} {str(e)[:200]} "
                               f"(not retried: fix the request, key or model name)") from None
            self._count(self.cfg.max_retries)
            raise LLMError(self._gave_up(e)) from None
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            self._count(self.cfg.max_retries)
            raise LLMError(self._gave_up(e)) from None
        self._count(raw.retries_taken)
        attempts = raw.retries_taken + 1
        try:
            r = raw.parse()
            if not getattr(r, "choices", None):
                raise ValueError(f"answer without choices: {str(r)[:120]}")
            text = r.choices[0].message.content or ""
        except (openai.APIResponseValidationError, ValueError, TypeError, AttributeError) as e:
            raise UnreadableAnswer(f"unreadable answer ({type(e).__name__}: {str(e)[:200]})", attempts) from None
        u = getattr(r, "usage", None)
        return Completion(text=text, prompt_tokens=int(getattr(u, "prompt_tokens", 0) or 0),
                          completion_tokens=int(getattr(u, "completion_tokens", 0) or 0), attempts=attempts)

    def _gave_up(self, e: Exception) -> str:
        return (f"{self.endpoint}: gave up after {self.cfg.max_retries + 1} attempts: "
                f"{type(e).__name__}: {str(e)[:200]}")


# ---------------------------------------------------------------- cached runs
@dataclass
class RunSummary:
    total: int = 0
    cached: int = 0
    computed: int = 0
    failed: dict = field(default_factory=dict)     # key -> reason (retried on the next run)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["failed"] = len(self.failed)
        return d


def _run_cached(keys: list[str], cache: JsonlCache, make_messages: Callable[[str], list[dict]],
                parse: Callable[[str], object], make_record: Callable[[str, object, Completion], dict],
                client: LLMClient, model: str, stale: Callable[[dict], bool], progress: bool,
                desc: str) -> RunSummary:
    t0 = time.perf_counter()
    todo = [k for k in dict.fromkeys(keys) if k not in cache or stale(cache[k])]
    summ = RunSummary(total=len(set(keys)), cached=len(set(keys)) - len(todo))
    lock = threading.Lock()

    def work(k: str) -> None:
        msgs = make_messages(k)
        p_tok = c_tok = attempts = 0
        parses_left, unreadable_left = client.cfg.parse_retries + 1, client.cfg.max_retries
        while parses_left > 0:
            try:
                comp = client.chat(msgs, model=model)
            except UnreadableAnswer as e:     # a transport fault the client does not retry: max_retries
                attempts += e.attempts
                err = e
                if unreadable_left == 0:
                    break
                unreadable_left -= 1
                continue
            p_tok += comp.prompt_tokens
            c_tok += comp.completion_tokens
            attempts += comp.attempts
            try:
                value = parse(comp.text)
            except ParseError as e:           # a readable answer that says nothing usable: parse_retries
                err = e
                parses_left -= 1
                continue
            comp = Completion(comp.text, p_tok, c_tok, attempts)
            cache.append(make_record(k, value, comp))      # durable before anything else
            with lock:
                summ.computed += 1
                summ.prompt_tokens += p_tok
                summ.completion_tokens += c_tok
                summ.requests += attempts
            return
        with lock:
            summ.prompt_tokens += p_tok
            summ.completion_tokens += c_tok
            summ.requests += attempts
        raise LLMError(f"no usable answer after {attempts} requests: {err}")

    bar = tqdm(total=len(todo), desc=desc) if progress and todo else None
    pool = ThreadPoolExecutor(max_workers=max(1, client.cfg.concurrency))
    try:
        futs = {pool.submit(work, k): k for k in todo}
        for f in as_completed(futs):
            try:
                f.result()
            except LLMError as e:
                summ.failed[futs[f]] = str(e)
            if bar:
                bar.update(1)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)   # finished records are already on disk
        raise
    finally:
        pool.shutdown(wait=True)
        if bar:
            bar.close()
    summ.seconds = round(time.perf_counter() - t0, 3)
    if summ.failed:
        warnings.warn(f"{cache.path}: {len(summ.failed)} record(s) failed and were not written; "
                      f"re-run to retry them (e.g. {next(iter(summ.failed.items()))})")
    return summ


def generate_phrases(items: dict[str, tuple[str, str]], cache: JsonlCache | str | Path,
                     client: LLMClient, progress: bool = False) -> RunSummary:
    """Entity-object phrases for ``{imgid: (tweet text, caption)}`` into ``cache`` (key ``imgid``).

    A cached record made with another prompt (``prompt_hash``) or another input is recomputed."""
    cache = cache if isinstance(cache, JsonlCache) else JsonlCache(cache, key="imgid")
    model = client.cfg.model
    in_hash = {k: stable_hash(t, c) for k, (t, c) in items.items()}

    def stale(rec: dict) -> bool:
        return rec.get("source") == "llm" and (rec.get("prompt_hash") != ENTITY_OBJECT_PROMPT_HASH or
                                               rec.get("input_hash") != in_hash[str(rec["imgid"])])

    def record(k, phrases, comp: Completion) -> dict:
        return {"imgid": k, "phrases": phrases, "source": "llm", "model": model,
                "endpoint": client.endpoint, "prompt_hash": ENTITY_OBJECT_PROMPT_HASH,
                "input_hash": in_hash[k], "prompt_tokens": comp.prompt_tokens,
                "completion_tokens": comp.completion_tokens, "attempts": comp.attempts,
                "raw": comp.text[:2000], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    return _run_cached(list(items), cache, lambda k: phrase_messages(*items[k]), parse_phrases,
                       record, client, model, stale, progress, "LLM phrases")


def generate_captions(images: dict[str, str | Path], cache: JsonlCache | str | Path,
                      client: LLMClient, progress: bool = False) -> RunSummary:
    """Captions (Appendix A captioning prompt, image as a data URL) for ``{imgid: image path}``."""
    cache = cache if isinstance(cache, JsonlCache) else JsonlCache(cache, key="imgid")
    model = client.cfg.caption_model or client.cfg.model

    def stale(rec: dict) -> bool:
        return rec.get("source") == "llm" and rec.get("prompt_hash") != CAPTION_PROMPT_HASH

    def record(k, caption, comp: Completion) -> dict:
        return {"imgid": k, "caption": caption, "source": "llm", "model": model,
                "endpoint": client.endpoint, "prompt_hash": CAPTION_PROMPT_HASH,
                "prompt_tokens": comp.prompt_tokens, "completion_tokens": comp.completion_tokens,
                "attempts": comp.attempts, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    return _run_cached(list(images), cache, lambda k: caption_messages(images[k]), parse_caption,
                       record, client, model, stale, progress, "LLM captions")


# ---------------------------------------------------------------- files
def load_captions(path: str | Path) -> dict[str, str]:
    """``{IMGID: caption}`` (``tvolib.io.load_captions``); a missing file is a ``ResourceMissing``
    that says how to set it."""
    path = Path(path)
    if not path.exists():
        raise ResourceMissing(f"captions file {path} not found (set DataConfig.captions to a "
                              f"{{IMGID: caption}} JSON file, or None)")
    return read_captions(path)


def load_phrases_file(path: str | Path) -> dict[str, dict]:
    """``{imgid: record}`` from a JSONL file of ``{"imgid", "phrases": [...], "source"}``."""
    path = Path(path)
    if not path.exists():
        raise ResourceMissing(f"phrases file {path} not found")
    out = {}
    for i, r in iter_jsonl(path):
        if "imgid" not in r:
            raise DataFormatError(path, i, "bad phrases record (no 'imgid')")
        if not isinstance(r.get("phrases"), list) or not all(isinstance(p, str) for p in r["phrases"]):
            raise DataFormatError(path, i, "bad phrases record ('phrases' must be a list of strings)")
        out[str(r["imgid"])] = r
    return out
