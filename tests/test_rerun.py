"""Re-running a committed run from its recorded parameters (``python -m tvolib.runs --rerun``): the
same child command as the batch, a folder of its own, a comparison that notices any difference, the
figures an identical re-run adds, and ``--replace``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_experiments import cli, fake_notebook, write_params  # noqa: E402

from tvolib.runs.notebook import REPO  # noqa: E402
from tvolib.runs.rerun import adopt_later_figures, compare, rerun  # noqa: E402


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

    # --replace: the re-run takes the committed run's place, and its copy's; the provenance names
    # what it replaced. A copy cannot be replaced itself.
    copy = tmp_path / "reports" / "u" / "sample" / "tvomner+pgim-s2"
    copy.mkdir(parents=True)
    for f in committed.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    prov = json.loads((copy / "provenance.json").read_text())
    (copy / "provenance.json").write_text(json.dumps({**prov, "reused_from": str(committed)}))
    (committed / "cross-other").mkdir()                     # the old run's scores on another test set
    code = rerun(committed, runs_dir=tmp_path / "again", notebook=tmp_path / "nb.ipynb",
                 replace="made from a dirty tree")
    out = capsys.readouterr().out
    assert code == 0 and f"and its copy {copy}" in out, out
    new = (run_dir / "rerun-artifacts" / "metrics.json").read_bytes()
    assert (committed / "metrics.json").read_bytes() == new == (copy / "metrics.json").read_bytes()
    prov = json.loads((committed / "provenance.json").read_text())
    assert prov["replaces"]["test_f1"] == m["test"]["F1"] and prov["replaces"]["why"] == "made from a dirty tree"
    assert json.loads((copy / "provenance.json").read_text())["reused_from"] == str(committed)
    assert not (committed / "cross-other").exists()
    with pytest.raises(SystemExit, match="a copy of .*; re-run and replace that one"):
        rerun(copy, runs_dir=tmp_path / "again", notebook=tmp_path / "nb.ipynb", replace="why")


def test_an_identical_rerun_adds_the_missing_inputs_figures_the_committed_run_lacks(tmp_path):
    committed, rerun_dir = tmp_path / "committed", tmp_path / "rerun-artifacts"
    base = {"test": {"F1": 70.0}, "best_epoch": 2}
    for d, extra in ((committed, {}), (rerun_dir, {"missing_inputs": {"neither": {"F1": 68.5}},
                                                   "missing_inputs_valid": {"neither": {"F1": 69.0}}})):
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({**base, **extra}))
        (d / "provenance.json").write_text(json.dumps({"git": {"commit": d.name}, "started": "t"}))
    (rerun_dir / "test_predictions.neither.conll.gz").write_bytes(b"left out")
    assert adopt_later_figures(committed, rerun_dir) == ["missing_inputs", "missing_inputs_valid"]
    m = json.loads((committed / "metrics.json").read_text())
    assert m["missing_inputs"]["neither"]["F1"] == 68.5 and m["test"]["F1"] == 70.0
    assert (committed / "test_predictions.neither.conll.gz").read_bytes() == b"left out"
    prov = json.loads((committed / "provenance.json").read_text())
    assert prov["missing_inputs_from"]["commit"] == "rerun-artifacts" and prov["git"]["commit"] == "committed"
    assert adopt_later_figures(committed, rerun_dir) == []            # once only


def test_a_folder_that_is_not_a_committed_run_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="not a committed run folder"):
        rerun(tmp_path, runs_dir=tmp_path / "r")
