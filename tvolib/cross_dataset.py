"""A checkpoint on another benchmark's test set, with and without side inputs.

``cross_evaluate`` tags the test tweets of a target benchmark through the path a user's own tweets
take (``tvolib.predict.Predictor``: the checkpoint's candidate tagger, the target's images or
captions and, for a model trained on per-tweet texts, the target's per-tweet knowledge file), with
their side inputs and with the knowledge, the visual input or both left out of every tweet, and
scores each condition over the four types and over PER/LOC/ORG alone (Twitter-2015's OTHER and
Twitter-2017's MISC are not the same class). ``notebooks/08_cross_dataset.ipynb`` calls it;
``python -m tvolib.runs --cross`` (``tvolib.runs.cross``) runs that notebook for an experiment's
finished runs and tabulates the results.
"""
from __future__ import annotations

import gzip
from pathlib import Path

from .cache import atomic_write_bytes, atomic_write_json
from .data import ENTITY_TYPES, read_conll
from .evaluate import CONDITIONS, CORE_TYPES, only_types, score, write_predictions
from .inputs import LEFT_OUT
from .predict import Predictor


def cross_evaluate(checkpoint: str | Path, test_file: str | Path, out_dir: str | Path, image_dir=None,
                   captions=None, knowledge_file=None, phrases=None, boxes=None, cache_dir=None,
                   max_eval_samples: int | None = None) -> dict:
    """Tag the tweets of ``test_file`` (CoNLL with labels) with ``checkpoint``, with their side
    inputs (images in ``image_dir``, ``captions``, per-tweet ``knowledge_file``, LLM ``phrases`` and
    ``boxes``) and with each of ``LEFT_OUT`` left out; write ``cross.json`` and the predictions of
    each condition into ``out_dir`` and return the record."""
    out_dir = Path(out_dir)
    tweets = read_conll(test_file, split="test")[:max_eval_samples]
    p = Predictor(checkpoint, cache_dir=cache_dir)
    res = p.predict(tweets, image_dir=image_dir, captions=captions, knowledge_file=knowledge_file,
                    phrases=phrases, boxes=boxes, diagnostics=False, left_out=tuple(LEFT_OUT))
    rec = {"checkpoint": str(checkpoint), "model_sha256": (p.info.get("files") or {}).get("model.safetensors"),
           "side_inputs_trained": p.info.get("side_inputs"), "test_file": str(test_file), "tweets": len(tweets),
           "image_dir": None if image_dir is None else str(image_dir),
           "captions": None if captions is None else str(captions),
           **{k: None if v is None else str(v) for k, v in (("knowledge_file", knowledge_file),
                                                             ("phrases", phrases), ("boxes", boxes))},
           "knowledge": p.knowledge_summary, "notes": p.notes,
           "side_inputs": _side_input_counts(res), "test": {}, "core_types": {}}
    gold = [t.labels for t in tweets]
    for cond, fname, _ in CONDITIONS:
        pred = [r["labels"] if cond == "all" else r["left_out"][cond] for r in res]
        rec["test"][cond] = score(gold, pred).row()
        core = score([only_types(g) for g in gold], [only_types(q) for q in pred]).row()
        rec["core_types"][cond] = {k: v for k, v in core.items() if k not in set(ENTITY_TYPES) - set(CORE_TYPES)}
        plain = out_dir / f"{fname}.txt"
        write_predictions(plain, tweets, pred)
        atomic_write_bytes(out_dir / fname, gzip.compress(plain.read_bytes(), mtime=0))
        plain.unlink()
    atomic_write_json(out_dir / "cross.json", rec)
    return rec


def _side_input_counts(res: list[dict]) -> dict:
    """How many tweets had knowledge (for at least one candidate), a caption, an image."""
    si = [r.get("side_inputs") or {} for r in res]
    return {"tweets": len(res),
            "knowledge": sum(bool(s.get("knowledge") and s["knowledge"][0]) for s in si),
            "caption": sum(bool(s.get("caption")) for s in si), "image": sum(bool(s.get("image")) for s in si)}
