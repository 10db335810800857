"""Scoring a run's selected checkpoint: test, the branch probe, and test and valid with side inputs
left out of every tweet (the missing-inputs evaluation: what new tweets without them get; valid, so
that a side-input dropout probability is chosen without test).

Passes that differ only in the visual input or the gate of Eq. 5 share one encoder pass
(``tvolib.evaluate.predict_visual_variants``; ``pass_groups`` forms the groups): test with
``no_visual`` and the probes, ``no_knowledge`` with ``neither``. Each pass's output is kept in
``<run>/scoring/`` (``ScoringPasses``), so a run killed while scoring resumes with the next pass.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .cache import atomic_write_json
from .evaluate import predict_visual_variants
from .inputs import LEFT_OUT, Prepared, withheld
from .probing import ProbeResult, probe_result, probe_variants


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


@dataclass
class Scored:
    """A checkpoint's predictions: ``test``; ``left_out`` ``{"test"|"valid": {condition: (examples,
    predictions)}}`` for the conditions of ``LEFT_OUT`` the model can lose; the probe when it has a
    visual branch."""
    test: list[list[str]]
    left_out: dict[str, dict[str, tuple[list[dict], list[list[str]]]]] = field(default_factory=dict)
    probe: ProbeResult | None = None


@dataclass
class PassGroup:
    """Scoring passes over one split that share an encoder pass: the same examples with the same
    knowledge input, ``variants`` (pass name -> collate or ``Variant``) differing only in the visual
    input or the gate of Eq. 5."""
    split: str
    examples: list[dict]
    variants: dict
    conditions: dict[str, str] = field(default_factory=dict)   # LEFT_OUT condition -> its pass name
    test: bool = False      # holds the test pass itself
    probe: bool = False     # holds the branch probe's variants (``probe:*``)

    @property
    def outputs(self) -> list[str]:
        """The names this group's outputs are kept under: its passes, the probe as one summary."""
        return [n for n in self.variants if not n.startswith("probe:")] + (["probe_test"] if self.probe else [])


def pass_groups(model, prepared: Prepared, *, missing_inputs: bool = True, reads_knowledge=None,
                valid_examples: list[dict] | None = None, splits=("test", "valid")) -> list[PassGroup]:
    """The passes that score ``model`` on ``prepared``, one group per encoder pass: test with
    ``no_visual`` and the branch probe (when the model has a visual branch and there is a visual
    input); ``no_knowledge`` with ``neither`` (when it reads knowledge); valid alike, without the test
    pass and the probe. Without ``missing_inputs``, test alone."""
    probing = getattr(model, "cff", None) is not None and prepared.visual is not None
    left_out = {name: lost for name, lost in LEFT_OUT.items() if missing_inputs
                and not ((lost[0] and not reads_knowledge) or (lost[1] and prepared.visual is None))}
    groups = []
    for split in splits:
        for knowledge in (False, True):
            conditions = {n: lost[1] for n, lost in left_out.items() if lost[0] == knowledge}
            full = split == "test" and not knowledge
            if not conditions and not full:
                continue
            ex, collate = withheld(prepared, split, knowledge=knowledge,
                                   examples=valid_examples if split == "valid" else None)
            variants = {"test": collate} if full else {}
            variants |= {f"{split}.{n}": withheld(prepared, split, visual=vis, examples=ex)[1]
                         for n, vis in conditions.items()}
            probe = probing and full
            if probe:
                variants |= probe_variants(prepared.collate, [str(e["id"]) for e in ex], prepared.visual)
            groups.append(PassGroup(split, ex, variants, {n: f"{split}.{n}" for n in conditions}, full, probe))
    return groups


def score_checkpoint(model, prepared: Prepared, passes: ScoringPasses, *, missing_inputs: bool = True,
                     reads_knowledge=None, valid_examples: list[dict] | None = None, batch_size: int = 64,
                     device="cpu", precision: str = "fp32") -> Scored:
    """Predict test (and, with ``missing_inputs``, test and valid with each side input the model reads
    left out) with ``model``, the selected checkpoint, and run the branch probe on test."""
    scored = Scored(test=[], left_out={"test": {}, "valid": {}} if missing_inputs else {})
    for group in pass_groups(model, prepared, missing_inputs=missing_inputs, reads_knowledge=reads_knowledge,
                             valid_examples=valid_examples):
        def compute(g=group):
            out, diag = predict_visual_variants(model, g.examples, g.variants, batch_size, device, precision,
                                                diagnose="probe:learned" if g.probe else None)
            if g.probe:
                out["probe_test"] = probe_result(g.examples, out, diag).to_dict()
            return out

        out = passes.several(group.outputs, compute)
        if group.test:
            scored.test = out["test"]
        if group.probe:
            scored.probe = ProbeResult.from_dict(out["probe_test"])
        for condition, name in group.conditions.items():
            scored.left_out[group.split][condition] = (group.examples, out[name])
    # in LEFT_OUT's order, whatever order the passes ran in
    scored.left_out = {s: {n: c[n] for n in LEFT_OUT if n in c} for s, c in scored.left_out.items()}
    return scored
