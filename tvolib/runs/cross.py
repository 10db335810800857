"""Cross-dataset evaluation of an experiment: its finished runs on another benchmark's test set.

Each run whose checkpoint is at hand (its run folder's ``best/``, or where ``--rerun`` left a
re-run of it) executes ``notebooks/08_cross_dataset.ipynb`` (``tvolib.cross_dataset``) on the
target's test set, into ``reports/experiments/<name>/<dataset>/<run>/cross-<target>/``
(``cross.json``, the predictions per condition, the executed notebook and its provenance record);
``<name>/<dataset>/cross_<target>.{md,json}`` then gives ΔF1 against ``text-only`` per condition
with both intervals, as the missing-inputs table does::

    python -m tvolib.runs --params params/table2_twitter2017.yaml --cross params/table2_twitter2015.yaml
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

from ..cache import atomic_write_json, atomic_write_text
from ..evaluate import CONDITIONS
from ..resources import knowledge_file
from ..settings import data_config
from ..weights import ResourceMissing
from .notebook import REPO, run_notebook
from .plan import Plan, Run, plan as make_plan, write_manifests
from .tables import finished_runs, missing_inputs_markdown, missing_rows

log = logging.getLogger(__name__)
NOTEBOOK = REPO / "notebooks" / "08_cross_dataset.ipynb"


def checkpoint_of(run: Run, runs_root: Path) -> Path | None:
    """The checkpoint of a finished run: in its run folder, in the folder its provenance names, or
    where ``--rerun`` leaves a re-run (``<runs_root>/rerun/<experiment>/<dataset>/<run>``), for
    the run or the run it was copied from; None when none is here. A checkpoint whose selected
    epoch and valid F1 are not the run's is passed over (another run's)."""
    prov = json.loads((run.artifacts / "provenance.json").read_text())
    metrics = json.loads((run.artifacts / "metrics.json").read_text())
    own = run.artifacts.relative_to(run.artifacts.parents[2])          # <experiment>/<dataset>/<run>
    origins = [own] + ([Path(prov["reused_from"]).relative_to("reports/experiments")]
                       if prov.get("reused_from") else [])
    folders = [run.run_dir] + ([REPO / prov["run_dir"]] if prov.get("run_dir") else [])
    folders += [runs_root / o for o in origins[1:]] + [runs_root / "rerun" / o for o in origins]
    for folder in folders:
        info_file = folder / "best" / "checkpoint.json"
        if not info_file.exists():
            continue
        info = json.loads(info_file.read_text())
        if (info.get("epoch"), round((info.get("valid") or {}).get("F1", -1), 6)) == \
                (metrics["best_epoch"], round(metrics["best_valid_f1"], 6)):
            return folder / "best"
        log.warning("%s: epoch and valid F1 are not those of %s: not its checkpoint", folder / "best", run.artifacts)
    return None


def target_of(params_file: str | Path) -> tuple[str, dict]:
    """The target dataset of a parameters file (its one dataset entry): (name, spec)."""
    t = make_plan(params_file)
    if len(t.manifests) != 1:
        raise SystemExit(f"{params_file}: --cross needs a parameters file with one dataset, "
                         f"not {', '.join(t.manifests)}")
    (name, man), = t.manifests.items()
    return name, man["data"]


def cross_batch(p: Plan, target_params: str | Path, reports_dir: Path, env: Mapping[str, str],
                max_eval_samples: int | None = None, only: list[str] | None = None) -> int:
    """Score every finished run of ``p`` (of the settings ``only``, default all) with a checkpoint on
    the target's test set (one notebook each; a run scored before is not scored again), then write
    the table; returns the number of runs that could not be scored."""
    unknown = sorted(set(only or ()) - {r.setting for r in p.runs})
    if unknown:
        raise SystemExit(f"--only: {unknown} are not settings of {p.params_file}")
    target, spec = target_of(target_params)
    write_manifests(p, reports_dir)
    cache_dir = p.runs[0].params["cache_dir"] if p.runs else "cache"
    tcfg = data_config(target, spec, cache_dir=cache_dir)      # the target's files as its runs read them
    try:
        kfile = str(knowledge_file(tcfg, env))
    except ResourceMissing as e:                                # a model that reads per-tweet texts says so
        kfile = None
        log.warning("%s: its tweets get no per-tweet knowledge (%s)", target, e)
    failed = 0
    for r in p.runs:
        if r.dataset == target or not (r.artifacts / "provenance.json").exists() or (only and r.setting not in only):
            continue
        out = r.artifacts / f"cross-{target}"
        if (out / "08_cross_dataset.json").exists() and (out / "cross.json").exists():
            continue
        ckpt = checkpoint_of(r, p.root.parent)
        if ckpt is None:
            log.warning("%s: no checkpoint here (%s/best): re-run it to score it on %s", r.label, r.run_dir, target)
            failed += 1
            continue
        # recorded LLM phrases and boxes travel as files; "caption-noun-chunks" is the checkpoint's own rule
        recorded = {k: f if f and Path(f).is_file() else None for k, f in (("phrases", tcfg.phrases),
                                                                            ("boxes", tcfg.boxes))}
        params = {"checkpoint": str(ckpt), "data_dir": str(tcfg.data_dir), "image_dir": tcfg.image_dir,
                  "captions": tcfg.captions, "knowledge_file": kfile, **recorded, "out_dir": str(out),
                  "cache_dir": cache_dir, "max_eval_samples": max_eval_samples}
        log.info("%s on %s: %s", r.label, target, out)
        run_notebook(NOTEBOOK, out, params, cwd=REPO, html=False)
    for folder in sorted(reports_dir.joinpath(p.name).glob("*/manifest.json")):
        write_cross_tables(folder.parent, target)
    return failed


def cross_runs(folder: Path, target: str) -> tuple[dict, dict]:
    """The finished runs of ``folder`` scored on ``target``, shaped as :func:`finished_runs`'s
    (``metrics``: the target's test scores, ``missing_inputs``; ``dir``: the cross folder)."""
    man, runs = finished_runs(folder)
    out: dict[str, dict[int, dict]] = {}
    for s, by_seed in runs.items():
        for sd, r in by_seed.items():
            f = r["dir"] / f"cross-{target}" / "cross.json"
            if f.exists():
                c = json.loads(f.read_text())
                out.setdefault(s, {})[sd] = {"metrics": {"test": c["test"]["all"], "missing_inputs": c["test"],
                                                         "core_types": c["core_types"]}, "dir": f.parent,
                                             "inputs": {k: c.get(k) for k in ("knowledge_file", "captions")}}
    return man, out


def write_cross_tables(folder: Path, target: str) -> dict | None:
    """``cross_<target>.{md,json}`` beside the dataset folder's runs; None when none was scored."""
    man, runs = cross_runs(folder, target)
    t = missing_rows(man, runs, f"{folder}: on {target}", any_rows=True)
    if t is None:
        return None
    t.update(target=target, core_f1={s: {cond: [round(by_seed[sd]["metrics"]["core_types"][cond]["F1"], 6)
                                                for sd in sorted(by_seed)] for cond, _, _ in CONDITIONS}
                                     for s, by_seed in runs.items()},
             target_inputs=sorted({f"{k}: {v}" for by_seed in runs.values() for r in by_seed.values()
                                   for k, v in r["inputs"].items() if v}))
    atomic_write_json(folder / f"cross_{target}.json", t)
    atomic_write_text(folder / f"cross_{target}.md", cross_markdown(t) + "\n")
    return t


def cross_markdown(t: dict) -> str:
    body = missing_inputs_markdown(t).split("\n")
    body[0] = f"## Trained on {t['dataset']}, tested on {t['target']}: with and without side inputs"
    body[2] += (f" Side inputs of the {t['target']} tweets (knowledge source of the settings that read "
                "per-tweet texts, captions): " + ("; ".join(f"`{x}`" for x in t["target_inputs"]) or "none") + ".")
    core = ["", "F1 over PER, LOC and ORG only (MISC left out of gold and predictions: the two benchmarks "
            "define it differently), mean over seeds:", "",
            "| setting | " + " | ".join(what for _, _, what in CONDITIONS) + " |",
            "|---|" + "---:|" * len(CONDITIONS)]
    for s, by_cond in t["core_f1"].items():
        core.append(f"| {s} | " + " | ".join(f"{sum(v) / len(v):.2f}" if v else "—" for v in by_cond.values()) + " |")
    return "\n".join(body + core)
