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
answer. The client, its configuration and the cached runs live in ``tvolib.llm_client`` (re-exported
here), shared with the per-tweet knowledge of new tweets (``tvolib.tfo.knowledge.llm_texts``).
"""
from __future__ import annotations

import time
from pathlib import Path

from ..cache import JsonlCache, stable_hash
from ..io import DataFormatError, iter_jsonl
from ..io import load_captions as read_captions
from ..llm_client import (RETRIED_STATUS, Completion, LLMClient, LLMConfig, LLMError, RunSummary,  # noqa: F401
                          UnreadableAnswer, run_cached)
from ..weights import ResourceMissing
from .prompts import (CAPTION_PROMPT_HASH, ENTITY_OBJECT_PROMPT_HASH, caption_messages, parse_caption, parse_phrases,
                      phrase_messages)


# ---------------------------------------------------------------- cached runs
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

    return run_cached(list(items), cache, lambda k: phrase_messages(*items[k]), parse_phrases,
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

    return run_cached(list(images), cache, lambda k: caption_messages(images[k]), parse_caption,
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
