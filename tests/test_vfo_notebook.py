"""notebooks/03_visual_features.ipynb runs headless on the sample (papermill), offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks" / "03_visual_features.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NB.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "tvomner"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)


@pytest.mark.slow
def test_notebook_runs_on_the_sample(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TVOMNER_LLM_BASE_URL", "TVOMNER_LLM_MODEL", "TVOMNER_GROUNDING_MODEL")}
    out = tmp_path / "03.out.ipynb"
    r = subprocess.run([sys.executable, "-m", "papermill", str(NB), str(out), "--cwd", str(ROOT), "-k", "python3",
                        "-p", "cache_dir", str(tmp_path / "cache"), "-p", "threads", "1"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    nb = json.loads(out.read_text())
    text = "".join("".join(o.get("text", "")) if isinstance(o.get("text"), list) else o.get("text", "")
                   for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert '"caption": 2' in text and "sample-ground-truth" in text
    assert "rows summing to 1: 64 / 64" in text
    images = sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
    assert images >= 4
    report = json.loads((tmp_path / "cache" / "sample" / "visual_report.json").read_text())
    assert report["glob_kind"] == {"image": 118, "caption": 2}
