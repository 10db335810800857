"""Run the numbered notebooks headlessly with papermill and write reproducible reports.

    python -m tvolib.reports                       # every notebooks/NN_*.ipynb on the sample
    python -m tvolib.reports --only 01 03          # a subset (by number or name)
    python -m tvolib.reports -p data_dir=../shared/data/twitter2015 -p dataset=twitter2015 \
        -p image_dir=None -p captions=../shared/data/captions/blip2_twitter2015.json
    python -m tvolib.reports --params params/twitter2017.yaml --out reports/twitter2017

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

A failing notebook stops the run with exit status 1 and a message naming the notebook and the
cell; its partly executed copy is kept for inspection. API keys are never parameters: a parameter
whose name looks like a secret (``api_key``, ``*_token``, ``password``...) is refused wherever it is
given, and a notebook default with such a name is never written to a report. Keys are read from
the environment by the code that needs them.
"""
from __future__ import annotations

import argparse
import ast
import json
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .cache import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("tvolib", "torch", "torchvision", "transformers", "timm", "pytorch-crf", "seqeval",
            "papermill", "numpy", "pillow", "safetensors", "openai", "wikipedia", "matplotlib")
# a name part (between "_" or "-") that names a credential: api_key, openai_api_key, hf_token,
# client_secret, password; not max_tokens or tokenizer
SECRET_NAME = re.compile(r"(^|[_-])(api[_-]?key|apikey|access[_-]?key|secret|token|password|passwd|credentials?)"
                         r"($|[_-])", re.I)
DATA_FILES = ("train.txt", "valid.txt", "test.txt")


class NotebookFailed(RuntimeError):
    pass


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


def parse_value(text: str):
    """``-p key=value`` values: Python/JSON literals (None, 3, 0.5, [1,2], "x"), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.lower()
        if low in ("null", "none"):
            return None
        if low in ("true", "false"):
            return low == "true"
        return text


def load_params_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: parameters file not found")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise SystemExit(f"{path}: invalid YAML: {e}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping of parameter names to values")
    return data


def declared_parameters(nb_path: Path) -> dict:
    import papermill as pm
    return pm.inspect_notebook(str(nb_path))


def check_no_secrets(params: dict, where: str) -> None:
    """Refuse any key (at any depth) whose name looks like a credential, whatever its value."""
    for k, v in params.items():
        if SECRET_NAME.search(str(k)):
            raise SystemExit(f"{where}: parameter {k!r} looks like a secret; API keys are read from "
                             f"the environment (e.g. OPENAI_API_KEY) and never passed as parameters")
        if isinstance(v, dict):
            check_no_secrets(v, f"{where}: {k}")


def redact_secrets(params: dict) -> dict:
    """``params`` without the keys whose name looks like a credential (what a report may hold)."""
    return {k: redact_secrets(v) if isinstance(v, dict) else v for k, v in params.items()
            if not SECRET_NAME.search(str(k))}


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


def git_commit() -> dict:
    def run(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except Exception:
            return ""
    # "dirty": tracked files other than the reports themselves differ from the commit. Executed
    # notebooks written into reports/ by this very run must not mark the runs after them dirty.
    files = run("diff", "--name-only", "HEAD", "--", ".", ":(exclude)reports").splitlines()
    return {"commit": run("rev-parse", "HEAD") or None, "dirty": bool(files), "dirty_files": files[:20]}


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def data_checksums(params: dict, cwd: Path) -> dict:
    """sha256 of the benchmark files and side files a run's parameters point at."""
    from .data import file_sha256
    sums = {}
    for k, v in params.items():
        if isinstance(v, dict):                       # nested parameters, e.g. a dataset's DataConfig fields
            sums.update({f"{k}.{kk}": vv for kk, vv in data_checksums(v, cwd).items()})
            continue
        if not isinstance(v, str) or not v or k in ("cache_dir", "output_dir", "out_dir", "figure_dir"):
            continue
        p = Path(v) if Path(v).is_absolute() else cwd / v
        if p.is_dir():
            for name in DATA_FILES:
                if (p / name).is_file():
                    sums[f"{k}/{name}"] = file_sha256(p / name)
        elif p.is_file() and p.stat().st_size < 2 << 30:
            sums[k] = file_sha256(p)
    return sums


def default_parameters(nb: Path) -> dict:
    return {k: parse_value(v["default"]) if isinstance(v.get("default"), str) else v.get("default")
            for k, v in declared_parameters(nb).items()}


def html_export(executed: Path, html: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter
    from .viz import widget_renderer_url
    # the widget renderer inlined: the saved widgets (notebook 06) show offline, not only from a CDN
    body, _ = HTMLExporter(widget_renderer_url=widget_renderer_url()).from_notebook_node(
        nbformat.read(str(executed), as_version=4))
    atomic_write_text(html, body)


def kernel_name() -> str:
    """The project's kernel when installed (``make`` installs it), else this interpreter's."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        spec = KernelSpecManager().get_kernel_spec("tvomner")
        if Path(spec.argv[0]).exists():
            return "tvomner"
    except NoSuchKernel:
        pass
    return "python3"


def _describe_cell(executed: Path, index: int) -> str:
    """'cell 3 (`first line`)': 1-based position in the SOURCE notebook of the cell that raised
    (papermill's injected-parameters and error-banner cells are not counted)."""
    import nbformat
    try:
        cells = [c for c in nbformat.read(str(executed), as_version=4).cells
                 if not {"injected-parameters", "papermill-error-cell-tag"} & set(c.metadata.get("tags", []))]
        pos = next(i for i, c in enumerate(cells) if c.cell_type == "code"
                   and any(o.get("output_type") == "error" for o in c.get("outputs", [])))
        first = next((l for l in cells[pos].source.splitlines() if l.strip()), "")
        return f"cell {pos + 1} (`{first[:60]}`)"
    except Exception:
        return f"cell index {index}"


def notebook_progress(executed: Path) -> tuple[int, int, str] | None:
    """(cells finished, code cells, first line of the running cell) of a notebook papermill is
    executing (it saves the output copy after every cell); None when it cannot be read yet."""
    try:
        cells = [c for c in json.loads(Path(executed).read_text())["cells"] if c.get("cell_type") == "code"]
    except (OSError, ValueError, KeyError):
        return None
    status = [c.get("metadata", {}).get("papermill", {}).get("status") for c in cells]
    running = next((c for c, st in zip(cells, status) if st == "running"), None)
    src = "".join(running["source"]) if running else ""
    first = next((l.strip() for l in src.splitlines() if l.strip()), "")
    return sum(st == "completed" for st in status), len(cells), first[:60]


class LiveLine:
    """Prints ``[reports] <name>: running 1m30s, cell 3/9 (`first line`)`` every ``every`` seconds
    from a thread while a notebook executes (papermill itself is silent with progress_bar off)."""

    def __init__(self, name: str, executed: Path, every: float | None, prefix: str = "[reports]"):
        import threading
        self.name, self.executed, self.every, self.prefix = name, executed, every, prefix
        self.t0 = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if every else None

    def _run(self):
        while not self._stop.wait(self.every):
            print(f"{self.prefix} {self.line()}", flush=True)

    def line(self) -> str:
        el = int(time.time() - self.t0)
        prog = notebook_progress(self.executed)
        where = f", cell {prog[0] + 1}/{prog[1]} (`{prog[2]}`)" if prog and prog[0] < prog[1] else ""
        return f"{self.name}: running {el // 60}m{el % 60:02d}s{where}"

    def __enter__(self):
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()
        return False


def default_figure_dir(out_dir: Path, cwd: Path) -> str:
    """``<out_dir>/figures``, relative to the kernel's working directory where it lies inside it, so
    that reports name no machine's absolute paths."""
    figures, cwd_abs = Path(out_dir).resolve() / "figures", Path(cwd).resolve()
    return str(figures.relative_to(cwd_abs) if figures.is_relative_to(cwd_abs) else figures)


def run_notebook(nb: Path, out_dir: Path, params: dict, cwd: Path, kernel: str | None = None,
                 timeout: int | None = None, html: bool = True, every: float | None = 30) -> dict:
    """Execute ``nb`` into ``out_dir`` and write its report record ``out_dir/<stem>.json``. A
    notebook that declares ``figure_dir`` and is not given one saves its figures into
    ``out_dir/figures``. ``every``: seconds between live lines (None: silent)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    check_no_secrets(params, nb.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "figure_dir" in declared_parameters(nb) and "figure_dir" not in params:
        params = {**params, "figure_dir": default_figure_dir(out_dir, cwd)}
    executed = out_dir / nb.name
    t0 = time.time()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    error = None
    try:
        with LiveLine(nb.name, executed, every):
            pm.execute_notebook(str(nb), str(executed), parameters=params, cwd=str(cwd),
                                kernel_name=kernel or kernel_name(), progress_bar=False,
                                execution_timeout=timeout, report_mode=False)
    except PapermillExecutionError as e:
        error = f"{nb.name}: {_describe_cell(executed, e.cell_index)} raised {e.ename}: {e.evalue}"
    except Exception as e:  # kernel died, timeout, bad notebook
        error = f"{nb.name}: {type(e).__name__}: {str(e)[:500]}"
    wall = time.time() - t0
    effective = redact_secrets({**default_parameters(nb), **params})
    record = {
        "notebook": str(nb.relative_to(REPO) if nb.is_relative_to(REPO) else nb),
        "executed": executed.name, "html": nb.stem + ".html",
        "status": "failed" if error else "ok", "error": error,
        "started": started, "wall_seconds": round(wall, 2),
        "parameters": effective, "parameters_overridden": sorted(params),
        "seed": effective.get("seed"),
        "git": git_commit(), "packages": package_versions(),
        "data_checksums": data_checksums(effective, cwd),
        "platform": platform.platform(), "command": " ".join(sys.argv),
    }
    if executed.exists() and html:
        try:
            html_export(executed, out_dir / (nb.stem + ".html"))
        except Exception as e:  # an HTML failure must not hide the notebook's own result
            record["html_error"] = f"{type(e).__name__}: {e}"
    atomic_write_json(out_dir / (nb.stem + ".json"), record)
    if error:
        raise NotebookFailed(error)
    return record


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
    args = ap.parse_args(argv)

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
        print(f"warning: no notebook declares {sorted(unused)}", file=sys.stderr)
    out = Path(args.out)
    for nb, p in plans:
        print(f"[reports] {nb.name} {json.dumps(p, default=str) if p else ''}", flush=True)
        try:
            rec = run_notebook(nb, out, p, Path(args.cwd), args.kernel, args.timeout, every=args.every or None)
        except NotebookFailed as e:
            print(f"[reports] FAILED {e}\n[reports] partial output: {out / nb.name}", file=sys.stderr)
            write_summary(out)
            return 1
        print(f"[reports] ok {nb.name} in {rec['wall_seconds']:.1f}s -> {out / nb.name}", flush=True)
    write_summary(out)
    return 0


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
            print(f"warning: {path}: not a report record ({type(e).__name__}: {e}); left out of SUMMARY.md",
                  file=sys.stderr)
    atomic_write_text(out / "SUMMARY.md", "# Report runs\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
