"""notebooks/02_textual_features.ipynb runs headless on the sample (papermill)."""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_notebook_02_runs_on_the_sample(tmp_path):
    pm = pytest.importorskip("papermill")
    out = tmp_path / "02.out.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "02_textual_features.ipynb"), str(out), cwd=str(REPO),
                        kernel_name="python3", progress_bar=False,
                        parameters={"cache_dir": str(tmp_path / "cache"), "tagger": {"epochs": 1}, "threads": 1})
    import nbformat
    nb = nbformat.read(str(out), as_version=4)
    text = "".join(o.get("text", "") for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    assert "split   P      R      F1" in text and "coverage" in text
    assert (tmp_path / "cache" / "sample" / "candidates.jsonl").exists()
    assert (tmp_path / "cache" / "sample" / "knowledge.jsonl").exists()
    images = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 2                                   # coverage bars + input lengths
    src = json.loads((REPO / "notebooks" / "02_textual_features.ipynb").read_text())
    assert all(not c.get("outputs") for c in src["cells"] if c["cell_type"] == "code")   # stored without outputs
