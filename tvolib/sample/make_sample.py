"""Generate the embedded sample dataset deterministically.

    python -m tvolib.sample.make_sample [--out DIR]

Writes, under DIR (default: this folder, ``tvolib/sample/``):

    data/{train,valid,test}.txt   UMT CoNLL (IMGID:..., token<TAB>label, blank line between tweets)
    images/<IMGID>.png            256x256 synthetic images (two tweets deliberately have none)
    captions.json                 {IMGID: caption} for every tweet
    objects.jsonl                 what was drawn (labels, types, xyxy boxes, related flag)
    kb.jsonl                      tiny local knowledge base {"title", "text"}
    llm_knowledge.jsonl           PGIM-style auxiliary knowledge {"split", "imgid", "aux"}
    phrases.jsonl                 template referring expressions {"imgid", "phrases", "source"}

Only numpy, Pillow and the standard library are used; every random choice comes from a
``numpy.random.Generator`` seeded by a SHA-256 of the IMGID, so output is byte-identical on
every run (for PNG bytes: given the same Pillow/zlib build).
All content is synthetic and was written for this project; see README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import tweets as T

SIZE = 256
SPLITS = ("train", "valid", "test")
TYPES = ("PER", "LOC", "ORG", "MISC")

# ---------------------------------------------------------------- palette (P-mode images)
# index: (name, rgb)
PALETTE = [
    ("bg0", (236, 234, 228)),
    ("bg1", (226, 224, 217)),
    ("bg2", (245, 244, 240)),
    ("bg3", (214, 212, 205)),
    ("red", (214, 40, 40)),
    ("dark red", (150, 20, 25)),
    ("green", (46, 160, 67)),
    ("dark green", (20, 100, 40)),
    ("blue", (33, 90, 200)),
    ("dark blue", (15, 50, 130)),
    ("orange", (245, 140, 20)),
    ("yellow", (245, 205, 30)),
    ("dark orange", (170, 90, 10)),
    ("grey", (140, 140, 140)),
    ("light grey", (175, 175, 175)),
    ("dark grey", (90, 90, 90)),
    ("white", (255, 255, 255)),
]
PI = {name: i for i, (name, _) in enumerate(PALETTE)}

# entity type -> (shape, colour name, outline colour); MISC alternates diamond/star
TYPE_MARK = {
    "PER": [("circle", "red", "dark red")],
    "LOC": [("triangle", "green", "dark green")],
    "ORG": [("square", "blue", "dark blue")],
    "MISC": [("diamond", "orange", "dark orange"), ("star", "yellow", "dark orange")],
}
DISTRACTOR_SHAPES = ("circle", "triangle", "square", "diamond")
DISTRACTOR_COLOURS = ("grey", "light grey")

# visual wording for the template referring expressions
PHRASE_NOUN = {
    "circle": ("circular badge", "round emblem", "circular logo"),
    "triangle": ("triangular marker", "triangle sign", "triangular pin"),
    "square": ("square logo", "square emblem", "blocky square badge"),
    "diamond": ("diamond emblem", "diamond-shaped tag", "diamond logo"),
    "star": ("star sticker", "star emblem", "star-shaped badge"),
}


# ---------------------------------------------------------------- text
_TOKEN_RE = re.compile(r"\.\.\.|'s\b|[#@]?\w(?:[\w'&-]*\w)?|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Whitespace tokenization; URLs kept whole, punctuation split off other words."""
    out = []
    for w in text.split():
        if w.startswith("http://") or w.startswith("https://"):
            out.append(w)
        else:
            out.extend(_TOKEN_RE.findall(w))
    return out


_ENT_RE = re.compile(r"\[(PER|LOC|ORG|MISC) ([^\[\]]+)\]")


def parse_markup(line: str) -> tuple[set, list[str], list[str]]:
    """``"!A [PER Jordan] ..."`` -> (flags, tokens, BIO labels)."""
    flags = set()
    while line.startswith("!"):
        flag, line = line.split(" ", 1)
        flags.add(flag[1:])
    tokens, labels = [], []
    pos = 0
    for m in _ENT_RE.finditer(line):
        plain = tokenize(line[pos:m.start()])
        tokens += plain
        labels += ["O"] * len(plain)
        ent = tokenize(m.group(2))
        tokens += ent
        labels += [("B-" if i == 0 else "I-") + m.group(1) for i in range(len(ent))]
        pos = m.end()
    plain = tokenize(line[pos:])
    tokens += plain
    labels += ["O"] * len(plain)
    if "[" in line[pos:] or "]" in line[pos:]:
        raise ValueError(f"unparsed markup in: {line!r}")
    return flags, tokens, labels


def spans(tokens, labels):
    out, cur = [], None
    for i, (tok, lab) in enumerate(zip(tokens, labels)):
        if lab.startswith("B-"):
            cur = [lab[2:], [tok]]
            out.append(cur)
        elif lab.startswith("I-"):
            cur[1].append(tok)
        else:
            cur = None
    return [(" ".join(ws), typ) for typ, ws in out]


def build_tweets() -> list[dict]:
    rows, n = [], 0
    for split, lines in zip(SPLITS, (T.TRAIN, T.VALID, T.TEST)):
        for line in lines:
            n += 1
            flags, toks, labs = parse_markup(line)
            rows.append(dict(imgid=f"s{n:04d}", split=split, flags=flags, tokens=toks,
                             labels=labs, entities=spans(toks, labs)))
    return rows


# ---------------------------------------------------------------- images
def rng_for(imgid: str) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(imgid.encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def _background(rng) -> np.ndarray:
    """Light speckled texture: 4x4-pixel cells of four near-white shades (compresses well)."""
    cells = rng.choice(4, size=(SIZE // 4, SIZE // 4), p=[0.55, 0.2, 0.15, 0.1])
    return np.kron(cells, np.ones((4, 4), dtype=np.int64)).astype(np.uint8)


def _shape_points(shape, box):
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            a = -np.pi / 2 + k * np.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((round(cx + rr * np.cos(a), 1), round(cy + rr * np.sin(a), 1)))
        return pts
    raise ValueError(shape)


def _draw(draw: ImageDraw.ImageDraw, shape, box, fill, outline):
    f, o = PI[fill], PI[outline]
    if shape == "circle":
        draw.ellipse(box, fill=f, outline=o, width=2)
        # a small "head" highlight for PER marks
        if fill == "red":
            x0, y0, x1, y1 = box
            s = (x1 - x0) // 5
            cx = (x0 + x1) // 2
            draw.ellipse([cx - s, y0 + s, cx + s, y0 + 3 * s], fill=PI["white"])
    elif shape == "square":
        draw.rectangle(box, fill=f, outline=o, width=2)
    else:
        draw.polygon(_shape_points(shape, box), fill=f, outline=o)


def _place(rng, sizes):
    """Non-overlapping square boxes (with a margin) for the given side lengths."""
    boxes = []
    for s in sizes:
        for _ in range(500):
            x0 = int(rng.integers(6, SIZE - s - 6))
            y0 = int(rng.integers(6, SIZE - s - 6))
            b = [x0, y0, x0 + s, y0 + s]
            if all(b[2] + 6 <= c[0] or c[2] + 6 <= b[0] or b[3] + 6 <= c[1] or c[3] + 6 <= b[1]
                   for c in boxes):
                boxes.append(b)
                break
        else:
            raise RuntimeError("could not place shapes")
    return boxes


def plan_image(tw: dict) -> dict:
    """Decide what to draw for a tweet (deterministic in its IMGID)."""
    rng = rng_for(tw["imgid"])
    related = "U" not in tw["flags"]
    marks = []
    if related:
        seen = []
        for text, typ in tw["entities"]:
            if (text, typ) not in seen:
                seen.append((text, typ))
        for text, typ in seen[:5]:
            opts = TYPE_MARK[typ]
            shape, colour, outline = opts[int(rng.integers(len(opts)))]
            marks.append(dict(shape=shape, colour=colour, outline=outline, type=typ, entity=text))
    n_distr = int(rng.integers(1, 3)) if not related else int(rng.integers(0, 3))
    for _ in range(n_distr):
        shape = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
        colour = DISTRACTOR_COLOURS[int(rng.integers(len(DISTRACTOR_COLOURS)))]
        marks.append(dict(shape=shape, colour=colour, outline="dark grey", type=None, entity=None))
    hi = {1: 110, 2: 90, 3: 75, 4: 64, 5: 56, 6: 52, 7: 48}[len(marks)] if marks else 0
    sizes = []
    for m in marks:
        lo = 36 if m["type"] else 22
        top = hi if m["type"] else max(lo + 1, hi * 2 // 3)
        sizes.append(int(rng.integers(lo, top)))
    for m, b in zip(marks, _place(rng, sizes)):
        m["box"] = b
    bg = _background(rng)
    return dict(marks=marks, related=related, bg=bg)


def render(plan: dict) -> Image.Image:
    img = Image.fromarray(plan["bg"], mode="P")
    img.putpalette([c for _, rgb in PALETTE for c in rgb])
    draw = ImageDraw.Draw(img)
    for m in plan["marks"]:
        _draw(draw, m["shape"], m["box"], m["colour"], m["outline"])
    return img


# ---------------------------------------------------------------- captions / phrases
_NUM = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five"}


def _where(box) -> str:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    v = "top" if cy < SIZE / 3 else "bottom" if cy > 2 * SIZE / 3 else ""
    h = "left" if cx < SIZE / 3 else "right" if cx > 2 * SIZE / 3 else ""
    if v and h:
        return f"in the {v} {h} corner"
    if v:
        return f"at the {v}"
    if h:
        return f"on the {h}"
    return "in the center"


def caption(plan: dict, imgid: str) -> str:
    groups: dict[str, int] = {}
    for m in plan["marks"]:
        key = f"{m['colour']} {m['shape']}"
        groups[key] = groups.get(key, 0) + 1
    parts = [f"{_NUM[n]} {k}{'s' if n > 1 else ''}" for k, n in groups.items()]
    parts = ["an" + p[1:] if p.startswith("a o") else p for p in parts]
    if not parts:
        things = "a plain speckled background"
    elif len(parts) == 1:
        things = parts[0]
    else:
        things = ", ".join(parts[:-1]) + " and " + parts[-1]
    rng = rng_for(imgid + "/caption")
    tmpl = ("{x} on a speckled background", "a picture of {x} on a light background",
            "an image of {x} on a grainy white surface", "{x} on a textured background")
    if not parts:
        return "a plain speckled background with nothing on it"
    return tmpl[int(rng.integers(len(tmpl)))].format(x=things)


def phrases(plan: dict, imgid: str) -> list[str]:
    if not plan["related"]:
        return []
    rng = rng_for(imgid + "/phrases")
    out = []
    for m in plan["marks"]:
        if m["type"] is None:
            continue
        nouns = PHRASE_NOUN[m["shape"]]
        size = "large " if m["box"][2] - m["box"][0] >= 70 else "small " if m["box"][2] - m["box"][0] < 48 else ""
        out.append(f"{size}{m['colour']} {nouns[int(rng.integers(len(nouns)))]} {_where(m['box'])}")
    return out


# ---------------------------------------------------------------- knowledge
TYPE_WORD = {"PER": "a person", "LOC": "a location", "ORG": "an organization",
             "MISC": "a miscellaneous named entity such as an event, product or title"}


def llm_aux(tw: dict) -> str:
    ents = []
    for e in tw["entities"]:
        if e not in ents:
            ents.append(e)
    if not ents:
        return ("The tweet is a casual personal post. It does not name any specific person, "
                "location, organization or other named entity.")
    sents = []
    amb = "A" in tw["flags"]
    for text, typ in ents:
        kb = T.KB.get(text)
        if amb and kb and " may refer to " in kb:
            sents.append(f"\"{text}\" is ambiguous: it {kb[len(text) + 1:]} The text alone does not make "
                         f"clear which sense is meant.")
        elif amb and kb:
            sents.append(f"\"{text}\" is ambiguous. {kb} The text alone does not make clear which is meant.")
        elif amb and text not in T.KB:
            sents.append(f"\"{text}\" is an unfamiliar name; it could be a person, a place or a company, "
                         f"and the text alone does not settle it.")
        elif kb:
            sents.append(f"\"{text}\" most likely refers to {TYPE_WORD[typ]}. {kb}")
        else:
            sents.append(f"\"{text}\" is probably {TYPE_WORD[typ]}, judging from the surrounding words; "
                         f"no further background is known.")
    return " ".join(sents)


# ---------------------------------------------------------------- main
def _jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=True, sort_keys=False) + "\n" for r in rows)


def _write(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def generate(out: Path) -> dict:
    out = Path(out)
    tweets = build_tweets()
    missing = [t["imgid"] for t in tweets if "N" in t["flags"]]
    assert len(missing) == 2, missing

    for split in SPLITS:
        blocks = []
        for t in tweets:
            if t["split"] == split:
                lines = [f"IMGID:{t['imgid']}"] + [f"{a}\t{b}" for a, b in zip(t["tokens"], t["labels"])]
                blocks.append("\n".join(lines) + "\n")
        _write(out / "data" / f"{split}.txt", "\n".join(blocks))

    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for stale in img_dir.glob("*.png"):
        stale.unlink()
    caps, objs, phr, aux = {}, [], [], []
    for t in tweets:
        plan = plan_image(t)
        if "N" not in t["flags"]:
            render(plan).save(img_dir / f"{t['imgid']}.png", optimize=True)
        caps[t["imgid"]] = caption(plan, t["imgid"])
        objs.append({"imgid": t["imgid"],
                     "objects": [{"label": f"{m['colour']} {m['shape']}", "type": m["type"],
                                  "box": m["box"]} for m in plan["marks"]],
                     "related": plan["related"],
                     "image_written": "N" not in t["flags"],
                     "ambiguous": "A" in t["flags"]})
        phr.append({"imgid": t["imgid"], "phrases": phrases(plan, t["imgid"]),
                    "source": "sample-template"})
        aux.append({"split": t["split"], "imgid": t["imgid"], "aux": llm_aux(t)})

    _write(out / "captions.json", json.dumps(caps, indent=1, ensure_ascii=True) + "\n")
    _write(out / "objects.jsonl", _jsonl(objs))
    _write(out / "phrases.jsonl", _jsonl(phr))
    _write(out / "llm_knowledge.jsonl", _jsonl(aux))
    names = []
    for t in tweets:
        for text, _ in t["entities"]:
            if text not in names:
                names.append(text)
    kb_rows = [{"title": n, "text": T.KB[n]} for n in names if n in T.KB]
    kb_rows += [{"title": k, "text": v} for k, v in T.FILLER.items()]
    _write(out / "kb.jsonl", _jsonl(kb_rows))
    return {"tweets": len(tweets), "missing_images": missing,
            "kb_covered": sum(n in T.KB for n in names), "entity_strings": len(names)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).parent), help="output folder (default: tvolib/sample/)")
    args = ap.parse_args(argv)
    info = generate(Path(args.out))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
