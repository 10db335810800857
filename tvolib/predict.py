"""Tag a user's own tweets with a trained checkpoint (``tvomner predict``).

Input: a text file with one tweet per line (tokens split on whitespace; an optional
``IMGID<TAB>`` prefix names the tweet and its image ``<image_dir>/<IMGID>.jpg|png``), or a CoNLL
file in the benchmark's format (``IMGID:`` lines; labels, if any, are ignored). Output: entity spans
per tweet as JSON (``[{"id", "tokens", "labels", "entities": [{"start", "end", "type", "text"}]}]``)
or CoNLL (``token<TAB>label``).

A checkpoint folder carries everything the model needs (weights, configs, label set, the encoder's
config and tokenizer or the baselines' vocabulary). What the full model adds at prediction time comes
from the same TFO/VFO stages as in training, through their caches in
``<cache_dir>/<dataset of the checkpoint>/``:

* candidates and knowledge (``use_candidates``): the candidate tagger is trained on the checkpoint's
  training split, which is therefore read from its ``data_dir`` (a ``ResourceMissing`` says so when it
  is not there); its training candidates are reused from the cache, the user's tweets are added;
* visual features: images found in ``image_dir`` (frozen image encoder), otherwise captions from
  ``captions`` ({IMGID: caption}), otherwise none (the gate and the null slot of the cross-attention
  let the model fall back on the text).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from .config import DataConfig, ModelConfig, from_dict
from .data import Dataset, Tweet, entity_spans, find_image, read_conll
from .resources import ResourceMissing


def read_tweets(path: str | Path, fmt: str = "auto") -> list[Tweet]:
    """Tweets from a text file (one per line) or a CoNLL file (``fmt`` "auto" | "text" | "conll")."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    if fmt == "auto":
        first = next((l for l in text.splitlines() if l.strip()), "")
        fmt = "conll" if first.startswith("IMGID:") else "text"
    if fmt == "conll":
        return read_conll(path, split="test")
    if fmt != "text":
        raise ValueError(f"unknown input format {fmt!r}: 'auto', 'text' or 'conll'")
    tweets = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        tid, body = (line.split("\t", 1) if "\t" in line else (f"line{lineno}", line))
        tokens = body.split()
        if not tokens:
            raise ValueError(f"{path}:{lineno}: no tokens after the IMGID")
        tweets.append(Tweet(id=tid.strip().removeprefix("IMGID:"), tokens=tokens, labels=["O"] * len(tokens),
                            split="test", source=f"{path}:{lineno}"))
    if not tweets:
        raise ValueError(f"{path}: no tweets found")
    return tweets


def _as_tweets(tweets: Sequence) -> list[Tweet]:
    out = []
    for i, t in enumerate(tweets):
        if isinstance(t, Tweet):
            out.append(dataclasses.replace(t, split="test", labels=["O"] * len(t.tokens)))
        else:
            tokens = t.split() if isinstance(t, str) else list(t)
            out.append(Tweet(id=f"t{i + 1}", tokens=tokens, labels=["O"] * len(tokens), split="test"))
    return out


class Predictor:
    """A loaded checkpoint; ``predict(tweets)`` returns one dict per tweet."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", cache_dir: str | None = None):
        from .train import load_checkpoint
        self.model, self.info, self.meta = load_checkpoint(checkpoint, device)
        self.device = device
        self.labels = list(self.info["labels"])
        self.model_cfg = from_dict(ModelConfig, self.info["model"])
        self.data_cfg = from_dict(DataConfig, self.info["data"])
        if cache_dir is not None:
            self.data_cfg = dataclasses.replace(self.data_cfg, cache_dir=cache_dir)

    def _dataset(self, tweets: list[Tweet], image_dir) -> Dataset:
        train: list[Tweet] = []
        if self.model_cfg.arch == "tvomner" and self.model_cfg.use_candidates:
            tr = Path(self.data_cfg.data_dir) / "train.txt"
            if not tr.exists():
                raise ResourceMissing(f"this checkpoint uses entity candidates, whose tagger is trained on "
                                      f"its training split {tr}, which is not there; point --data_dir at "
                                      f"the folder holding train.txt")
            train = read_conll(tr, split="train")
        for t in tweets:
            if image_dir is not None and t.image_path is None:
                t.image_path = find_image(image_dir, t.id)
                t.image_status = "unchecked" if t.image_path else "missing"
        return Dataset(name=self.data_cfg.dataset, data_dir=Path(self.data_cfg.data_dir),
                       image_dir=Path(image_dir) if image_dir else None,
                       splits={"train": train, "valid": [], "test": tweets})

    def predict(self, tweets: Sequence, image_dir: str | Path | None = None, captions: str | None = None,
                batch_size: int = 64, diagnostics: bool = False) -> list[dict]:
        """One dict per tweet; with ``diagnostics`` a multimodal model adds ``gate`` (g of Eq. 4, the
        weight of the text features) and ``fusion_weights`` ([ω_t, ω_g, ω_o] of Eq. 3)."""
        from .train import predict_examples, prepare_data
        tweets = _as_tweets(tweets)
        ds = self._dataset(tweets, image_dir)
        data_cfg = dataclasses.replace(self.data_cfg, image_dir=str(image_dir) if image_dir else None,
                                       captions=captions if captions is not None else self.data_cfg.captions)
        prepared = prepare_data(ds, data_cfg, self.model_cfg, meta=self.meta)
        pred = predict_examples(self.model, prepared.examples["test"], prepared.collate, batch_size,
                                self.device, labels=self.labels)
        diag = self._diagnostics(prepared, batch_size) if diagnostics else [{}] * len(tweets)
        out = []
        for t, p, d in zip(tweets, pred, diag):
            ents = [{"start": s, "end": e, "type": typ, "text": " ".join(t.tokens[s:e])}
                    for s, e, typ in entity_spans(p)]
            out.append({"id": t.id, "tokens": t.tokens, "labels": p, "entities": ents, **d})
        return out

    def _diagnostics(self, prepared, batch_size: int) -> list[dict]:
        import torch
        from .train import _to
        examples = prepared.examples["test"]
        out: list[dict] = []
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(examples), batch_size):
                batch = _to(prepared.collate(examples[i:i + batch_size]), torch.device(self.device))
                batch.pop("labels", None)
                em = self.model.emissions(batch)
                n = batch["word_mask"].shape[0]
                gate = em["gate"].reshape(n).tolist() if "gate" in em else [None] * n
                fw = em["fusion_weights"].tolist() if "fusion_weights" in em else [None] * n
                out += [{"gate": g, "fusion_weights": w} for g, w in zip(gate, fw)]
        return out


def predict(checkpoint: str | Path, tweets: Sequence, image_dir=None, captions=None, device: str = "cpu",
            cache_dir: str | None = None) -> list[dict]:
    """One call: load ``checkpoint`` and tag ``tweets`` (strings, token lists or ``Tweet``s)."""
    return Predictor(checkpoint, device, cache_dir).predict(tweets, image_dir, captions)


def format_output(results: list[dict], fmt: str = "json") -> str:
    if fmt == "json":
        return json.dumps(results, ensure_ascii=False, indent=1) + "\n"
    if fmt == "conll":
        blocks = ["\n".join([f"IMGID:{r['id']}"] + [f"{w}\t{l}" for w, l in zip(r["tokens"], r["labels"])])
                  for r in results]
        return "\n\n".join(blocks) + "\n"
    raise ValueError(f"unknown output format {fmt!r}: 'json' or 'conll'")
