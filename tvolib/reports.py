"""Run the numbered notebooks headlessly with papermill and write reproducible reports.

    python -m tvolib.reports                       # every notebooks/NN_*.ipynb on the sample
    python -m tvolib.reports --only 01 03          # a subset (by number or name)
    python -m tvolib.reports -p data_dir=data/twitter2015 -p dataset=twitter2015 \
        -p image_dir=None -p captions=data/captions/blip2_twitter2015.json
    python -m tvolib.reports --params params/twitter2017.yaml --out reports/twitter2017
    python -m tvolib.reports --jobs 2              # two notebooks at a time (make reports), one thread each

For each notebook ``NN_name.ipynb`` the output folder gets ``NN_name.ipynb`` (executed),
``NN_name.html`` and ``NN_name.json`` (parameters, seed, package versions, git commit, data
checksums, wall time). A parameters file is YAML or JSON: top-level keys apply to every notebook
that declares them, and a key named after a notebook (``01_data:``) holds values for that one
only. A value given on the command line wins. A parameter is only passed to a notebook whose
``parameters`` cell declares it.

A parameters file is checked before anything runs: a top-level key that no notebook of the
folder declares, or a section named after no notebook, is an error naming the file and the key (a
typo would otherwise be dropped without a word); a missing file is a one-line error. While a
notebook runs, a line every ``--every`` seconds gives its elapsed time and current cell.

With ``--jobs N`` up to N notebooks run at once, each in its own kernel and, unless the parameters
say otherwise, with one CPU thread (``num_threads`` / ``threads``); a notebook that reads what another
writes (the candidate tagger's cache, the visual features, notebook 04's checkpoint) starts after it
(``AFTER``). A failing notebook stops the run with exit status 1 and a message naming the notebook and the
cell; its partly executed copy is kept for inspection. A ``-p`` name that no selected notebook
declares is an error, as in a parameters file.

Nothing secret is ever a parameter or written to a report: a parameter is refused wherever it is
given (``-p``, a parameters file, at any depth) when its name looks like a credential in any
spelling (``api_key``, ``openaiApiKey``, ``OPENAI_KEY``, ``hf-token``, ``password``, ``auth``...) or
its value looks like one (a known key prefix such as ``sk-``, ``ghp_``, ``hf_``, ``AKIA``, or a long
random-looking string); a notebook default with such a name or value is left out of its report
record, and the recorded command line is redacted the same way (``tvolib.runs.params``). Keys are
read from the environment by the code that needs them.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from .cache import atomic_write_text
from .runs.notebook import REPO, NotebookFailed, declared_parameters, run_notebook
from .runs.params import check_no_secrets, load_params_file, parse_value

log = logging.getLogger(__name__)


def find_notebooks(folder: str | Path, only: list[str] | None = None) -> list[Path]:
    nbs = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if only:
        keep = [p for p in nbs if any(p.stem == o or p.stem.startswith(f"{o}_") or p.name == o
                                      for o in only)]
        unknown = [o for o in only if not any(p.stem == o or p.stem.startswith(f"{o}_") or p.name == o
                                             for p in nbs)]
        if unknown:
            raise SystemExit(f"no notebook matches {unknown} in {folder}; have {[p.stem for p in nbs]}")
        nbs = keep
    if not nbs:
        raise SystemExit(f"no numbered notebooks (NN_name.ipynb) in {folder}")
    return nbs


def check_params_file(file_params: dict, notebooks: list[Path], source: str = "parameters file") -> None:
    """Every top-level key must be a parameter that some notebook declares, or a section named
    after a notebook (``01_data:``); secret-looking names are refused. ``notebooks`` should be every
    notebook of the folder, not only those selected with ``--only``."""
    check_no_secrets(file_params, source)
    declared = {nb.stem: declared_parameters(nb) for nb in notebooks}
    any_declared = set().union(*declared.values()) if declared else set()
    for k, v in file_params.items():
        if k in declared:
            if not isinstance(v, dict):
                raise SystemExit(f"{source}: section {k!r} must be a mapping of parameter names to values")
        elif k not in any_declared:
            what = "section" if isinstance(v, dict) else "key"
            raise SystemExit(f"{source}: {what} {k!r} is not declared by any notebook (notebooks: "
                             f"{sorted(declared)}; parameters: {sorted(any_declared)})")


def params_for(nb: Path, file_params: dict, cli_params: dict, source: str = "parameters file") -> dict:
    """The parameters ``nb`` runs with: top-level keys of the file that it declares, then its own
    section (``<stem>:``), then ``-p`` flags. A key of its own section that it does not declare is
    an error naming ``source`` (a typo there would otherwise be dropped without a word)."""
    declared = declared_parameters(nb)
    merged = {k: v for k, v in file_params.items() if not (k[:2].isdigit() and isinstance(v, dict))}
    section = file_params.get(nb.stem) if isinstance(file_params.get(nb.stem), dict) else {}
    undeclared = sorted(set(section) - set(declared))
    if undeclared:
        raise SystemExit(f"{source}: section {nb.stem!r} sets {undeclared}, which {nb.name} does not declare "
                         f"in its parameters cell (it declares {sorted(declared)})")
    merged.update(section)
    check_no_secrets(cli_params, "command line")
    merged.update(cli_params)
    chosen = {k: v for k, v in merged.items() if k in declared}
    check_no_secrets(chosen, nb.name)
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tvolib.reports", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notebooks", default=str(REPO / "notebooks"), help="folder of NN_name.ipynb")
    ap.add_argument("--out", default=str(REPO / "reports"), help="where executed copies go")
    ap.add_argument("--only", nargs="*", help="notebook numbers or names, e.g. 01 03_visual_features")
    ap.add_argument("--params", help="YAML/JSON file of parameters")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a parameter for every notebook that declares it (repeatable)")
    ap.add_argument("--cwd", default=str(REPO), help="working directory of the kernels (repo root)")
    ap.add_argument("--kernel", default=None, help="Jupyter kernel (default: tvomner, else python3)")
    ap.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    ap.add_argument("--every", type=float, default=30, help="seconds between live lines (0: none)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="notebooks at a time, each in its own kernel with one CPU thread unless a thread "
                         "count is given (a notebook starts once those it reads from have finished: AFTER)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[reports] %(message)s")   # papermill's INFO lines: not shown
    logging.getLogger("tvolib").setLevel(logging.INFO)
    cli = {}
    for item in args.param:
        if "=" not in item:
            ap.error(f"-p expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        cli[k.strip()] = parse_value(v)
    file_params = load_params_file(args.params) if args.params else {}
    check_no_secrets(cli, "command line")
    if args.params:
        check_params_file(file_params, find_notebooks(args.notebooks), source=str(args.params))
    nbs = find_notebooks(args.notebooks, args.only)
    used = set()
    plans = []
    for nb in nbs:
        p = params_for(nb, file_params, cli, source=str(args.params))   # sections only come from a file
        used |= set(p)
        plans.append((nb, p))
    unused = set(cli) - used
    if unused:
        raise SystemExit(f"command line: -p {', '.join(sorted(unused))}: not declared by the parameters cell of any "
                         f"selected notebook ({', '.join(nb.stem for nb in nbs)})")
    out = Path(args.out)
    if args.jobs > 1:                # one CPU thread per kernel unless the user chose a count
        plans = [(nb, {**{k: 1 for k in THREAD_PARAMS if k in declared_parameters(nb) and k not in p}, **p})
                 for nb, p in plans]

    def run(nb: Path, p: dict) -> dict:
        log.info("%s %s", nb.name, json.dumps(p, default=str) if p else "")
        rec = run_notebook(nb, out, p, Path(args.cwd), args.kernel, args.timeout, every=args.every or None)
        log.info("ok %s in %.1fs -> %s", nb.name, rec["wall_seconds"], out / nb.name)
        return rec

    failed = run_in_order(plans, run, args.jobs)
    write_summary(out)
    if failed:
        log.error("FAILED %s; partial output: %s", failed, out)
        return 1
    return 0


# notebooks that read what others write (caches, checkpoints): they start after those have finished
AFTER = {"04": ("02", "03"), "06": ("04",), "07": ("02",), "08": ("04",)}
THREAD_PARAMS = ("num_threads", "threads")


def run_in_order(plans: list[tuple[Path, dict]], run, jobs: int = 1) -> str | None:
    """Run ``plans`` (notebook, parameters) with ``run``, ``jobs`` at a time, each after the selected
    notebooks it reads from (``AFTER``); after a failure nothing new starts. Returns the first
    failure's message, or None."""
    names = {nb.stem[:2]: nb for nb, _ in plans}
    pending = list(plans)
    running: dict = {}
    done: set[str] = set()
    failed: str | None = None
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while pending or running:
            ready = [(nb, p) for nb, p in pending if failed is None and len(running) < max(1, jobs)
                     and all(d in done or d not in names for d in AFTER.get(nb.stem[:2], ()))]
            for nb, p in ready[:max(1, jobs) - len(running)]:
                pending.remove((nb, p))
                running[pool.submit(run, nb, p)] = nb
            if not running:
                break                    # a failure: the rest are not started
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                nb = running.pop(f)
                try:
                    f.result()
                    done.add(nb.stem[:2])
                except NotebookFailed as e:
                    failed = failed or str(e)
    return failed


def write_summary(out: Path) -> None:
    """``out/SUMMARY.md`` from every report record in ``out`` (``NN_name.json``), so a run of one
    notebook (``--only``) updates its row and keeps the others, each with its own commit and time."""
    lines = ["| notebook | status | seconds | started (UTC) | commit | parameters |", "|---|---|---:|---|---|---|"]
    for path in sorted(out.glob("[0-9][0-9]_*.json")):
        try:
            r = json.loads(path.read_text())
            over = ", ".join(f"{k}={r['parameters'][k]}" for k in r["parameters_overridden"])
            git = r.get("git") or {}
            commit = (git.get("commit") or "")[:7] + (" (dirty)" if git.get("dirty") else "")
            lines.append(f"| [{r['executed']}]({r['html']}) | {r['status']} | {r['wall_seconds']:.1f} | "
                         f"{r.get('started', '')} | {commit} | {over} |")
        except (ValueError, KeyError, TypeError) as e:      # not a report record: say so, skip it
            log.warning("%s: not a report record (%s: %s); left out of SUMMARY.md", path, type(e).__name__, e)
    atomic_write_text(out / "SUMMARY.md", "# Report runs\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
