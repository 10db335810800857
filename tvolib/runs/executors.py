"""Where the runs of a batch execute: a local process pool (the default), or jobs submitted with
submitit, to Slurm or to submitit's local executor (real processes on this machine, the same code
path as a Slurm submission).

A submitted job runs exactly the child command of the local pool, ``python -m tvolib.runs.child
<run_dir>/launch.json`` in the repository with the same environment (``OMP_NUM_THREADS`` ...), its
output appended to the run's ``run.log``; so the run's lock, resume and artifact copying are the same
code. The batch polls the jobs as it polls its child processes. Job scripts and the jobs' own
output go to ``<runs_dir>/<name>/submitit/`` (``folder``); the job id is written to the run's
``launch.json`` and ``run.log``.

The ``executor`` mapping of a parameters file (every key optional; the command line overrides it)::

    executor:
      kind: slurm               # local (default) | slurm | submitit-local
      partition: gpu            # Slurm partition
      gpus_per_node: 1
      cpus_per_task: 4          # default: the file's ``threads``
      mem_gb: 32
      timeout_min: 240          # the job's time limit (default 240)
      folder: null              # default <runs_dir>/<name>/submitit
      slurm: {account: nlp, qos: normal, setup: ["module load cuda"]}   # other submitit Slurm parameters
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

KINDS = ("local", "slurm", "submitit-local")
DEFAULT_TIMEOUT_MIN = 240


@dataclass
class ExecutorConfig:
    kind: str = "local"
    partition: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = DEFAULT_TIMEOUT_MIN
    folder: str | None = None
    slurm: dict = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, m: dict | None, where: str) -> "ExecutorConfig":
        """The ``executor`` mapping of a parameters file; a bad one is a ``SystemExit`` naming ``where``."""
        m = dict(m or {})
        keys = [f.name for f in fields(cls)]
        unknown = sorted(set(m) - set(keys))
        if unknown:
            raise SystemExit(f"{where}: executor: unknown key(s) {unknown}; it has {keys}")
        cfg = cls(**{k: v for k, v in m.items() if v is not None})
        cfg.check(where)
        return cfg

    def replace(self, **overrides) -> "ExecutorConfig":
        """This config with the command line's values (``None``: not given) in place of its own."""
        return ExecutorConfig(**{**asdict(self), **{k: v for k, v in overrides.items() if v is not None}})

    def check(self, where: str) -> None:
        if self.kind not in KINDS:
            raise SystemExit(f"{where}: executor: kind {self.kind!r} is not one of {list(KINDS)}")
        for name in ("gpus_per_node", "cpus_per_task", "timeout_min", "mem_gb"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                                  or (name != "mem_gb" and v != int(v))):
                raise SystemExit(f"{where}: executor: {name} must be a non-negative "
                                 f"{'number' if name == 'mem_gb' else 'integer'}, got {v!r}")
        if not isinstance(self.slurm, dict):
            raise SystemExit(f"{where}: executor: slurm must map submitit's Slurm parameters to values")
        try:
            from submitit.slurm.slurm import _get_default_parameters
        except ImportError:                       # said when a job is to be submitted
            return
        valid = set(_get_default_parameters()) - {"job_name", "partition", "time", "gpus_per_node",
                                                  "cpus_per_task", "mem", "stderr_to_stdout", "map_count"}
        bad = sorted(set(self.slurm) - valid)
        if bad:
            raise SystemExit(f"{where}: executor: slurm: unknown Slurm parameter(s) {bad}; submitit's are "
                             f"{sorted(valid)} (partition, GPUs, CPUs, memory and time have their own keys)")

    def describe(self) -> str:
        if self.kind == "local":
            return "local process pool"
        parts = [f"partition {self.partition}" if self.partition else "",
                 f"{self.gpus_per_node} GPU(s)" if self.gpus_per_node is not None else "",
                 f"{self.cpus_per_task} CPU(s)" if self.cpus_per_task is not None else "",
                 f"{self.mem_gb:g} GB" if self.mem_gb is not None else "", f"{self.timeout_min} min",
                 *(f"{k}={v}" for k, v in self.slurm.items())]
        return f"{self.kind} jobs ({', '.join(p for p in parts if p)})"

    def parameters(self) -> dict:
        """The ``update_parameters`` arguments of a submitit ``AutoExecutor``: the shared ones, and
        the Slurm ones prefixed ``slurm_`` (ignored by the local executor)."""
        out = {"timeout_min": int(self.timeout_min), "gpus_per_node": self.gpus_per_node,
               "cpus_per_task": self.cpus_per_task, "mem_gb": self.mem_gb, "stderr_to_stdout": True,
               "slurm_partition": self.partition, **{f"slurm_{k}": v for k, v in self.slurm.items()}}
        return {k: v for k, v in out.items() if v is not None}


def make_executor(cfg: ExecutorConfig, folder: Path):
    """The submitit executor of ``cfg`` (not ``local``), its parameters set; submits nothing."""
    try:
        import submitit
    except ImportError:
        raise SystemExit(f"--executor {cfg.kind} needs submitit: pip install -e '.[cluster]'") from None
    if cfg.kind == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
        raise SystemExit("--executor slurm: no Slurm here (srun not found); start the batch on a machine "
                         "of the cluster, e.g. its login node")
    ex = submitit.AutoExecutor(folder=str(folder), cluster="local" if cfg.kind == "submitit-local" else "slurm")
    ex.update_parameters(**cfg.parameters())
    return ex


def job_main(command: list[str], log: str, cwd: str, env: dict) -> int:
    """A submitted job: the run's child ``command``, as the local pool starts it; its exit status."""
    job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or "?"
    with open(log, "ab") as out:
        out.write(f"[runs] job {job_id} on {socket.gethostname()}\n".encode())
        out.flush()
        child = subprocess.Popen(command, cwd=cwd,
                                 stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
        try:
            code = child.wait()
        finally:                                  # the job cancelled: stop the run as the local pool does
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
        if code < 0:
            out.write(f"[runs] job {job_id}: the run was stopped by {signal.Signals(-code).name} (the job's time "
                      f"limit, or a cancel); the same command again resumes it\n".encode())
        return code


class Submitted:
    """A submitted run as the batch polls it: ``poll()`` is None while the job is queued or running,
    then the child's exit status (1 when the job ended without one: cancelled, timed out, node lost,
    said in ``run.log``); ``terminate()`` cancels the job."""

    def __init__(self, job, log: Path):
        self.job, self.log, self.code = job, log, None

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    def queued(self) -> bool:
        try:
            return self.job.state in ("PENDING", "CONFIGURING", "REQUEUED")
        except Exception:                         # sacct unavailable for a moment: not known to be queued
            return False

    def poll(self) -> int | None:
        if self.code is not None:
            return self.code
        if not self.job.done():
            return None
        exc = self.job.exception()
        if exc is None:
            self.code = int(self.job.result())
        else:
            lines = [l.strip() for l in str(exc).splitlines() if l.strip() and not set(l.strip()) <= {"-"}]
            with open(self.log, "a") as f:
                f.write(f"[runs] job {self.job_id} ended without an exit status: {' '.join(lines[:3])[:400]} "
                        f"(job output: {self.job.paths.stdout})\n")
            self.code = 1
        return self.code

    def terminate(self) -> None:
        self.job.cancel(check=False)


def submit(executor, name: str, command: list[str], log: Path, cwd: Path, env: dict) -> Submitted:
    """Submit one run's child ``command`` as a job named ``name``."""
    executor.update_parameters(name=name)
    return Submitted(executor.submit(job_main, command, str(log.resolve()), str(cwd), env), log)
