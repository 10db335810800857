"""Re-running a committed run from its recorded parameters (``python -m tvolib.runs --rerun``): the
same child command as the batch, a folder of its own, and a comparison that notices any difference."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_experiments import cli, fake_notebook, write_params  # noqa: E402

from tvolib.runs.notebook import REPO  # noqa: E402
from tvolib.runs.rerun import compare, rerun  # noqa: E402


def _committed(tmp_path) -> Path:
    nb = fake_notebook(tmp_path / "nb.ipynb")
    pf = write_params(tmp_path / "p.yaml", ["tvomner+pgim"], seeds=(2,))
    r = cli(tmp_path, pf, "--jobs", "1", nb=nb)
    assert r.returncode == 0, r.log
    return tmp_path / "reports" / "t" / "sample" / "tvomner+pgim-s2"


def test_a_rerun_of_an_unchanged_run_is_identical_and_a_changed_figure_is_named(tmp_path, capsys):
    committed = _committed(tmp_path)
    before = {p.name: p.read_bytes() for p in committed.iterdir()}
    code = rerun(committed, runs_dir=tmp_path / "again", cache_dir=str(tmp_path / "cache"),
                 notebook=tmp_path / "nb.ipynb")
    out = capsys.readouterr().out
    assert code == 0 and "identical to the last digit" in out, out
    run_dir = tmp_path / "again" / "rerun" / "t" / "sample" / "tvomner+pgim-s2"
    rec = json.loads((run_dir / "rerun.json").read_text())
    assert rec["identical"] and rec["figures"]["test_f1"]["same"]
    assert rec["figures"]["test_predictions_sha256"]["committed"] == rec["figures"]["test_predictions_sha256"]["rerun"]
    launch = json.loads((run_dir / "launch.json").read_text())
    assert launch["params"]["seed"] == 2 and launch["params"]["setting"] == "tvomner+pgim"
    assert {p.name: p.read_bytes() for p in committed.iterdir()} == before        # committed files untouched

    # a committed figure that the re-run does not give: named, exit status 1
    m = json.loads((committed / "metrics.json").read_text())
    m["test"]["F1"] += 1e-9
    (committed / "metrics.json").write_text(json.dumps(m))
    c = compare(committed, run_dir / "rerun-artifacts")
    assert not c["identical"] and not c["figures"]["test_f1"]["same"]
    assert c["figures"]["best_epoch"]["same"] and c["figures"]["valid_f1_per_epoch"]["same"]
    r = subprocess.run([sys.executable, "-m", "tvolib.runs", "--rerun", str(committed), "--runs_dir",
                        str(tmp_path / "again"), "--notebook", str(tmp_path / "nb.ipynb")], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "test_f1: committed" in r.stdout and "NOT identical" in r.stdout, r.stdout + r.stderr


def test_a_folder_that_is_not_a_committed_run_is_refused(tmp_path):
    import pytest
    with pytest.raises(SystemExit, match="not a committed run folder"):
        rerun(tmp_path, runs_dir=tmp_path / "r")
