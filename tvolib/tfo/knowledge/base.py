"""The knowledge-source interface (``Passage``, ``KnowledgeSource``) and query normalisation."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass


@dataclass
class Passage:
    title: str
    text: str
    source: str
    score: float = 0.0
    match: str = ""             # "exact" | "casefold" | "bm25" | "search" | "disambiguation" | "tweet"
    url: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Passage":
        return cls(**{k: d[k] for k in ("title", "text", "source", "score", "match", "url") if k in d})


class KnowledgeSource:
    """A candidate string in, ranked passages out."""

    name = "base"

    def lookup(self, query: str, k: int = 3, tweet_id: str | None = None) -> list[Passage]:
        raise NotImplementedError

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- query normalisation
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])")
_WORD = re.compile(r"\w+", re.UNICODE)


def clean_query(q: str) -> str:
    """Whitespace collapsed, leading #/@ of every word removed (``#NBAAwards`` → ``NBAAwards``)."""
    return " ".join(w.lstrip("#@") for w in (q or "").split()).strip()


def camel_split(q: str) -> str:
    """``NBAAwards`` → ``NBA Awards``, ``StephCurry30`` → ``Steph Curry 30``; underscores → spaces."""
    return " ".join(_CAMEL.sub(" ", w.replace("_", " ")) for w in q.split())


def title_variants(q: str) -> list[str]:
    raw = " ".join((q or "").split())
    out = []
    for v in (raw, clean_query(raw), camel_split(clean_query(raw))):
        if v and v not in out:
            out.append(v)
    return out


STOPWORDS = frozenset("a an and are as at be by for from has he in is it its of on or that the to was were will "
                      "with i you we they my your our rt de la el le les des du".split())


def fts_terms(q: str) -> list[str]:
    """Word terms of a query, each safe to put inside double quotes in an FTS5 MATCH."""
    return [t for t in _WORD.findall(camel_split(clean_query(q))) if t]
