"""Tweet images: robust loading and the encoder's own 224x224 preprocessing.

No image ever crashes a run. ``load_image`` returns ``(image_or_None, status)``:

===========================  ======================================================================
``ok``                       RGB image as stored
``ok: converted from MODE``  grayscale, palette, CMYK, 16-bit, alpha... converted to RGB
``ok: first of N frames``    animated GIF/PNG/WebP: the first frame is used
``ok: downscaled from WxH``  more than ``MAX_SIDE`` pixels on a side: reduced while decoding
``missing``                  no ``<IMGID>.<jpg|jpeg|png>`` in the image folder
``unreadable: truncated``    the file ends early
``unreadable: too large``    over ``MAX_PIXELS`` (decompression-bomb guard), not decoded
``unreadable: corrupt ...``  not an image PIL can decode
===========================  ======================================================================

A tweet whose image is not usable is kept: the visual stages use its caption or a masked zero
vector instead, and ``tvolib.data.statistics`` counts it.
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

from PIL import Image, ImageFile

MAX_PIXELS = 64_000_000     # beyond this a file is not decoded at all
MAX_SIDE = 4096             # larger images are reduced while decoding (JPEG draft) or after


def usable(status: str) -> bool:
    return status.startswith("ok")


def load_image(path: str | Path | None) -> tuple[Image.Image | None, str]:
    """Open, validate and convert an image to RGB. Never raises for a bad file."""
    if path is None or not Path(path).is_file():
        return None, "missing"
    notes = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    return None, "unreadable: too large"
                n_frames = getattr(im, "n_frames", 1)
                if n_frames > 1:
                    im.seek(0)
                    notes.append(f"first of {n_frames} frames")
                if max(w, h) > MAX_SIDE:
                    if im.format == "JPEG":
                        im.draft("RGB", (MAX_SIDE, MAX_SIDE))
                    notes.append(f"downscaled from {w}x{h}")
                prev = ImageFile.LOAD_TRUNCATED_IMAGES
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                try:
                    im.load()
                finally:
                    ImageFile.LOAD_TRUNCATED_IMAGES = prev
                mode = im.mode
                if mode == "RGB":
                    rgb = im.copy()
                elif mode == "P" and "transparency" not in im.info:
                    rgb = im.convert("RGB")   # a palette PNG is plain RGB, stored compactly
                elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    rgb = Image.new("RGB", rgba.size, (255, 255, 255))
                    rgb.paste(rgba, mask=rgba.split()[-1])
                    notes.insert(0, f"converted from {mode}")
                else:
                    rgb = im.convert("RGB")
                    notes.insert(0, f"converted from {mode}")
                if max(rgb.size) > MAX_SIDE:
                    rgb.thumbnail((MAX_SIDE, MAX_SIDE))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, "unreadable: too large"
    except OSError as e:
        msg = str(e)
        if "truncated" in msg or "broken data stream" in msg or "image file is truncated" in msg:
            return None, "unreadable: truncated"
        return None, f"unreadable: corrupt ({type(e).__name__}: {msg[:80]})"
    except Exception as e:  # PIL raises many types for hostile files
        return None, f"unreadable: corrupt ({type(e).__name__}: {str(e)[:80]})"
    return rgb, "ok" + (": " + "; ".join(notes) if notes else "")


def check_dataset_images(ds) -> Counter:
    """Open every image of a ``tvolib.data.Dataset`` once and record each tweet's status."""
    counts: Counter = Counter()
    for t in ds.all():
        if t.image_path is None:
            t.image_status = "missing"
        else:
            _, t.image_status = load_image(t.image_path)
        counts[t.image_status.split(" (")[0]] += 1
    return counts


def image_report(ds) -> dict[str, int]:
    """Counts of image statuses over the dataset (after ``check_dataset_images``)."""
    return dict(Counter(t.image_status.split(" (")[0] for t in ds.all()))
