"""What the demo page (``tvolib.demo.demo_page``) shows with a loaded checkpoint: its tweets, where their
images are, the captions that stand in for absent images, and per-tweet knowledge, found from what the
checkpoint recorded, the data root (``TVOMNER_DATA``) or the embedded sample."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .data import Tweet, find_image, load_dataset, read_conll
from .io import load_captions, read_tweets
from .resources import data_root, knowledge_file
from .sample import SAMPLE_DIR
from .weights import ResourceMissing


def checkpoint_name(folder, taken=()) -> str:
    """A short name for a checkpoint folder: the run's folder for ``<run>/best`` (``tvomner+pgim-s1``),
    else the folder's own name; numbered when ``taken``."""
    p = Path(str(folder).rstrip("/\\") or ".")
    base = p.parent.name if p.name in ("best", "last") and p.parent.name else p.name or str(folder)
    name, k = base, 2
    while name in taken:
        name, k = f"{base} ({k})", k + 1
    return name


def shown_path(path) -> str:
    """A path as the page shows it: relative to the working directory (the repository root) when
    inside it, else as it is."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve())) if p.is_absolute() else str(p)
    except ValueError:
        return str(p)


def _here(*candidates) -> Path | None:
    """The first candidate path that exists here (None for a ``None`` candidate)."""
    for c in candidates:
        if c is not None and Path(c).exists():
            return Path(c)
    return None


@dataclasses.dataclass
class DemoInputs:
    """The tweets a demo page shows and where their images, captions and knowledge are."""

    tweets: list[Tweet]
    total: int                       # tweets in the file or split, before ``max_tweets``
    source: str                      # where the tweets come from (for the page)
    gold: bool                       # the tweets carry gold labels
    image_dir: Path | None
    captions_file: Path | None
    captions: dict
    knowledge_file: Path | None      # per-tweet knowledge, where the checkpoint's own file is not here
    notes: list[str]


def checkpoint_inputs(predictor, tweets_file=None, split: str = "test", image_dir=None,
                      captions=None, max_tweets: int | None = 200) -> DemoInputs:
    """The tweets to show with a loaded checkpoint (a ``tvolib.predict.Predictor``): ``tweets_file``
    (CoNLL with gold labels, JSONL or one tweet a line), else the ``split`` of the data it was
    trained on (its recorded ``data_dir``, else ``<data root>/<dataset>``, the sample's own for a
    sample model), the first ``max_tweets``.
    Images: ``image_dir`` ("none": no images), else the checkpoint's image folder where it is here.
    Captions (shown where an image is absent, and read by a multimodal model): ``captions``, else the
    file recorded in the checkpoint, found where it was or in ``<data root>/captions/``. Per-tweet
    knowledge: the checkpoint's own file, else ``<data root>/llm_knowledge/pgim_<dataset>.jsonl``.
    Whatever is missing is said in ``notes``; a missing tweets source raises ``FileNotFoundError``."""
    cfg, notes = predictor.data_cfg, []
    sample = cfg.dataset == "sample"
    root = data_root()
    # images
    if image_dir is not None:
        images = None if str(image_dir).lower() == "none" else Path(image_dir)
        if images is not None and not images.is_dir():
            raise FileNotFoundError(f"{images}: image folder not found")
    else:
        images = _here(cfg.image_dir, SAMPLE_DIR / "images" if sample else None)
        if images is None and cfg.image_dir:
            notes.append(f"the image folder this checkpoint was trained with ({cfg.image_dir}) is not here")
    # tweets
    if tweets_file is not None:
        f = Path(tweets_file)
        if not f.is_file():
            raise FileNotFoundError(f"{f}: tweets file not found")
        first = next((l for l in f.read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()), "")
        tweets = (read_conll(f, split="test", labels="optional") if first.startswith("IMGID:")
                  else read_tweets(f))
        source, total = shown_path(f), len(tweets)
        tweets = tweets[:max_tweets] if max_tweets else tweets
        if images is not None:
            for t in tweets:
                if t.image_path is None:
                    t.image_path = find_image(images, t.id)
                    t.image_status = "unchecked" if t.image_path else "missing"
    else:
        data_dir = _here(cfg.data_dir, root / cfg.dataset, SAMPLE_DIR / "data" if sample else None)
        if data_dir is None or not (data_dir / f"{split}.txt").is_file():
            raise FileNotFoundError(f"the data this checkpoint was trained on is not here ({cfg.data_dir}, "
                                    f"{root / cfg.dataset}): give tweets_file, or set TVOMNER_DATA")
        ds = load_dataset(data_dir, images, name=cfg.dataset, splits=[split])
        tweets, total = ds[split], len(ds[split])
        tweets = tweets[:max_tweets] if max_tweets else tweets
        source = f"{split} split of {cfg.dataset} ({shown_path(data_dir)})"
    gold = any(l != "O" for t in tweets for l in t.labels)
    # captions
    if captions is not None:
        caps_file = None if str(captions).lower() == "none" else Path(captions)
        if caps_file is not None and not caps_file.is_file():
            raise FileNotFoundError(f"{caps_file}: captions file not found")
    else:
        caps_file = _here(cfg.captions, root / "captions" / Path(cfg.captions).name if cfg.captions else None,
                          SAMPLE_DIR / "captions.json" if sample else None)
        if caps_file is None and cfg.captions:
            notes.append(f"the captions file of this checkpoint ({cfg.captions}) is not here: no captions")
    caps = load_captions(caps_file) if caps_file else {}
    # per-tweet knowledge (PGIM's texts) where the checkpoint's own file is not here
    kfile = None
    if predictor.model_cfg.reads_knowledge == "tweet_files":
        recorded = ((predictor.info.get("resources") or {}).get("knowledge") or {}).get("knowledge_file") or {}
        if not any(Path(p).exists() for p in recorded):
            try:
                kfile = knowledge_file(cfg)
            except ResourceMissing as e:
                notes.append(f"no per-tweet knowledge: {e}")
    return DemoInputs(tweets=list(tweets), total=total, source=source, gold=gold, image_dir=images,
                      captions_file=caps_file, captions=caps, knowledge_file=kfile, notes=notes)
