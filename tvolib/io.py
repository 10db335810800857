"""Files in and out: the JSONL reader, the tweet readers of ``tvomner predict`` and its output writers.

* ``read_jsonl`` / ``iter_jsonl``: one JSON object per non-blank line; anything else is a
  ``DataFormatError`` naming ``file:line`` (the one JSONL reader of the package).
* ``read_tweets(path, fmt)``: a user's tweets, in one of three formats (``fmt="auto"`` picks it from
  the first non-blank line):

  - **text**: one tweet per line, tokens split on whitespace. An optional ``IMGID<TAB>`` prefix
    names the tweet (and its image ``<image_dir>/<IMGID>.jpg|png``); it is taken as an IMGID only
    when it is one (a plain file name without spaces). A line whose tab would turn words into an
    id (``I love<TAB>New York``) is an error that says how to write it. Tweets without an IMGID
    are named ``line<N>``.
  - **JSONL** (first line starts with ``{``): ``{"id": str, "text": str}`` or
    ``{"id": str, "tokens": [str, ...]}``, with an optional ``"image"`` (a path, relative to the
    file's folder). A missing, mistyped or unknown field is an error naming ``file:line``.
  - **CoNLL** (first line starts with ``IMGID:``): ``IMGID:<id>`` lines, then one token per line,
    with or without a ``<TAB>label`` (labels, if any, are ignored).

  A file that is not UTF-8, an IMGID that is not a plain file name and a token<TAB>label file
  without ``IMGID:`` lines are errors naming the file and line.
* ``format_output`` / ``write_output``: strict JSON (no NaN or Infinity: a non-finite value is an
  error naming the tweet) or CoNLL.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from .cache import atomic_write_text
from .data import DataFormatError, Tweet, imgid_problem, read_conll, read_utf8

__all__ = ["DataFormatError", "iter_jsonl", "read_jsonl", "load_captions", "read_tweets", "as_tweets",
           "format_output", "write_output", "TWEET_FORMATS", "OUTPUT_FORMATS"]

TWEET_FORMATS = ("auto", "text", "jsonl", "conll")
OUTPUT_FORMATS = ("json", "conll")
CONLL_LINE = re.compile(r"^\S+\t(O|[BI]-[A-Za-z]+)\s*$")
JSONL_FIELDS = ("id", "text", "tokens", "image")


# ---------------------------------------------------------------------------------------------- JSONL


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSONL file, streamed (a UTF-8 BOM is
    dropped). A line that is not UTF-8, not JSON or not a JSON object is a ``DataFormatError``
    naming ``file:line``; a missing file is a ``FileNotFoundError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataFormatError(path, lineno, f"not UTF-8 ({e.reason} at byte {e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(path, lineno, f"not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise DataFormatError(path, lineno, f"expected a JSON object, got {type(rec).__name__}")
            yield lineno, rec


def read_jsonl(path: str | Path) -> list[dict]:
    """Every object of a JSONL file, in file order (see ``iter_jsonl`` for the errors)."""
    return [rec for _, rec in iter_jsonl(path)]


def load_captions(path: str | Path | None) -> dict[str, str]:
    """``{IMGID: caption}`` from a JSON object file (the BLIP-2 files) or JSONL of
    ``{"imgid", "caption"}``; an empty dict when ``path`` is None."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: captions file not found")
    if path.suffix == ".jsonl":
        out = {}
        for lineno, rec in iter_jsonl(path):
            if "imgid" not in rec or "caption" not in rec:
                raise DataFormatError(path, lineno, "expected {'imgid', 'caption'}")
            out[str(rec["imgid"])] = str(rec["caption"])
        return out
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, f"invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise DataFormatError(path, 1, "expected a JSON object {IMGID: caption}")
    return {str(k): str(v) for k, v in data.items()}


# ---------------------------------------------------------------------------------------------- tweets in


def read_tweets(path: str | Path, fmt: str = "auto") -> list[Tweet]:
    """A user's tweets as unlabelled test ``Tweet``s (see the module docstring for the formats)."""
    path = Path(path)
    if fmt not in TWEET_FORMATS:
        raise ValueError(f"unknown input format {fmt!r}: one of {', '.join(TWEET_FORMATS)}")
    if fmt == "jsonl":
        return _read_jsonl_tweets(path)
    text = read_utf8(path)
    lines = text.splitlines()
    first = next(((i, l) for i, l in enumerate(lines, 1) if l.strip()), (0, ""))
    if fmt == "auto":
        head = first[1].lstrip()
        if head.startswith("{"):
            try:
                return _read_jsonl_tweets(path)
            except DataFormatError as e:
                raise DataFormatError(path, e.line, f"{e.message} (read as JSONL since the first "
                                                    f"line starts with '{{'; give fmt='text' for plain text)") from None
        fmt = "conll" if head.startswith("IMGID:") else "text"
    if fmt == "conll":
        tweets = read_conll(path, split="test", labels="optional")
        return [dataclasses.replace(t, labels=["O"] * len(t.tokens)) for t in tweets]
    if CONLL_LINE.match(first[1]):
        raise DataFormatError(path, first[0], "looks like CoNLL ('token<TAB>label') without 'IMGID:' lines; "
                                              "put 'IMGID:<id>' before each tweet, or give one tweet per line")
    tweets = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        tid, body = f"line{lineno}", line
        if "\t" in line:
            prefix, body = line.split("\t", 1)
            tid = prefix.strip().removeprefix("IMGID:")
            problem = _id_problem(tid)
            if problem:
                raise DataFormatError(
                    path, lineno, f"{problem}: the text before the tab is read as the tweet's IMGID. Write "
                                  f"'IMGID<TAB>tweet' with a plain IMGID, replace the tab by a space to read the "
                                  f"whole line as the tweet, or give JSONL ({{\"id\": ..., \"text\": ...}})")
        tokens = body.split()
        if not tokens:
            raise DataFormatError(path, lineno, "no tokens after the IMGID")
        tweets.append(Tweet(id=tid, tokens=tokens, labels=["O"] * len(tokens), split="test",
                            source=f"{path}:{lineno}"))
    if not tweets:
        raise DataFormatError(path, None, "no tweets found")
    return tweets


def _id_problem(tid: str) -> str | None:
    if not tid:
        return "empty IMGID before the tab"
    return imgid_problem(tid)


def _read_jsonl_tweets(path: Path) -> list[Tweet]:
    tweets = []
    for lineno, rec in iter_jsonl(path):
        def bad(msg: str):
            return DataFormatError(path, lineno, msg)
        unknown = sorted(set(rec) - set(JSONL_FIELDS))
        if unknown:
            raise bad(f"unknown field(s) {unknown}; a tweet is {{\"id\", \"text\" | \"tokens\", \"image\"?}}")
        if "id" not in rec:
            raise bad("missing field 'id' (the tweet's IMGID)")
        tid = rec["id"]
        if isinstance(tid, bool) or not isinstance(tid, (str, int)):
            raise bad(f"'id' must be a string, got {type(tid).__name__}")
        tid = str(tid)
        problem = _id_problem(tid) if tid else "empty 'id'"
        if problem:
            raise bad(problem)
        if ("text" in rec) == ("tokens" in rec):
            raise bad("give exactly one of 'text' (a string) or 'tokens' (a list of strings)")
        if "text" in rec:
            if not isinstance(rec["text"], str):
                raise bad(f"'text' must be a string, got {type(rec['text']).__name__}")
            tokens = rec["text"].split()
        else:
            tokens = rec["tokens"]
            if not isinstance(tokens, list) or not all(isinstance(w, str) for w in tokens):
                raise bad("'tokens' must be a list of strings")
            if any(not w or w != "".join(w.split()) for w in tokens):
                raise bad("'tokens' holds an empty token or one with spaces inside")
        if not tokens:
            raise bad(f"tweet {tid!r} has no tokens")
        image = None
        if rec.get("image") is not None:
            if not isinstance(rec["image"], str) or not rec["image"]:
                raise bad("'image' must be a path (a string)")
            image = Path(rec["image"]).expanduser()
            image = image if image.is_absolute() else path.parent / image
            if not image.is_file():
                raise bad(f"image {rec['image']!r} not found (looked for {image})")
        tweets.append(Tweet(id=tid, tokens=list(tokens), labels=["O"] * len(tokens), split="test",
                            image_path=image, source=f"{path}:{lineno}"))
    if not tweets:
        raise DataFormatError(path, None, "no tweets found")
    return tweets


def as_tweets(tweets: Sequence) -> list[Tweet]:
    """Strings (split on whitespace), token lists or ``Tweet``s as unlabelled test tweets."""
    out = []
    for i, t in enumerate(tweets):
        if isinstance(t, Tweet):
            out.append(dataclasses.replace(t, split="test", labels=["O"] * len(t.tokens)))
        else:
            tokens = t.split() if isinstance(t, str) else list(t)
            if not tokens:
                raise ValueError(f"tweet {i + 1} has no tokens")
            out.append(Tweet(id=f"t{i + 1}", tokens=tokens, labels=["O"] * len(tokens), split="test"))
    return out


# ---------------------------------------------------------------------------------------------- results out


def _non_finite(value: Any, where: str = "") -> str | None:
    """The path of the first NaN or infinite float inside ``value`` (None when there is none)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where or "value")
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        hit = _non_finite(v, f"{where}[{k!r}]" if where else str(k))
        if hit:
            return hit
    return None


def format_output(results: list[dict], fmt: str = "json") -> str:
    """JSON (a list of the result dicts, strict: a NaN or infinite value is a ``ValueError`` naming
    the tweet) or CoNLL (``IMGID:<id>`` then ``token<TAB>label``)."""
    if fmt == "json":
        for i, r in enumerate(results):
            bad = _non_finite(r)
            if bad:
                raise ValueError(f"tweet {i + 1} (id {r.get('id')!r}): {bad} is not a finite number; the model "
                                 f"produced NaN or infinity (damaged weights?), which strict JSON cannot hold")
        return json.dumps(results, ensure_ascii=False, indent=1, allow_nan=False) + "\n"
    if fmt == "conll":
        blocks = ["\n".join([f"IMGID:{r['id']}"] + [f"{w}\t{l}" for w, l in zip(r["tokens"], r["labels"])])
                  for r in results]
        return "\n\n".join(blocks) + "\n"
    raise ValueError(f"unknown output format {fmt!r}: one of {', '.join(OUTPUT_FORMATS)}")


def write_output(results: list[dict], path: str | Path, fmt: str | None = None) -> Path:
    """Write ``format_output`` atomically; ``fmt`` defaults from the suffix (.conll/.txt → CoNLL)."""
    path = Path(path)
    fmt = fmt or ("conll" if path.suffix in (".conll", ".txt") else "json")
    atomic_write_text(path, format_output(results, fmt))
    return path
