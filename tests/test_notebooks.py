"""Every numbered notebook is stored clean, is parametrisable by papermill, runs on the project's
kernel and resolves its paths from the repository root."""
import ast
import glob
import os
from pathlib import Path

import nbformat
import papermill as pm
import pytest

NOTEBOOKS = sorted(glob.glob(str(Path(__file__).resolve().parent.parent / "notebooks" / "[0-9][0-9]_*.ipynb")))


def test_notebooks_exist():
    names = [Path(p).stem for p in NOTEBOOKS]
    for prefix in ("01_data", "02_textual_features", "03_visual_features", "04_train_tvomner", "05_ablations"):
        assert prefix in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: Path(p).stem)
def test_stored_without_outputs_with_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in code), "outputs are stored"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert nb.metadata["kernelspec"]["name"] == "tvomner", "not the project's kernel (make install registers it)"
    assert nb.metadata["kernelspec"]["display_name"] == "Python (tvomner)"
    # papermill must see every name the parameters cell assigns (it silently skips lines it cannot parse)
    assigned = {t.id for n in ast.parse(params[0].source).body if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}
    assert assigned == set(pm.inspect_notebook(path)), "papermill cannot parse some parameter lines"
    assert assigned & {"seed", "data_dir", "experiment_params"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: Path(p).stem)
def test_first_cell_after_parameters_moves_to_the_repository_root(path):
    """papermill runs from the root, JupyterLab from notebooks/: ``use_project_root()`` must run
    before any statement that could touch a path (only imports may come first)."""
    nb = nbformat.read(path, as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    params = ast.parse(nb.cells[i].source).body
    assert all(isinstance(n, ast.Assign) and not any(isinstance(x, ast.Call) for x in ast.walk(n))
               for n in params), "the parameters cell must only assign plain values"
    first = next(c for c in nb.cells[i + 1:] if c.cell_type == "code")
    for node in ast.parse(first.source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        call = node.value if isinstance(node, (ast.Expr, ast.Assign)) else None
        assert isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", None)) \
            == "use_project_root", f"first statement after the imports is not use_project_root(): {ast.unparse(node)[:80]}"
        break
    else:
        raise AssertionError("the first code cell after the parameters cell does not call use_project_root()")


def test_use_project_root_from_notebooks_folder(tmp_path):
    from tvolib.paths import project_root, use_project_root
    repo = Path(__file__).resolve().parent.parent
    here = os.getcwd()
    try:
        os.chdir(repo / "notebooks")
        assert use_project_root() == repo and Path.cwd() == repo
        assert Path("tvolib/sample/data/train.txt").is_file()      # the notebooks' default data_dir
        assert use_project_root() == repo                          # idempotent
    finally:
        os.chdir(here)
    assert project_root(repo / "tvolib" / "sample") == repo
    # outside the repository it falls back on the folder above the installed package
    assert project_root(tmp_path) == repo
