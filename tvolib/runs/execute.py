"""Running the runs of a plan: one child process per run (``python -m tvolib.runs.child``),
``jobs`` at a time, each executing the run notebook with papermill. The child runs in a local
process, or in a job submitted with submitit (Slurm, or submitit's local executor:
``tvolib.runs.executors``), which runs the same child command; the batch polls both alike.

Each child holds ``<run_dir>/run.lock`` (``filelock``) while it runs, so a run in progress is never
started twice: a second batch, or the same command again after its batch was killed alone, finds
the lock held, leaves the run to its holder and says so. At most one run prepares its inputs at a
time (they share the caches; ``prepared.json`` in the run folder says a run is done with them);
training overlaps. A failed run is reported with its notebook, cell and error and the others go on.
A batch's counts are of the runs it ran itself; runs another batch holds are named apart. A child
that finds its run finished once it holds the lock (a job queued twice, by two batches) leaves it.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from ..cache import atomic_write_json
from .child import FINISHED, HELD, child_command, held_elsewhere, lock_path
from .notebook import REPO
from .executors import ExecutorConfig, make_executor, submit
from .identity import classify
from .plan import NOTEBOOK, REPORTS, Plan, Run, write_manifests
from .progress import training_progress
from .tables import write_tables

log = logging.getLogger(__name__)


def _progress(run: Run) -> str:
    """A run's status line: its place in a cluster's queue, else how far its training is."""
    if hasattr(run.proc, "queued") and run.proc.queued():
        return f"queued (job {run.proc.job_id})"
    return training_progress(run.run_dir, run.params["recipe"].get("epochs"))


def _clock(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _held_note(runs: list[Run]) -> str:
    held = [r for r in runs if r.state == "held"]
    if not held:
        return ""
    return "; held by another batch (its lock), not counted: " + ", ".join(
        f"{r.label} ({lock_path(r.run_dir)})" for r in held)


def child_env(r: Run) -> dict:
    """What a run's child process gets beside the environment it starts in."""
    return {"OMP_NUM_THREADS": str(r.params["num_threads"]), "MKL_NUM_THREADS": str(r.params["num_threads"]),
            "PYTHONUNBUFFERED": "1"}


def start(r: Run, notebook: Path, every: float, executor=None) -> None:
    """Start ``r``'s child process, or submit it as a job to the submitit ``executor``; state
    ``held`` (touching nothing) if another process runs it, ``failed`` if it cannot be submitted."""
    r.run_dir.mkdir(parents=True, exist_ok=True)
    if held_elsewhere(r.run_dir):
        r.state, r.error = "held", f"running in another process (lock {lock_path(r.run_dir)} is held), not run here"
        return
    for stale in ("prepared.json", "progress.json"):      # a stopped attempt's: the live line reads them
        (r.run_dir / stale).unlink(missing_ok=True)
    atomic_write_json(r.run_dir / "run_identity.json", r.identity)
    launch = r.run_dir / "launch.json"
    atomic_write_json(launch, {"dataset": r.dataset, "setting": r.setting, "seed": r.seed, "run_dir": str(r.run_dir),
                               "artifacts": str(r.artifacts), "identity": r.identity, "params": r.params,
                               "notebook": str(notebook), "every": every})
    r.started = time.time()
    if executor is not None:
        try:
            r.proc = submit(executor, f"tvo-{r.run_dir.parents[1].name}-{r.dataset}-{r.run_dir.name}",
                            child_command(launch.resolve()),
                            r.run_dir / "run.log", REPO, child_env(r))
        except Exception as e:                    # sbatch refused it (partition, time limit...)
            r.state, r.error = "failed", f"not submitted: {type(e).__name__}: {str(e).strip()[:500]}"
            return
        atomic_write_json(launch, {**json.loads(launch.read_text()), "job_id": r.proc.job_id})
        with open(r.run_dir / "run.log", "a") as f:
            f.write(f"[runs] submitted as job {r.proc.job_id} (job output: {r.proc.job.paths.stdout})\n")
        r.log_file, r.state = None, "running"
        return
    r.log_file = open(r.run_dir / "run.log", "ab")
    r.proc = subprocess.Popen(child_command(launch), cwd=REPO,
                              stdout=r.log_file, stderr=subprocess.STDOUT, env={**os.environ, **child_env(r)})
    r.state = "running"


def _failure(r: Run, code: int, notebook: Path = NOTEBOOK) -> str:
    """The notebook, cell and error of a failed run (its report record), else the log's last line."""
    rec = r.run_dir / f"{notebook.stem}.json"
    where = f"; partial notebook {r.run_dir / notebook.name}, log {r.run_dir / 'run.log'}"
    try:
        err = json.loads(rec.read_text()).get("error")
        if err and rec.stat().st_mtime >= r.started - 1:
            return err + where
    except (OSError, ValueError):
        pass
    try:
        tail = [l for l in (r.run_dir / "run.log").read_text(errors="replace").splitlines() if l.strip()][-1]
    except (OSError, IndexError):
        tail = ""
    return f"exit status {code}: {tail[:300]}{where}"


def _tables(exp_dir: Path) -> None:
    """Rewrite the tables; a problem there is reported and never stops the runs."""
    try:
        write_tables(exp_dir)
    except Exception as e:
        log.warning("tables not written: %s: %s", type(e).__name__, e)


def _ended(r: Run, code: int, notebook: Path) -> None:
    if r.log_file:
        r.log_file.close()
    if code == 0:
        r.state = "done"
        m = json.loads((r.artifacts / "metrics.json").read_text())
        log.info("done %s: test F1 %.2f (best valid epoch %s) in %s", r.label, m["test"]["F1"], m["best_epoch"],
                 _clock(time.time() - r.started))
    elif code == HELD:
        r.state, r.error = "held", f"running in another process (lock {lock_path(r.run_dir)} is held), not run here"
        log.info("%s: %s", r.label, r.error)
    elif code == FINISHED:
        r.state, r.error = "skip", "finished by another process meanwhile, not run again"
        log.info("%s: %s", r.label, r.error)
    else:
        r.state, r.error = "failed", _failure(r, code, notebook)
        log.error("FAILED %s: %s", r.label, r.error)


def execute(p: Plan, jobs: int = 1, every: float = 30, notebook: Path = NOTEBOOK, reports_dir: Path = REPORTS,
            executor: ExecutorConfig | None = None) -> int:
    """Run every todo run of ``p``, ``jobs`` at a time, in local processes or as submitit jobs
    (``executor``, default the plan's); returns the number of failed runs."""
    write_manifests(p, reports_dir)
    for r in p.runs:
        classify(r)
    todo = [r for r in p.runs if r.state == "todo"]
    started: list[Run] = []                       # the runs this batch ran itself
    log.info("%s: %d runs, %d finished before (skipped), %d to run, %d at a time", p.name, len(p.runs),
             sum(r.state == "skip" for r in p.runs), len(todo), jobs)
    for r in p.runs:
        if r.state == "failed":
            log.error("FAILED %s: %s", r.label, r.error)
        elif r.error.startswith("reused from"):
            log.info("%s: %s (same parameters)", r.label, r.error)
    cfg, sub = executor or p.executor, None
    if cfg.kind != "local" and todo:
        cfg = cfg.replace(cpus_per_task=cfg.cpus_per_task or todo[0].params["num_threads"])
        folder = Path(cfg.folder) if cfg.folder else p.root / "submitit"
        sub = make_executor(cfg, folder)
        log.info("runs go to %s; job scripts and output: %s", cfg.describe(), folder)
    running: list[Run] = []
    t0, last_live = time.time(), time.time()

    def status() -> str:
        mine = [r for r in started if r.state not in ("held", "skip")]
        done, failed = sum(r.state == "done" for r in mine), sum(r.state == "failed" for r in mine)
        return (f"this batch: {done + failed}/{len(mine) + len(todo)} runs ended ({done} done, {failed} failed), "
                f"{len(running)} running, {len(todo)} waiting, {_clock(time.time() - t0)}{_held_note(p.runs)}")

    def stop(signum, frame):                      # a kill of this process alone stops its runs too
        for r in running:
            if r.proc and r.proc.poll() is None:
                r.proc.terminate()
        raise SystemExit(f"stopped by signal {signum}; run the same command again to resume")

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while todo or running:
            # start runs: at most one of them is still preparing inputs (shared caches)
            while todo and len(running) < jobs and all((r.run_dir / "prepared.json").exists() for r in running):
                r = todo.pop(0)
                classify(r)             # finished meanwhile, by another batch?
                if r.state != "todo":
                    log.info("%s: %s, not run", r.label, r.error or "finished meanwhile")
                    continue
                start(r, notebook, every, sub)
                if r.state == "held":
                    log.info("%s: %s", r.label, r.error)
                    continue
                started.append(r)
                if r.state == "failed":           # a job that could not be submitted
                    log.error("FAILED %s: %s", r.label, r.error)
                    continue
                running.append(r)
                job = f"; job {r.proc.job_id}" if sub else ""
                log.info("start %s -> %s (log: %s%s)", r.label, r.run_dir, r.run_dir / "run.log", job)
            time.sleep(0.5)
            for r in list(running):
                code = r.proc.poll()
                if code is None:
                    continue
                running.remove(r)
                _ended(r, code, notebook)
                _tables(reports_dir / p.name)
                log.info(status())
            if running and time.time() - last_live >= every:
                last_live = time.time()
                log.info(status())
                for r in running:
                    log.info("  %s: %s, %s", r.label, _clock(time.time() - r.started), _progress(r))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    _tables(reports_dir / p.name)
    log.info(status())
    for r in p.runs:
        if r.state == "failed":
            log.error("FAILED %s: %s", r.label, r.error)
    log.info("tables: %s", reports_dir / p.name / "table2.md")
    return sum(r.state == "failed" for r in p.runs)
