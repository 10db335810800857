"""One notebook executed headlessly with papermill, and the record that makes it reproducible:
``<stem>.json`` beside the executed copy (parameters, seed, package versions, git commit, data
checksums, wall time, the redacted command line), and optionally its HTML export.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

# nbformat imports jsonschema, whose format checkers import rfc3987_syntax where it is installed
# (jupyter-events pulls it in); that compiles 38 Earley grammars at import: 2-3 s of every batch
# process, every run's child and every report, for the "iri" format that no notebook schema uses
# (python-jsonschema/jsonschema#1428). Left out, jsonschema leaves that one format unchecked. Where
# jsonschema was imported first (a Jupyter server, a kernel that imported it), nothing changes.
sys.modules.setdefault("rfc3987_syntax", None)

import nbformat
import papermill as pm
import torch
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from ..cache import atomic_write_json, atomic_write_text
from ..data import file_sha256
from ..viz import widget_renderer_url
from .params import check_no_secrets, parse_value, redact_command, redact_secrets

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("tvolib", "torch", "torchvision", "transformers", "timm", "pytorch-crf", "seqeval",
            "papermill", "numpy", "pillow", "safetensors", "openai", "wikipedia", "matplotlib")
DATA_FILES = ("train.txt", "valid.txt", "test.txt")


class NotebookFailed(RuntimeError):
    pass


def declared_parameters(nb_path: Path) -> dict:
    return pm.inspect_notebook(str(nb_path))


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
    untracked = run("ls-files", "--others", "--exclude-standard", "--", ".", ":(exclude)reports").splitlines()
    out = {"commit": run("rev-parse", "HEAD") or None, "dirty": bool(files or untracked), "dirty_files": files[:20]}
    if files or untracked:
        # the code that ran is the commit plus this patch (and these new files): kept so the run stays reproducible
        out["diff"] = run("diff", "HEAD", "--", ".", ":(exclude)reports")
        out["untracked"] = untracked[:50]
    return out


def machine() -> dict:
    """The processor and the CPU kernels torch picks on it: another machine sums in another order,
    so bitwise reproduction of a run needs the same kind of processor."""
    model = ""
    try:
        model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cores": os.cpu_count()}


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
    # the widget renderer inlined: the saved widgets (notebook 06) show offline, not only from a CDN
    body, _ = HTMLExporter(widget_renderer_url=widget_renderer_url()).from_notebook_node(
        nbformat.read(str(executed), as_version=4))
    atomic_write_text(html, body)


def kernel_name() -> str:
    """The project's kernel when installed (``make`` installs it), else this interpreter's."""
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
    """Logs ``<name>: running 1m30s, cell 3/9 (`first line`)`` every ``every`` seconds from a thread
    while a notebook executes (papermill itself is silent with progress_bar off); ``detail()``, when
    given, is added (a run's training progress)."""

    def __init__(self, name: str, executed: Path, every: float | None, detail: Callable[[], str] | None = None):
        self.name, self.executed, self.every, self.detail = name, executed, every, detail
        self.t0 = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if every else None

    def _run(self):
        while not self._stop.wait(self.every):
            log.info(self.line())

    def line(self) -> str:
        el = int(time.time() - self.t0)
        prog = notebook_progress(self.executed)
        where = f", cell {prog[0] + 1}/{prog[1]} (`{prog[2]}`)" if prog and prog[0] < prog[1] else ""
        more = f"; {self.detail()}" if self.detail else ""
        return f"{self.name}: running {el // 60}m{el % 60:02d}s{where}{more}"

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


# what every kernel inherits unless the user set it: transformers' "Loading weights" bars would stay in
# the executed notebooks and reports as lines of stderr
KERNEL_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@contextlib.contextmanager
def kernel_environment(defaults: dict[str, str] = KERNEL_ENV):
    """``defaults`` in ``os.environ`` while a kernel starts (a user's own values win), then as before."""
    added = {k: v for k, v in defaults.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def run_notebook(nb: Path, out_dir: Path, params: dict, cwd: Path, kernel: str | None = None,
                 timeout: int | None = None, html: bool = True, every: float | None = 30,
                 detail: Callable[[], str] | None = None) -> dict:
    """Execute ``nb`` into ``out_dir`` and write its report record ``out_dir/<stem>.json``. A
    notebook that declares ``figure_dir`` and is not given one saves its figures into
    ``out_dir/figures``. ``every``: seconds between live lines (None: silent), ``detail``: what
    they add (``LiveLine``)."""
    check_no_secrets(params, nb.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "figure_dir" in declared_parameters(nb) and "figure_dir" not in params:
        params = {**params, "figure_dir": default_figure_dir(out_dir, cwd)}
    executed = out_dir / nb.name
    t0 = time.time()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    error = None
    try:
        with LiveLine(nb.name, executed, every, detail), kernel_environment():
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
        "platform": platform.platform(), "machine": machine(), "command": redact_command(sys.argv),
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
