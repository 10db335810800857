"""Every numbered notebook is stored clean and is parametrisable by papermill."""
import ast
import glob
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
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # papermill must see every name the parameters cell assigns (it silently skips lines it cannot parse)
    assigned = {t.id for n in ast.parse(params[0].source).body if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}
    assert assigned == set(pm.inspect_notebook(path)), "papermill cannot parse some parameter lines"
    assert "seed" in assigned or "data_dir" in assigned
