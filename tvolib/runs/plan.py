"""The parameters file of an experiment and the runs it asks for.

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
``executor``    where the runs execute: the local process pool (default) or Slurm jobs through
                submitit, with partition, GPUs, time... (``tvolib.runs.executors``); the command
                line's ``--executor``, ``--partition``... override it. Not part of any run's identity.

Settings identical by construction on a dataset (``tvolib.settings.identical_settings``) are not
run and are shown as such. Runs are ordered seed-major: every setting's first seed before any
second, so a batch stopped early still fills every row.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..cache import atomic_write_json
from .executors import ExecutorConfig
from .notebook import REPO
from .params import check_no_secrets, load_params_file
from ..settings import (data_config, dataset_facts, get_setting, identical_settings, model_config, setting_recipe,
                        split_recipe, why_identical)

NOTEBOOK = REPO / "notebooks" / "07_run.ipynb"
REPORTS = REPO / "reports" / "experiments"
PARAM_KEYS = {"name", "runs_dir", "cache_dir", "datasets", "settings", "reference", "comparisons", "seeds",
              "recipe", "model", "threads", "executor"}
ARTIFACTS = ("metrics.json", "test_predictions.conll.gz", "provenance.json")


@dataclass
class Run:
    dataset: str
    setting: str
    seed: int
    run_dir: Path
    artifacts: Path
    identity: dict                          # what makes two runs the same run
    params: dict                            # the notebook's parameters
    state: str = "todo"                     # todo | skip | running | done | failed | held
    error: str = ""
    proc: subprocess.Popen | None = None    # the child process, or its job (executors.Submitted)
    log_file: object = None                 # the child's stdout/stderr (run.log)
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
    root: Path = Path("runs")                                   # <runs_dir>/<name>
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def select(self, settings: list[str] | None = None, seeds: list[int] | None = None) -> Plan:
        """The same plan with only the runs of these settings and seeds (``None``: all); the tables
        still show every finished run of the experiment. A name that is not in the file is an error."""
        for what, want, have in (("setting", settings, {r.setting for r in self.runs}),
                                 ("seed", seeds, {r.seed for r in self.runs})):
            unknown = sorted(set(want or ()) - have)
            if unknown:
                raise SystemExit(f"{self.params_file}: no run of {what}(s) {unknown} here "
                                 f"(the file's runs have {sorted(have)})")
        runs = [r for r in self.runs if (settings is None or r.setting in settings)
                and (seeds is None or r.seed in seeds)]
        return replace(self, runs=runs)


def load_experiment(path: str | Path) -> dict:
    """The parameters file, checked: known keys only, nothing secret-looking, required keys."""
    cfg = load_params_file(path)
    unknown = sorted(set(cfg) - PARAM_KEYS)
    if unknown:
        raise SystemExit(f"{path}: unknown key(s) {unknown}; a parameters file of tvolib.runs has "
                         f"{sorted(PARAM_KEYS)}")
    check_no_secrets(cfg, str(path))
    missing = [k for k in ("name", "datasets", "settings", "seeds") if k not in cfg]
    if missing:
        raise SystemExit(f"{path}: missing key(s) {missing}")
    if not isinstance(cfg["datasets"], dict) or not all(isinstance(v, dict) for v in cfg["datasets"].values()):
        raise SystemExit(f"{path}: 'datasets' must map each dataset name to its DataConfig fields ({{}}: the sample)")
    if cfg.get("executor") is not None and not isinstance(cfg["executor"], dict):
        raise SystemExit(f"{path}: 'executor' must be a mapping (kind, partition, gpus_per_node, ...)")
    return cfg


def _check_settings(path, settings: list[str], recipe: dict, model: dict, reference: str, comparisons) -> None:
    try:
        for s in settings:
            get_setting(s)
            model_config(s, model)
        split_recipe(recipe)
    except (KeyError, ValueError) as e:
        raise SystemExit(f"{path}: {e.args[0]}") from None
    if len(set(settings)) != len(settings):
        raise SystemExit(f"{path}: a setting is listed twice")
    if reference not in settings:
        raise SystemExit(f"{path}: reference {reference!r} is not one of the settings")
    for pair in comparisons:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise SystemExit(f"{path}: comparisons: each entry is a pair [a, b] of settings, got {pair!r}")
        for x in pair:
            if x not in settings:
                raise SystemExit(f"{path}: comparisons: {x!r} is not one of the settings")


def plan(path: str | Path, runs_dir: str | None = None, reports_dir: Path = REPORTS) -> Plan:
    """The runs of the parameters file ``path`` and one manifest per dataset; a bad file is a
    ``SystemExit`` naming it, before anything runs."""
    cfg = load_experiment(path)
    name, seeds, settings = str(cfg["name"]), [int(s) for s in cfg["seeds"]], list(cfg["settings"])
    recipe, model = dict(cfg.get("recipe") or {}), dict(cfg.get("model") or {})
    reference = cfg.get("reference") or next((s for s in settings if s != "text-only"), settings[0])
    comparisons = cfg.get("comparisons") or []
    _check_settings(path, settings, recipe, model, reference, comparisons)
    executor = ExecutorConfig.from_mapping(cfg.get("executor"), str(path))
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
            own = setting_recipe(setting, recipe, model)
            for seed in seeds:
                run_name = f"{setting}-s{seed}"
                identity = {"dataset": ds_name, "data": spec, "setting": setting, "seed": seed, "recipe": own,
                            "model": model}
                run_dir = root / ds_name / run_name
                params = {"dataset": ds_name, "data": spec, "setting": setting, "seed": seed, "recipe": own,
                          "model": model, "cache_dir": cache_dir, "output_dir": str(run_dir), "num_threads": threads}
                runs.append(Run(ds_name, setting, seed, run_dir, reports_dir / name / ds_name / run_name, identity, params))
    runs.sort(key=lambda r: seeds.index(r.seed))
    return Plan(name, str(path), runs, manifests, root, executor)


def write_manifests(p: Plan, reports_dir: Path = REPORTS) -> None:
    """``<reports_dir>/<name>/<dataset>/manifest.json``: the settings, reference, recipe and
    identical settings of this parameters file, which the tables follow."""
    for name, man in p.manifests.items():
        atomic_write_json(Path(reports_dir) / p.name / name / "manifest.json", man)
