"""Span-level evaluation with seqeval, in the layout of the paper's Table 1 and Table 2.

Scores are seqeval's default mode (IOB2, lenient: an ``I-X`` after ``O`` starts an entity), the
same rule as ``tvolib.data.entity_spans``. Figures are percentages with two decimals, as in the
paper: ``PER LOC ORG MISC`` F1, then micro ``Pre. Rec. F1``.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from seqeval.metrics import classification_report
from seqeval.metrics.sequence_labeling import get_entities

from .cache import atomic_write_json, atomic_write_text
from .data import ENTITY_TYPES, LABELS, Tweet, entity_spans
from .device import autocast, to_device

TABLE1_COLUMNS = ("PER", "LOC", "ORG", "MISC", "Pre.", "Rec.", "F1")
# the test set scored with side inputs left out (the missing-inputs and cross-dataset evaluations):
# condition, its predictions file among a run's artifacts, what is left out
CONDITIONS = (("all", "test_predictions.conll.gz", "nothing"),
              ("no_knowledge", "test_predictions.no_knowledge.conll.gz", "knowledge"),
              ("no_visual", "test_predictions.no_visual.conll.gz", "visual input"),
              ("neither", "test_predictions.neither.conll.gz", "knowledge and visual input"))
CORE_TYPES = ("PER", "LOC", "ORG")        # the types both benchmarks define alike (MISC / OTHER differ)


@dataclass
class Scores:
    precision: float
    recall: float
    f1: float
    per_type: dict[str, dict[str, float]]   # type -> {precision, recall, f1, support}
    n_gold: int
    n_pred: int
    n_correct: int

    def row(self) -> dict[str, float]:
        """The Table 1 row: per-type F1 then micro P, R, F1 (percent)."""
        r = {t: 100 * self.per_type.get(t, {}).get("f1", 0.0) for t in ENTITY_TYPES}
        r.update({"Pre.": 100 * self.precision, "Rec.": 100 * self.recall, "F1": 100 * self.f1})
        return r

    def to_dict(self) -> dict:
        return asdict(self)


def _check(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sequences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sequence {i}: {len(g)} gold labels but {len(p)} predicted")


def score(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Scores:
    """Micro P/R/F1 and per-type P/R/F1 over entity spans (exact span and type)."""
    _check(gold, pred)
    gold, pred = [list(g) for g in gold], [list(p) for p in pred]
    g_ents = {(i,) + e for i, s in enumerate(gold) for e in get_entities(s)}
    p_ents = {(i,) + e for i, s in enumerate(pred) for e in get_entities(s)}
    tp = len(g_ents & p_ents)
    P = tp / len(p_ents) if p_ents else 0.0
    R = tp / len(g_ents) if g_ents else 0.0
    F = 2 * P * R / (P + R) if P + R else 0.0
    rep = classification_report(gold, pred, output_dict=True, zero_division=0) if g_ents or p_ents else {}
    per_type = {t: {"precision": float(rep[t]["precision"]), "recall": float(rep[t]["recall"]),
                    "f1": float(rep[t]["f1-score"]), "support": int(rep[t]["support"])}
                for t in rep if t in ENTITY_TYPES}
    for t in ENTITY_TYPES:
        per_type.setdefault(t, {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0})
    return Scores(P, R, F, per_type, len(g_ents), len(p_ents), tp)


def only_types(labels: Sequence[str], types: Sequence[str] = CORE_TYPES) -> list[str]:
    """The labels with every entity of another type turned into ``O``."""
    return [lab if lab == "O" or lab[2:] in types else "O" for lab in labels]


def score_tweets(tweets: Sequence[Tweet], pred: Sequence[Sequence[str]]) -> Scores:
    return score([t.labels for t in tweets], pred)


def table1_markdown(rows: dict[str, Scores | dict], title: str = "Method") -> str:
    """Rows (method → scores) rendered like the paper's Table 1."""
    lines = [f"| {title} | " + " | ".join(TABLE1_COLUMNS) + " |",
             "|---|" + "---:|" * len(TABLE1_COLUMNS)]
    for name, s in rows.items():
        r = s.row() if isinstance(s, Scores) else s
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.2f}" for c in TABLE1_COLUMNS) + " |")
    return "\n".join(lines)


def table2_markdown(rows: dict[str, dict[str, Scores | dict]]) -> str:
    """Ablations like the paper's Table 2: rows = settings, column groups = datasets (P R F1)."""
    datasets = list(dict.fromkeys(d for r in rows.values() for d in r))
    head = "| Setting | " + " | ".join(f"{d} Pre. | {d} Rec. | {d} F1" for d in datasets) + " |"
    lines = [head, "|---|" + "---:|" * (3 * len(datasets))]
    for name, per_ds in rows.items():
        cells = []
        for d in datasets:
            s = per_ds.get(d)
            if s is None:
                cells += ["–"] * 3
                continue
            r = s.row() if isinstance(s, Scores) else s
            cells += [f"{r['Pre.']:.2f}", f"{r['Rec.']:.2f}", f"{r['F1']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_predictions(path: str | Path, tweets: Iterable[Tweet], pred: Sequence[Sequence[str]]) -> None:
    """CoNLL file of ``token<TAB>gold<TAB>predicted``, one tweet per block with its IMGID line."""
    tweets = list(tweets)
    _check([t.labels for t in tweets], pred)
    blocks = []
    for t, p in zip(tweets, pred):
        blocks.append("\n".join([f"IMGID:{t.id}"] + [f"{w}\t{g}\t{q}" for w, g, q in
                                                    zip(t.tokens, t.labels, p)]))
    atomic_write_text(path, "\n\n".join(blocks) + "\n")


def read_predictions(path: str | Path) -> tuple[list[list[str]], list[list[str]]]:
    """Read back a file of ``write_predictions`` (plain, or gzip-compressed when the name ends in
    ``.gz``): (gold, predicted) label sequences."""
    path = Path(path)
    if path.suffix == ".gz":
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    gold, pred, g, p = [], [], None, None
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("IMGID:"):
            g, p = [], []
            gold.append(g), pred.append(p)
        elif line.strip():
            parts = line.split("\t")
            if len(parts) != 3 or g is None:
                raise ValueError(f"{path}:{lineno}: expected 'token<TAB>gold<TAB>predicted'")
            g.append(parts[1]), p.append(parts[2])
    return gold, pred


# ----------------------------------------------------------------------------------------------
# a model's predictions and scores on prepared examples (``tvolib.inputs.prepare_data``)


def predict_examples(model, examples: list[dict], collate, batch_size: int = 64, device="cpu",
                     precision: str = "fp32", labels=None) -> list[list[str]]:
    """Viterbi label strings for every example (one per word), in ``precision`` ("fp32" | "bf16")."""
    return predict_visual_variants(model, examples, {"": collate}, batch_size, device, precision, labels)[""]


def predict_visual_variants(model, examples: list[dict], collates: dict, batch_size: int = 64, device="cpu",
                            precision: str = "fp32", labels=None) -> dict[str, list[list[str]]]:
    """``predict_examples`` once per collate of ``collates`` (name -> collate), for collates that differ
    only in the visual input (e.g. the missing-inputs evaluation's ``no_visual``): T does not depend
    on V, so the encoder runs once a batch and the visual branch once per collate. Batches are
    those ``predict_examples`` makes, so each name's predictions are the same as its own pass."""
    labels = LABELS if labels is None else labels
    model.eval()
    device = torch.device(device)
    shared = len(collates) > 1
    if shared and not hasattr(model, "text_features"):
        raise ValueError("several visual inputs need a model with a visual branch (TVOMNER)")
    # batches of similar length pad less; the predictions go back to the examples' order
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].get("input_ids") or examples[i].get("labels") or ()))
    preds: dict[str, list] = {name: [None] * len(examples) for name in collates}
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            chunk = [examples[k] for k in idx]
            text = None
            for name, collate in collates.items():
                batch = to_device(collate(chunk), device)
                batch.pop("labels", None)
                with autocast(device, precision):
                    if not shared:
                        ids = model.decode(batch)
                    else:
                        text = model.text_features(batch) if text is None else text
                        out = model.emissions(batch, text=text)
                        ids = model.crf.decode(out["emissions"], mask=out["word_mask"])   # = TVOMNER.decode
                for k, seq in zip(idx, ids):
                    preds[name][k] = [labels[j] for j in seq]
    return preds


def evaluate(model, examples: list[dict], collate, batch_size: int = 64, device="cpu",
             precision: str = "fp32") -> tuple[Scores, list[list[str]]]:
    """Span scores of ``model`` on labelled examples, and its predictions."""
    pred = predict_examples(model, examples, collate, batch_size, device, precision)
    return score_examples(examples, pred), pred


def score_examples(examples: list[dict], pred: Sequence[Sequence[str]]) -> Scores:
    """Span scores of predictions for labelled model examples (``labels``: label ids)."""
    return score([[LABELS[j] for j in e["labels"]] for e in examples], pred)


class ScoringPasses:
    """The outputs of the scoring passes of one ``checkpoint`` folder, each computed once.

    Scoring a run after training is a dozen passes over test and valid (an hour with MPNet-base on
    one CPU core); each pass's output is kept in ``<folder>/<name>.json`` with the identity of the
    weights it came from, so a scoring that was interrupted resumes with the next pass and a pass of
    other weights is never reused."""

    def __init__(self, folder: Path, checkpoint: Path, best_epoch: int, best_valid_f1: float):
        weights = (Path(checkpoint) / "model.safetensors").stat()
        self.folder = Path(folder)
        self.key = {"best_epoch": best_epoch, "best_valid_f1": best_valid_f1,
                    "weights_bytes": weights.st_size, "weights_mtime_ns": weights.st_mtime_ns}

    def _kept(self, name: str):
        try:
            record = json.loads((self.folder / f"{name}.json").read_text(encoding="utf-8"))
            if record["checkpoint"] == self.key:
                return True, record["output"]
        except (OSError, ValueError, KeyError, TypeError):
            pass   # not scored yet, or by other weights: compute it
        return False, None

    def _keep(self, name: str, output) -> None:
        atomic_write_json(self.folder / f"{name}.json", {"checkpoint": self.key, "output": output}, indent=None)

    def __call__(self, name: str, compute):
        """The output of pass ``name``: kept, or ``compute()`` now and kept."""
        return self.several((name,), lambda: {name: compute()})[name]

    def several(self, names, compute) -> dict:
        """The outputs of passes computed together (``compute()`` -> {name: output}), when any is not kept."""
        kept = {n: self._kept(n) for n in names}
        if all(ok for ok, _ in kept.values()):
            return {n: out for n, (_, out) in kept.items()}
        outputs = compute()
        for n in names:
            self._keep(n, outputs[n])
        return {n: outputs[n] for n in names}


def type_confusion(gold: list[list[str]], pred: list[list[str]]) -> tuple[list[str], list[list[int]]]:
    """Entity-type confusion over spans: rows = gold type (+ "none" for spurious predictions),
    columns = predicted type at the same span (+ "none" when the gold span was not predicted with
    exactly these boundaries). Returns (names, matrix)."""
    names = list(ENTITY_TYPES) + ["none"]
    pos = {n: i for i, n in enumerate(names)}
    m = [[0] * len(names) for _ in names]
    for g, p in zip(gold, pred):
        gs = {(s, e): t for s, e, t in entity_spans(g)}
        ps = {(s, e): t for s, e, t in entity_spans(p)}
        for span, t in gs.items():
            m[pos[t]][pos[ps.get(span, "none")]] += 1
        for span, t in ps.items():
            if span not in gs:
                m[pos["none"]][pos[t]] += 1
    return names, m
