"""The child process of one run, ``python -m tvolib.runs.child <run_dir>/launch.json``: take the run's
lock, execute the run notebook, copy the artifacts. Each execution appends its start (commit,
processor, the epoch it resumes after) and its end to ``executions.jsonl``, so that a run stopped and
resumed, perhaps on another machine or commit, says so in its provenance. The local pool, a submitted
job and ``--rerun`` all start this same command. It imports only what one run needs (not the tables,
the comparisons or the command line), since every run pays for its imports once more.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from .artifacts import EXECUTIONS, collect
from .identity import classify
from .notebook import REPO, NotebookFailed, git_commit, machine, run_notebook
from .plan import Run
from .progress import training_progress

log = logging.getLogger("tvolib.runs.child")      # __name__ is "__main__" when run with -m
LOCK = "run.lock"
HELD = 75          # exit status: another process holds the run's lock (EX_TEMPFAIL)
FINISHED = 76      # exit status: the run was finished by another process before it got the lock


def child_command(launch: str | Path) -> list[str]:
    """The command line of a run's child process."""
    return [sys.executable, "-m", "tvolib.runs.child", str(launch)]


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOCK


def held_elsewhere(run_dir: Path) -> bool:
    """True while another process holds the run's lock."""
    lock = FileLock(lock_path(run_dir))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def log_execution(run_dir: Path, record: dict) -> None:
    """Append one line to the run's ``executions.jsonl`` (a line at a time: a killed run keeps the
    lines before)."""
    with open(Path(run_dir) / EXECUTIONS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def run_one(launch: Path) -> int:
    """Run the run that ``launch`` describes. Exit status ``HELD`` (touching nothing) when another
    process holds the lock, ``FINISHED`` when the run was finished meanwhile (a job queued by two
    batches: never run again), 1 when the notebook failed."""
    spec = json.loads(Path(launch).read_text())
    run = Run(spec["dataset"], spec["setting"], spec["seed"], Path(spec["run_dir"]), Path(spec["artifacts"]),
              spec["identity"], spec["params"])
    lock = FileLock(lock_path(run.run_dir))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.error("%s is held by another process; not run here", lock_path(run.run_dir))
        return HELD
    try:
        classify(run)
        if run.state == "skip":
            log.info("%s was finished by another process meanwhile; not run again", run.run_dir)
            return FINISHED
        history, git = run.run_dir / "history.json", git_commit()
        log_execution(run.run_dir, {
            "event": "start", "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "after_epoch": len(json.loads(history.read_text())) if history.exists() else 0,
            "commit": git.get("commit"), "dirty": git.get("dirty"), "machine": machine()})
        try:
            rec = run_notebook(Path(spec["notebook"]), run.run_dir, run.params, REPO, html=False,
                               every=spec.get("every") or None,
                               detail=lambda: training_progress(run.run_dir, run.params["recipe"].get("epochs")))
        except NotebookFailed as e:
            log_execution(run.run_dir, {"event": "end", "status": "failed", "error": str(e)})
            log.error("FAILED %s", e)
            return 1
        log_execution(run.run_dir, {"event": "end", "status": "ok", "wall_seconds": rec["wall_seconds"]})
        collect(run, rec)
        return 0
    finally:
        lock.release()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tvolib.runs.child <run_dir>/launch.json (started by python -m tvolib.runs)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="[runs] %(message)s")   # papermill's INFO lines: not shown
    logging.getLogger("tvolib").setLevel(logging.INFO)
    return run_one(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
