"""Experiment tracking in MLflow: every training run's configs, curves, scores and files, in one store.

``tvolib.train.train`` (the CLI, the batch's notebook, every notebook) logs each run through a
:class:`Tracker` (rank 0 only); ``python -m tvolib.tracking import`` loads the committed batch results
into the same store; ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows them all.

The environment is read once, at the edge (``tvolib.resources.resolve`` → :func:`tracking_config`):

==========================  ==========================================================================
``MLFLOW_TRACKING_URI``     the store (default ``sqlite:///<repository>/mlflow.db``, git-ignored); a
                            SQLite store keeps artifacts in ``mlartifacts/`` beside it
``MLFLOW_EXPERIMENT_NAME``  one MLflow experiment for all runs (default: the run's ``experiment`` tag, else ``tvomner``)
``TVOMNER_TRACKING=0``      no tracking
==========================  ==========================================================================

A run holds params ``data.*``, ``model.*``, ``train.*`` (its configs), ``precision``, ``device``; tags
``experiment``, ``dataset``, ``setting``, ``seed``, ``recipe``, ``git_commit``, ``data_sha256.<file>``; per
epoch (step = epoch) ``train/loss``, ``valid/f1``, ``valid/<TYPE>/f1``…, per step ``train/step_loss``, once
``test/f1``, ``test/precision``, ``test/<TYPE>/recall``…, ``best_valid_f1``, ``probe/...`` (percentages); and
the run folder's JSON files, ``curves.png`` and test predictions. Tracking never stops training: without
mlflow, or with a store that does not answer, a run says once how to turn tracking on; a failure while
logging is one warning, then the run goes on untracked. A run resumed after a kill goes on in its MLflow
run (``mlflow_run.json`` in the run folder names it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Mapping

import requests

from .cache import atomic_write_json
from .data import file_sha256

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
DEFAULT_EXPERIMENT = "tvomner"
HOW_TO = ('pip install -e ".[track]" turns it on, MLFLOW_TRACKING_URI picks the store, '
          'TVOMNER_TRACKING=0 silences this line')
RUN_POINTER = "mlflow_run.json"
ARTIFACTS = ("config.json", "history.json", "results.json", "probe_test.json", "curves.png", "test_predictions.txt")
ROW_NAMES = {"Pre.": "precision", "Rec.": "recall", "F1": "f1"}      # Table 1 columns -> metric names
DATA_FIELDS = ("captions", "phrases", "boxes", "knowledge_file")


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs are tracked (``tracking_config`` builds it from the environment)."""

    uri: str | None = None                 # the MLflow tracking URI
    experiment: str | None = None          # one MLflow experiment for all runs (None: per run, see experiment_for)
    enabled: bool = False                  # False: a Resources made without resolve() tracks nothing
    artifact_root: Path | None = None      # artifacts of new experiments (the default store: <repo>/mlartifacts)

    def experiment_for(self, tags: Mapping) -> str:
        return self.experiment or str(tags.get("experiment") or DEFAULT_EXPERIMENT)


def tracking_config(env: Mapping[str, str], repo: Path = REPO) -> TrackingConfig:
    """The tracking settings of ``env`` (see the module docstring)."""
    off = env.get("TVOMNER_TRACKING", "").strip().lower() in ("0", "off", "false", "no")
    uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo / 'mlflow.db'}"
    artifacts = None
    if uri.startswith("sqlite:///"):    # artifacts beside the store (MLflow's default: ./mlruns, wherever one stands)
        artifacts = Path(uri.removeprefix("sqlite:///")).absolute().parent / "mlartifacts"
    return TrackingConfig(uri=uri, experiment=env.get("MLFLOW_EXPERIMENT_NAME") or None, enabled=not off,
                          artifact_root=artifacts)


# ---------------------------------------------------------------- what a run logs (plain dicts)

def flatten(d: Mapping, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_params(config: Mapping) -> dict[str, str]:
    """The params of a run from its ``config.json`` (or a provenance's ``configs``): the three configs
    and where it ran."""
    out = flatten({k: config[k] for k in ("data", "model", "train") if k in config})
    out.update({k: config[k] for k in ("world_size", "precision", "device") if k in config})
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in out.items()}


def metric_key(name: str) -> str:
    return re.sub(r"[^/\w.\- ]", "_", name)


def row_metrics(prefix: str, row: Mapping) -> dict[str, float]:
    """A Table 1 row (``PER``…, ``Pre.``, ``Rec.``, ``F1``) as ``<prefix>/f1``, ``<prefix>/PER/f1``…"""
    return {f"{prefix}/{ROW_NAMES[k]}" if k in ROW_NAMES else f"{prefix}/{k}/f1": float(v) for k, v in row.items()}


def numbers(d: Mapping, prefix: str) -> dict[str, float]:
    """Every number of a nested dict (lists by position) as ``<prefix>/a/b``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}/{k}"
        if isinstance(v, Mapping):
            out.update(numbers(v, key))
        elif isinstance(v, (list, tuple)):
            out.update(numbers(dict(enumerate(v)), key))
        elif isinstance(v, (int, float)):
            out[metric_key(key)] = float(v)
    return out


def epoch_metrics(rec: Mapping) -> dict[str, float]:
    """One epoch of ``history.json``."""
    out = {"train/loss": rec["train_loss"], "train/l_ner": rec["l_ner"], "train/l_vae": rec["l_vae"],
           "tweets_per_s": rec["tweets_per_s"], "train_seconds": rec["train_seconds"]}
    out.update(row_metrics("valid", rec.get("valid") or {}), **{"valid/f1": rec["valid_f1"]})
    return {k: float(v) for k, v in out.items()}


def result_metrics(result: Mapping) -> dict[str, float]:
    """The final scores of ``results.json``: test P/R/F1 overall and per type (percent), the
    selection, the branch probe, the test scores with side inputs left out (``test_no_visual/f1``…)."""
    out = row_metrics("test", result["test"])
    scores = result.get("test_scores") or {}
    for typ, s in (scores.get("per_type") or {}).items():
        out.update({f"test/{typ}/{k}": 100 * float(s[k]) for k in ("precision", "recall", "f1") if k in s})
        out[f"test/{typ}/support"] = float(s.get("support", 0))
    out.update({f"test/{k}": float(scores[k]) for k in ("n_gold", "n_pred", "n_correct") if k in scores})
    out.update({k: float(result[k]) for k in ("best_valid_f1", "best_epoch", "epochs_run", "early_stopped")})
    out.update(numbers(result.get("probe") or {}, "probe"))
    for name, row in (result.get("missing_inputs") or {}).items():
        out.update(row_metrics(f"test_{name}", row))
    return out


def data_checksums(data_cfg, ds=None, resources: Mapping | None = None) -> dict[str, str]:
    """sha256 of the files a run read, named as in a batch run's ``provenance.json`` (``data_files``):
    the splits, the side files of its data config and the knowledge recorded in ``resources``
    (``Resources.describe()``)."""
    splits = Path(ds.data_dir if ds is not None else data_cfg.data_dir)
    sums = {f"data_dir/{s}.txt": file_sha256(splits / f"{s}.txt") for s in ("train", "valid", "test")
            if (splits / f"{s}.txt").is_file()}
    sums.update({k: file_sha256(p) for k in DATA_FIELDS if (p := getattr(data_cfg, k, None)) and Path(p).is_file()})
    knowledge = (resources or {}).get("knowledge") or {}
    for sha in (knowledge.get("knowledge_file") or {}).values():
        sums["knowledge_file"] = sha
    for i, (_, sha) in enumerate(sorted((knowledge.get("kb_inputs") or {}).items())):
        sums[f"kb{i}"] = sha
    return sums


def git_state(repo: Path = REPO) -> dict[str, str]:
    """The commit of the code that runs, and whether tracked files differ from it."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)reports"))
    return {"git_commit": commit, "git_dirty": str(dirty).lower(), "mlflow.source.git.commit": commit}


# ---------------------------------------------------------------- the store

def connect(cfg: TrackingConfig):
    """An ``MlflowClient`` on ``cfg.uri``: ``ImportError`` without mlflow, ``ConnectionError`` when a
    tracking server does not answer."""
    from mlflow import MlflowClient   # optional: the [track] extra
    if cfg.uri.startswith(("http://", "https://")):
        try:
            requests.get(cfg.uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as e:
            raise ConnectionError(f"no answer: {type(e).__name__}") from None
    return MlflowClient(tracking_uri=cfg.uri)


def experiment_id(client, cfg: TrackingConfig, name: str) -> str:
    """The id of MLflow experiment ``name``, created (artifacts under ``cfg.artifact_root``) or restored."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = (cfg.artifact_root / re.sub(r"[^\w.\-+]", "_", name)).as_uri() if cfg.artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:                      # made meanwhile by a run in parallel
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def log_all(client, run_id: str, params: Mapping | None = None, tags: Mapping | None = None,
            metrics: Mapping[str, float] | None = None, step: int = 0, series: Iterable[tuple] = ()) -> None:
    """Params, tags and metrics (``series``: more ``(key, value, step)``) in as few requests as MLflow allows."""
    from mlflow.entities import Metric, Param, RunTag   # optional: the [track] extra
    now = int(time.time() * 1000)
    ps = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    ts = [RunTag(k, str(v)[:8000]) for k, v in (tags or {}).items()]
    ms = [Metric(metric_key(k), float(v), now, step) for k, v in (metrics or {}).items()]
    ms += [Metric(metric_key(k), float(v), now, s) for k, v, s in series]
    for i in range(0, max(len(ps), len(ts)), 100):
        client.log_batch(run_id, params=ps[i:i + 100], tags=ts[i:i + 100])
    for i in range(0, len(ms), 1000):
        client.log_batch(run_id, metrics=ms[i:i + 1000])


class Tracker:
    """The MLflow run of one training run. Every method is a no-op before ``start`` succeeded and
    after a failure (warned about once), so the trainer calls them unconditionally."""

    def __init__(self, cfg: TrackingConfig):
        self.cfg, self.client, self.run_id = cfg, None, None
        self.params_before: dict = {}            # a resumed run's params: MLflow never changes one

    @property
    def active(self) -> bool:
        return self.client is not None

    def _guard(self, what: str, fn: Callable[[], object]):
        """``fn()``, or None when tracking is off; a failure stops tracking with one warning."""
        if self.client is None:
            return None
        try:
            return fn()
        except Exception as e:
            log.warning("MLflow tracking stopped for this run: %s failed (%s: %s); training goes on, its files "
                        "are complete", what, type(e).__name__, str(e).strip()[:200])
            self.client = None
            return None

    def start(self, run_dir: Path, config: Mapping, tags: Mapping, *, resume: bool = False,
              history: Iterable[Mapping] = (), files: Callable[[], Mapping[str, str]] | None = None) -> bool:
        """Open the run (the one named in ``run_dir/mlflow_run.json`` when ``resume``) with the
        params of ``config`` (``config.json``), ``tags``, the git commit and ``files()`` (sha256 of the
        data files, computed only when tracking is on); ``history``: epochs finished before it started,
        logged when the MLflow run is new. False (one log line) when tracking is off."""
        if not self.cfg.enabled:
            if self.cfg.uri:                     # not when Resources were made by hand, without resolve()
                log.info("MLflow tracking is off (TVOMNER_TRACKING=0); unset it to log runs to %s", self.cfg.uri)
            return False
        try:
            self.client = connect(self.cfg)
        except ImportError:
            log.warning("MLflow tracking is off: mlflow is not installed (%s)", HOW_TO)
            return False
        except Exception as e:
            log.warning("MLflow tracking is off: the store %s cannot be reached (%s); start it or set "
                        "MLFLOW_TRACKING_URI to one that can (TVOMNER_TRACKING=0 silences this line)",
                        self.cfg.uri, str(e).strip()[:200] or type(e).__name__)
            return False
        tags = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in tags.items()}
        tags.setdefault("experiment", self.cfg.experiment_for(tags))
        tags.update(git_state())
        try:
            tags.update({f"data_sha256.{k}": v for k, v in (files() if files else {}).items()})
        except Exception as e:                   # a missing side file: the run is still tracked
            log.warning("MLflow: no data checksums (%s)", e)
        run_name = tags.pop("run_name", None) or Path(run_dir).name
        self.run_id = self._guard("resuming the run", lambda: self._previous_run(Path(run_dir) / RUN_POINTER)) \
            if resume else None
        new = self.run_id is None
        if new:
            self.run_id = self._guard("creating the run", lambda: self._new_run(Path(run_dir), tags, run_name))
        params = {k: v for k, v in config_params(config).items() if k not in self.params_before}
        self._guard("logging params", lambda: log_all(self.client, self.run_id, params=params, tags=tags))
        if new:
            for rec in history:
                self.log_epoch(rec)
        if self.active:
            log.info("MLflow: run %s (%s) of experiment %r in %s", run_name, self.run_id,
                     self.cfg.experiment_for(tags), self.cfg.uri)
        return self.active

    def _new_run(self, run_dir: Path, tags: Mapping, run_name: str) -> str:
        exp = experiment_id(self.client, self.cfg, self.cfg.experiment_for(tags))
        run_id = self.client.create_run(exp, tags=tags, run_name=run_name).info.run_id
        atomic_write_json(run_dir / RUN_POINTER, {"tracking_uri": self.cfg.uri, "run_id": run_id, "experiment_id": exp})
        return run_id

    def _previous_run(self, pointer: Path) -> str | None:
        """The run named in ``pointer`` when it is in this store, set running again; else None."""
        rec = json.loads(pointer.read_text()) if pointer.exists() else {}
        try:
            run = self.client.get_run(rec["run_id"]) if rec.get("tracking_uri") == self.cfg.uri else None
        except Exception:                        # not in this store (any more)
            return None
        if run is None or run.info.lifecycle_stage == "deleted":
            return None
        self.client.update_run(run.info.run_id, status="RUNNING")
        self.params_before = dict(run.data.params)
        return run.info.run_id

    def log_epoch(self, rec: Mapping, last_step: int | None = None) -> None:
        """One epoch of the history (step = epoch); its optimizer steps' losses as ``train/step_loss``
        when ``last_step`` (the global step after it) is given."""
        def send():
            steps = rec.get("step_losses") or []
            series = [("train/step_loss", v, last_step - len(steps) + i + 1) for i, v in enumerate(steps)] \
                if last_step is not None else []
            log_all(self.client, self.run_id, metrics=epoch_metrics(rec), step=int(rec["epoch"]), series=series)
        self._guard("logging an epoch", send)

    def log_result(self, result: Mapping) -> None:
        """The final scores of ``results.json``."""
        self._guard("logging the scores", lambda: log_all(self.client, self.run_id, metrics=result_metrics(result)))

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        for p in map(Path, paths):
            if p.is_file():
                self._guard(f"logging {p.name}", lambda: self.client.log_artifact(self.run_id, str(p)))

    def end(self, status: str = "FINISHED") -> None:
        """Close the run: FINISHED, FAILED or KILLED."""
        if self.run_id is not None:
            self._guard("closing the run", lambda: self.client.set_terminated(self.run_id, status))
        self.client = None


# ---------------------------------------------------------------- the committed batch results

def import_key(folder: Path, experiment: str) -> str:
    """What makes an imported run the same: where it lies and what its files hold."""
    h = hashlib.sha256((folder / "metrics.json").read_bytes() + (folder / "provenance.json").read_bytes())
    return f"{experiment}/{folder.parent.name}/{folder.name}@{h.hexdigest()[:12]}"


def import_run(client, cfg: TrackingConfig, folder: Path, label: str) -> bool:
    """One committed run folder as an MLflow run; False when the store holds it already."""
    metrics, prov = (json.loads((folder / f).read_text()) for f in ("metrics.json", "provenance.json"))
    experiment = folder.parent.parent.name
    key = import_key(folder, experiment)
    exp = experiment_id(client, cfg, cfg.experiment or experiment)
    if client.search_runs([exp], filter_string=f"tags.import_key = '{key}'", max_results=1):
        return False
    ident = prov.get("identity") or {}
    tags = {"experiment": experiment, "dataset": metrics["dataset"], "setting": metrics["setting"],
            "seed": str(metrics["seed"]), "recipe": json.dumps(ident.get("recipe") or {}, sort_keys=True),
            "imported_from": label, "import_key": key, "notebook": prov.get("notebook") or "",
            **{f"data_sha256.{k}": v for k, v in (prov.get("data_files") or {}).items()},
            **({"reused_from": prov["reused_from"]} if prov.get("reused_from") else {})}
    git = prov.get("git") or {}
    if git.get("commit"):
        tags.update(git_commit=git["commit"], git_dirty=str(bool(git.get("dirty"))).lower(),
                    **{"mlflow.source.git.commit": git["commit"]})
    start = int(datetime.fromisoformat(prov["started"]).timestamp() * 1000) if prov.get("started") else None
    run = client.create_run(exp, start_time=start, tags=tags, run_name=folder.name)
    series = [("valid/f1", v, i + 1) for i, v in enumerate(metrics.get("valid_f1_per_epoch") or [])]
    series += [("tweets_per_s", v, i + 1) for i, v in enumerate(metrics.get("tweets_per_s") or []) if v is not None]
    series += [(k, v, metrics["best_epoch"]) for k, v in row_metrics("valid", metrics.get("valid") or {}).items()
               if k != "valid/f1"]
    final = row_metrics("test", metrics["test"])
    final.update({f"test/{k}": v for k, v in (metrics.get("test_counts") or {}).items()})
    final.update({k: float(metrics[k]) for k in ("best_valid_f1", "best_epoch", "epochs_run", "early_stopped")})
    final.update(numbers(metrics.get("probe") or {}, "probe"))
    log_all(client, run.info.run_id, params=config_params(prov.get("configs") or {}), metrics=final, series=series)
    for f in ("metrics.json", "provenance.json", "test_predictions.conll.gz"):
        if (folder / f).is_file():
            client.log_artifact(run.info.run_id, str(folder / f))
    end = start + int(1000 * prov["wall_seconds"]) if start and prov.get("wall_seconds") else None
    client.set_terminated(run.info.run_id, "FINISHED", end_time=end)
    return True


def import_runs(root: Path, cfg: TrackingConfig, label_root: Path = REPO) -> tuple[list[str], list[str]]:
    """Every committed run folder ``<experiment>/<dataset>/<setting>-s<seed>/`` below ``root`` into the store
    of ``cfg``, once (``import_key``): (imported, skipped), named relative to ``label_root`` where inside."""
    client, imported, skipped = connect(cfg), [], []
    for folder in sorted(p.parent for p in Path(root).rglob("metrics.json") if (p.parent / "provenance.json").exists()):
        inside = folder.resolve().is_relative_to(label_root.resolve())
        label = str(folder.resolve().relative_to(label_root.resolve()) if inside else folder)
        (imported if import_run(client, cfg, folder, label) else skipped).append(label)
    return imported, skipped


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tvolib.tracking", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="load the committed batch results into the store",
                         description="Every run folder <experiment>/<dataset>/<setting>-s<seed>/ into the store "
                                     "(MLFLOW_TRACKING_URI, else sqlite:///<repository>/mlflow.db), once.")
    imp.add_argument("roots", nargs="*", default=[str(REPO / "reports" / "experiments")],
                     help="folders to search for run folders (default: reports/experiments)")
    a = ap.parse_args(argv)
    cfg = tracking_config(os.environ if env is None else env)
    try:
        counts = [import_runs(Path(r), cfg) for r in a.roots]
    except ImportError:
        print(f"mlflow is not installed: {HOW_TO.split(',')[0]}", file=sys.stderr)
        return 1
    except ConnectionError as e:
        print(f"the store {cfg.uri} cannot be reached ({e}); set MLFLOW_TRACKING_URI", file=sys.stderr)
        return 1
    n_in, n_skip = sum(len(i) for i, _ in counts), sum(len(s) for _, s in counts)
    print(f"{n_in} run(s) imported, {n_skip} skipped (already in the store) into {cfg.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
