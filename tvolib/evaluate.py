"""Span-level evaluation with seqeval, in the layout of the paper's Table 1 and Table 2.

Scores are seqeval's default mode (IOB2, lenient: an ``I-X`` after ``O`` starts an entity), the
same rule as ``tvolib.data.entity_spans``. Figures are percentages with two decimals, as in the
paper: ``PER LOC ORG MISC`` F1, then micro ``Pre. Rec. F1``.
"""
from __future__ import annotations

import gzip
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from seqeval.metrics import classification_report
from seqeval.metrics.sequence_labeling import get_entities

from .cache import atomic_write_text
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
    return predict_visual_variants(model, examples, {"": collate}, batch_size, device, precision, labels)[0][""]


@dataclass(frozen=True)
class Variant:
    """One way of running the visual branch over a batch's T: the batch's ``collate`` (its visual
    input) and the gate of Eq. 5 (``None``: the learned one; 1.0: T alone; 0.0: C alone)."""
    collate: Callable
    gate: float | None = None


def predict_visual_variants(model, examples: list[dict], variants: dict, batch_size: int = 64, device="cpu",
                            precision: str = "fp32", labels=None, diagnose: str | None = None):
    """``predict_examples`` once per variant of ``variants`` (name -> collate or ``Variant``), for
    variants that differ only in the visual input or the gate (the missing-inputs evaluation's
    ``no_visual``, the branch probe): T does not depend on V, so the encoder runs once a batch and
    the visual branch once per variant. Batches are those ``predict_examples`` makes, so each name's
    predictions are the same as its own pass.

    Returns ``(predictions by name, diagnostics)``: for variant ``diagnose``, per example its gate
    g (Eq. 4, mean over words), fusion weights ω (Eq. 3) and the share of its words' attention on V."""
    labels = LABELS if labels is None else labels
    variants = {n: v if isinstance(v, Variant) else Variant(v) for n, v in variants.items()}
    model.eval()
    device = torch.device(device)
    shared = len(variants) > 1 or diagnose is not None or any(v.gate is not None for v in variants.values())
    if shared and getattr(model, "cff", None) is None:
        raise ValueError("visual variants and diagnostics need a model with a visual branch (TVOMNER)")
    # batches of similar length pad less; the predictions go back to the examples' order
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].get("input_ids") or examples[i].get("labels") or ()))
    preds: dict[str, list] = {name: [None] * len(examples) for name in variants}
    diag: list = [None] * len(examples) if diagnose is not None else []
    diagnosed = variants[diagnose] if diagnose is not None else None
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            chunk = [examples[k] for k in idx]
            text, done = None, {}
            for name, v in variants.items():
                if v in done:                       # the same variant under another name
                    for k in idx:
                        preds[name][k] = preds[done[v]][k]
                    continue
                done[v] = name
                batch = to_device(v.collate(chunk), device)
                batch.pop("labels", None)
                if not shared:
                    with autocast(device, precision):
                        ids = model.decode(batch)
                else:
                    model.cff.gate_override = v.gate
                    try:
                        with autocast(device, precision):
                            text = model.text_features(batch) if text is None else text
                            out = model.emissions(batch, text=text)
                        ids = model.crf.decode(out["emissions"].float(), mask=out["word_mask"])   # = TVOMNER.decode
                    finally:
                        model.cff.gate_override = None
                    if v == diagnosed:
                        gate = out["gate"].float().view(len(chunk), -1).mean(-1).tolist()
                        omega = out["fusion_weights"].float().tolist()
                        attn = [None] * len(chunk)
                        if out.get("visual_attn") is not None:      # (B, 1 + W): drop the t_cls query
                            va, m = out["visual_attn"][:, 1:].float(), out["word_mask"]
                            attn = ((va * m).sum(1) / m.sum(1).clamp(min=1)).tolist()
                        for k, g, w, a in zip(idx, gate, omega, attn):
                            diag[k] = {"gate": g, "omega": w, "visual_attn": a}
                for k, seq in zip(idx, ids):
                    preds[name][k] = [labels[j] for j in seq]
    return preds, diag


def evaluate(model, examples: list[dict], collate, batch_size: int = 64, device="cpu",
             precision: str = "fp32") -> tuple[Scores, list[list[str]]]:
    """Span scores of ``model`` on labelled examples, and its predictions."""
    pred = predict_examples(model, examples, collate, batch_size, device, precision)
    return score_examples(examples, pred), pred


def score_examples(examples: list[dict], pred: Sequence[Sequence[str]]) -> Scores:
    """Span scores of predictions for labelled model examples (``labels``: label ids)."""
    return score([[LABELS[j] for j in e["labels"]] for e in examples], pred)


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
