"""``LLMKnowledgeSource``: PGIM-style per-tweet auxiliary knowledge for new tweets, asked of an
OpenAI-compatible endpoint (GPT-4o, vLLM, Ollama, llama.cpp) through ``tvolib.llm_client``.

A checkpoint trained on PGIM's per-tweet texts (``knowledge_source='tweet_files'``) reads, for every
tweet, a short text: the named entities of the tweet with their types, and a few sentences explaining
them. A user's own tweets have no such text; this source asks the endpoint for one, with a fixed
prompt in PGIM's style (an instruction, a few fixed examples written for this project, the tweet and
its caption when there is one), and serves it through the ``TweetFileSource`` interface (texts keyed
by tweet id; ``lookup`` as for the files).

Every answer goes to a JSONL cache (``JsonlCache``, appended record by record) keyed by content:
``stable_hash(prompt hash, model, tweet text, caption)``, so the same tweet asked again with the same
prompt and model costs no request, whatever its id. Faults are those of the Appendix A phrases
(``run_cached``): timeouts, rate limits and 5xx answers are retried by the client, empty, refusing or
absurdly long answers are rejected by ``parse_knowledge`` and asked again; a tweet still failing gets
a ``{"status": "failed", "reason"}`` record (never used as knowledge, asked again on the next run)
and no text: nothing is invented. The API key is never written anywhere.
"""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Mapping

from ...cache import JsonlCache, stable_hash
from ...llm_client import (NO_USABLE_ANSWER, Completion, LLMClient, LLMConfig, ParseError, RunSummary, endpoint_host,
                           run_cached)
from .tweet_files import TweetFileSource

# ---------------------------------------------------------------- the prompt (PGIM's style)
KNOWLEDGE_INSTRUCTION = (
    "Here are posts from Twitter; each may come with a description of its image. Identify the named "
    "entities in the text, give the type of each (person, location, organization or other, with a finer "
    "type after a slash), and explain briefly how each should be understood, using your own knowledge and "
    "the image description where it helps. Answer in the format of the examples: \"Named entities: 1. "
    "<entity> (<type>) 2. ... Reasoning: <a few sentences>\". Do not invent facts you are unsure of; "
    "when the text names no entity, say so.")

KNOWLEDGE_EXAMPLES = (
    ("Kevin Durant and the Warriors take Game 1 in Oakland",
     "A basketball player in a blue jersey dunking in a crowded arena.",
     "Named entities: 1. Kevin Durant (person/basketball player) 2. Warriors (organization/basketball team) "
     "3. Oakland (location/city) Reasoning: Kevin Durant is an American professional basketball player. The "
     "Warriors are the Golden State Warriors, an NBA team that played its home games in Oakland, a city in the "
     "San Francisco Bay Area of California. The image of a player dunking in an arena is related to the "
     "sentence and likely shows a moment of the game."),
    ("RT @BBCBreaking : Heavy snow closes roads across Yorkshire",
     None,
     "Named entities: 1. BBCBreaking (organization/news account) 2. Yorkshire (location/county) Reasoning: "
     "BBC Breaking is the breaking-news account of the BBC, the British public broadcaster. Yorkshire is a "
     "historic county in northern England. The sentence reports a weather event in that region."),
    ("Can't wait for #Coachella with @katyperry this weekend !",
     "A crowd of people in front of a large outdoor stage at sunset.",
     "Named entities: 1. Coachella (other/music festival) 2. katyperry (person/singer) Reasoning: Coachella "
     "is an annual music and arts festival held in Indio, California. @katyperry is the Twitter handle of "
     "Katy Perry, an American singer. The image of a crowd before an outdoor stage is related to the "
     "sentence, as it shows a festival scene."),
    ("what a lovely morning for a run",
     "A path through a park in morning light.",
     "Named entities: none. Reasoning: The sentence describes a personal activity and names no specific "
     "person, location, organization or other entity. The image of a park path fits the sentence."),
)

NO_CAPTION = "(no image description)"


def knowledge_user_message(text: str, caption: str | None) -> str:
    return (f"Text: {' '.join(str(text).split())}\nImage: {' '.join(str(caption).split()) if caption else NO_CAPTION}\n"
            f"Question: Which named entities are in the text, of which types, and how should they be understood?")


def knowledge_messages(text: str, caption: str | None = None) -> list[dict]:
    """The chat messages for one tweet: the instruction, the fixed examples as earlier turns, the tweet."""
    msgs = [{"role": "system", "content": KNOWLEDGE_INSTRUCTION}]
    for ex_text, ex_caption, answer in KNOWLEDGE_EXAMPLES:
        msgs += [{"role": "user", "content": knowledge_user_message(ex_text, ex_caption)},
                 {"role": "assistant", "content": answer}]
    return msgs + [{"role": "user", "content": knowledge_user_message(text, caption)}]


KNOWLEDGE_PROMPT_HASH = stable_hash(KNOWLEDGE_INSTRUCTION, KNOWLEDGE_EXAMPLES, knowledge_user_message("#T", "#C"))
KNOWLEDGE_MAX_TOKENS = 512          # PGIM's texts run to about 150 words
MIN_WORDS, MAX_CHARS = 3, 4000

_REFUSAL = re.compile(r"^\W*(i['’]?m sorry|i am sorry|sorry,|i apologi[sz]e|i can ?not|i can['’]?t|"
                      r"i['’]?m (not able|unable)|i am (not able|unable)|i won['’]?t|as an ai\b|"
                      r"unfortunately,? i\b)|\bas an ai (language )?model\b", re.I)


def parse_knowledge(answer: str | None) -> str:
    """The knowledge text of an answer (reasoning blocks removed, whitespace collapsed). Raises
    ``ParseError`` for an empty answer, a refusal, fewer than ``MIN_WORDS`` words or more than
    ``MAX_CHARS`` characters (a runaway answer): the tweet is asked again, then reported."""
    s = re.sub(r"<think>.*?</think>", "", str(answer or ""), flags=re.S)
    s = re.sub(r"^\s*(answer|outputs?)\s*:\s*", "", s, flags=re.I)
    s = " ".join(s.split())
    if not s:
        raise ParseError("empty answer")
    if _REFUSAL.search(s):
        raise ParseError(f"refusal: {s[:120]!r}")
    if len(re.findall(r"\w+", s)) < MIN_WORDS:
        raise ParseError(f"too short: {s[:120]!r}")
    if len(s) > MAX_CHARS:
        raise ParseError(f"too long ({len(s)} characters, more than {MAX_CHARS})")
    return s


def knowledge_key(model: str, text: str, caption: str | None) -> str:
    """The cache key of one tweet's text: prompt, model and content (never the user's id)."""
    return stable_hash(KNOWLEDGE_PROMPT_HASH, model, " ".join(str(text).split()), caption or None, n=24)


def knowledge_client(cfg: LLMConfig) -> LLMClient:
    """A client for the knowledge prompt (room for PGIM-length answers); ``ResourceMissing`` when no
    endpoint is configured."""
    return LLMClient(dataclasses.replace(cfg, max_tokens=max(cfg.max_tokens, KNOWLEDGE_MAX_TOKENS)))


# ---------------------------------------------------------------- the source
class LLMKnowledgeSource(TweetFileSource):
    """Per-tweet knowledge texts from an LLM, keyed by tweet id once ``fetch`` has asked for them.

    >>> src = LLMKnowledgeSource(knowledge_client(LLMConfig.from_env(os.environ)), "cache/llm_knowledge.jsonl")
    >>> src.fetch({"t1": ("Steph Curry drops 40 in Oakland", None)})
    >>> src.aux["t1"], src.failed        # the text, or the reason in ``failed``
    """

    def __init__(self, client: LLMClient, cache: str | Path | JsonlCache):
        self.client = client
        self.model = client.cfg.knowledge_model or client.cfg.model
        self.endpoint = endpoint_host(client.cfg.base_url)
        self.cache = cache if isinstance(cache, JsonlCache) else JsonlCache(cache, key="key")
        self.paths = [Path(f"llm-{self.model}")]
        self.aux: dict[str, str] = {}
        self.failed: dict[str, str] = {}         # tweet id -> reason (no text)
        self.fingerprint = stable_hash(self.aux)

    @property
    def origin(self) -> str:
        return f"per-tweet texts from {self.model} at {self.endpoint}"

    def _scrub(self, s: str) -> str:
        key = self.client.cfg.api_key
        return s.replace(key, "***") if key else s

    def fetch(self, tweets: Mapping[str, tuple[str, str | None]], progress: bool = False) -> RunSummary:
        """Texts for ``{tweet id: (tweet text, caption or None)}``: cached ones read, the others asked
        (concurrently, with retries). Answered tweets go to ``aux``, the others to ``failed``."""
        keys = {tid: knowledge_key(self.model, text, cap) for tid, (text, cap) in tweets.items()}
        items = {keys[tid]: (text, cap) for tid, (text, cap) in tweets.items()}

        def record(k: str, aux: str, comp: Completion) -> dict:
            text, cap = items[k]
            return {"key": k, "status": "ok", "aux": aux, "text": text, "caption": cap, "source": "llm",
                    "model": self.model, "endpoint": self.endpoint, "prompt_hash": KNOWLEDGE_PROMPT_HASH,
                    "prompt_tokens": comp.prompt_tokens, "completion_tokens": comp.completion_tokens,
                    "attempts": comp.attempts, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

        def ask(keys: list[str]) -> RunSummary:
            return run_cached(keys, self.cache, lambda k: knowledge_messages(*items[k]), parse_knowledge, record,
                              self.client, self.model, lambda rec: rec.get("status") != "ok", progress,
                              "LLM knowledge")

        todo = [k for k in items if k not in self.cache or self.cache[k].get("status") != "ok"]
        summ = ask(todo[:1])            # one tweet first: an endpoint that is down fails once, not per tweet
        first = next(iter(summ.failed.values()), None)
        if first is not None and not first.startswith(NO_USABLE_ANSWER):
            down = f"{self._scrub(first)} (not asked: the endpoint failed on the first tweet)"
            rest = {k: down for k in todo[1:]}
        else:
            rest = {}
            more = ask(todo[1:])
            for f in ("cached", "computed", "prompt_tokens", "completion_tokens", "requests", "seconds"):
                setattr(summ, f, getattr(summ, f) + getattr(more, f))
            summ.failed.update(more.failed)
        summ.total, summ.cached = len(items), len(items) - len(todo)
        for k, reason in list(summ.failed.items()):
            reason = summ.failed[k] = self._scrub(reason)
            text, cap = items[k]
            self.cache.append({"key": k, "status": "failed", "reason": reason, "text": text, "caption": cap,
                               "source": "llm", "model": self.model, "endpoint": self.endpoint,
                               "prompt_hash": KNOWLEDGE_PROMPT_HASH,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        summ.failed.update(rest)        # not asked, so not recorded: asked on the next run
        for tid, k in keys.items():
            rec = self.cache.get(k)
            if rec is not None and rec.get("status") == "ok":
                self.aux[tid] = rec["aux"]
                self.failed.pop(tid, None)
            else:
                self.failed[tid] = summ.failed.get(k, "no answer")
                self.aux.pop(tid, None)
        self.fingerprint = stable_hash(sorted(self.aux.items()))
        return summ
