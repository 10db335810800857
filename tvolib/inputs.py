"""Model inputs: one builder for training, evaluation, prediction and the widget.

``prepare_data(ds, data_cfg, model_cfg, res)`` turns tweets into model inputs: for the transformer,
the TFO augmentations (candidates and their knowledge, ``tvolib.tfo``) appended to each tweet and
tokenised once (``tokenize_tweets``), and the VFO visual features (``tvolib.vfo``); for the
word-level baselines, the word/char vocabularies. Training passes the dataset's own side inputs
(``SideInputs.from_config``) and lets the dataset's candidate tagger tag the tweets; prediction passes
the checkpoint's ``meta`` and tagger and the side inputs of the new tweets. Every example is a small
unpadded dict; ``Prepared.collate`` pads a list of them into a batch. ``meta`` is what a checkpoint
needs to rebuild the same inputs (pad id, feature widths, the vocabulary, the tokenizer and candidate
tagger folders); ``Prepared.digest`` identifies the side inputs the examples were built from.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from transformers import AutoTokenizer

from .baselines import Vocab, build_vocab, collate_words
from .cache import stable_hash
from .config import DataConfig, ModelConfig
from .data import LABEL2ID, Dataset, load_dataset
from .tfo.encoder import build_inputs
from .tfo.pipeline import augmentations
from .tfo.tagger import ensure_tagger, read_tagger_info, tagger_dir
from .vfo.pipeline import SideInputs, visual_features
from .weights import resolve_text_encoder

log = logging.getLogger(__name__)



@dataclass
class Prepared:
    """Every split as a list of small per-tweet dicts (unpadded), the collate function that pads
    them, the visual features (or None) and ``meta`` (what a checkpoint needs to rebuild inputs)."""

    examples: dict[str, list[dict]]
    collate: Callable[[list[dict]], dict]
    visual: Any = None
    meta: dict = field(default_factory=dict)
    digest: dict = field(default_factory=dict)


def dataset_from_config(data_cfg: DataConfig) -> Dataset:
    ds = load_dataset(data_cfg.data_dir, data_cfg.image_dir, name=data_cfg.dataset)
    if data_cfg.max_train_samples:
        ds.splits["train"] = ds.splits["train"][:data_cfg.max_train_samples]
    if data_cfg.max_eval_samples:
        for s in ("valid", "test"):
            ds.splits[s] = ds.splits[s][:data_cfg.max_eval_samples]
    return ds


def candidate_tagger(ds, res, model_cfg):
    """The folder of the candidate tagger trained on all of train (saved into checkpoints), or None
    when the model uses no candidates. Trained only when the dataset cache does not hold it."""
    if not model_cfg.use_candidates:
        return None
    train = ds.splits["train"]
    return ensure_tagger(train, res.tagger, tagger_dir(res.dataset_cache, res.tagger, train))


def feats_dims(vf) -> dict:
    """``{"image": d_img, "caption": d_cap}`` of a visual feature table (what the VFO is built with)."""
    dims = getattr(vf, "dims", None)   # VisualFeatures.dims: {"image": d_img, "caption": d_cap}
    if dims is None:
        b = vf.batch(vf.ids[:1])
        dims = {k: int(v.shape[-1]) for k, v in b.items() if torch.is_tensor(v) and v.dim() == 2}
    return dict(dims)


def tokenize_tweets(tweets, augs: dict, tokenizer, max_length: int, chunk: int = 256) -> list[dict]:
    """``build_inputs`` over chunks of tweets, unpadded per tweet (tokenised once)."""
    out = []
    for i in range(0, len(tweets), chunk):
        part = tweets[i:i + chunk]
        enc = build_inputs(tokenizer, [t.tokens for t in part], [augs.get(t.id, []) for t in part],
                           max_length)
        for b, t in enumerate(part):
            n = int(enc["attention_mask"][b].sum())
            w = int(enc["word_mask"][b].sum())
            if w != len(t.tokens):
                raise ValueError(f"{t.source or t.id}: {len(t.tokens)} words but {w} word positions")
            out.append({"id": t.id, "input_ids": enc["input_ids"][b, :n].tolist(),
                        "word_index": enc["word_index"][b, :w].tolist(),
                        "labels": [LABEL2ID[l] for l in t.labels]})
    return out


def collate_text(examples: list[dict], pad_id: int) -> dict:
    B = len(examples)
    L = max(len(e["input_ids"]) for e in examples)
    W = max(len(e["word_index"]) for e in examples)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(B, L, dtype=torch.long)
    word_index = torch.zeros(B, W, dtype=torch.long)
    word_mask = torch.zeros(B, W, dtype=torch.bool)
    for i, e in enumerate(examples):
        n, w = len(e["input_ids"]), len(e["word_index"])
        input_ids[i, :n] = torch.tensor(e["input_ids"])
        attention_mask[i, :n] = 1
        word_index[i, :w] = torch.tensor(e["word_index"])
        word_mask[i, :w] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "word_index": word_index,
            "word_mask": word_mask}


def label_tensor(examples: list[dict]) -> torch.Tensor:
    W = max(len(e["labels"]) for e in examples)
    y = torch.zeros(len(examples), W, dtype=torch.long)
    for i, e in enumerate(examples):
        y[i, :len(e["labels"])] = torch.tensor(e["labels"])
    return y


def make_collate(model_cfg: ModelConfig, pad_id: int = 0, visual=None) -> Callable:
    def collate(examples: list[dict], withheld_visual=None) -> dict:
        """Pad ``examples`` into a batch; ``withheld_visual``: ids (or ``True``: all) whose visual
        input is left out (side-input dropout, the missing-inputs evaluation)."""
        if model_cfg.arch == "tvomner":
            batch = collate_text(examples, pad_id)
        else:
            batch = collate_words(examples)
        batch["ids"] = [e["id"] for e in examples]
        if "labels" in examples[0]:
            batch["labels"] = label_tensor(examples)
        if visual is not None and model_cfg.visual != "none" and model_cfg.arch == "tvomner":
            batch["visual"] = visual.batch(batch["ids"], withheld=withheld_visual)
        return batch
    return collate


def without_knowledge(augs: dict) -> dict:
    """The same candidates with their knowledge left out: what a tweet gets when its knowledge
    source has nothing for it (e.g. a new tweet and a per-tweet-text source)."""
    return {i: [(c, "") for c, _ in a] for i, a in augs.items()}


def add_bare_inputs(examples: dict[str, list[dict]], ds: Dataset, augs: dict, tokenizer, max_length: int) -> None:
    """Each example gets ``bare``: its ``input_ids`` and ``word_index`` without knowledge."""
    bare = without_knowledge(augs)
    for s, tw in ds.splits.items():
        for e, b in zip(examples[s], tokenize_tweets(tw, bare, tokenizer, max_length)):
            e["bare"] = {"input_ids": b["input_ids"], "word_index": b["word_index"]}


# the side inputs that can be left out of every tweet (the missing-inputs evaluation, prediction's
# tags without them): name -> (knowledge, visual input)
LEFT_OUT = {"no_knowledge": (True, False), "no_visual": (False, True), "neither": (True, True)}


def withheld(prepared: "Prepared", split: str, knowledge: bool = False, visual: bool = False, examples=None):
    """``(examples, collate)`` of ``split`` (or the given ``examples`` of ``prepared``) with the
    knowledge and/or the visual input left out of every tweet (the missing-inputs evaluation, and
    prediction's tags without side inputs)."""
    ex = prepared.examples[split] if examples is None else examples
    if knowledge:
        ex = [{**e, **e["bare"]} if "bare" in e else e for e in ex]
    if not visual:
        return ex, prepared.collate
    return ex, lambda batch: prepared.collate(batch, withheld_visual=True)


def with_dropout(prepared: "Prepared", examples: list[dict], seed: int, epoch: int, knowledge: float = 0.0,
                 visual: float = 0.0) -> dict:
    """A training batch with side-input dropout: each tweet's knowledge (its candidates stay) and
    visual input are left out with probabilities ``knowledge`` and ``visual``, drawn per (seed,
    epoch, tweet). A model that reads no knowledge or no visual input is unaffected."""
    if not (knowledge or visual):
        return prepared.collate(examples)
    ex = [{**e, **e["bare"]} if knowledge and "bare" in e and dropout_draw("knowledge", seed, epoch, e["id"]) < knowledge
          else e for e in examples]
    gone = {e["id"] for e in examples if visual and dropout_draw("visual", seed, epoch, e["id"]) < visual}
    return prepared.collate(ex, withheld_visual=gone or None)


def dropout_draw(what: str, seed: int, epoch: int, tweet_id: str) -> float:
    """A uniform number in [0, 1) fixed by (what, seed, epoch, tweet): side-input dropout draws
    from it, so the draws neither use nor move torch's random state and a resumed run draws alike."""
    h = hashlib.sha256(f"{what}|{seed}|{epoch}|{tweet_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


def side_digest(augs: dict | None, visual, tagger: dict | None = None) -> dict:
    """Hashes of the side inputs the examples were built from: the candidate tagger's weights, the
    (candidate, knowledge) pairs and the visual feature table, so two runs with the same configs and
    other inputs differ."""
    out = {}
    if tagger is not None:
        out["tagger"] = tagger.get("weights_hash")
    if augs is not None:
        out["augmentations"] = stable_hash(sorted(augs.items()), n=16)
    if visual is not None:
        h = hashlib.sha256(stable_hash(visual.ids, visual.glob_kind, visual.obj_kind).encode())
        for t in (visual.glob, visual.obj, visual.obj_mask, visual.glob_caption, visual.obj_text):
            if t is not None:
                h.update(t.detach().float().contiguous().numpy().tobytes())
        out["visual"] = h.hexdigest()[:16]
    return out


def prepare_data(ds: Dataset, data_cfg: DataConfig, model_cfg: ModelConfig, res, *, side: SideInputs | None = None,
                 tagger=None, meta: dict | None = None, tokenizer=None, knowledge=None, visual_res=None,
                 augs: dict | None = None, progress: bool = False) -> Prepared:
    """Build every split's inputs once (see the module docstring). ``res``: the run's resolved
    resources (``tvolib.resources.resolve``); ``side``: the tweets' side inputs (default: the files
    of ``data_cfg``); ``tagger``: a trained ``(model, info)`` that tags the tweets (prediction);
    ``meta`` (a checkpoint's) fixes the tokenizer folder, the vocabulary and the feature widths;
    ``knowledge`` replaces the knowledge source that ``res`` names; ``visual_res`` puts the visual
    caches elsewhere (prediction: one folder per image folder); ``augs``: (candidate, knowledge) pairs
    made already (benchmarks that compare encoders on the same text)."""
    meta = dict(meta or {})
    if model_cfg.arch == "tvomner":
        if tokenizer is None:
            path = meta.get("tokenizer_path") or resolve_text_encoder(model_cfg.text_encoder)
            tokenizer = AutoTokenizer.from_pretrained(path)
            meta.setdefault("tokenizer_path", str(path))
        if augs is None:
            augs = augmentations(ds, model_cfg, res, progress=progress, tagger=tagger, source=knowledge)
        tagger_info = tagger[1] if tagger is not None else None
        if tagger is None and model_cfg.use_candidates:
            folder = candidate_tagger(ds, res, model_cfg)
            if folder is not None:
                meta["tagger_dir"] = str(folder)
                tagger_info = read_tagger_info(folder)
        examples = {s: tokenize_tweets(tw, augs, tokenizer, data_cfg.max_length) for s, tw in ds.splits.items()}
        if model_cfg.reads_knowledge:
            add_bare_inputs(examples, ds, augs, tokenizer, data_cfg.max_length)
        visual = None
        if model_cfg.visual != "none":
            side = side if side is not None else SideInputs.from_config(data_cfg)
            visual = visual_features(ds, model_cfg, visual_res or res, side, progress=progress)
            meta.setdefault("feats_dims", feats_dims(visual))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        meta["pad_id"] = int(pad)
        meta["_tokenizer"] = tokenizer
        meta["_augmentations"] = augs
        return Prepared(examples, make_collate(model_cfg, pad, visual), visual, meta,
                        side_digest(augs if model_cfg.use_candidates else None, visual, tagger_info))
    if model_cfg.arch in ("bilstm_crf", "cnn_bilstm_crf"):
        if "vocab" not in meta:
            train_words = [t.tokens for t in ds.splits["train"]]
            extra = ([t.tokens for t in ds.all()] if model_cfg.word_init == "encoder" else [])
            meta["vocab"] = build_vocab(train_words, extra)
        vocab = Vocab(meta["vocab"])
        examples = {}
        for s, tw in ds.splits.items():
            examples[s] = [dict(id=t.id, labels=[LABEL2ID[l] for l in t.labels], **vocab.encode(t.tokens))
                           for t in tw]
        return Prepared(examples, make_collate(model_cfg), None, meta)
    raise ValueError(f"unknown arch {model_cfg.arch!r}: 'tvomner', 'bilstm_crf' or 'cnn_bilstm_crf'")
