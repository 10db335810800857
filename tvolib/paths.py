"""One working directory for every notebook and command: the repository root.

papermill runs the notebooks from the repository root, JupyterLab from ``notebooks/``. Every notebook
calls ``use_project_root()`` in its first code cell, so relative paths (``cache/``, ``runs/``,
``data/``, ``params/``) mean the same thing in both, and interactive work reuses what
``make reports`` built.
"""
from __future__ import annotations

import os
from pathlib import Path

_MARKER = "pyproject.toml"


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) that holds this
    project's ``pyproject.toml`` and ``tvolib/``; else the folder above the installed package."""
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / _MARKER).is_file() and (d / "tvolib").is_dir():
            return d
    pkg_parent = Path(__file__).resolve().parent.parent
    if (pkg_parent / _MARKER).is_file():
        return pkg_parent
    raise FileNotFoundError(f"{here}: not inside the tvomner repository (no {_MARKER} with tvolib/ above it)")


def use_project_root(start: str | Path | None = None) -> Path:
    """``chdir`` to ``project_root()`` and return it (idempotent)."""
    root = project_root(start)
    if Path.cwd().resolve() != root:
        os.chdir(root)
    return root
