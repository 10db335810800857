"""Twitter-2015/2017 MNER data in the UMT CoNLL format.

File format (one tweet per block, blank line between tweets)::

    IMGID:1015799
    RT	O
    George	B-PER
    Zimmerman	I-PER

Reading rules (the same for training and scoring, see ``read_conll``):

* ``OTHER`` (Twitter-2015's spelling) is read as ``MISC``.
* An ``I-X`` tag that does not continue an entity of type X (after ``O``, at the start of a
  tweet, or after another type) is **kept as written**. seqeval's default (non-strict) mode, which
  is what the paper's numbers use, reads it as the start of a new entity; ``entity_spans`` below
  applies exactly that rule, so candidate spans, knowledge queries, training targets and scores
  all see the same entities. Use ``repair_bio`` if you want the tags rewritten to ``B-X``.
* CRLF line endings and a UTF-8 BOM are accepted.
* Errors (malformed line, unknown label, empty file, tweet with no tokens, a file that is not
  UTF-8, an IMGID that is not a plain file name) raise ``DataFormatError`` naming the file and the
  line; a duplicate IMGID is a warning.
"""
from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .cache import atomic_write_text
from .images import check_dataset_images

ENTITY_TYPES = ("PER", "LOC", "ORG", "MISC")
LABELS = ("O",) + tuple(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))
LABEL2ID = {l: i for i, l in enumerate(LABELS)}
TYPE_ALIASES = {"OTHER": "MISC"}
SPLITS = ("train", "valid", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class DataFormatError(ValueError):
    """A benchmark file that cannot be read; the message names file and line."""

    def __init__(self, path, line: int | None, message: str):
        self.path, self.line, self.message = str(path), line, message
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


@dataclass
class Tweet:
    """One tweet of a split: tokens, BIO labels and the image that goes with it."""

    id: str                      # the IMGID
    tokens: list[str]
    labels: list[str]
    split: str = ""
    image_path: Path | None = None    # resolved file, or None when none was found
    image_status: str = "unchecked"   # "ok", "missing", or a reason such as "corrupt: ..."
    source: str = ""                  # "file:line" of the IMGID line
    extras: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def spans(self) -> list[tuple[int, int, str]]:
        return entity_spans(self.labels)

    def entities(self) -> list[tuple[str, str]]:
        return [(" ".join(self.tokens[s:e]), t) for s, e, t in self.spans()]


def normalize_label(label: str) -> str | None:
    """Return the canonical label (``OTHER`` → ``MISC``) or None when it is not a BIO label."""
    if label == "O":
        return label
    if len(label) > 2 and label[1] == "-" and label[0] in "BI":
        typ = TYPE_ALIASES.get(label[2:], label[2:])
        if typ in ENTITY_TYPES:
            return f"{label[0]}-{typ}"
    return None


def entity_spans(labels: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity spans ``(start, end_exclusive, type)`` under seqeval's default (IOB2, lenient) rule:
    an ``I-X`` that does not continue an ``X`` entity starts a new one."""
    spans, start, typ = [], None, None
    for i, lab in enumerate(list(labels) + ["O"]):
        prefix, t = (lab.split("-", 1) + [None])[:2] if lab != "O" else ("O", None)
        continues = prefix == "I" and typ == t and start is not None
        if start is not None and not continues:
            spans.append((start, i, typ))
            start, typ = None, None
        if prefix in ("B", "I") and not continues:
            start, typ = i, t
    return spans


def repair_bio(labels: Sequence[str]) -> list[str]:
    """Rewrite every ``I-X`` that starts an entity as ``B-X`` (same spans as ``entity_spans``)."""
    out = ["O"] * len(labels)
    for s, e, t in entity_spans(labels):
        out[s] = f"B-{t}"
        for i in range(s + 1, e):
            out[i] = f"I-{t}"
    return out


def read_utf8(path: str | Path) -> str:
    """A text file's content (a UTF-8 BOM is dropped); a missing file or one that is not UTF-8 is an
    error naming the file (and the line of the first bad byte)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataFormatError(path, line, f"not UTF-8 ({e.reason} at byte {e.start}; Latin-1 or cp1252?); "
                                          f"convert it, e.g. iconv -f latin1 -t utf-8") from None


def read_conll(path: str | Path, split: str | None = None, labels: str = "required") -> list[Tweet]:
    """Read one UMT CoNLL file. See the module docstring for the rules. With ``labels="optional"``
    (tweets to tag) a line may also hold a token alone; its label is ``O``."""
    if labels not in ("required", "optional"):
        raise ValueError(f"labels must be 'required' or 'optional', got {labels!r}")
    path = Path(path)
    text = read_utf8(path)
    split = split or path.stem
    tweets: list[Tweet] = []
    cur: Tweet | None = None
    seen: dict[str, str] = {}

    def close(lineno: int):
        nonlocal cur
        if cur is not None:
            if not cur.tokens:
                raise DataFormatError(path, int(cur.source.rsplit(":", 1)[1]),
                                      f"tweet IMGID:{cur.id} has no tokens")
            tweets.append(cur)
            cur = None

    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            close(lineno)
            continue
        if line.startswith("IMGID:"):
            close(lineno)
            imgid = line[len("IMGID:"):].strip()
            if not imgid:
                raise DataFormatError(path, lineno, "empty IMGID")
            if imgid_problem(imgid):
                raise DataFormatError(path, lineno, imgid_problem(imgid))
            if imgid in seen:
                warnings.warn(f"{path}:{lineno}: duplicate IMGID:{imgid} (first at {seen[imgid]})",
                              stacklevel=2)
            seen.setdefault(imgid, f"{path}:{lineno}")
            cur = Tweet(id=imgid, tokens=[], labels=[], split=split, source=f"{path}:{lineno}")
            continue
        parts = line.split("\t")
        if labels == "optional" and len(parts) == 1:
            if line != "".join(line.split()):
                raise DataFormatError(path, lineno, f"expected one token per line ('token' or 'token<TAB>label'), "
                                                    f"got {line!r}")
            parts = [line, "O"]
        # a token may be an odd character (the 2015 files hold U+00A0 tokens): only "" is refused
        if len(parts) != 2 or parts[0] == "" or not parts[1].strip():
            raise DataFormatError(path, lineno, f"expected 'token<TAB>label', got {line!r}")
        if cur is None:
            raise DataFormatError(path, lineno, "token line before any 'IMGID:' line")
        label = normalize_label(parts[1].strip())
        if label is None:
            raise DataFormatError(path, lineno, f"unknown label {parts[1].strip()!r}; "
                                  f"expected one of {', '.join(LABELS)} (or OTHER for MISC)")
        cur.tokens.append(parts[0])
        cur.labels.append(label)
    close(len(text.splitlines()) + 1)
    if not tweets:
        raise DataFormatError(path, None, "empty file: no tweets found")
    return tweets


def write_conll(tweets: Iterable[Tweet], path: str | Path) -> None:
    """Write tweets back in the UMT format (labels as held, MISC spelled MISC)."""
    blocks = []
    for t in tweets:
        blocks.append("\n".join([f"IMGID:{t.id}"] + [f"{w}\t{l}" for w, l in zip(t.tokens, t.labels)]))
    atomic_write_text(path, "\n\n".join(blocks) + "\n")


def imgid_problem(imgid: str) -> str | None:
    """Why an IMGID cannot name an image file inside ``image_dir`` (None when it can): it must be a
    plain file name, without folders, ``..``, a drive, spaces or control characters."""
    if imgid in (".", "..") or "/" in imgid or "\\" in imgid or (len(imgid) > 1 and imgid[1] == ":"):
        return f"IMGID {imgid!r} is not a plain file name (no folders, '..' or drive letters)"
    if any(ord(c) < 32 for c in imgid):
        return f"IMGID {imgid!r} holds control characters"
    if imgid != "".join(imgid.split()):
        return f"IMGID {imgid!r} holds spaces"
    return None


def find_image(image_dir: str | Path | None, imgid: str) -> Path | None:
    """``<image_dir>/<IMGID>.<jpg|jpeg|png>`` (either case), or None. An IMGID that is not a plain
    file name is refused (it could reach files outside ``image_dir``)."""
    if image_dir is None:
        return None
    problem = imgid_problem(str(imgid))
    if problem:
        raise ValueError(problem)
    image_dir = Path(image_dir)
    for ext in IMAGE_EXTENSIONS:
        for e in (ext, ext.upper()):
            p = image_dir / f"{imgid}{e}"
            if p.is_file():
                return p
    return None


@dataclass
class Dataset:
    """The three splits of one benchmark plus where its images live."""

    name: str
    data_dir: Path
    image_dir: Path | None
    splits: dict[str, list[Tweet]]

    def __getitem__(self, split: str) -> list[Tweet]:
        return self.splits[split]

    def all(self) -> list[Tweet]:
        return [t for s in self.splits.values() for t in s]

    def checksums(self) -> dict[str, str]:
        return {f"{s}.txt": file_sha256(self.data_dir / f"{s}.txt") for s in self.splits}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_dataset(data_dir: str | Path, image_dir: str | Path | None = None, name: str | None = None,
                 splits: Sequence[str] = SPLITS, max_samples: int | None = None,
                 check_images: bool = False) -> Dataset:
    """Load ``<data_dir>/{train,valid,test}.txt``; images are looked up in ``image_dir``.

    ``max_samples`` keeps the first N tweets of every split (quick runs). With ``check_images``
    every image is opened and validated (see ``tvolib.images.check_image``) and its status set.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: data folder not found")
    out = {}
    for s in splits:
        tweets = read_conll(data_dir / f"{s}.txt", split=s)
        out[s] = tweets[:max_samples] if max_samples else tweets
        for t in out[s]:
            t.image_path = find_image(image_dir, t.id)
            t.image_status = "unchecked" if t.image_path else "missing"
    ds = Dataset(name=name or data_dir.name, data_dir=data_dir,
                 image_dir=Path(image_dir) if image_dir else None, splits=out)
    if check_images:
        check_dataset_images(ds)
    return ds


def statistics(ds: Dataset) -> dict[str, dict[str, int]]:
    """Table 3: ``B-`` tags per type, total entities, tweets, per split.

    The paper's Table 3 counts ``B-`` tags. ``Orphan I- (read as B-)`` counts the ``I-`` tags after ``O`` or another type that the
    lenient rule of ``entity_spans`` reads as entity starts too (so scoring sees
    ``Total entities + I- after O`` gold entities), and ``Images missing`` the tweets whose image
    was not found or could not be read.
    """
    table: dict[str, dict[str, int]] = {}
    for s, tweets in ds.splits.items():
        c = Counter(l[2:] for tw in tweets for l in tw.labels if l.startswith("B-"))
        row = {typ: c.get(typ, 0) for typ in ENTITY_TYPES}
        row["Total entities"] = sum(c.values())
        row["Total tweets"] = len(tweets)
        row["Orphan I- (read as B-)"] = sum(len(tw.spans()) for tw in tweets) - row["Total entities"]
        row["Images missing"] = sum(not tw.image_status.startswith(("ok", "unchecked")) for tw in tweets)
        table[s] = row
    return table


def statistics_markdown(ds: Dataset) -> str:
    """Table 3 of the paper as a markdown table (rows: types; columns: splits)."""
    st = statistics(ds)
    splits = list(st)
    rows = list(ENTITY_TYPES) + ["Total entities", "Total tweets", "Orphan I- (read as B-)", "Images missing"]
    lines = [f"| {ds.name} | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    lines += [f"| {r} | " + " | ".join(str(st[s][r]) for s in splits) + " |" for r in rows]
    return "\n".join(lines)
