"""``TweetFileSource``: per-tweet knowledge files (the PGIM layout), keyed by IMGID."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ...io import DataFormatError, iter_jsonl
from ...weights import ResourceMissing
from .base import KnowledgeSource, Passage, clean_query

_SENT = re.compile(r"(?<=[.!?])\s+|(?<=[a-z.)])(?=\d+\.\s)|\s*\n+\s*")


class TweetFileSource(KnowledgeSource):
    """Per-tweet knowledge (PGIM layout: JSONL ``{"split", "imgid", "aux"}``), keyed by IMGID."""

    name = "tweet_files"

    def __init__(self, *paths: str | Path):
        if not paths:
            raise ValueError("TweetFileSource needs at least one JSONL file")
        self.paths = [Path(p) for p in paths]
        self.aux: dict[str, str] = {}
        digest = hashlib.sha256()
        for p in self.paths:
            if not p.exists():
                raise ResourceMissing(f"per-tweet knowledge file {p} not found (JSONL with split, imgid, aux "
                                      f"per line, e.g. <data root>/llm_knowledge/pgim_twitter2017.jsonl)")
            digest.update(p.read_bytes())
            for i, d in iter_jsonl(p):
                if "imgid" not in d or "aux" not in d:
                    raise DataFormatError(p, i, f"expected {{'split', 'imgid', 'aux'}}, got the fields {sorted(d)}")
                if not isinstance(d["aux"], str):
                    raise DataFormatError(p, i, "'aux' must be a string")
                self.aux[str(d["imgid"])] = d["aux"]

        # the files' content, so that knowledge cached from an edited file is not served again
        self.fingerprint = digest.hexdigest()[:12]

    @classmethod
    def from_texts(cls, aux: dict[str, str], name: str) -> "TweetFileSource":
        """A source over texts already read (prediction: keyed by its content ids), named ``name``."""
        self = cls.__new__(cls)
        self.paths = [Path(name)]
        self.aux = {str(k): v for k, v in aux.items()}
        self.fingerprint = hashlib.sha256(repr(sorted(self.aux.items())).encode()).hexdigest()[:12]
        return self

    def __contains__(self, tweet_id) -> bool:
        return str(tweet_id) in self.aux

    def lookup(self, query: str, k: int = 3, tweet_id: str | None = None) -> list[Passage]:
        if tweet_id is None:
            raise ValueError("TweetFileSource.lookup needs the tweet id (knowledge is per tweet)")
        aux = self.aux.get(str(tweet_id))
        if not aux or not aux.strip():
            return []
        src = f"tweet_files:{self.paths[0].name}"
        q = clean_query(query).casefold()
        sents = [s.strip() for s in _SENT.split(aux) if s and s.strip()]
        hits = [s for s in sents if q and q in s.casefold()]
        if hits:
            return [Passage(query, " ".join(hits), src, 1.0, "tweet")][:k]
        return [Passage(query, aux, src, 0.5, "tweet")][:k]
