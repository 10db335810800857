"""How far a training run is, read from what the trainer writes into its run folder: ``prepared.json``
(inputs ready), ``history.json`` (one record per finished epoch), ``progress.json`` (the epoch under
way: step, steps, seconds so far) and ``scoring/`` (the passes over test and valid once training
ended). The batch's status lines and a run's own log both show it."""
from __future__ import annotations

import json
from pathlib import Path


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def training_progress(run_dir: Path, epochs: int | str | None = None) -> str:
    """``epoch 2/4 done (valid F1 80.10, 81.30; 12 min an epoch); epoch 3: step 200/250, about 8 min
    left``: the finished epochs with their valid F1 and mean training time, then the epoch under way
    with the minutes left at its pace so far; before that ``preparing inputs`` or ``training epoch 1``."""
    run_dir = Path(run_dir)
    if not (run_dir / "prepared.json").exists():
        return "preparing inputs"
    h, now = _read(run_dir / "history.json") or [], _read(run_dir / "progress.json")
    current = bool(now) and now.get("epoch") == len(h) + 1 and bool(now.get("step"))
    if current:
        left = (now["steps"] - now["step"]) * now["seconds"] / now["step"] / 60
        under_way = f"epoch {now['epoch']}: step {now['step']}/{now['steps']}, about {left:.0f} min left"
    else:
        under_way = f"training epoch {len(h) + 1}"
    if not h:
        return under_way
    secs = [e["train_seconds"] for e in h if e.get("train_seconds")]
    pace = f"; {sum(secs) / len(secs) / 60:.0f} min an epoch" if secs else ""
    done = f"epoch {len(h)}/{epochs or '?'} done (valid F1 {', '.join('%.2f' % e['valid_f1'] for e in h)}{pace})"
    scored = sorted((run_dir / "scoring").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    if scored:
        return done + f"; scoring: {len(scored)} pass{'es' if len(scored) > 1 else ''} done, the last {scored[-1].stem}"
    return done + (f"; {under_way}" if current else "")
