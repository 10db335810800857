"""What a finished run leaves in ``reports/experiments/<name>/<dataset>/<setting>-s<seed>/``
(committed): ``metrics.json``, the test predictions (CoNLL, gzip) and ``provenance.json``
(identity, configs, data checksums, git commit, package versions, wall time, every execution of a
run resumed after a stop), written last.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from ..cache import atomic_write_bytes, atomic_write_json
from .notebook import REPO, data_checksums
from .plan import ARTIFACTS, Run

EXECUTIONS = "executions.jsonl"      # appended by the run's child process, a start and an end line each


def executions(run_dir: Path) -> list[dict]:
    """The run's executions, oldest first: when each started, after which finished epoch (0: from
    the start), on which commit and processor, and how it ended (``"interrupted"``: killed, no end
    line)."""
    out = []
    path = Path(run_dir) / EXECUTIONS
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        rec = json.loads(line)
        if rec.pop("event") == "start":
            out.append({**rec, "status": "interrupted"})
        elif out:
            out[-1].update(rec)
    return out


def data_files(run_dir: Path) -> dict:
    """Checksums of the data a run read, from its ``config.json``: the three splits, captions,
    phrases, boxes and knowledge file its data config names, and the knowledge resources (per-tweet
    file, the local base's inputs) with the hashes recorded under ``"resources"`` when the run was
    resolved."""
    cfg = json.loads((run_dir / "config.json").read_text())
    files = {k: cfg["data"].get(k) for k in ("data_dir", "captions", "phrases", "boxes", "knowledge_file")}
    sums = data_checksums({k: v for k, v in files.items() if v}, REPO)
    knowledge = (cfg.get("resources") or {}).get("knowledge") or {}
    for sha in (knowledge.get("knowledge_file") or {}).values():
        sums["knowledge_file"] = sha
    for i, (_, sha) in enumerate(sorted((knowledge.get("kb_inputs") or {}).items())):
        sums[f"kb{i}"] = sha
    return sums


def collect(run: Run, record: dict) -> None:
    """Copy a finished run's small artifacts into ``run.artifacts``; ``record`` is the report record
    of its notebook (``07_run.json``)."""
    run.artifacts.mkdir(parents=True, exist_ok=True)
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    atomic_write_json(run.artifacts / "metrics.json", metrics)
    pred = (run.run_dir / "test_predictions.txt").read_bytes()
    atomic_write_bytes(run.artifacts / "test_predictions.conll.gz", gzip.compress(pred, mtime=0))
    for f in sorted(run.run_dir.glob("test_predictions.*.txt")):     # with side inputs left out
        atomic_write_bytes(run.artifacts / f"{f.stem}.conll.gz", gzip.compress(f.read_bytes(), mtime=0))
    config = json.loads((run.run_dir / "config.json").read_text())
    history = run.run_dir / "history.json"
    epochs = json.loads(history.read_text()) if history.exists() else []
    # `started`, `wall_seconds`, `git` and `machine` are the last execution's; `executions` lists them all
    prov = {"identity": run.identity, "run_dir": str(run.run_dir), "configs": config,
            "data_files": data_files(run.run_dir),
            **{k: record.get(k) for k in ("notebook", "started", "wall_seconds", "parameters", "git", "packages",
                                          "platform", "machine", "command")},
            "train_seconds": round(sum(e.get("train_seconds") or 0 for e in epochs), 1),
            "executions": executions(run.run_dir)}
    atomic_write_json(run.artifacts / "provenance.json", prov)


def reuse(run: Run, source: Path) -> None:
    """Copy another experiment's finished run into ``run.artifacts``; its provenance names the source
    (whose executed notebook and checkpoints are that run's)."""
    run.artifacts.mkdir(parents=True, exist_ok=True)
    for a in (a for a in ARTIFACTS if a != "provenance.json"):   # the provenance gets `reused_from`
        atomic_write_bytes(run.artifacts / a, (source / a).read_bytes())
    prov = json.loads((source / "provenance.json").read_text())
    if "reused_from" not in prov:              # a copy of a copy names the folder of the executed run
        try:
            prov["reused_from"] = str(source.resolve().relative_to(REPO))
        except ValueError:
            prov["reused_from"] = str(source)
    atomic_write_json(run.artifacts / "provenance.json", prov)
