"""The experiment batch: every (dataset, setting, seed) of a parameters file, each run a papermill
execution of ``notebooks/07_run.ipynb``, a few at a time.

    python -m tvolib.experiments --params params/table2_twitter2017.yaml --jobs 2
    python -m tvolib.experiments --params params/table2_sample.yaml --dry-run     # the plan only
    python -m tvolib.experiments --params params/table2_sample.yaml --summary     # tables only

A parameters file (YAML) has these keys (every other key is an error):

``name``        the experiment: run folders go to ``<runs_dir>/<name>/<dataset>/<setting>-s<seed>/``
                (outside git: checkpoints), its small artifacts to ``reports/experiments/<name>/...``
``runs_dir``    default ``runs``
``cache_dir``   default ``cache``
``datasets``    ``{name: {DataConfig fields}}``; ``{}`` is the embedded sample
``settings``    names of ``tvolib.settings`` (``text-only``, ``tvomner+pgim``, ``tvomner+pgim.wo-VAE``...)
``reference``   the setting the ΔF1 columns compare with (default: the first TVOMNER setting)
``comparisons`` more pairs ``[a, b]`` of settings, each shown as ΔF1 = b − a per seed with both
                intervals (e.g. ``[text-only, tvomner-wiki]``: does the paper's pipeline beat the tweet alone?)
``seeds``       list of seeds
``recipe``      TrainConfig fields, plus ``max_length`` / ``max_train_samples`` / ``max_eval_samples``
``model``       other ModelConfig fields (``text_encoder``, sizes, ``gate_init``)
``threads``     torch threads per run (default 1)

Per run: a run whose committed artifacts (or run folder) hold the same parameters is skipped, and
one finished with the same parameters for another experiment is copied from that experiment's
artifacts (its provenance says ``reused_from``) instead of running again; a run
folder holding other parameters is refused (choose another ``name``); an interrupted run resumes
after its last finished epoch (the trainer's ``<run>/last``). A failed run is reported with its
notebook, cell and error, and the others go on; the exit status is 1 if any failed. Settings
identical by construction on a dataset (``tvolib.settings.identical_settings``) are not run and are
shown as such. At most one run prepares its inputs at a time (they share the caches); training
overlaps. Each finished run's ``metrics.json``, test predictions (CoNLL, gzip) and provenance
(parameters, git commit, package versions, data checksums, wall time) are copied to
``reports/experiments/<name>/<dataset>/<setting>-s<seed>/``, and the tables
``reports/experiments/<name>/table2.{md,json}`` are rewritten from every artifact there.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cache import atomic_write_bytes, atomic_write_json
from .reports import REPO, check_no_secrets, load_params_file

NOTEBOOK = REPO / "notebooks" / "07_run.ipynb"
REPORTS = REPO / "reports" / "experiments"
PARAM_KEYS = {"name", "runs_dir", "cache_dir", "datasets", "settings", "reference", "comparisons", "seeds",
              "recipe", "model", "threads"}
ARTIFACTS = ("metrics.json", "test_predictions.conll.gz", "provenance.json")


# ----------------------------------------------------------------------------------------------
# the plan


@dataclass
class Run:
    dataset: str
    setting: str
    seed: int
    run_dir: Path
    artifacts: Path
    identity: dict                          # what makes two runs the same run
    params: dict                            # the notebook's parameters
    state: str = "todo"                     # todo | skip | running | done | failed
    error: str = ""
    proc: subprocess.Popen | None = None
    log_file: object = None                 # the child's stdout/stderr (run.log)
    lock: object = None                     # the open run.lock while this batch runs it
    started: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.setting} s{self.seed}"


@dataclass
class Plan:
    name: str
    params_file: str
    runs: list[Run]
    manifests: dict[str, dict] = field(default_factory=dict)   # dataset -> manifest.json


def load_experiment(path: str | Path) -> dict:
    """The parameters file, checked: known keys only, no secret-looking names, required keys."""
    cfg = load_params_file(path)
    unknown = sorted(set(cfg) - PARAM_KEYS)
    if unknown:
        raise SystemExit(f"{path}: unknown key(s) {unknown}; a parameters file of tvolib.experiments has "
                         f"{sorted(PARAM_KEYS)}")
    check_no_secrets(cfg, str(path))
    missing = [k for k in ("name", "datasets", "settings", "seeds") if k not in cfg]
    if missing:
        raise SystemExit(f"{path}: missing key(s) {missing}")
    if not isinstance(cfg["datasets"], dict) or not all(isinstance(v, dict) for v in cfg["datasets"].values()):
        raise SystemExit(f"{path}: 'datasets' must map each dataset name to its DataConfig fields ({{}}: the sample)")
    return cfg


def plan(path: str | Path, runs_dir: str | None = None, reports_dir: Path = REPORTS) -> Plan:
    from .settings import (data_config, dataset_facts, get_setting, identical_settings, model_config, split_recipe,
                           why_identical)
    cfg = load_experiment(path)
    name, seeds, settings = str(cfg["name"]), [int(s) for s in cfg["seeds"]], list(cfg["settings"])
    recipe, model = dict(cfg.get("recipe") or {}), dict(cfg.get("model") or {})
    try:
        for s in settings:
            get_setting(s)
            model_config(s, model)
        split_recipe(recipe)
    except (KeyError, ValueError) as e:
        raise SystemExit(f"{path}: {e.args[0]}") from None
    if len(set(settings)) != len(settings):
        raise SystemExit(f"{path}: a setting is listed twice")
    reference = cfg.get("reference") or next((s for s in settings if s != "text-only"), settings[0])
    if reference not in settings:
        raise SystemExit(f"{path}: reference {reference!r} is not one of the settings")
    comparisons = cfg.get("comparisons") or []
    for pair in comparisons:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise SystemExit(f"{path}: comparisons: each entry is a pair [a, b] of settings, got {pair!r}")
        for x in pair:
            if x not in settings:
                raise SystemExit(f"{path}: comparisons: {x!r} is not one of the settings")
    root = Path(runs_dir or cfg.get("runs_dir") or "runs") / name
    cache_dir = str(cfg.get("cache_dir") or "cache")
    threads = int(cfg.get("threads") or 1)
    runs, manifests = [], {}
    for ds_name, spec in cfg["datasets"].items():
        try:
            data_cfg = data_config(ds_name, spec, cache_dir=cache_dir)
        except ValueError as e:
            raise SystemExit(f"{path}: {e}") from None
        facts = dataset_facts(data_cfg)
        same = identical_settings(settings, facts, model)
        manifests[ds_name] = {
            "experiment": name, "dataset": ds_name, "params_file": str(path), "settings": settings,
            "reference": same.get(reference, reference), "seeds": seeds, "recipe": recipe, "model": model,
            "comparisons": [[same.get(a, a), same.get(b, b)] for a, b in comparisons],
            "data": spec, "facts": facts.__dict__, "facts_text": facts.describe(),
            "identical": {s: {"as": rep, "why": why_identical(s, rep, facts)} for s, rep in same.items()},
            "summaries": {s: get_setting(s).summary for s in settings}}
        for setting in settings:
            if setting in same:
                continue
            for seed in seeds:
                run_name = f"{setting}-s{seed}"
                identity = {"dataset": ds_name, "data": spec, "setting": setting, "seed": seed, "recipe": recipe,
                            "model": model}
                run_dir = root / ds_name / run_name
                params = {"dataset": ds_name, "data": spec, "setting": setting, "seed": seed, "recipe": recipe,
                          "model": model, "cache_dir": cache_dir, "output_dir": str(run_dir), "num_threads": threads}
                runs.append(Run(ds_name, setting, seed, run_dir, reports_dir / name / ds_name / run_name, identity, params))
    runs.sort(key=lambda r: seeds.index(r.seed))   # every setting's first seed before any second: a
    return Plan(name, str(path), runs, manifests)  # batch stopped early still fills every row


def write_manifests(p: Plan, reports_dir: Path = REPORTS) -> None:
    """``<reports_dir>/<name>/<dataset>/manifest.json``: the settings, reference, recipe and
    identical settings of this parameters file, which the tables follow."""
    for name, man in p.manifests.items():
        atomic_write_json(Path(reports_dir) / p.name / name / "manifest.json", man)


def _same_identity(a: dict, b: dict) -> bool:
    return json.loads(json.dumps(a, sort_keys=True)) == json.loads(json.dumps(b, sort_keys=True))


def classify(run: Run, copy: bool = True) -> None:
    """Mark ``run`` skip (finished with the same parameters), failed (its folder holds another
    run), or leave it todo (new, or resumable). A run finished in its folder whose artifacts are
    missing gets them copied (``copy``) instead of running again."""
    def other(folder: Path, old: dict) -> bool:
        if _same_identity(old, run.identity):
            return False
        diff = sorted(k for k in set(old) | set(run.identity) if json.dumps(old.get(k), sort_keys=True)
                      != json.dumps(run.identity.get(k), sort_keys=True))
        run.state, run.error = "failed", (f"{folder} holds a run with other parameters ({', '.join(diff)}); "
                                          f"give the experiment another name, or delete that folder")
        return True

    prov = run.artifacts / "provenance.json"
    if prov.exists():
        if other(run.artifacts, json.loads(prov.read_text()).get("identity") or {}):
            return
        if all((run.artifacts / a).exists() for a in ARTIFACTS):
            run.state = "skip"
            return
    ident = run.run_dir / "run_identity.json"
    if ident.exists() and other(run.run_dir, json.loads(ident.read_text())):
        return
    if ident.exists() and (run.run_dir / "results.json").exists() and (run.run_dir / "07_run.json").exists():
        rec = json.loads((run.run_dir / "07_run.json").read_text())
        if rec.get("status") == "ok" and (run.run_dir / "metrics.json").exists():
            if copy:                           # finished, artifacts missing: copy them, no rerun
                collect(run, rec)
            run.state = "skip"
            return
    if not ident.exists():                     # never started here: the same run finished for another experiment?
        source = same_run_elsewhere(run)
        if source is not None:
            if copy:
                reuse(run, source)
            run.state, run.error = "skip", f"reused from {source}"


def same_run_elsewhere(run: Run) -> Path | None:
    """The artifacts folder of a finished run with ``run``'s identity (dataset, data, setting, seed,
    recipe, model) under another experiment of the same reports folder, or None. The experiment's
    name is not part of a run's identity, so two parameters files that share a row share its runs."""
    reports_dir, name = run.artifacts.parents[2], run.artifacts.parents[1].name
    for prov in sorted(reports_dir.glob(f"*/{run.artifacts.parent.name}/{run.artifacts.name}/provenance.json")):
        folder = prov.parent
        if folder.parents[1].name == name or not all((folder / a).exists() for a in ARTIFACTS):
            continue
        try:
            old = json.loads(prov.read_text())
        except ValueError:
            continue
        if _same_identity(old.get("identity") or {}, run.identity) and not config_differences(run, old.get("configs")):
            return folder
    return None


# what may differ between two runs that are the same run: where and how verbosely they ran
REUSE_FREE = {"data": {"cache_dir"}, "train": {"output_dir", "resume", "progress", "num_threads", "eval_batch_size"}}


def config_differences(run: Run, saved: dict | None) -> list[str]:
    """The fields in which a finished run's saved configs (``config.json``, read as today's: an
    older run gets the defaults of its time, e.g. torch's AdamW) differ from the configs ``run``
    would train with now. A parameters file's recipe leaves most fields to the code's defaults,
    so equal files are not enough: a default changed since is another run."""
    from .config import DataConfig, ModelConfig, TrainConfig, from_dict, to_dict, upgrade_train_dict
    from .settings import configs
    if not saved or not all(k in saved for k in ("data", "model", "train")):
        return ["configs: not recorded"]
    pr = run.params
    now = configs(pr["dataset"], pr["data"], pr["setting"], pr["seed"], pr["recipe"], pr["model"],
                  output_dir=pr["output_dir"], cache_dir=pr["cache_dir"], num_threads=pr["num_threads"])
    diffs = []
    for part, cls, cfg, old in (("data", DataConfig, now[0], saved["data"]), ("model", ModelConfig, now[1], saved["model"]),
                                ("train", TrainConfig, now[2], upgrade_train_dict(saved["train"]))):
        try:
            old = to_dict(from_dict(cls, old))
        except (TypeError, ValueError) as e:
            return [f"{part}: {e}"]
        cur = to_dict(cfg)
        diffs += [f"{part}.{k}" for k in sorted(set(old) | set(cur))
                  if k not in REUSE_FREE.get(part, ()) and old.get(k) != cur.get(k)]
    return diffs


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


# ----------------------------------------------------------------------------------------------
# one run (the child process)


def data_files(run_dir: Path) -> dict:
    """Checksums of the data a run read, from its ``config.json``: the three splits, captions,
    phrases, boxes, the knowledge file (the default one resolved) and the local base's inputs."""
    from .config import DataConfig, from_dict
    from .reports import data_checksums
    cfg = json.loads((run_dir / "config.json").read_text())
    data = from_dict(DataConfig, cfg["data"])
    files = {k: getattr(data, k) for k in ("data_dir", "captions", "phrases", "boxes", "knowledge_file")}
    if cfg["model"].get("use_knowledge") and cfg["model"].get("use_candidates"):
        if cfg["model"].get("knowledge_source") == "tweet_files" and not data.knowledge_file:
            try:
                from .tfo.pipeline import default_knowledge_file
                files["knowledge_file"] = str(default_knowledge_file(data))
            except Exception:
                pass
        if cfg["model"].get("knowledge_source") == "local":
            kb_dir = Path(os.environ.get("TVOMNER_KB_DIR", "../shared/data/kb"))
            kb = [data.kb] if data.kb else sorted(str(p) for p in kb_dir.glob("*")) if kb_dir.is_dir() else []
            files.update({f"kb{i}": p for i, p in enumerate(kb)})
    return data_checksums({k: v for k, v in files.items() if v}, REPO)


def collect(run: Run, record: dict) -> None:
    """Copy a finished run's small artifacts into ``run.artifacts`` (committed)."""
    run.artifacts.mkdir(parents=True, exist_ok=True)
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    atomic_write_json(run.artifacts / "metrics.json", metrics)
    pred = (run.run_dir / "test_predictions.txt").read_bytes()
    atomic_write_bytes(run.artifacts / "test_predictions.conll.gz", gzip.compress(pred, mtime=0))
    config = json.loads((run.run_dir / "config.json").read_text())
    prov = {"identity": run.identity, "run_dir": str(run.run_dir), "configs": config,
            "data_files": data_files(run.run_dir),
            **{k: record.get(k) for k in ("notebook", "started", "wall_seconds", "parameters", "git", "packages",
                                          "platform", "command")}}
    atomic_write_json(run.artifacts / "provenance.json", prov)


def run_one(launch: Path) -> int:
    """The child process of one run: execute the notebook, copy the artifacts."""
    from .reports import NotebookFailed, run_notebook
    spec = json.loads(launch.read_text())
    run = Run(spec["dataset"], spec["setting"], spec["seed"], Path(spec["run_dir"]), Path(spec["artifacts"]),
              spec["identity"], spec["params"])
    try:
        rec = run_notebook(Path(spec["notebook"]), run.run_dir, run.params, REPO, html=False,
                           every=spec.get("every") or None)
    except NotebookFailed as e:
        print(f"FAILED {e}", file=sys.stderr, flush=True)
        return 1
    collect(run, rec)
    return 0


# ----------------------------------------------------------------------------------------------
# the batch (the parent process)


def _progress(run: Run) -> str:
    """``epoch 2/4 (valid F1 80.1, 81.3)`` from the run's ``history.json``, else its state."""
    hist = run.run_dir / "history.json"
    if not (run.run_dir / "prepared.json").exists():
        return "preparing inputs"
    try:
        h = json.loads(hist.read_text())
    except (OSError, ValueError):
        return "training epoch 1"
    epochs = run.params["recipe"].get("epochs", "?")
    f1s = ", ".join("%.2f" % e["valid_f1"] for e in h)
    return f"epoch {len(h)}/{epochs} done (valid F1 {f1s})"


def _bar(done: int, total: int, width: int = 20) -> str:
    n = int(width * done / max(total, 1))
    return "[" + "#" * n + "-" * (width - n) + "]"


def _clock(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def execute(p: Plan, jobs: int = 1, every: float = 30, notebook: Path = NOTEBOOK, reports_dir: Path = REPORTS,
            log=print) -> int:
    """Run every todo run of ``p``, ``jobs`` at a time; returns the number of failed runs."""
    write_manifests(p, reports_dir)
    for r in p.runs:
        classify(r)
    todo = [r for r in p.runs if r.state == "todo"]
    total = len(p.runs)
    log(f"[experiments] {p.name}: {total} runs, {sum(r.state == 'skip' for r in p.runs)} finished before "
        f"(skipped), {len(todo)} to run, {jobs} at a time")
    for r in p.runs:
        if r.state == "failed":
            log(f"[experiments] FAILED {r.label}: {r.error}")
        elif r.error.startswith("reused from"):
            log(f"[experiments] {r.label}: {r.error} (same parameters)")
    running: list[Run] = []
    t0, last_live = time.time(), time.time()

    def status() -> str:
        done = sum(r.state in ("done", "skip", "failed") for r in p.runs)
        return (f"[experiments] {_bar(done, total)} {done}/{total} ended ({sum(r.state == 'failed' for r in p.runs)} "
                f"failed), {len(running)} running, {sum(r.state == 'todo' for r in p.runs)} waiting, "
                f"{_clock(time.time() - t0)}")

    def stop(signum, frame):                      # a kill of this process alone stops its runs too
        for r in running:
            if r.proc and r.proc.poll() is None:
                r.proc.terminate()
        raise SystemExit(f"[experiments] stopped by signal {signum}; run the same command again to resume")

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while todo or running:
            # start runs: at most one of them is still preparing inputs (shared caches)
            while todo and len(running) < jobs and not any(not (r.run_dir / "prepared.json").exists()
                                                           for r in running):
                r = todo.pop(0)
                classify(r)                            # finished meanwhile, by another batch?
                if r.state != "todo":
                    log(f"[experiments] {r.label}: {r.error or 'finished meanwhile'}, not run")
                    continue
                try:
                    start(r, notebook, every)
                except RunBusy as e:
                    r.state, r.error = "skip", str(e)
                    log(f"[experiments] {r.label}: {e}")
                    continue
                running.append(r)
                log(f"[experiments] start {r.label} -> {r.run_dir} (log: {r.run_dir / 'run.log'})")
            time.sleep(0.5)
            for r in list(running):
                code = r.proc.poll()
                if code is None:
                    continue
                running.remove(r)
                r.log_file.close()
                if r.lock:
                    r.lock.close()
                if code == 0:
                    r.state = "done"
                    m = json.loads((r.artifacts / "metrics.json").read_text())
                    log(f"[experiments] done {r.label}: test F1 {m['test']['F1']:.2f} (best valid epoch "
                        f"{m['best_epoch']}) in {_clock(time.time() - r.started)}")
                else:
                    r.state, r.error = "failed", _failure(r, code, notebook)
                    log(f"[experiments] FAILED {r.label}: {r.error}")
                _tables(reports_dir / p.name, log)
                log(status())
            if running and time.time() - last_live >= every:
                last_live = time.time()
                log(status())
                for r in running:
                    log(f"[experiments]   {r.label}: {_clock(time.time() - r.started)}, {_progress(r)}")
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    _tables(reports_dir / p.name, log)
    failed = [r for r in p.runs if r.state == "failed"]
    log(status())
    for r in failed:
        log(f"[experiments] FAILED {r.label}: {r.error}")
    log(f"[experiments] tables: {reports_dir / p.name / 'table2.md'}")
    return len(failed)


def _tables(exp_dir: Path, log) -> None:
    """Rewrite the tables; a problem there is reported and never stops the runs."""
    try:
        write_tables(exp_dir)
    except Exception as e:
        log(f"[experiments] tables not written: {type(e).__name__}: {e}")


class RunBusy(Exception):
    """The run's folder is locked: another batch (or its orphaned child) is running it."""


def _lock(run_dir: Path):
    """Take ``run_dir/run.lock`` (an exclusive ``flock``) or raise ``RunBusy``. The child inherits
    the descriptor, so the lock lasts while either the batch or the run's process lives."""
    try:
        import fcntl
    except ImportError:                          # no flock (Windows): no protection against two batches
        return None
    f = open(run_dir / "run.lock", "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunBusy(f"running in another process (lock {run_dir / 'run.lock'} is held), not run here") from None
    return f


def start(r: Run, notebook: Path, every: float) -> None:
    """Start ``r``'s child process; ``RunBusy`` (touching nothing) if another process runs it."""
    r.run_dir.mkdir(parents=True, exist_ok=True)
    r.lock = _lock(r.run_dir)
    (r.run_dir / "prepared.json").unlink(missing_ok=True)
    atomic_write_json(r.run_dir / "run_identity.json", r.identity)
    launch = r.run_dir / "launch.json"
    atomic_write_json(launch, {"dataset": r.dataset, "setting": r.setting, "seed": r.seed, "run_dir": str(r.run_dir),
                               "artifacts": str(r.artifacts), "identity": r.identity, "params": r.params,
                               "notebook": str(notebook), "every": every})
    env = {**os.environ, "OMP_NUM_THREADS": str(r.params["num_threads"]),
           "MKL_NUM_THREADS": str(r.params["num_threads"]), "PYTHONUNBUFFERED": "1"}
    r.log_file = open(r.run_dir / "run.log", "ab")
    r.proc = subprocess.Popen([sys.executable, "-m", "tvolib.experiments", "--run-one", str(launch)], cwd=REPO,
                              stdout=r.log_file, stderr=subprocess.STDOUT, env=env,
                              pass_fds=(r.lock.fileno(),) if r.lock else ())
    r.started, r.state = time.time(), "running"


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


# ----------------------------------------------------------------------------------------------
# tables


def _fmt_mean_sd(xs: list[float]) -> str:
    import statistics
    if not xs:
        return "—"
    return f"{xs[0]:.2f}" if len(xs) == 1 else f"{statistics.fmean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def finished_runs(folder: Path) -> tuple[dict, dict[str, dict[int, dict]]]:
    """The manifest of ``<experiment>/<dataset>`` and its finished runs of the manifest's recipe:
    ``{setting: {seed: {"metrics": ..., "dir": artifact folder}}}``."""
    man = json.loads((folder / "manifest.json").read_text())
    runs: dict[str, dict[int, dict]] = {}
    for pf in sorted(folder.glob("*/provenance.json")):      # written last by collect(): the run is complete
        m = pf.parent / "metrics.json"
        prov = json.loads(pf.read_text())
        ident = prov["identity"]
        if not _same_identity({k: ident.get(k) for k in ("recipe", "model", "data")},
                              {k: man[k] for k in ("recipe", "model", "data")}):
            continue                                 # another recipe: not this table's run
        runs.setdefault(ident["setting"], {})[ident["seed"]] = {"metrics": json.loads(m.read_text()),
                                                                "dir": m.parent}
    return man, runs


def paired_delta(a: dict[int, dict], b: dict[int, dict], seeds: list[int], where: str, read) -> tuple[dict, dict]:
    """ΔF1 = b − a on test over ``seeds`` (runs as in :func:`finished_runs`): the paired tweet
    bootstrap (every seed scored on each resample) and the t-interval over the per-seed deltas.
    ``read`` maps a predictions file to (gold, predictions)."""
    from .evaluate import paired_bootstrap_seeds, seed_interval
    gold, pa, pb = None, [], []
    for sd in seeds:
        g_a, p_a = read(a[sd]["dir"] / "test_predictions.conll.gz")
        g_b, p_b = read(b[sd]["dir"] / "test_predictions.conll.gz")
        if g_a != g_b or (gold is not None and gold != g_a):
            raise ValueError(f"{where} (seed {sd}) were scored on different test sets")
        gold = g_a
        pa.append(p_a)
        pb.append(p_b)
    boot = paired_bootstrap_seeds(gold, pa, pb, n=2000, seed=0)
    over = seed_interval([b[sd]["metrics"]["test"]["F1"] - a[sd]["metrics"]["test"]["F1"] for sd in seeds])
    return boot, over


def _mirror(ci):
    return None if ci is None else [-ci[1], -ci[0]]


def delta_record(boot: dict, over: dict) -> dict:
    """ΔF1 = b − a from :func:`paired_delta`'s two results: per seed, mean, both intervals and which
    side, if either, is shown higher (both intervals on one side of zero)."""
    from .evaluate import beats
    return {"per_seed": over["per_seed"], "mean": over["mean"], "seed_ci95": over["ci95"],
            "tweet_ci95": boot["ci95"], "b_beats_a": beats(boot, over),
            "a_beats_b": beats({"ci95": _mirror(boot["ci95"])}, {"ci95": _mirror(over["ci95"])})}


def _verdict(d: dict, a: str, b: str) -> str:
    return f"`{b}` higher" if d["b_beats_a"] else f"`{a}` higher" if d["a_beats_b"] else "not shown"


def compare_experiments(a: Path, b: Path) -> dict:
    """Each (dataset, setting) finished in both experiments ``a`` and ``b`` (folders under
    ``reports/experiments``), paired by seed: ΔF1 = b − a per seed, the t-interval over seeds and the
    paired tweet bootstrap, and what differs between the two recipes (e.g. the precision)."""
    from .evaluate import read_predictions
    rows = []
    diff = {}
    for fa in sorted(p for p in a.glob("*") if (p / "manifest.json").exists()):
        fb = b / fa.name
        if not (fb / "manifest.json").exists():
            continue
        man_a, runs_a = finished_runs(fa)
        man_b, runs_b = finished_runs(fb)
        if man_a["data"] != man_b["data"]:
            raise ValueError(f"{fa} and {fb}: the dataset fields differ; the runs are not comparable")
        diff = {k: (man_a["recipe"].get(k), man_b["recipe"].get(k))
                for k in sorted(set(man_a["recipe"]) | set(man_b["recipe"]))
                if man_a["recipe"].get(k) != man_b["recipe"].get(k)}
        if man_a["model"] != man_b["model"]:
            diff["model"] = (man_a["model"], man_b["model"])
        for setting in [s for s in man_a["settings"] if s in runs_a and s in runs_b]:
            seeds = sorted(set(runs_a[setting]) & set(runs_b[setting]))
            if not seeds:
                continue
            fa_ = [runs_a[setting][sd]["metrics"]["test"]["F1"] for sd in seeds]
            fb_ = [runs_b[setting][sd]["metrics"]["test"]["F1"] for sd in seeds]
            boot, over = paired_delta(runs_a[setting], runs_b[setting], seeds, f"{fa.name} {setting}",
                                      read_predictions)
            rows.append({"dataset": fa.name, "setting": setting, "seeds": seeds, "f1_a": fa_, "f1_b": fb_,
                         **delta_record(boot, over)})
    return {"a": a.name, "b": b.name, "differs": diff, "rows": rows}


def compare_markdown(c: dict) -> str:
    """The comparison of :func:`compare_experiments` as markdown."""
    what = "; ".join(f"`{k}`: {va!r} in `{c['a']}`, {vb!r} in `{c['b']}`" for k, (va, vb) in c["differs"].items())
    lines = [f"# `{c['b']}` against `{c['a']}`", "",
             f"Recipes differ in: {what or 'nothing'}. ΔF1 = `{c['b']}` − `{c['a']}` on test, paired by "
             "seed; 95 % intervals over seeds (t) and over test tweets (paired bootstrap).", "",
             f"| dataset | setting | seeds | F1 `{c['a']}` | F1 `{c['b']}` | ΔF1 per seed | mean ΔF1 | over seeds "
             "| over tweets | differ? |", "|---|---|---|---|---|---|---:|---|---|---|"]
    for r in c["rows"]:
        verdict = _verdict(r, c["a"], c["b"])
        lines.append(f"| {r['dataset']} | {r['setting']} | {','.join(map(str, r['seeds']))} | "
                     f"{_fmt_mean_sd(r['f1_a'])} | {_fmt_mean_sd(r['f1_b'])} | "
                     f"{', '.join(f'{x:+.2f}' for x in r['per_seed'])} | {r['mean']:+.2f} | "
                     f"{_ci(r['seed_ci95'])} | {_ci(r['tweet_ci95'])} | {verdict} |")
    if not c["rows"]:
        lines.append("| — | no setting finished in both yet | | | | | | | | |")
    return "\n".join(lines) + "\n"


def dataset_table(folder: Path) -> dict:
    """Table 2 of one dataset from its committed artifacts (``folder`` = ``<experiment>/<dataset>``)."""
    from .evaluate import paired_bootstrap_seeds, read_predictions, seed_interval, beats
    man, runs = finished_runs(folder)
    ref = man["reference"]
    preds: dict[Path, tuple] = {}

    def pred(d: Path):
        if d not in preds:
            preds[d] = read_predictions(d / "test_predictions.conll.gz")
        return preds[d]

    rows = []
    for s in man["settings"]:
        row = {"setting": s, "what": man["summaries"].get(s, ""), "identical_to": None, "seeds": []}
        if s in man["identical"]:
            row["identical_to"] = man["identical"][s]["as"]
            row["why"] = man["identical"][s]["why"]
            rows.append(row)
            continue
        got = runs.get(s, {})
        seeds = sorted(got)
        row["seeds"] = seeds
        for c in ("Pre.", "Rec.", "F1"):
            row[c] = [round(got[sd]["metrics"]["test"][c], 2) for sd in seeds]
        probes = [got[sd]["metrics"].get("probe") or {} for sd in seeds]
        row["gate_mean"] = _mean([p.get("gate_mean") for p in probes])
        row["shuffle_delta_f1"] = _mean([p.get("shuffle_delta_f1") for p in probes])
        shuffles = [p["shuffle_delta_f1"] for p in probes if p.get("shuffle_delta_f1") is not None]
        if shuffles:                     # the caption-shuffle probe: its spread over seeds as well
            row["shuffle"] = seed_interval(shuffles)
        shared = sorted(set(seeds) & set(runs.get(ref, {})))
        if s != ref and shared:
            boot, over = paired_delta(runs[ref], got, shared, f"{folder}: {s} and {ref}",
                                      lambda f: pred(f.parent))
            row.update(delta_seeds=shared, delta={"per_seed": over["per_seed"], "mean": over["mean"],
                                                  "seed_ci95": over["ci95"], "tweet_ci95": boot["ci95"],
                                                  "p_not_better": boot["p_b_not_better"],
                                                  "beats_reference": beats(boot, over)})
        rows.append(row)
    pairs = []
    for a, b in man.get("comparisons", []):
        shared = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
        pair = {"a": a, "b": b, "seeds": shared}
        if a != b and shared:
            boot, over = paired_delta(runs[a], runs[b], shared, f"{folder}: {b} and {a}", lambda f: pred(f.parent))
            pair.update(f1_a=[round(runs[a][sd]["metrics"]["test"]["F1"], 2) for sd in shared],
                        f1_b=[round(runs[b][sd]["metrics"]["test"]["F1"], 2) for sd in shared],
                        **delta_record(boot, over))
        pairs.append(pair)
    return {"dataset": man["dataset"], "reference": ref, "recipe": man["recipe"], "model": man["model"],
            "facts": man["facts_text"], "params_file": man["params_file"], "rows": rows, "pairs": pairs}


def _ci(ci) -> str:
    return "undefined (1 seed)" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def table_markdown(t: dict) -> str:
    """One dataset's Table 2 as markdown."""
    lines = [f"## {t['dataset']}", "",
             f"Recipe: `{json.dumps(t['recipe'])}`" + (f", model `{json.dumps(t['model'])}`" if t["model"] else "")
             + f" ({t['params_file']}). Dataset: {t['facts']}. ΔF1 = setting − `{t['reference']}` on the seeds "
             "both ran; intervals at 95 %: over seeds (t) and over test tweets (paired bootstrap, every seed "
             "scored on each resample). \"beats\" needs both above zero. Branch probe on test (full "
             "models): gate = mean g of Eq. 4; shuffle ΔF1 = F1 with every tweet given another tweet's "
             "visual input − F1 as trained, mean over seeds [t-interval over seeds].", "",
             "| setting | seeds | P | R | F1 | ΔF1 per seed | mean ΔF1 | over seeds | over tweets | beats ref. "
             "| gate | shuffle ΔF1 |", "|---|---|---:|---:|---:|---|---:|---|---|---|---:|---:|"]
    for r in t["rows"]:
        if r["identical_to"]:
            lines.append(f"| {r['setting']} | {r['why']} | | | | | | | | | | |")
            continue
        if not r["seeds"]:
            lines.append(f"| {r['setting']} | not run yet | | | | | | | | | | |")
            continue
        d = r.get("delta")
        dcells = ["reference", "", "", "", ""] if r["setting"] == t["reference"] else ["—"] * 5
        if d:
            dcells = [", ".join(f"{x:+.2f}" for x in d["per_seed"]), f"{d['mean']:+.2f}", _ci(d["seed_ci95"]),
                      _ci(d["tweet_ci95"]), "yes" if d["beats_reference"] else "no"]
        gate = "—" if r["gate_mean"] is None else f"{r['gate_mean']:.3f}"
        shuf = "—" if r["shuffle_delta_f1"] is None else f"{r['shuffle_delta_f1']:+.2f}"
        if r.get("shuffle") and r["shuffle"]["ci95"] is not None:
            shuf += f" {_ci(r['shuffle']['ci95'])}"
        lines.append(f"| {r['setting']} | {','.join(map(str, r['seeds']))} | {_fmt_mean_sd(r['Pre.'])} | "
                     f"{_fmt_mean_sd(r['Rec.'])} | {_fmt_mean_sd(r['F1'])} | " + " | ".join(dcells)
                     + f" | {gate} | {shuf} |")
    if t.get("pairs"):
        lines += ["", "Pairs: ΔF1 = b − a on the seeds both ran, with the same two intervals; a side is "
                  "\"higher\" only when both lie on that side of zero.", "",
                  "| a | b | seeds | F1 a | F1 b | ΔF1 per seed | mean ΔF1 | over seeds | over tweets | verdict |",
                  "|---|---|---|---:|---:|---|---:|---|---|---|"]
        for q in t["pairs"]:
            if "per_seed" not in q:
                why = "the same setting on this dataset" if q["a"] == q["b"] else "no seed run by both yet"
                lines.append(f"| {q['a']} | {q['b']} | {why} | | | | | | | |")
                continue
            lines.append(f"| {q['a']} | {q['b']} | {','.join(map(str, q['seeds']))} | {_fmt_mean_sd(q['f1_a'])} | "
                         f"{_fmt_mean_sd(q['f1_b'])} | {', '.join(f'{x:+.2f}' for x in q['per_seed'])} | "
                         f"{q['mean']:+.2f} | {_ci(q['seed_ci95'])} | {_ci(q['tweet_ci95'])} | "
                         f"{_verdict(q, q['a'], q['b'])} |")
    lines += ["", "Settings: " + "; ".join(f"`{r['setting']}`: {r['what']}" for r in t["rows"] if r["what"])]
    return "\n".join(lines)


def write_tables(exp_dir: Path) -> dict:
    """``table2.md`` and ``table2.json`` of an experiment from every dataset folder in it."""
    from .cache import atomic_write_text
    tables = [dataset_table(d) for d in sorted(exp_dir.glob("*")) if (d / "manifest.json").exists()]
    out = {"experiment": exp_dir.name, "tables": tables}
    if tables:
        atomic_write_json(exp_dir / "table2.json", out)
        md = [f"# Experiment `{exp_dir.name}`: test set (seqeval micro P/R/F1, epoch selected on valid F1), "
              "mean ± sample std over seeds", ""]
        md += [table_markdown(t) + "\n" for t in tables]
        atomic_write_text(exp_dir / "table2.md", "\n".join(md))
    return out


def _plot_caption(rows: list[dict]) -> str:
    """What the bars and error bars of ``plot_delta_f1`` show, honest about settings with one seed."""
    with_ci = sum(1 for r in rows if r["delta"]["seed_ci95"])
    if with_ci == 0:
        return "one seed shared with the reference per setting: bars = ΔF1, no interval over seeds"
    note = "" if with_ci == len(rows) else f" ({len(rows) - with_ci} with one seed shared: no interval)"
    return f"mean over seeds, 95 % t-interval over seeds{note}, dots = seeds"


def plot_delta_f1(tables: list[dict]):
    """ΔF1 against the reference per setting and dataset: bars = mean over seeds, error bars = the
    t-interval over seeds (none with one seed), dots = the seeds. Returns the figure."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(max(5.0, 1.2 * max((len(t["rows"]) for t in tables), default=1)), 3.2 * max(len(tables), 1)))
    axes = fig.subplots(max(len(tables), 1), 1, squeeze=False)[:, 0]
    for ax, t in zip(axes, tables):
        rows = [r for r in t["rows"] if r.get("delta")]
        xs = list(range(len(rows)))
        means = [r["delta"]["mean"] for r in rows]
        lo = [m - r["delta"]["seed_ci95"][0] if r["delta"]["seed_ci95"] else 0 for m, r in zip(means, rows)]
        hi = [r["delta"]["seed_ci95"][1] - m if r["delta"]["seed_ci95"] else 0 for m, r in zip(means, rows)]
        ax.bar(xs, means, yerr=[lo, hi], capsize=4, color=["tab:green" if m > 0 else "tab:red" for m in means],
               alpha=0.6)
        for x, r in zip(xs, rows):
            ax.plot([x] * len(r["delta"]["per_seed"]), r["delta"]["per_seed"], "k.", ms=5)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(xs, [r["setting"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"ΔF1 vs {t['reference']}")
        ax.set_title(f"{t['dataset']}: {_plot_caption(rows)}", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tvolib.experiments", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--params", help="the experiment's parameters file (YAML)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each with `threads` torch threads)")
    ap.add_argument("--runs_dir", default=None, help="overrides the file's runs_dir")
    ap.add_argument("--every", type=float, default=60, help="seconds between live lines")
    ap.add_argument("--dry-run", action="store_true", help="print the plan (runs, skips, identical settings)")
    ap.add_argument("--summary", action="store_true", help="only rewrite the tables (from the artifacts, after "
                    "copying those of runs finished in their folders or for another experiment)")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                    help="two experiments' parameters files: ΔF1 = B − A per dataset, setting and seed "
                         "(e.g. the same runs in fp32 and bf16), written to reports/experiments/compare-A-vs-B.md")
    ap.add_argument("--notebook", default=str(NOTEBOOK), help=argparse.SUPPRESS)
    ap.add_argument("--reports", default=str(REPORTS), help=argparse.SUPPRESS)
    ap.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_one:
        return run_one(Path(args.run_one))
    reports_dir = Path(args.reports)
    if args.compare:
        from .cache import atomic_write_text
        pa, pb = (plan(f, args.runs_dir, reports_dir) for f in args.compare)
        for q in (pa, pb):
            write_manifests(q, reports_dir)
        c = compare_experiments(reports_dir / pa.name, reports_dir / pb.name)
        out = reports_dir / f"compare-{pa.name}-vs-{pb.name}"
        atomic_write_json(Path(f"{out}.json"), c)
        atomic_write_text(Path(f"{out}.md"), compare_markdown(c))
        print(compare_markdown(c))
        return 0
    if not args.params:
        ap.error("--params is required")
    p = plan(args.params, args.runs_dir, reports_dir)
    if args.summary:
        write_manifests(p, reports_dir)
        for r in p.runs:                         # finished runs whose artifacts are not copied yet
            classify(r)
        write_tables(reports_dir / p.name)
        print((reports_dir / p.name / "table2.md").read_text() if (reports_dir / p.name / "table2.md").exists()
              else "no finished runs")
        return 0
    if args.dry_run:
        for name, man in p.manifests.items():
            print(f"{name}: {man['facts_text']}")
            for s, v in man["identical"].items():
                print(f"  {s}: {v['why']} (not run)")
        for r in p.runs:
            classify(r, copy=False)
            print(f"  {r.label}: {r.state}{' (' + r.error + ')' if r.error else ''}")
        return 0
    return 1 if execute(p, args.jobs, args.every, Path(args.notebook), reports_dir) else 0


if __name__ == "__main__":
    sys.exit(main())
