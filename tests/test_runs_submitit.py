"""The experiment batch with its runs as submitit jobs (``--executor slurm``): the settings of a
parameters file and of the command line reach the sbatch script, bad ones are refused before
anything runs, and a small batch runs end to end on submitit's local executor (real processes, the
code path of a Slurm submission) with the stand-in run notebook of ``test_experiments``: runs done,
artifacts written, job ids recorded, finished runs never run twice, a run whose lock is held
elsewhere left alone, by the batch and by a job that finds it held or finished once it starts."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import submitit
from filelock import FileLock

from tvolib.runs import execute as runs_execute
from tvolib.runs.child import FINISHED, child_command
from tvolib.runs.executors import ExecutorConfig, job_main, make_executor
from tvolib.runs.notebook import REPO
from tvolib.runs.plan import ARTIFACTS, plan

from test_experiments import cli, fake_notebook, write_params


def main(*argv: str) -> int:
    from tvolib.runs.cli import main as runs_main      # in-process: what `python -m tvolib.runs` does
    return runs_main(list(argv))


@pytest.fixture
def fake_slurm(monkeypatch, tmp_path):
    """A machine with Slurm whose sbatch refuses every job after keeping its script (no sbatch here)."""
    scripts = tmp_path / "sbatch"
    scripts.mkdir()
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(submitit.SlurmExecutor, "_make_submission_command", lambda self, path: [
        "sh", "-c", 'cp "$0" "$1"; echo "sbatch: error: no Slurm in tests" >&2; exit 1', str(path),
        str(scripts / path.name)])
    return scripts


def test_slurm_settings_map_to_submitit_parameters_and_sbatch(tmp_path, fake_slurm, caplog):
    pf = write_params(tmp_path / "p.yaml", ["text-only"], seeds=(1, 2),
                      extra="threads: 2\nexecutor:\n  kind: slurm\n  partition: cpu\n  mem_gb: 16\n"
                            "  timeout_min: 60\n  slurm: {account: nlp, setup: [module load cuda]}\n")
    p = plan(pf, str(tmp_path / "runs"), tmp_path / "reports")
    assert p.executor == ExecutorConfig(kind="slurm", partition="cpu", mem_gb=16, timeout_min=60,
                                        slurm={"account": "nlp", "setup": ["module load cuda"]})
    assert p.executor.parameters() == {"timeout_min": 60, "mem_gb": 16, "stderr_to_stdout": True,
                                       "slurm_partition": "cpu", "slurm_account": "nlp",
                                       "slurm_setup": ["module load cuda"]}
    # the command line overrides the file; the executor's parameters are Slurm's, nothing submitted
    cfg = p.executor.replace(partition="gpu", gpus_per_node=1, timeout_min=120, cpus_per_task=4)
    ex = make_executor(cfg, tmp_path / "folder")
    assert ex.cluster == "slurm"
    assert {k: ex._executor.parameters[k] for k in ("partition", "gpus_per_node", "time", "cpus_per_task", "mem",
                                                     "account")} == {
        "partition": "gpu", "gpus_per_node": 1, "time": 120, "cpus_per_task": 4, "mem": "16GB", "account": "nlp"}
    assert not list(fake_slurm.iterdir())
    # through the command line: one sbatch script per run (the fake sbatch refuses them: each run
    # fails as not submitted, the others go on)
    caplog.set_level("INFO", logger="tvolib.runs")
    assert main("--params", str(pf), "--runs_dir", str(tmp_path / "runs"), "--reports", str(tmp_path / "reports"),
                "--executor", "slurm", "--partition", "gpu", "--gpus", "1", "--time", "120", "--jobs", "2") == 1
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "FAILED sample text-only s1: not submitted: " in log and "no Slurm in tests" in log
    assert "this batch: 2/2 runs ended (0 done, 2 failed)" in log
    scripts = sorted(f.read_text() for f in fake_slurm.iterdir())
    assert len(scripts) == 2
    for seed, text in zip((1, 2), scripts):
        for flag in ("--partition=gpu", "--gpus-per-node=1", "--time=120", "--cpus-per-task=2", "--mem=16GB",
                     "--account=nlp", f"--job-name=tvo-t-sample-text-only-s{seed}"):
            assert f"#SBATCH {flag}\n" in text, (flag, text)
        assert "module load cuda" in text
        assert f"--output={tmp_path / 'runs' / 't' / 'submitit'}/%j_0_log.out" in text


def test_dry_run_names_the_executor(tmp_path, capsys):
    pf = write_params(tmp_path / "p.yaml", ["text-only"], seeds=(1,), extra="executor: {kind: slurm, partition: cpu}\n")
    args = ("--params", str(pf), "--runs_dir", str(tmp_path / "runs"), "--reports", str(tmp_path / "reports"))
    assert main(*args, "--gpus", "1", "--time", "30", "--dry-run") == 0
    assert "executor: slurm jobs (partition cpu, 1 GPU(s), 30 min)" in capsys.readouterr().out
    assert main(*args, "--executor", "local", "--dry-run") == 0
    assert "executor:" not in capsys.readouterr().out


@pytest.mark.parametrize("executor, message", [
    ("{kind: slurm, partitions: gpu}", r"executor: unknown key\(s\) \['partitions'\]"),
    ("{kind: pbs}", "executor: kind 'pbs' is not one of"),
    ("{kind: slurm, gpus_per_node: -1}", "gpus_per_node must be a non-negative integer"),
    ("{kind: slurm, timeout_min: 1.5}", "timeout_min must be a non-negative integer"),
    ("{kind: slurm, slurm: {acount: x}}", r"unknown Slurm parameter\(s\) \['acount'\]"),
    ("{kind: slurm, slurm: {partition: x}}", r"unknown Slurm parameter\(s\) \['partition'\].*own keys"),
    ("slurm", "'executor' must be a mapping"),
])
def test_bad_executor_settings_are_refused_before_anything_runs(tmp_path, executor, message):
    pf = write_params(tmp_path / "p.yaml", ["text-only"], extra=f"executor: {executor}\n")
    with pytest.raises(SystemExit) as e:
        main("--params", str(pf), "--runs_dir", str(tmp_path / "runs"), "--reports", str(tmp_path / "reports"))
    assert re.search(message, str(e.value)) and str(e.value).startswith(str(pf)), str(e.value)
    assert not (tmp_path / "runs").exists()


def test_slurm_needs_slurm(tmp_path, monkeypatch):
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: -1))
    with pytest.raises(SystemExit, match="no Slurm here"):
        make_executor(ExecutorConfig(kind="slurm"), tmp_path)


@pytest.mark.slow
def test_batch_as_submitit_local_jobs_resumes_and_never_runs_a_run_twice(tmp_path):
    fake_notebook(tmp_path / "nb.ipynb")
    pf = write_params(tmp_path / "p.yaml", ["text-only", "tvomner+pgim"], seeds=(1,), epochs=1,
                      extra="executor: {kind: submitit-local, timeout_min: 30}\n")
    runs, art = tmp_path / "runs" / "t" / "sample", tmp_path / "reports" / "t" / "sample"
    held = runs / "tvomner+pgim-s1"
    held.mkdir(parents=True)
    lock = FileLock(held / "run.lock")
    lock.acquire(timeout=0)                      # another batch runs it: left alone
    try:
        r = cli(tmp_path, pf, "--jobs", "2")
    finally:
        lock.release()
    assert r.returncode == 0, r.log
    assert "runs go to submitit-local jobs" in r.log and str(tmp_path / "runs" / "t" / "submitit") in r.log
    assert "[runs] done sample text-only s1" in r.log and "this batch: 1/1 runs ended (1 done, 0 failed)" in r.log
    assert f"held by another batch (its lock), not counted: sample tvomner+pgim s1 ({held / 'run.lock'})" in r.log
    assert sorted(p.name for p in (art / "text-only-s1").iterdir()) == sorted(ARTIFACTS)
    assert not (art / "tvomner+pgim-s1").exists() and not (held / "calls.json").exists()
    job = json.loads((runs / "text-only-s1" / "launch.json").read_text())["job_id"]
    assert f"; job {job})" in r.log
    log = (runs / "text-only-s1" / "run.log").read_text()
    assert f"[runs] submitted as job {job}" in log and f"[runs] job {job} on " in log
    assert (tmp_path / "runs" / "t" / "submitit" / f"{job}_0_log.out").exists()
    # the same command again: the finished run is skipped, the other one runs now
    r = cli(tmp_path, pf, "--jobs", "2")
    assert r.returncode == 0, r.log
    assert "2 runs, 1 finished before (skipped), 1 to run" in r.log and "[runs] start sample text-only" not in r.log
    assert "[runs] done sample tvomner+pgim s1" in r.log
    for run in ("text-only-s1", "tvomner+pgim-s1"):
        assert sorted(p.name for p in (art / run).iterdir()) == sorted(ARTIFACTS)
        assert json.loads((runs / run / "calls.json").read_text()) == [0]       # run once, never twice
    r = cli(tmp_path, pf, "--jobs", "2")
    assert "2 runs, 2 finished before (skipped), 0 to run" in r.log and "[runs] start" not in r.log
    # a job queued twice (by two batches) that starts after the run finished leaves it
    ex = make_executor(ExecutorConfig(kind="submitit-local", timeout_min=10), tmp_path / "jobs")
    launch = runs / "text-only-s1" / "launch.json"
    job = ex.submit(job_main, child_command(launch), str(tmp_path / "again.log"), str(REPO), {"OMP_NUM_THREADS": "1"})
    assert job.result() == FINISHED, (tmp_path / "again.log").read_text()
    assert "finished by another process meanwhile; not run again" in (tmp_path / "again.log").read_text()
    assert json.loads((runs / "text-only-s1" / "calls.json").read_text()) == [0]


@pytest.mark.slow
def test_a_job_that_finds_its_run_held_touches_nothing(tmp_path, monkeypatch, caplog):
    """The lock is taken again by the job once it starts on its node: a run another process took
    between the check and the job's start (a queued job) is left to that process."""
    nb = fake_notebook(tmp_path / "nb.ipynb")
    pf = write_params(tmp_path / "p.yaml", ["text-only"], seeds=(1,), epochs=1)
    p = plan(pf, str(tmp_path / "runs"), tmp_path / "reports")
    run = p.runs[0].run_dir
    run.mkdir(parents=True)
    monkeypatch.setattr(runs_execute, "held_elsewhere", lambda run_dir: False)   # free when submitted...
    caplog.set_level("INFO", logger="tvolib.runs")
    lock = FileLock(run / "run.lock")
    lock.acquire(timeout=0)                                                       # ...taken before it starts
    try:
        assert runs_execute.execute(p, jobs=1, every=1, notebook=nb, reports_dir=tmp_path / "reports",
                                    executor=ExecutorConfig(kind="submitit-local", timeout_min=10)) == 0
    finally:
        lock.release()
    lines = [r.getMessage() for r in caplog.records]
    assert any(l.startswith("sample text-only s1: running in another process") for l in lines), lines
    assert any(l.startswith("this batch: 0/0 runs ended") and "held by another batch" in l for l in lines), lines
    assert "is held by another process; not run here" in (run / "run.log").read_text()
    assert not (run / "calls.json").exists() and not p.runs[0].artifacts.exists()


def test_a_job_ended_without_an_exit_status_is_a_failure_said_in_the_run_log(tmp_path):
    """A cancelled job (or one Slurm stopped at its time limit) has no result: exit status 1, and
    ``run.log`` says which job and where its output is, for the FAILED line."""
    import signal
    import time
    from tvolib.runs.executors import Submitted
    ex = make_executor(ExecutorConfig(kind="submitit-local", timeout_min=10), tmp_path / "jobs")
    # submitted as the batch submits, with its SIGINT handler installed: a job then starts with SIGINT at
    # its default even under a shell that ignores it (`... &`), and the cancel's SIGINT stops it
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        job = Submitted(ex.submit(time.sleep, 900), tmp_path / "run.log")
    finally:
        signal.signal(signal.SIGINT, old)
    assert job.poll() is None and not job.queued()
    job.terminate()
    deadline = time.time() + 600           # a loaded machine can take long to stop it; the job sleeps longer
    while job.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert job.poll() == 1
    assert f"[runs] job {job.job_id} ended without an exit status: " in (tmp_path / "run.log").read_text()


def test_a_job_whose_run_is_stopped_by_a_signal_says_so(tmp_path):
    """The run's child killed under the job (Slurm's warning signal before the time limit): its
    negative status is returned and ``run.log`` says the same command resumes it."""
    import os
    import signal
    import subprocess
    import sys
    calls = []

    class Child:
        def __init__(self, cmd, **kw):
            calls.append(cmd)

        def wait(self, timeout=None):
            return -signal.SIGUSR2

        def poll(self):
            return -signal.SIGUSR2

    from unittest import mock
    with mock.patch.object(subprocess, "Popen", Child), mock.patch.dict(os.environ, {"SLURM_JOB_ID": "77"}):
        assert job_main(child_command(tmp_path / "launch.json"), str(tmp_path / "run.log"), str(REPO), {}) \
            == -signal.SIGUSR2
    assert calls == [[sys.executable, "-m", "tvolib.runs.child", str(tmp_path / "launch.json")]]
    log = (tmp_path / "run.log").read_text()
    assert log.startswith("[runs] job 77 on ") and "stopped by SIGUSR2" in log and "resumes it" in log
