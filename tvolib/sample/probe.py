"""The visual-probe benchmark: synthetic tweets whose entity type, for a controlled share of them,
only the image tells.

    python -m tvolib.sample.probe --out cache/probe/data [--train 2000 --valid 500 --test 1000]

Every tweet belongs to one subset (``subsets.json``):

=============  ===========================================================================================
``ambiguous``  a name used as PER, LOC, ORG and MISC in different tweets, in a context that fits every type
               ("Can't stop thinking about Jordan"); the image carries one mark, of the entity's type
               (PER red circle, LOC green triangle, ORG blue square, MISC orange diamond / yellow star, as
               in the embedded sample), plus 0-2 grey distractors. Only the image decides the type.
``text``       the context gives the type away ("Just landed in Kelford"); a related image with the marks
``unrelated``  as ``text``, with an unrelated image (grey distractors only; the LLM stand-in writes no phrase)
``noimage``    as ``text``, without an image or a caption: the visual input is masked
=============  ===========================================================================================

Text-only tagging can find the ambiguous spans but must guess their type (one in four at best), so the
F1 on ``ambiguous`` measures whether a model reads the image; F1 on the rest measures that reading the
image costs nothing where the text suffices or the image is unrelated.

Images, captions, the LLM stand-in's referring expressions (``phrases.jsonl``, ``source`` =
``"probe-template"``) and the drawn boxes (``objects.jsonl``) are made with the embedded sample's
drawing code (``make_sample``). Everything is deterministic: a tweet's content comes from a generator
seeded by a SHA-256 of its IMGID and the benchmark seed, so a rerun writes the same files. All content is
synthetic and made for this project (names are invented or common words; no real tweet).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from . import make_sample as M

SUBSETS = ("ambiguous", "text", "unrelated", "noimage")
SHARES = {"ambiguous": 0.35, "text": 0.35, "unrelated": 0.15, "noimage": 0.15}
TYPES = ("PER", "LOC", "ORG", "MISC")

# names that are plausible as a person, a place, a company and a title (invented or generic)
AMBIGUOUS_NAMES = (
    "Jordan", "Phoenix", "Marlow", "Avalon", "Sterling", "Camden", "Harlow", "Quinn", "Brooklyn",
    "Savannah", "Zorvex", "Kelmora", "Orion", "Juniper", "Everest", "Sierra", "Aurora", "Dakota",
    "Raleigh", "Lennox", "Marigold", "Bexley", "Tamsin", "Calder",
)
# contexts that fit every type (the name is the only entity)
NEUTRAL = (
    "Can't stop thinking about {X}", "Missing {X} already ... best week of my life",
    "{X} looking absolutely stunning tonight", "So proud of {X} right now", "Throwback to {X} #memories",
    "Nothing beats {X} on a sunny day", "Finally saw {X} with my own eyes", "{X} never disappoints",
    "Who else is obsessed with {X} ?", "All eyes on {X} this weekend", "Huge thanks to {X} , made my week !",
    "Still thinking about {X} , wow", "{X} is trending again and I get why", "Can we talk about {X} for a second",
)
# unambiguous names per type
NAMES = {
    "PER": ("Maya Thornton", "Leo Varga", "Priya Nandakumar", "Tomas Eklund", "Ada Okafor", "Jonah Petrak",
            "Mei Lindqvist", "Rafael Osei", "Greta Halloway", "Ivan Drazic", "Nora Castell", "Samir Haddad"),
    "LOC": ("Kelford", "Port Arvane", "Lake Tessaly", "Millbrook", "Vantaa Bay", "Greyhaven", "Ostrava Heights",
            "Duncliffe", "Marrowdale", "San Teodoro", "Wexmoor", "Ashcombe"),
    "ORG": ("Brightwave Labs", "Nordvik Motors", "Helix Bank", "Cobalt Airlines", "Tidewater FC",
            "Quanta Systems", "Redfern Press", "Lumora Foods", "Ironclad Union", "Vireo Health"),
    "MISC": ("Starfall Cup", "Neon Harbor", "Winter Gala", "Echo Drift", "Crimson Tide Festival",
             "Pixel Odyssey", "Silent Orchard", "Summit Series", "Moonlit Run", "Glass Atlas"),
}
# contexts that give the type away
TYPED = {
    "PER": ("{X} scored twice in the final", "Happy birthday to {X} , what a legend",
            "{X} said in an interview that she is retiring", "Met {X} at the book signing today",
            "{X} and her coach celebrating the win"),
    "LOC": ("Just landed in {X} , so excited", "Weather in {X} is gorgeous today", "Road trip from {X} tomorrow",
            "Flooding reported downtown in {X}", "Moving to {X} next month"),
    "ORG": ("{X} announced record profits this quarter", "Just signed a contract with {X}",
            "{X} shares jumped after the merger", "{X} is hiring engineers again", "Customer service at {X} is terrible"),
    "MISC": ("Tickets for the {X} sold out in minutes", "Watching the {X} tonight with friends",
             "The {X} trailer just dropped", "Who won the {X} last night ?", "Streaming the {X} soundtrack on repeat"),
}


def _rng(imgid: str, seed: int) -> np.random.Generator:
    h = hashlib.sha256(f"probe/{seed}/{imgid}".encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _markup(template: str, name: str, typ: str) -> str:
    return template.replace("{X}", f"[{typ} {name}]")


def make_tweet(imgid: str, subset: str, seed: int) -> dict:
    """One tweet of ``subset``: ``{imgid, subset, flags, tokens, labels, entities}``."""
    rng = _rng(imgid, seed)
    typ = TYPES[int(rng.integers(len(TYPES)))]
    if subset == "ambiguous":
        line = _markup(_pick(rng, NEUTRAL), _pick(rng, AMBIGUOUS_NAMES), typ)
    else:
        line = _markup(_pick(rng, TYPED[typ]), _pick(rng, NAMES[typ]), typ)
        if rng.random() < 0.3:   # a second, text-evident entity of another type
            t2 = TYPES[(TYPES.index(typ) + 1 + int(rng.integers(3))) % 4]
            line += " " + _markup(_pick(rng, ("with {X}", "near {X}", "via {X}")), _pick(rng, NAMES[t2]), t2)
    flags = {"U"} if subset == "unrelated" else set()
    _, tokens, labels = M.parse_markup(line)
    return dict(imgid=imgid, subset=subset, flags=flags, tokens=tokens, labels=labels,
                entities=M.spans(tokens, labels))


def split_plan(n_train: int, n_valid: int, n_test: int, seed: int) -> list[tuple[str, str, str]]:
    """(imgid, split, subset) for every tweet: subsets in their shares within each split, in an order
    shuffled by ``seed``."""
    rows = []
    rng = np.random.default_rng(seed)
    k = 0
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        counts = {s: int(round(SHARES[s] * n)) for s in SUBSETS}
        counts["text"] += n - sum(counts.values())
        subs = [s for s in SUBSETS for _ in range(counts[s])]
        rng.shuffle(subs)
        for s in subs:
            k += 1
            rows.append((f"p{k:05d}", split, s))
    return rows


def generate(out: str | Path, n_train: int = 2000, n_valid: int = 500, n_test: int = 1000,
             seed: int = 0) -> dict:
    """Write the benchmark under ``out`` (see the module docstring); returns counts."""
    out = Path(out)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    blocks = {s: [] for s in M.SPLITS}
    caps, objs, phr, subsets = {}, [], [], {}
    for imgid, split, subset in split_plan(n_train, n_valid, n_test, seed):
        tw = make_tweet(imgid, subset, seed)
        subsets[imgid] = subset
        lines = [f"IMGID:{imgid}"] + [f"{a}\t{b}" for a, b in zip(tw["tokens"], tw["labels"])]
        blocks[split].append("\n".join(lines) + "\n")
        if subset == "noimage":
            continue
        plan = M.plan_image(tw)
        path = img_dir / f"{imgid}.png"
        if not path.exists():
            M.render(plan).save(path, optimize=True)
        caps[imgid] = M.caption(plan, imgid)
        objs.append({"imgid": imgid, "objects": [{"label": f"{m['colour']} {m['shape']}", "type": m["type"],
                                                  "box": m["box"]} for m in plan["marks"]],
                     "related": plan["related"], "image_written": True, "ambiguous": subset == "ambiguous"})
        phr.append({"imgid": imgid, "phrases": M.phrases(plan, imgid), "source": "probe-template"})
    for split in M.SPLITS:
        M._write(out / "data" / f"{split}.txt", "\n".join(blocks[split]))
    M._write(out / "captions.json", json.dumps(caps, indent=1) + "\n")
    M._write(out / "objects.jsonl", M._jsonl(objs))
    M._write(out / "phrases.jsonl", M._jsonl(phr))
    M._write(out / "subsets.json", json.dumps(subsets, indent=0) + "\n")
    info = {"seed": seed, "train": n_train, "valid": n_valid, "test": n_test,
            "subsets": {s: sum(v == s for v in subsets.values()) for s in SUBSETS}}
    M._write(out / "probe.json", json.dumps(info, indent=1) + "\n")
    return info


def probe_paths(out: str | Path) -> dict:
    """The DataConfig fields for a generated benchmark folder."""
    out = Path(out)
    return {"data_dir": str(out / "data"), "image_dir": str(out / "images"), "captions": str(out / "captions.json"),
            "phrases": str(out / "phrases.jsonl"), "boxes": str(out / "objects.jsonl")}


def load_subsets(out: str | Path) -> dict[str, str]:
    return json.loads((Path(out) / "subsets.json").read_text())


def probe_json(out: str | Path) -> dict:
    """The generation record of a benchmark folder, with ``key``: a short name for its caches."""
    path = Path(out) / "probe.json"
    if not path.exists():
        raise FileNotFoundError(f"{out}: no probe.json (generate it: python -m tvolib.sample.probe --out {out})")
    info = json.loads(path.read_text())
    info["key"] = f"s{info['seed']}-{info['train']}-{info['valid']}-{info['test']}"
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="cache/probe/data", help="output folder (default: cache/probe/data)")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--valid", type=int, default=500)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(json.dumps(generate(args.out, args.train, args.valid, args.test, args.seed)))


if __name__ == "__main__":
    main()
