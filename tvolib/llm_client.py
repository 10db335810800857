"""One OpenAI-compatible chat client and one cached, fault-tolerant way of asking it, shared by the
LLM stages: the Appendix A captions and phrases (``tvolib.vfo.llm``) and the per-tweet auxiliary
knowledge for new tweets (``tvolib.tfo.knowledge.llm_texts``).

* ``LLMConfig`` — the endpoint, read at the edge from the environment (``LLMConfig.from_env``); the
  key is never part of its ``repr`` and never recorded.
* ``LLMClient.chat(messages) -> Completion`` over ``openai.OpenAI``, whose own ``max_retries``
  (exponential backoff with jitter on 408/409/429/5xx, ``Retry-After`` honoured, timeouts and
  connection errors) and ``timeout`` handle transport faults; a request still failing is an
  ``LLMError``, an HTTP 200 whose body is not a chat completion an ``UnreadableAnswer``.
* ``run_cached(keys, cache, make_messages, parse, make_record, ...)`` — asks for every key not yet in
  the JSONL cache (a thread pool of ``concurrency`` workers); an unreadable body is asked again up to
  ``max_retries`` times, an answer that ``parse`` rejects (``ParseError``) up to ``parse_retries``
  times; each finished record is appended (flushed, fsync'ed) by the worker that finished it; a key
  still failing is reported in ``RunSummary.failed`` and never written as an answer: nothing is
  invented.
"""
from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable, Mapping
from urllib.parse import urlparse

from tqdm.auto import tqdm

from .cache import JsonlCache
from .weights import ResourceMissing


class ParseError(ValueError):
    """An LLM answer that says nothing usable (the caller asks again)."""


# ---------------------------------------------------------------- client
@dataclass
class LLMConfig:
    base_url: str | None = None
    model: str | None = None
    caption_model: str | None = None
    knowledge_model: str | None = None   # per-tweet knowledge for new tweets (default: model)
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
                  knowledge_model=env.get("TVOMNER_LLM_KNOWLEDGE_MODEL") or None,
                  api_key=env.get("OPENAI_API_KEY") or None,
                  concurrency=int(env.get("TVOMNER_LLM_CONCURRENCY", 4)))
        for k, v in overrides.items():
            setattr(cfg, k, v)
        return cfg

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self.model)


def endpoint_host(base_url: str | None) -> str:
    """``host:port`` of an endpoint URL, without any user or password it may carry."""
    return (urlparse(base_url or "").netloc or base_url or "").rpartition("@")[2]


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
NO_USABLE_ANSWER = "no usable answer"   # how a failure of the answers (not of the endpoint) begins


class LLMClient:
    """``chat(messages) -> Completion`` over ``openai.OpenAI``, whose own ``max_retries`` (exponential
    backoff with jitter, ``Retry-After`` honoured) and ``timeout`` handle transport faults."""

    def __init__(self, cfg: LLMConfig):
        if not cfg.configured:
            raise ResourceMissing("no LLM endpoint: set TVOMNER_LLM_BASE_URL (an OpenAI-compatible "
                                  "/v1 URL: GPT-4o, vLLM, Ollama, llama.cpp) and TVOMNER_LLM_MODEL, "
                                  "and OPENAI_API_KEY when the endpoint needs one")
        self.cfg = cfg
        from openai import OpenAI   # the client (~1 s to import) where an endpoint is used
        self.client = OpenAI(base_url=cfg.base_url, api_key=cfg.api_key or "no-key",
                             max_retries=cfg.max_retries, timeout=cfg.timeout)
        self.endpoint = endpoint_host(cfg.base_url)
        self.retries = 0            # total retried requests (for reports)
        self._lock = threading.Lock()

    def _count(self, retries: int) -> None:
        with self._lock:
            self.retries += retries

    def chat(self, messages: list[dict], model: str | None = None) -> Completion:
        import openai
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


def run_cached(keys: list[str], cache: JsonlCache, make_messages: Callable[[str], list[dict]],
               parse: Callable[[str], object], make_record: Callable[[str, object, Completion], dict],
               client: LLMClient, model: str, stale: Callable[[dict], bool], progress: bool,
               desc: str) -> RunSummary:
    """Ask ``client`` for every key of ``keys`` not in ``cache`` (or whose record is ``stale``) and
    append ``make_record(key, parse(answer), completion)``; see the module docstring."""
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
        raise LLMError(f"{NO_USABLE_ANSWER} after {attempts} requests: {err}")

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
