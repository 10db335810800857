"""The visual stage of TVOMNER on a dataset: every cache of section 4.2 filled, then loaded.

``visual_features(ds, model_cfg, res, side)`` returns a ``VisualFeatures`` table for every tweet of
every split. Per tweet, automatically:

* **global feature** — ``glob_kind``: ``"image"`` when the image loads (frozen image encoder,
  ``features-<encoder>.safetensors``), else ``"caption"`` when a caption exists (the image
  stand-in: sentence embedding, ``features-caption-<sentence encoder>.safetensors``, projected into
  the visual space by ``VisualFeatureOptimizer.caption_proj``), else ``"none"`` (masked).
* **object feature** — ``obj_kind``: ``"image"`` when the image loads and its phrases were grounded
  to at least one box (crops → image encoder → mean, ``features-obj-<encoder>-<llm|random>``),
  ``"phrases"`` when the image is missing but LLM phrases exist (their sentence embeddings,
  mean-pooled; projected like captions), else ``"none"``: no phrase (the LLM said the image is
  unrelated), no box, or ``object_source="none"``.

``side`` (``SideInputs``) holds the per-tweet inputs read from the user's files by IMGID: captions,
LLM phrases and drawn boxes (``SideInputs.from_config`` reads a ``DataConfig``'s files; prediction
builds one in memory). Where the phrases come from (``object_source="llm"``), in order: the
dataset's phrases cache (``phrases.jsonl``), ``side.phrases`` (copied into the cache with its own
``source``), the LLM endpoint when configured (``res.llm``; captions for images without one
are asked first). ``side.phrases = "caption-noun-chunks"`` instead takes the noun chunks of
each tweet's caption (``tvolib.vfo.caption_phrases``, spaCy; cached in
``phrases-caption-noun-chunks.jsonl``): the offline stand-in where there is neither an LLM nor an image,
recorded as such in every record's ``source``. Boxes: the boxes cache (``boxes-llm.jsonl``), GroundingDINO when
``res.grounding`` names a model, else ``side.boxes`` (the sample's drawn boxes,
recorded as ``"sample-ground-truth"``). A tweet with a usable image whose phrases or boxes cannot be
obtained raises ``ResourceMissing`` saying how to provide them. Nothing is ever faked.

Caches live in ``res.dataset_cache``; a warm re-run opens no image and loads no model.
Counts and timings are written to ``<dataset_cache>/visual_report.json``.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cache import FeatureCache, JsonlCache, atomic_write_json, stable_hash
from ..config import DEFAULT_SENTENCE_ENCODER
from ..weights import ResourceMissing, SentenceEncoder
from . import grounding as G
from . import llm as L
from .caption_phrases import write_phrases
from .encoders import (ImageEncoder, extract_image_features, extract_text_features,
                       resolve_image_encoder, safe_name, stack_rows)
from .fusion import GLOB_CAPTION, GLOB_IMAGE, GLOB_NONE, OBJ_IMAGE, OBJ_NONE, OBJ_PHRASES

#: ``DataConfig.phrases`` value that takes the noun chunks of the captions as the LLM's phrases
CAPTION_PHRASES = "caption-noun-chunks"
GLOB_CODES = {"none": GLOB_NONE, "image": GLOB_IMAGE, "caption": GLOB_CAPTION}
OBJ_CODES = {"none": OBJ_NONE, "image": OBJ_IMAGE, "phrases": OBJ_PHRASES}


@dataclass
class VisualFeatures:
    """Visual features of every tweet (all splits), row ``index[imgid]``.

    ``glob`` / ``obj`` are in the image encoder's space (``d_v``) and hold the image-derived
    features (zeros on rows whose kind is not ``"image"``); ``glob_caption`` / ``obj_text`` hold
    the sentence-space stand-ins (``d_caption``) used where the image is missing. ``obj_mask``:
    the tweet has an object feature of either kind. CFF only needs ``batch`` and ``dims``.
    """

    ids: list[str]
    index: dict[str, int]
    glob: torch.Tensor                 # (N, d_v)
    glob_kind: list[str]               # "image" | "caption" | "none"
    obj: torch.Tensor                  # (N, d_v)
    obj_mask: torch.Tensor             # (N,) bool
    d_v: int
    glob_caption: torch.Tensor = None  # (N, d_caption)
    obj_text: torch.Tensor = None      # (N, d_caption)
    obj_kind: list[str] = field(default_factory=list)   # "image" | "phrases" | "none"
    d_caption: int = 0
    counts: dict = field(default_factory=dict)

    @property
    def dims(self) -> dict:
        """``feats_dims`` for ``VisualFeatureOptimizer``."""
        return {"image": self.d_v, "caption": self.d_caption}

    def batch(self, ids, device=None, withheld=None) -> dict[str, torch.Tensor]:
        """The ``visual`` dict of ``VisualFeatureOptimizer.forward`` for these tweets. ``withheld``:
        ids (or ``True`` for all) whose visual input is left out, exactly as for a tweet with neither
        image nor caption (no global feature, no object; the model falls back on the text)."""
        try:
            rows = torch.tensor([self.index[str(i)] for i in ids], dtype=torch.long)
        except KeyError as e:
            raise KeyError(f"tweet {e.args[0]} has no visual features (not in the dataset given to "
                           f"visual_features)") from None
        gk = torch.tensor([GLOB_CODES[self.glob_kind[r]] for r in rows.tolist()], dtype=torch.long)
        ok = torch.tensor([OBJ_CODES[self.obj_kind[r]] for r in rows.tolist()], dtype=torch.long)
        obj_mask = self.obj_mask[rows]
        if withheld:
            gone = torch.tensor([withheld is True or i in withheld for i in ids], dtype=torch.bool)
            gk = gk.masked_fill(gone, GLOB_NONE)
            ok = ok.masked_fill(gone, OBJ_NONE)
            obj_mask = obj_mask & ~gone.view(-1, *([1] * (obj_mask.dim() - 1)))
        out = {"glob_image": self.glob[rows], "glob_caption": self.glob_caption[rows],
               "glob_kind": gk, "glob_mask": gk != GLOB_NONE,
               "obj_image": self.obj[rows], "obj_text": self.obj_text[rows],
               "obj_kind": ok, "obj_mask": obj_mask}
        return {k: v.to(device) for k, v in out.items()} if device is not None else out


@dataclass
class SideInputs:
    """Per-tweet inputs beside the tokens and the image, by IMGID: what the visual stage reads from
    the user's files. ``phrases``: ``CAPTION_PHRASES``, ``{imgid: record}`` or None; ``boxes``: a
    boxes file (``objects.jsonl`` layout), ``{imgid: record}`` of that layout, or None."""

    captions: dict[str, str] = field(default_factory=dict)
    phrases: str | dict[str, dict] | None = None
    phrases_file: str | None = None
    boxes: str | dict[str, dict] | None = None

    @classmethod
    def from_config(cls, data_cfg) -> "SideInputs":
        """The captions, phrases and boxes files that a ``DataConfig`` names (missing phrases file:
        none; the boxes file is read when boxes are needed)."""
        phrases = data_cfg.phrases
        if phrases and phrases != CAPTION_PHRASES:
            phrases = L.load_phrases_file(phrases) if Path(phrases).exists() else None
        return cls(captions=L.load_captions(data_cfg.captions) if data_cfg.captions else {},
                   phrases=phrases, phrases_file=str(data_cfg.phrases) if phrases else None,
                   boxes=data_cfg.boxes)


def image_dim(name: str, cache: FeatureCache | None = None) -> int:
    """The encoder's feature width, from a cache's metadata or a weightless (meta) model."""
    if cache is not None and cache.metadata.get("dim"):
        return int(cache.metadata["dim"])
    import timm   # imported where an image encoder is made (see tvolib.weights)
    with torch.device("meta"):
        return int(timm.create_model(name, pretrained=False, num_classes=0).num_features)


def visual_features(ds, model_cfg, res, side: SideInputs, progress: bool = False, sentence_encoder=None,
                    image_encoder=None, grounder=None, llm_client=None) -> VisualFeatures:
    """Fill the visual caches of ``ds`` and return its ``VisualFeatures`` (see the module docstring).

    The optional objects replace the defaults (tests, notebooks): ``sentence_encoder`` (has
    ``encode``, ``dim``, ``name``), ``image_encoder`` (``ImageEncoder``), ``grounder``
    (``tvolib.vfo.grounding.Grounder``), ``llm_client`` (``tvolib.vfo.llm.LLMClient``)."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    cache_dir = Path(res.dataset_cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tweets = ds.all()
    ids = [t.id for t in tweets]
    index = {k: i for i, k in enumerate(ids)}
    if len(index) != len(ids):
        dup = [k for k, n in Counter(ids).items() if n > 1][:3]
        raise ValueError(f"duplicate IMGIDs across splits ({dup}...): visual features are per IMGID")
    N = len(ids)
    paths = {t.id: t.image_path for t in tweets}
    counts: dict = {"tweets": N}
    if model_cfg.visual == "none":          # the text-only baseline: nothing to compute
        d_v = image_encoder.dim if image_encoder is not None else image_dim(
            resolve_image_encoder(model_cfg.image_encoder, model_cfg.image_weights))
        counts.update(glob_kind={"none": N}, obj_kind={"none": N}, object_source="none")
        return VisualFeatures(ids=ids, index=index, glob=torch.zeros(N, d_v), glob_kind=["none"] * N,
                              obj=torch.zeros(N, d_v), obj_mask=torch.zeros(N, dtype=torch.bool), d_v=d_v,
                              glob_caption=torch.zeros(N, 0), obj_text=torch.zeros(N, 0),
                              obj_kind=["none"] * N, d_caption=0, counts=counts)

    # ---- global image features (frozen encoder) ------------------------------------------
    img_name = resolve_image_encoder(model_cfg.image_encoder, model_cfg.image_weights)
    enc_name = image_encoder.cache_name if image_encoder is not None else safe_name(
        img_name if not model_cfg.image_weights else f"{img_name}-{Path(model_cfg.image_weights).stem}")
    enc_holder: dict = {}

    def get_encoder() -> ImageEncoder:
        if "enc" not in enc_holder:
            enc_holder["enc"] = image_encoder or ImageEncoder(img_name, model_cfg.image_weights)
        return enc_holder["enc"]

    t0 = time.perf_counter()
    gcache, gstats = extract_image_features(
        [(k, paths[k]) for k in ids], cache_dir / f"features-{enc_name}.safetensors", get_encoder,
        progress=progress, metadata={"image_dir": str(ds.image_dir) if ds.image_dir else "none"})
    timings["image_global"] = time.perf_counter() - t0
    d_v = image_encoder.dim if image_encoder is not None else image_dim(img_name, gcache)
    glob_img, img_ok = stack_rows(gcache, ids, d_v)
    counts["images_unusable"] = gstats["missing"]        # missing or unreadable (masked rows)
    if gstats["status"]:
        counts["image_status_new"] = dict(Counter(s.split(" (")[0] for s in gstats["status"].values()))

    # ---- captions: the stand-in for a missing image --------------------------------------
    t0 = time.perf_counter()
    captions: dict[str, str] = {}
    captions.update({k: v for k, v in side.captions.items() if k in index})
    llm_caps = JsonlCache(cache_dir / "captions-llm.jsonl", key="imgid")
    captions.update({r["imgid"]: r["caption"] for r in llm_caps if r["imgid"] in index
                     and r["imgid"] not in captions})
    sent_holder: dict = {}

    def get_sentence_encoder():
        if "enc" not in sent_holder:
            sent_holder["enc"] = sentence_encoder or SentenceEncoder(DEFAULT_SENTENCE_ENCODER)
        return sent_holder["enc"]

    sent_name = safe_name(sentence_encoder.name if sentence_encoder is not None else DEFAULT_SENTENCE_ENCODER)
    cap_cache_path = cache_dir / f"features-caption-{sent_name}.safetensors"
    d_cap = 0
    glob_cap = torch.zeros(N, 0)
    cap_ok = torch.zeros(N, dtype=torch.bool)
    if captions:
        ccache, _ = extract_text_features({k: captions[k] for k in ids if k in captions}, cap_cache_path,
                                          get_sentence_encoder, kind="caption", progress=progress)
        d_cap = int(ccache.metadata.get("dim") or get_sentence_encoder().dim)
        glob_cap, cap_ok = stack_rows(ccache, ids, d_cap)
    timings["captions"] = time.perf_counter() - t0
    glob_kind = ["image" if img_ok[i] else "caption" if cap_ok[i] else "none" for i in range(N)]
    glob_img[~img_ok] = 0

    # ---- objects ----------------------------------------------------------------------------
    obj_img = torch.zeros(N, d_v)
    obj_txt = torch.zeros(N, d_cap)
    obj_kind = ["none"] * N
    src = model_cfg.object_source
    if model_cfg.visual == "optimized" and src != "none":
        usable_ids = [k for k in ids if img_ok[index[k]]]
        gcfg = res.grounding

        def get_grounder():
            if grounder is not None:
                return grounder
            return G.Grounder(gcfg)

        t0 = time.perf_counter()
        if src == "llm":
            phrases = _phrases(ds, side, res.llm, cache_dir, ids, usable_ids, captions, counts, paths,
                               llm_client, progress)
            timings["phrases"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            bcache = JsonlCache(cache_dir / "boxes-llm.jsonl", key="imgid")
            need = {k: (paths[k], phrases[k]) for k in usable_ids}
            if grounder is not None or gcfg.model:
                G.ground_images(need, bcache, get_grounder, progress=progress)
            elif any(k not in bcache for k in need) and side.boxes:
                G.import_boxes(side.boxes, bcache, phrases=phrases, keep=set(need))
            lacking = [k for k in need if k not in bcache]
            if lacking:
                raise ResourceMissing(
                    f"{len(lacking)} tweet image(s) with phrases have no boxes (e.g. {lacking[:3]}): set "
                    f"TVOMNER_GROUNDING_MODEL to a local GroundingDINO folder, or DataConfig.boxes to a "
                    f"boxes file, or use object_source='none' / 'random'")
            # phrases for tweets without a usable image: their sentence embeddings stand in
            texts = {stable_hash(p): p for k in ids if not img_ok[index[k]] for p in phrases.get(k, [])}
            if texts:
                pcache, _ = extract_text_features(texts, cache_dir / f"features-phrases-{sent_name}.safetensors",
                                                  get_sentence_encoder, kind="phrase", progress=progress)
                d_p = int(pcache.metadata.get("dim") or get_sentence_encoder().dim)
                if obj_txt.shape[1] != d_p:
                    if d_cap and d_cap != d_p:
                        raise ValueError(f"phrase features ({d_p}) and caption features ({d_cap}) differ")
                    obj_txt = torch.zeros(N, d_p)
                    d_cap = d_p
                    if glob_cap.shape[1] != d_p:
                        glob_cap = torch.zeros(N, d_p)
                for k in ids:
                    ph = phrases.get(k, [])
                    if not img_ok[index[k]] and ph:
                        rows = [pcache[stable_hash(p)] for p in ph if pcache[stable_hash(p)].numel()]
                        if rows:
                            obj_txt[index[k]] = torch.stack(rows).mean(0)
                            obj_kind[index[k]] = "phrases"
            counts["phrases_per_tweet"] = round(sum(len(phrases.get(k, [])) for k in ids) / max(N, 1), 3)
        elif src == "random":
            bcache = JsonlCache(cache_dir / "boxes-random.jsonl", key="imgid")
            G.random_regions({k: paths[k] for k in usable_ids}, bcache, n=model_cfg.n_random_objects,
                             grounder=get_grounder() if (grounder is not None or gcfg.model) else None)
            need = {k: (paths[k], None) for k in usable_ids}
        else:
            raise ValueError(f"object_source must be 'llm', 'random' or 'none', not {src!r}")
        counts["boxes_source"] = dict(Counter(bcache[k].get("source") for k in usable_ids))
        counts["boxes"] = sum(len(bcache[k]["boxes"]) for k in usable_ids)
        timings["boxes"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ocache, _ = G.object_features({k: (paths[k], bcache[k]["boxes"]) for k in usable_ids},
                                      cache_dir / f"features-obj-{enc_name}-{src}.safetensors",
                                      get_encoder, progress=progress)
        timings["object_features"] = time.perf_counter() - t0
        o, om = stack_rows(ocache, usable_ids, d_v)
        for j, k in enumerate(usable_ids):
            if om[j]:
                obj_img[index[k]] = o[j]
                obj_kind[index[k]] = "image"

    counts["glob_kind"] = dict(Counter(glob_kind))
    counts["obj_kind"] = dict(Counter(obj_kind))
    counts["seconds"] = round(time.perf_counter() - t_start, 3)
    counts["timings"] = {k: round(v, 3) for k, v in timings.items()}
    counts["image_encoder"] = enc_name
    counts["object_source"] = src if model_cfg.visual == "optimized" else "none"
    atomic_write_json(cache_dir / "visual_report.json", counts)
    obj_mask = torch.tensor([k != "none" for k in obj_kind], dtype=torch.bool)
    if glob_cap.shape[1] != d_cap:
        glob_cap = torch.zeros(N, d_cap)
    return VisualFeatures(ids=ids, index=index, glob=glob_img, glob_kind=glob_kind, obj=obj_img,
                          obj_mask=obj_mask, d_v=d_v, glob_caption=glob_cap, obj_text=obj_txt,
                          obj_kind=obj_kind, d_caption=d_cap, counts=counts)


def _phrases(ds, side: SideInputs, llm_cfg, cache_dir: Path, ids, usable_ids, captions, counts, paths, llm_client,
             progress) -> dict[str, list[str]]:
    """``{imgid: phrases}`` from the cache, the side inputs, or the LLM (module docstring)."""
    if side.phrases == CAPTION_PHRASES:
        # offline stand-in: the noun chunks of each tweet's caption (tvolib.vfo.caption_phrases)
        path = cache_dir / f"phrases-{CAPTION_PHRASES}.jsonl"
        s = write_phrases({k: captions[k] for k in ids if k in captions}, path, progress=progress)
        counts["caption_phrases"] = s
        pc = JsonlCache(path, key="imgid")
        counts["phrases_source"] = dict(Counter(pc[k].get("source") for k in ids if k in pc))
        return {k: list(pc[k]["phrases"]) for k in ids if k in pc}
    pc = JsonlCache(cache_dir / "phrases.jsonl", key="imgid")
    if isinstance(side.phrases, dict):
        for k in ids:
            if k not in pc and k in side.phrases:
                rec = dict(side.phrases[k], imgid=k)        # keyed as the dataset is (prediction: internal ids)
                rec.setdefault("source", "file")
                rec["file"] = side.phrases_file
                pc.append(rec)
    if llm_client is not None or llm_cfg.configured:
        client = llm_client or L.LLMClient(llm_cfg)
        tweets = {t.id: t for t in ds.all()}
        # captions first, for usable images without one
        need_cap = {k: paths[k] for k in usable_ids if k not in captions}
        if need_cap:
            cc = JsonlCache(cache_dir / "captions-llm.jsonl", key="imgid")
            s = L.generate_captions(need_cap, cc, client, progress=progress)
            counts["llm_captions"] = s.as_dict()
            captions.update({k: cc[k]["caption"] for k in need_cap if k in cc})
        items = {k: (tweets[k].text, captions[k]) for k in ids if k not in pc and k in captions}
        if items:
            s = L.generate_phrases(items, pc, client, progress=progress)
            counts["llm_phrases"] = s.as_dict()
    lacking = [k for k in usable_ids if k not in pc]
    if lacking:
        raise ResourceMissing(
            f"{len(lacking)} tweet(s) with an image have no LLM phrases (e.g. {lacking[:3]}). Set "
            f"TVOMNER_LLM_BASE_URL and TVOMNER_LLM_MODEL (any OpenAI-compatible endpoint), or "
            f"DataConfig.phrases to a JSONL file of {{\"imgid\", \"phrases\"}}, or use "
            f"object_source='random' ('w/o LLMs') or 'none'")
    counts["phrases_source"] = dict(Counter(pc[k].get("source") for k in ids if k in pc))
    return {k: list(pc[k]["phrases"]) for k in ids if k in pc}
