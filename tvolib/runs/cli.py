"""``python -m tvolib.runs``: the experiment batch from the command line.

    python -m tvolib.runs --params params/table2_twitter2017.yaml --jobs 2
    python -m tvolib.runs --params params/table2_sample.yaml --dry-run     # the plan only
    python -m tvolib.runs --params params/table2_sample.yaml --summary     # tables only
    python -m tvolib.runs --params params/table2_twitter2015.yaml --only tvomner+pgim --seeds 2 3
                                                                            # some rows' runs only
    python -m tvolib.runs --params params/paper_twitter2017.yaml --preflight   # every resource it needs: there?
    python -m tvolib.runs --compare params/precision_twitter2017_fp32.yaml params/precision_twitter2017_bf16.yaml
    python -m tvolib.runs --rerun reports/experiments/table2/twitter2015/tvomner+pgim-s1   # a committed run again
    python -m tvolib.runs --params params/table2_twitter2017.yaml --cross params/table2_twitter2015.yaml
                                                                            # its runs on the other test set
    python -m tvolib.runs --params params/table2_twitter2017.yaml --executor slurm --partition gpu --gpus 1 \
        --time 120 --jobs 20                                                # Slurm jobs (submitit)

Every (dataset, setting, seed) of the parameters file is one papermill execution of
``notebooks/07_run.ipynb``. A run whose committed artifacts (or run folder) hold the same
parameters is skipped; one finished with the same parameters for another experiment is copied
(its provenance says ``reused_from``); a run folder holding other parameters is refused (choose
another ``name``); an interrupted run resumes after its last finished epoch. A run another batch
is running (its ``run.lock`` is held) is left to it and named as such. The exit status is 1 if any
run failed. Each finished run's ``metrics.json``, test predictions and provenance go to
``reports/experiments/<name>/<dataset>/<setting>-s<seed>/``, and ``table2.{md,json}`` of the
experiment is rewritten from every artifact there. The keys of a parameters file are those of
``tvolib.runs.plan``.

With ``--executor slurm`` each run is a Slurm job submitted with submitit (``--executor
submitit-local``: submitit's local executor, the same path on this machine); the job runs the same
child command, holding the same lock in the shared runs folder, so skipping, resuming and locking work
across nodes. ``--jobs`` is then the number of jobs queued or running at a time.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..cache import atomic_write_json, atomic_write_text
from ..config import TrainConfig
from ..settings import split_recipe
from .execute import execute
from .executors import KINDS
from .identity import classify
from .cross import cross_batch
from .plan import NOTEBOOK, REPORTS, plan, write_manifests
from .preflight import MISSING, bf16_check, main as preflight_main
from .rerun import rerun
from .tables import compare_experiments, compare_markdown, write_tables


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tvolib.runs", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--params", help="the experiment's parameters file (YAML)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each with `threads` torch threads)")
    ap.add_argument("--runs_dir", default=None, help="overrides the file's runs_dir")
    ap.add_argument("--every", type=float, default=60, help="seconds between live lines")
    ap.add_argument("--dry-run", action="store_true", help="print the plan (runs, skips, identical settings)")
    ap.add_argument("--summary", action="store_true", help="only rewrite the tables (from the artifacts, after "
                    "copying those of runs finished in their folders or for another experiment)")
    ap.add_argument("--preflight", action="store_true",
                    help="list every resource the file's runs need (data, images, weights, endpoints, GPU, disk), "
                         "each present or missing with the fix; exit status 0 only when all required are present")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                    help="two experiments' parameters files: ΔF1 = B − A per dataset, setting and seed "
                         "(e.g. the same runs in fp32 and bf16), written to reports/experiments/compare-A-vs-B.md")
    ap.add_argument("--rerun", default=None, metavar="RUN",
                    help="a committed run folder (reports/experiments/<name>/<dataset>/<run>): execute it again "
                         "from its recorded parameters into <runs_dir>/rerun/ and compare every figure "
                         "(exit status 1 when one differs); an identical re-run adds what it scored and "
                         "the committed run lacks (test F1 with side inputs left out)")
    ap.add_argument("--replace", default=None, metavar="WHY",
                    help="with --rerun: a re-run that is not identical replaces the committed run and its "
                         "copies; WHY goes into its provenance (`replaces`)")
    ap.add_argument("--cache_dir", default=None, help="with --rerun: the caches to use (a new folder re-builds "
                    "every side input, as a fresh clone does)")
    ap.add_argument("--cross", default=None, metavar="TARGET",
                    help="another parameters file (one dataset): score every finished run of --params whose "
                         "checkpoint is here on that dataset's test set, with and without side inputs "
                         "(notebooks/08_cross_dataset.ipynb per run), and write <experiment>/<dataset>/"
                         "cross_<target>.md with ΔF1 against text-only")
    ap.add_argument("--max_eval_samples", type=int, default=None,
                    help="with --cross: the first N test tweets only (quick runs)")
    ap.add_argument("--only", nargs="+", default=None, metavar="SETTING",
                    help="run (or with --cross, score) the runs of these settings only (default: every "
                         "setting); the tables still show every finished run")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED",
                    help="run the runs of these seeds only (default: the file's seeds)")
    ex = ap.add_argument_group("executor", "where the runs execute (overrides the parameters file's `executor:`)")
    ex.add_argument("--executor", choices=KINDS, default=None,
                    help="local: a process pool on this machine (default); slurm: one Slurm job per run, "
                         "submitted with submitit; submitit-local: submitit's local executor (the Slurm code "
                         "path, on this machine)")
    ex.add_argument("--partition", default=None, help="Slurm partition of the jobs")
    ex.add_argument("--gpus", type=int, default=None, dest="gpus_per_node", help="GPUs per job")
    ex.add_argument("--cpus", type=int, default=None, dest="cpus_per_task",
                    help="CPUs per job (default: the file's `threads`)")
    ex.add_argument("--mem", type=float, default=None, dest="mem_gb", help="memory per job, GB")
    ex.add_argument("--time", type=int, default=None, dest="timeout_min",
                    help="time limit per job, minutes (default 240); a run stopped by it resumes "
                         "from its last epoch when the same command is run again")
    ap.add_argument("--notebook", default=str(NOTEBOOK), help=argparse.SUPPRESS)
    ap.add_argument("--reports", default=str(REPORTS), help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[runs] %(message)s")   # papermill's INFO lines: not shown
    logging.getLogger("tvolib").setLevel(logging.INFO)
    if args.rerun:
        return rerun(args.rerun, args.runs_dir or "runs", args.cache_dir, args.every, Path(args.notebook), args.replace)
    reports_dir = Path(args.reports)
    if args.compare:
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
    if args.preflight:
        return preflight_main(args.params)
    p = plan(args.params, args.runs_dir, reports_dir)
    if args.cross:
        return 1 if cross_batch(p, args.cross, reports_dir, os.environ, args.max_eval_samples, args.only) else 0
    if args.summary:
        write_manifests(p, reports_dir)
        for r in p.runs:                         # finished runs whose artifacts are not copied yet
            classify(r)
        write_tables(reports_dir / p.name)
        table = reports_dir / p.name / "table2.md"
        print(table.read_text() if table.exists() else "no finished runs")
        return 0
    p = p.select(args.only, args.seeds)
    executor = p.executor.replace(kind=args.executor, partition=args.partition, gpus_per_node=args.gpus_per_node,
                                  cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, timeout_min=args.timeout_min)
    executor.check("the command line")
    if args.dry_run:
        if executor.kind != "local":
            print(f"executor: {executor.describe()}")
        for name, man in p.manifests.items():
            print(f"{name}: {man['facts_text']}")
            for s, v in man["identical"].items():
                print(f"  {s}: {v['why']} (not run)")
        for r in p.runs:
            classify(r, copy=False)
            print(f"  {r.label}: {r.state}{' (' + r.error + ')' if r.error else ''}")
        return 0
    slow = bf16_check(TrainConfig(**split_recipe(p.runs[0].params["recipe"])[1]), executor.kind) if p.runs else None
    if slow and slow.status == MISSING:                   # hours slower: said before the runs start
        logging.getLogger("tvolib.runs").warning("%s: precision bf16 on a CPU without bf16 units (%s); %s",
                                                 args.params, slow.detail, slow.fix)
    return 1 if execute(p, args.jobs, args.every, Path(args.notebook), reports_dir, executor) else 0


if __name__ == "__main__":
    sys.exit(main())
