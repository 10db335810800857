"""Knowledge sources for candidate entities (section 4.1): one interface, four back-ends.

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
* ``LLMKnowledgeSource`` — the same per-tweet texts for new tweets, asked of an OpenAI-compatible
  endpoint with a PGIM-style prompt (``llm_texts``): cached by content and prompt, faults retried,
  failures recorded, nothing invented.
"""
from __future__ import annotations

from .base import KnowledgeSource, Passage, camel_split, clean_query, fts_terms, title_variants
from .cli import main
from .llm_texts import LLMKnowledgeSource, knowledge_client, knowledge_messages, parse_knowledge
from .local_kb import LocalKB, build_kb, iter_records
from .tweet_files import TweetFileSource
from .wikipedia import WikipediaConfig, WikipediaSource

__all__ = ["KnowledgeSource", "Passage", "camel_split", "clean_query", "fts_terms", "title_variants", "main",
           "LLMKnowledgeSource", "knowledge_client", "knowledge_messages", "parse_knowledge",
           "LocalKB", "build_kb", "iter_records", "TweetFileSource", "WikipediaConfig", "WikipediaSource"]
