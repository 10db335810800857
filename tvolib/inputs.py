"""Model inputs, built once per dataset: what the training loop, evaluation and prediction feed the model.

* ``dataset_from_config``: the benchmark splits of a ``DataConfig`` (``max_train_samples`` /
  ``max_eval_samples`` cut them for quick runs).
* ``prepare_data``: for the transformer, the TFO augmentations (candidates and their knowledge,
  ``tvolib.tfo``) appended to each tweet and tokenised once (``tokenize_tweets``), and the VFO
  visual features (``tvolib.vfo``); for the word-level baselines, the word/char vocabularies.
  Every example is a small unpadded dict; ``Prepared.collate`` pads a list of them into a batch.
* ``meta``: what a checkpoint needs to rebuild the same inputs (pad id, feature widths, the
  vocabulary, the tokenizer and candidate tagger folders, ``candidate_tagger``).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .config import DataConfig, ModelConfig
from .data import LABEL2ID, Dataset, load_dataset

TEXT_KEYS = ("input_ids", "attention_mask", "word_index", "word_mask")   # transformer inputs
WORD_KEYS = ("word_ids", "word_mask", "char_ids")                        # word-level baselines


def log(msg: str) -> None:
    """Progress and warnings go to stderr; stdout is left to data (tables, JSON)."""
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Prepared:
    """Every split as a list of small per-tweet dicts (unpadded), the collate function that pads
    them, the visual features (or None) and ``meta`` (what a checkpoint needs to rebuild inputs)."""

    examples: dict[str, list[dict]]
    collate: Callable[[list[dict]], dict]
    visual: Any = None
    meta: dict = field(default_factory=dict)


def dataset_from_config(data_cfg: DataConfig) -> Dataset:
    ds = load_dataset(data_cfg.data_dir, data_cfg.image_dir, name=data_cfg.dataset)
    if data_cfg.max_train_samples:
        ds.splits["train"] = ds.splits["train"][:data_cfg.max_train_samples]
    if data_cfg.max_eval_samples:
        for s in ("valid", "test"):
            ds.splits[s] = ds.splits[s][:data_cfg.max_eval_samples]
    return ds


def text_augmentations(ds, data_cfg, model_cfg, progress=False) -> dict[str, list]:
    """``{tweet id: [(candidate, knowledge), ...]}`` from the TFO stages (empty without candidates)."""
    if not model_cfg.use_candidates:
        return {}
    from .tfo.pipeline import augmentations
    return augmentations(ds, data_cfg, model_cfg, progress=progress, log=log)


def candidate_tagger(ds, data_cfg, model_cfg, progress=False):
    """The folder of the candidate tagger trained on all of train (saved into checkpoints), or None
    when the model uses no candidates. Trained only when the dataset cache does not hold it."""
    if not model_cfg.use_candidates:
        return None
    from .tfo.candidates import TaggerConfig, ensure_tagger, tagger_dir
    cfg = TaggerConfig(encoder=model_cfg.text_encoder)     # the tagger of tvolib.tfo.pipeline.augmentations
    train = ds.splits["train"]
    return ensure_tagger(train, cfg, tagger_dir(data_cfg.dataset_cache, cfg, train), log=log)


def feats_dims(vf) -> dict:
    """``{"image": d_img, "caption": d_cap}`` of a visual feature table (what the VFO is built with)."""
    dims = getattr(vf, "dims", None)   # VisualFeatures.dims: {"image": d_img, "caption": d_cap}
    if dims is None:
        b = vf.batch(vf.ids[:1])
        dims = {k: int(v.shape[-1]) for k, v in b.items() if torch.is_tensor(v) and v.dim() == 2}
    return dict(dims)


def tokenize_tweets(tweets, augs: dict, tokenizer, max_length: int, chunk: int = 256) -> list[dict]:
    """``build_inputs`` over chunks of tweets, unpadded per tweet (tokenised once)."""
    from .tfo.encoder import build_inputs
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
    from .baselines import collate_words

    def collate(examples: list[dict]) -> dict:
        if model_cfg.arch == "tvomner":
            batch = collate_text(examples, pad_id)
        else:
            batch = collate_words(examples)
        batch["ids"] = [e["id"] for e in examples]
        if "labels" in examples[0]:
            batch["labels"] = label_tensor(examples)
        if visual is not None and model_cfg.visual != "none" and model_cfg.arch == "tvomner":
            batch["visual"] = visual.batch(batch["ids"])
        return batch
    return collate


def prepare_data(ds: Dataset, data_cfg: DataConfig, model_cfg: ModelConfig, *, meta: dict | None = None,
                 tokenizer=None, progress: bool = False, augs: dict | None = None, visual=None) -> Prepared:
    """Build every split's inputs once. ``meta`` (from a checkpoint) fixes the tokenizer folder or
    the vocabulary; otherwise they come from ``model_cfg`` (and the training split). ``augs`` and
    ``visual``, when given (prediction), replace the TFO augmentations and the VFO features."""
    meta = dict(meta or {})
    if model_cfg.arch == "tvomner":
        from transformers import AutoTokenizer
        from .weights import resolve_text_encoder
        if tokenizer is None:
            path = meta.get("tokenizer_path") or resolve_text_encoder(model_cfg.text_encoder)
            tokenizer = AutoTokenizer.from_pretrained(path)
            meta.setdefault("tokenizer_path", str(path))
        if augs is None:
            augs = text_augmentations(ds, data_cfg, model_cfg, progress)
            tagger = candidate_tagger(ds, data_cfg, model_cfg, progress)
            if tagger is not None:
                meta["tagger_dir"] = str(tagger)
        examples = {s: tokenize_tweets(tw, augs, tokenizer, data_cfg.max_length) for s, tw in ds.splits.items()}
        if model_cfg.visual == "none":
            visual = None
        else:
            if visual is None:
                from .vfo.pipeline import visual_features
                visual = visual_features(ds, data_cfg, model_cfg, progress=progress)
            meta.setdefault("feats_dims", feats_dims(visual))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        meta["pad_id"] = int(pad)
        meta["_tokenizer"] = tokenizer
        return Prepared(examples, make_collate(model_cfg, pad, visual), visual, meta)
    if model_cfg.arch in ("bilstm_crf", "cnn_bilstm_crf"):
        from .baselines import Vocab, build_vocab
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
