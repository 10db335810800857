"""Visual grounding of the LLM's referring expressions, and the object-level feature ``v_obj``
(section 4.2 "Entity Object-Level Visual Features").

* ``Grounder`` — transformers' GroundingDINO (``GroundingDinoForObjectDetection`` + its
  ``AutoProcessor``) from a Hugging Face name already in the local cache or a local folder
  (``GroundingConfig.model``, which the edge reads from ``TVOMNER_GROUNDING_MODEL``; e.g. a download of
  ``IDEA-Research/grounding-dino-tiny``; thresholds: ``TVOMNER_GROUNDING_BOX_THRESHOLD`` /
  ``TVOMNER_GROUNDING_TEXT_THRESHOLD``, defaults 0.35 / 0.25). Each phrase is grounded on its own (one text prompt
  ``"<phrase>."`` per phrase, all phrases of an image in one batch) and its best box(es) above
  ``box_threshold`` / ``text_threshold`` are kept, so every box knows which phrase it belongs to.
  The paper names a referring-expression grounding model (Liu et al., 2024b: Grounding DINO);
  ``groundingdino-py`` is **not** used: version 0.4.0 ships no weights and fails to build its
  model under transformers 5.
* ``ground_images`` — phrases in, boxes with scores out, into a JSONL cache (``boxes-llm.jsonl``,
  one record per IMGID with its provenance). No phrase → no box, without running the model.
* ``import_boxes`` — fills a boxes cache from a file of boxes (e.g. the sample's drawn
  ``objects.jsonl``) with its ``source`` recorded as given (``"sample-ground-truth"``): this is how
  the sample runs with no grounding weights on the machine; it is not a model output.
* ``random_regions`` — the "w/o LLMs" ablation (Appendix C: "an object detection module to
  randomly sample five objects"). The detection module used: GroundingDINO with the generic prompt
  ``"object."`` when grounding weights are configured (five detections sampled at random, padded
  with random boxes if fewer are found; ``source: "groundingdino-generic"``), otherwise five random
  boxes (``source: "random-boxes"``), seeded by the IMGID so runs repeat.
* ``object_features`` — every box is cropped, encoded by the same frozen image encoder as the
  global feature and the crops of a tweet are mean-pooled into ``v_obj`` (the paper's average
  pooling of ``v_sum``); a tweet with no box gets a masked (zero-length) row.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from tqdm.auto import tqdm

from ..cache import FeatureCache, JsonlCache, stable_hash
from ..images import load_image, usable
from ..io import DataFormatError, iter_jsonl
from ..weights import ResourceMissing
from .encoders import set_file
from .encoders import EMPTY, ImageEncoder


@dataclass
class GroundingConfig:
    model: str | None = None             # HF name in the local cache, or a local folder
    box_threshold: float = 0.35          # GroundingDINO's usual defaults
    text_threshold: float = 0.25
    max_boxes_per_phrase: int = 1
    device: str = "cpu"

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides) -> "GroundingConfig":
        """The model and thresholds named by ``TVOMNER_GROUNDING_*`` in ``env`` (the edge passes
        ``os.environ``)."""
        cfg = cls(model=env.get("TVOMNER_GROUNDING_MODEL") or None,
                  box_threshold=float(env.get("TVOMNER_GROUNDING_BOX_THRESHOLD", cls.box_threshold)),
                  text_threshold=float(env.get("TVOMNER_GROUNDING_TEXT_THRESHOLD", cls.text_threshold)))
        for k, v in overrides.items():
            setattr(cfg, k, v)
        return cfg


class Grounder:
    """GroundingDINO: ``ground(image, phrases) -> [{"phrase", "box": [x0,y0,x1,y1], "score"}]``."""

    def __init__(self, cfg: GroundingConfig, model=None, processor=None):
        self.cfg = cfg
        if model is None:
            if not cfg.model:
                raise ResourceMissing(
                    "no grounding weights: set TVOMNER_GROUNDING_MODEL to a local GroundingDINO "
                    "folder (e.g. `huggingface-cli download IDEA-Research/grounding-dino-tiny` where "
                    "you have network), or provide boxes in the boxes cache / DataConfig.boxes")
            from transformers import AutoProcessor, GroundingDinoForObjectDetection   # its model code: where it is used
            try:
                processor = AutoProcessor.from_pretrained(cfg.model, local_files_only=True)
                model = GroundingDinoForObjectDetection.from_pretrained(cfg.model, local_files_only=True)
            except (OSError, ValueError) as e:
                raise ResourceMissing(f"grounding model {cfg.model!r} could not be loaded offline "
                                      f"({type(e).__name__}: {str(e)[:160]}); pass a local folder") from None
        self.model = model.to(cfg.device).eval()
        self.processor = processor
        self.name = str(cfg.model or getattr(model.config, "_name_or_path", "") or "groundingdino")

    @torch.no_grad()
    def ground(self, image, phrases: list[str], box_threshold: float | None = None,
               max_boxes: int | None = None) -> list[dict]:
        if not phrases:
            return []
        bt = self.cfg.box_threshold if box_threshold is None else box_threshold
        k = max_boxes or self.cfg.max_boxes_per_phrase
        prompts = [p.lower().strip().rstrip(".") + "." for p in phrases]
        inputs = self.processor(images=[image] * len(phrases), text=prompts, return_tensors="pt",
                                padding=True, truncation=True).to(self.cfg.device)
        out = self.model(**inputs)
        w, h = image.size
        res = self.processor.post_process_grounded_object_detection(
            out, inputs["input_ids"], threshold=bt, text_threshold=self.cfg.text_threshold,
            target_sizes=[(h, w)] * len(phrases))
        boxes = []
        for phrase, r in zip(phrases, res):
            order = torch.argsort(r["scores"], descending=True)[:k]
            for i in order.tolist():
                x0, y0, x1, y1 = [float(v) for v in r["boxes"][i]]
                x0, x1 = max(0.0, min(x0, x1)), min(float(w), max(x0, x1))
                y0, y1 = max(0.0, min(y0, y1)), min(float(h), max(y0, y1))
                if x1 - x0 >= 2 and y1 - y0 >= 2:
                    boxes.append({"phrase": phrase, "box": [round(x0, 1), round(y0, 1), round(x1, 1),
                                                            round(y1, 1)],
                                  "score": round(float(r["scores"][i]), 4)})
        return boxes


def _seed(imgid: str, salt: str = "") -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}{imgid}".encode()).digest()[:8], "big")


def random_boxes(imgid: str, size: tuple[int, int], n: int = 5) -> list[dict]:
    """``n`` random boxes (side 15–60 % of the image), seeded by the IMGID."""
    rng = random.Random(_seed(imgid, "random-boxes"))
    w, h = size
    out = []
    for _ in range(n):
        bw, bh = w * rng.uniform(0.15, 0.6), h * rng.uniform(0.15, 0.6)
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        out.append({"phrase": None, "box": [round(x0, 1), round(y0, 1), round(x0 + bw, 1),
                                            round(y0 + bh, 1)], "score": None})
    return out


def ground_images(items: dict[str, tuple[str | Path | None, list[str]]], cache: JsonlCache,
                  grounder: Grounder | Callable[[], Grounder], progress: bool = False) -> dict:
    """Boxes for ``{imgid: (image path, phrases)}`` into ``cache`` (key ``imgid``). A record whose
    phrases changed since it was made (``phrases_hash``) is recomputed. The model is only built
    when an image with phrases needs it."""
    t0 = time.perf_counter()
    todo = [k for k, (_, ph) in items.items()
            if k not in cache or cache[k].get("phrases_hash") != stable_hash(ph)]
    g = None
    it = tqdm(todo, desc=Path(cache.path).name) if progress and todo else todo
    n_boxes = 0
    for k in it:
        path, phrases = items[k]
        rec = {"imgid": k, "phrases_hash": stable_hash(phrases), "boxes": []}
        if phrases:
            im, status = load_image(path)
            if not usable(status):
                rec.update(source="no-image", status=status)
                cache.append(rec)
                continue
            if g is None:
                g = grounder() if not isinstance(grounder, Grounder) else grounder
            rec["boxes"] = g.ground(im, phrases)
            rec["image_size"] = list(im.size)
            n_boxes += len(rec["boxes"])
        rec.update(source="groundingdino" if phrases else "no-phrases",
                   model=g.name if g else None, box_threshold=g.cfg.box_threshold if g else None,
                   text_threshold=g.cfg.text_threshold if g else None)
        cache.append(rec)
    return {"computed": len(todo), "cached": len(items) - len(todo), "boxes": n_boxes,
            "seconds": round(time.perf_counter() - t0, 3)}


def import_boxes(path: str | Path | dict, cache: JsonlCache, phrases: dict[str, list[str]] | None = None,
                 source: str = "sample-ground-truth", keep: set | None = None) -> int:
    """Copy boxes from ``objects.jsonl`` (``{"imgid", "objects": [{"label", "type", "box"}],
    "related", "image_written"}``) into a boxes cache, recording ``source`` honestly.

    Only objects with an entity ``type`` are kept (distractors are what the LLM would not name),
    none for unrelated images (``related: false``, the LLM's ``[]``). When ``phrases`` are given and
    their number matches, each box is attached to its phrase (the sample writes them in order).
    ``keep``: only these IMGIDs. ``path`` may also be ``{imgid: record}`` already read (prediction).
    Returns how many records were added (existing ones are kept)."""
    if isinstance(path, dict):
        records, path = [(None, dict(r, imgid=k)) for k, r in path.items()], Path("input")
    else:
        path = Path(path)
        if not path.exists():
            raise ResourceMissing(f"boxes file {path} not found")
        records = iter_jsonl(path)
    added = 0
    for i, r in records:
        try:
            k = str(r["imgid"])
            objs = [o for o in r.get("objects", []) if o.get("type")] if r.get("related", True) else []
            boxes_xyxy = [[float(v) for v in o["box"]] for o in objs]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataFormatError(path, i, f"bad boxes record ({type(e).__name__}: {e})") from None
        if k in cache or not r.get("image_written", True) or (keep is not None and k not in keep):
            continue
        ph = (phrases or {}).get(k)
        names = ph if ph is not None and len(ph) == len(objs) else [o.get("label") for o in objs]
        cache.append({"imgid": k, "boxes": [{"phrase": n, "box": b, "score": None}
                                             for n, b in zip(names, boxes_xyxy)],
                      "source": source, "file": str(path),
                      "phrases_hash": stable_hash(ph) if ph is not None else None})
        added += 1
    return added


def random_regions(items: dict[str, str | Path | None], cache: JsonlCache, n: int = 5,
                   grounder: Grounder | None = None) -> dict:
    """The "w/o LLMs" regions: ``n`` objects per usable image (see the module docstring)."""
    todo = [k for k in items if k not in cache]
    for k in todo:
        im, status = load_image(items[k])
        if not usable(status):
            cache.append({"imgid": k, "boxes": [], "source": "no-image", "status": status})
            continue
        if grounder is not None:
            det = grounder.ground(im, ["object"], box_threshold=grounder.cfg.box_threshold, max_boxes=100)
            rng = random.Random(_seed(k, "sample-detections"))
            boxes = rng.sample(det, min(n, len(det)))
            boxes += random_boxes(k, im.size, n - len(boxes))
            src, model = "groundingdino-generic", grounder.name
        else:
            boxes, src, model = random_boxes(k, im.size, n), "random-boxes", None
        cache.append({"imgid": k, "boxes": boxes, "source": src, "model": model, "n": n,
                      "image_size": list(im.size)})
    return {"computed": len(todo), "cached": len(items) - len(todo)}


def crop(image, box) -> "PIL.Image.Image":
    w, h = image.size
    x0, y0, x1, y1 = box
    x0, y0 = max(0, int(x0)), max(0, int(y0))
    x1, y1 = min(w, max(int(round(x1)), x0 + 2)), min(h, max(int(round(y1)), y0 + 2))
    return image.crop((x0, y0, x1, y1))


def object_features(items: dict[str, tuple[str | Path | None, list[dict]]], cache_path: str | Path,
                    encoder: ImageEncoder | Callable[[], ImageEncoder], batch_size: int = 32,
                    progress: bool = False) -> tuple[FeatureCache, dict]:
    """``v_obj`` for ``{imgid: (image path, boxes)}``: crops → image encoder → mean pooling.

    The feature cache remembers the boxes each row was made from (a hash per IMGID in the file's
    metadata) and recomputes rows whose boxes changed."""
    t0 = time.perf_counter()
    want = {k: stable_hash([b["box"] for b in boxes]) for k, (_, boxes) in items.items()}
    # crops of several images share a batch: one file per set of (image, boxes), computed whole
    cache = FeatureCache(set_file(cache_path, [(k, str(items[k][0]) if items[k][0] is not None else None, want[k])
                                              for k in items]))
    made_from = json.loads(cache.metadata.get("boxes_hashes", "{}"))
    todo = list(items) if any(k not in cache or made_from.get(k) != want[k] for k in items) else []
    n_crops = 0
    if todo:
        enc = encoder() if not isinstance(encoder, ImageEncoder) else encoder
        cache.metadata.update({"encoder": enc.name, "dim": str(enc.dim), "kind": "object-mean"})
        it = tqdm(todo, desc=Path(cache_path).name) if progress else todo
        pending: list[tuple[str, list]] = []       # crops of several images share one batch

        def run():
            crops = [c for _, cs in pending for c in cs]
            feats = enc.encode(crops, batch_size=batch_size)               # v_sum of every image
            i = 0
            for k, cs in pending:
                cache.put(k, feats[i:i + len(cs)].mean(0))                 # average pooling → v_obj
                i += len(cs)
            pending.clear()

        for k in it:
            path, boxes = items[k]
            im, status = load_image(path) if boxes else (None, "no boxes")
            if im is None or not usable(status):
                cache.put(k, EMPTY)
            else:
                pending.append((k, [crop(im, b["box"]) for b in boxes]))
                n_crops += len(boxes)
                if sum(len(cs) for _, cs in pending) >= batch_size:
                    run()
            made_from[k] = want[k]
        if pending:
            run()
        cache.metadata["boxes_hashes"] = json.dumps(made_from)
        cache.flush()
    return cache, {"computed": len(todo), "cached": len(items) - len(todo), "crops": n_crops,
                   "seconds": round(time.perf_counter() - t0, 3)}
