"""The experiment batch (``python -m tvolib.runs``): expansion, skipping finished runs,
resuming after a kill of the whole process group, failures reported with notebook and cell while
the others go on, refused parameters files, runs another batch holds, and the Table 2 summary. A
stand-in run notebook with the parameters of ``notebooks/07_run.ipynb`` writes what a run writes in
a second (valid scores unlike its test scores, so that a table built from valid F1 is caught); the
real notebook is run once on the sample in ``test_real_run_notebook_on_the_sample``."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tvolib.data import Tweet
from tvolib.evaluate import score, write_predictions
from tvolib.runs import execute as runs_execute
from tvolib.runs.identity import config_differences
from tvolib.runs.notebook import REPO, LiveLine
from tvolib.runs.progress import training_progress
from tvolib.runs.plan import ARTIFACTS, NOTEBOOK, plan
from tvolib.runs.tables import dataset_table, plot_delta_f1, table_markdown, write_tables

PARAMS = """# parameters (papermill)
dataset = "sample"
data = {}
setting = "tvomner+pgim"
seed = 1
recipe = {}
model = {}
cache_dir = "cache"
output_dir = "runs/x"
num_threads = 1
epoch_seconds = 0.0
"""

# one run: config.json, prepared.json, an epoch at a time (history.json, last.json: resumable),
# test predictions whose F1 depends on the setting and seed, metrics.json
RUN = r'''
import json, time
from pathlib import Path
from tvolib.cache import atomic_write_json
from tvolib.config import to_dict
from tvolib.data import Tweet
from tvolib.evaluate import score, write_predictions
from tvolib.settings import configs
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
d, m, t = configs(dataset, data, setting, seed, recipe, model, output_dir=output_dir, cache_dir=cache_dir)
atomic_write_json(out / "config.json", {"data": to_dict(d), "model": to_dict(m), "train": to_dict(t)})
atomic_write_json(out / "prepared.json", {})
if setting == "tvomner-wiki.wo-VAE":
    raise ValueError(f"boom in {setting}")
calls = json.loads((out / "calls.json").read_text()) if (out / "calls.json").exists() else []
done = json.loads((out / "last.json").read_text())["epoch"] if (out / "last.json").exists() else 0
calls.append(done)
atomic_write_json(out / "calls.json", calls)
hist = json.loads((out / "history.json").read_text()) if (out / "history.json").exists() else []
for ep in range(done + 1, t.epochs + 1):
    time.sleep(epoch_seconds if setting == "tvomner+pgim" else 0)
    hist.append({"epoch": ep, "valid_f1": 50.0 + ep, "train_seconds": 1.5})
    atomic_write_json(out / "history.json", hist)
    atomic_write_json(out / "last.json", {"epoch": ep})
    while (out / "hold").exists():            # a test keeps the run in progress until it removes the file
        time.sleep(0.2)
tweets = [Tweet(str(i), ["Obama", "in", "Paris"], ["B-PER", "O", "B-LOC"]) for i in range(30)]
miss = {"text-only": 12, "tvomner+pgim": 4}.get(setting, 8) + seed      # tweets whose LOC is missed
miss += 2 * (t.precision == "bf16") + (seed == 2) * (t.precision == "bf16")   # a recipe that costs F1
pred = [["B-PER", "O", "O"] if i < miss else list(tw.labels) for i, tw in enumerate(tweets)]
write_predictions(out / "test_predictions.txt", tweets, pred)
s = score([tw.labels for tw in tweets], pred)
probe = {"gate_mean": 0.9 + seed / 100, "shuffle_delta_f1": -0.4 - seed / 10} if setting == "tvomner+pgim" else None
valid = {"Pre.": 60.0, "Rec.": 60.0, "F1": 60.0 + 30 * (setting == "text-only") - 2 * seed}   # unlike test
atomic_write_json(out / "metrics.json", {"test": s.row(), "valid": valid, "best_epoch": len(hist),
                                          "best_valid_f1": hist[-1]["valid_f1"], "epochs_run": len(hist),
                                          "probe": probe})
atomic_write_json(out / "results.json", {"test": s.row()})
'''


def fake_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(RUN)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def write_params(path: Path, settings, seeds=(1, 2), epochs=2, name="t", extra="") -> Path:
    ref = "reference: tvomner+pgim\n" if "tvomner+pgim" in settings else ""
    path.write_text(f"name: {name}\ndatasets:\n  sample: {{}}\nsettings: {json.dumps(list(settings))}\n"
                    f"{ref}seeds: {json.dumps(list(seeds))}\n"
                    f"recipe: {{epochs: {epochs}, batch_size: 8}}\n{extra}")
    return path


def cli(tmp_path, params, *args, nb=None, popen=False):
    cmd = [sys.executable, "-m", "tvolib.runs", "--params", str(params), "--runs_dir",
           str(tmp_path / "runs"), "--reports", str(tmp_path / "reports"), "--notebook",
           str(nb or tmp_path / "nb.ipynb"), "--every", "1", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, start_new_session=True)
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200, env=env)   # a hang guard
    r.log = r.stdout + r.stderr              # the batch logs to stderr, tables and plans go to stdout
    return r


def test_plan_expands_datasets_settings_seeds_and_shows_identical_settings(tmp_path):
    pf = write_params(tmp_path / "p.yaml", ["text-only", "tvomner+pgim", "tvomner+pgim-untyped",
                                            "tvomner+pgim.no-visual"], seeds=(1, 2, 3))
    p = plan(pf, str(tmp_path / "runs"), tmp_path / "reports")
    # the sample's per-tweet texts have no "(type)" labels: the untyped control is the same run
    # seed-major: a batch stopped early has every setting's first seed
    assert [(r.setting, r.seed) for r in p.runs] == [(s, sd) for sd in (1, 2, 3) for s in (
        "text-only", "tvomner+pgim", "tvomner+pgim.no-visual")]
    man = p.manifests["sample"]
    assert man["identical"]["tvomner+pgim-untyped"]["as"] == "tvomner+pgim"
    assert "no parenthesised type labels" in man["identical"]["tvomner+pgim-untyped"]["why"]
    r = p.runs[0]
    assert r.run_dir == tmp_path / "runs" / "t" / "sample" / "text-only-s1"
    assert r.artifacts == tmp_path / "reports" / "t" / "sample" / "text-only-s1"
    assert r.params["recipe"] == {"epochs": 2, "batch_size": 8} and r.params["num_threads"] == 1
    # runs_dir from the file when the command line gives none
    pf2 = write_params(tmp_path / "p2.yaml", ["text-only"], extra="runs_dir: elsewhere\n")
    assert plan(pf2).runs[0].run_dir == Path("elsewhere/t/sample/text-only-s1")


def test_side_input_dropout_is_left_out_of_the_runs_of_settings_that_have_nothing_to_drop(tmp_path):
    # text-only reads neither knowledge nor a visual input, wo-Wiki no knowledge: dropout of what they
    # do not read trains them the same, so their runs are the runs without it (and are reused)
    pf = tmp_path / "p.yaml"
    pf.write_text("name: d\ndatasets:\n  sample: {}\nsettings: [text-only, tvomner+pgim, tvomner+pgim.wo-Wiki]\n"
                  "reference: tvomner+pgim\nseeds: [1]\n"
                  "recipe: {epochs: 2, knowledge_dropout: 0.25, visual_dropout: 0.5}\n")
    recipes = {r.setting: r.params["recipe"] for r in plan(pf, str(tmp_path / "runs"), tmp_path / "reports").runs}
    assert recipes == {"text-only": {"epochs": 2},
                       "tvomner+pgim": {"epochs": 2, "knowledge_dropout": 0.25, "visual_dropout": 0.5},
                       "tvomner+pgim.wo-Wiki": {"epochs": 2, "visual_dropout": 0.5}}
    assert all(r.identity["recipe"] == r.params["recipe"] for r in plan(pf, str(tmp_path / "runs")).runs)


@pytest.mark.parametrize("extra, message", [
    ("sedes: [1]\n", r"unknown key\(s\) \['sedes'\]"),
    ("model: {openai_api_key: sk-1}\n", "looks like a secret"),
    ("model: {openaiApiKey: sk-1}\n", "looks like a secret"),
    ("model: {text_encoder: sk-1proj2abcdef}\n", "value of parameter 'text_encoder' looks like a secret"),
    ("model: {visual: none}\n", "decided by the setting"),
    ("recipe: {epochs: 1, lrr: 1}\n", r"unknown field\(s\) \['lrr'\]"),
    ("comparisons: [[text-only, tvomner-wiki]]\n", "comparisons: 'tvomner-wiki' is not one of the settings"),
    ("comparisons: [text-only]\n", r"comparisons: each entry is a pair \[a, b\]"),
])
def test_bad_parameters_files_are_refused_before_anything_runs(tmp_path, extra, message):
    text = write_params(tmp_path / "p.yaml", ["text-only"]).read_text()
    if extra.startswith("recipe"):
        text = text.replace("recipe: {epochs: 2, batch_size: 8}\n", "")
    (tmp_path / "p.yaml").write_text(text + extra)
    from tvolib.runs.cli import main           # in-process: the message is what `python -m tvolib.runs` prints
    with pytest.raises(SystemExit) as e:
        main(["--params", str(tmp_path / "p.yaml"), "--runs_dir", str(tmp_path / "runs"),
              "--reports", str(tmp_path / "reports")])
    assert __import__("re").search(message, str(e.value)), str(e.value)
    assert "sk-1" not in str(e.value) and not (tmp_path / "runs").exists()


def test_every_committed_batch_parameters_file_plans_and_is_listed_in_the_docs():
    """A batch file with a typo is refused at once, not hours later; each is in the docs' table.
    (``params/twitter20*.yaml`` are the notebooks' files for ``tvolib.reports``.)"""
    docs = (REPO / "docs" / "experiments.md").read_text(encoding="utf-8")
    files = [f for f in sorted((REPO / "params").glob("*.yaml")) if "settings" in f.read_text(encoding="utf-8")]
    assert len(files) >= 15
    for f in files:
        assert plan(f).runs, f
        assert f"({'../params/' + f.name})" in docs, f"{f.name} is not in docs/experiments.md's table"


def test_a_bf16_batch_on_a_cpu_without_bf16_units_is_warned_before_it_starts(tmp_path, monkeypatch, caplog):
    from tvolib.runs import cli as runs_cli
    from tvolib.runs import preflight as runs_preflight
    text = write_params(tmp_path / "p.yaml", ["text-only"], seeds=(1,)).read_text()
    (tmp_path / "p.yaml").write_text(text.replace("batch_size: 8}", "batch_size: 8, precision: bf16, device: cpu}"))
    monkeypatch.setattr(runs_cli, "execute", lambda *a, **k: 0)           # the warning, not the runs
    for has_units in (False, True):
        monkeypatch.setattr(runs_preflight, "cpu_has_bf16", lambda cpuinfo=None: has_units)
        caplog.clear()
        assert runs_cli.main(["--params", str(tmp_path / "p.yaml"), "--runs_dir", str(tmp_path / "runs"),
                              "--reports", str(tmp_path / "reports")]) == 0
        assert ("bf16 on a CPU without bf16 units" in caplog.text) is not has_units, caplog.text


def test_the_live_line_gives_valid_f1_and_the_pace_of_a_run(tmp_path):
    r = plan(write_params(tmp_path / "p.yaml", ["text-only"], seeds=(1,), epochs=4), str(tmp_path / "runs"),
             tmp_path / "reports").runs[0]
    r.run_dir.mkdir(parents=True)
    assert runs_execute._progress(r) == "preparing inputs"
    (r.run_dir / "prepared.json").write_text("{}")
    assert runs_execute._progress(r) == "training epoch 1"
    (r.run_dir / "progress.json").write_text(json.dumps({"epoch": 1, "step": 50, "steps": 250, "seconds": 600.0}))
    assert runs_execute._progress(r) == "epoch 1: step 50/250, about 40 min left"
    (r.run_dir / "history.json").write_text(json.dumps([{"valid_f1": 71.419, "train_seconds": 2330.0},
                                                        {"valid_f1": 75.11, "train_seconds": 2390.0}]))
    assert runs_execute._progress(r) == "epoch 2/4 done (valid F1 71.42, 75.11; 39 min an epoch)"   # stale step
    (r.run_dir / "progress.json").write_text(json.dumps({"epoch": 3, "step": 200, "steps": 250, "seconds": 1800.0}))
    assert runs_execute._progress(r) == ("epoch 2/4 done (valid F1 71.42, 75.11; 39 min an epoch); "
                                         "epoch 3: step 200/250, about 8 min left")
    # a run's own log (a re-run's, a cluster job's) carries the same words after the notebook's cell
    line = LiveLine("07_run.ipynb", r.run_dir / "07_run.ipynb", None,
                    detail=lambda: training_progress(r.run_dir, 4)).line()
    assert line.startswith("07_run.ipynb: running 0m0") and line.endswith(
        "; epoch 2/4 done (valid F1 71.42, 75.11; 39 min an epoch); epoch 3: step 200/250, about 8 min left"), line
    # training ended: the scoring passes of the selected epoch
    (r.run_dir / "history.json").write_text(json.dumps([{"valid_f1": 71.419, "train_seconds": 2330.0}] * 4))
    (r.run_dir / "scoring").mkdir()
    (r.run_dir / "scoring" / "test.json").write_text("{}")
    assert runs_execute._progress(r).endswith("39 min an epoch); scoring: 1 pass done, the last test")


def test_a_run_started_again_does_not_show_the_stopped_attempts_progress(tmp_path):
    r = plan(write_params(tmp_path / "p.yaml", ["text-only"], seeds=(1,), epochs=4), str(tmp_path / "runs"),
             tmp_path / "reports").runs[0]
    r.run_dir.mkdir(parents=True)
    (r.run_dir / "prepared.json").write_text("{}")        # stopped in epoch 1, step 168
    (r.run_dir / "progress.json").write_text(json.dumps({"epoch": 1, "step": 168, "steps": 211, "seconds": 3000.0}))
    assert runs_execute._progress(r) == "epoch 1: step 168/211, about 13 min left"

    class Refuses:                                         # start, without a child process
        def update_parameters(self, **kw):
            pass

        def submit(self, *a, **kw):
            raise RuntimeError("no cluster here")
    runs_execute.start(r, tmp_path / "nb.ipynb", 60, executor=Refuses())
    assert r.state == "failed" and runs_execute._progress(r) == "preparing inputs"
    (r.run_dir / "prepared.json").write_text("{}")        # the new attempt's inputs are ready
    assert runs_execute._progress(r) == "training epoch 1"


def test_unknown_setting_and_missing_file(tmp_path):
    r = cli(tmp_path, write_params(tmp_path / "p.yaml", ["tvomner+pgim.wo-VAEE"]))
    assert r.returncode != 0 and "unknown setting 'tvomner+pgim.wo-VAEE'" in r.stderr
    r = cli(tmp_path, tmp_path / "none.yaml")
    assert r.returncode != 0 and r.stderr.strip() == f"{tmp_path / 'none.yaml'}: parameters file not found"


@pytest.mark.slow
def test_batch_runs_skips_reports_failures_and_writes_tables(tmp_path):
    fake_notebook(tmp_path / "nb.ipynb")
    pf = write_params(tmp_path / "p.yaml", ["text-only", "tvomner+pgim", "tvomner-wiki.wo-VAE"],
                      extra="comparisons: [[text-only, tvomner+pgim], [tvomner+pgim, text-only], "
                            "[text-only, tvomner-wiki.wo-VAE]]\n")
    r = cli(tmp_path, pf, "--jobs", "2")
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.log
    # the failing setting is named with its notebook, cell and error; the other runs finished
    assert "FAILED sample tvomner-wiki.wo-VAE s1: nb.ipynb: cell 2 (`import json, time`) raised ValueError: " \
           "boom in tvomner-wiki.wo-VAE" in out
    assert out.count("[runs] done sample") == 4 and "this batch: 6/6 runs ended (4 done, 2 failed)" in out
    assert "held by another batch" not in out
    art = tmp_path / "reports" / "t" / "sample"
    for run in ("text-only-s1", "text-only-s2", "tvomner+pgim-s1", "tvomner+pgim-s2"):
        assert sorted(p.name for p in (art / run).iterdir()) == sorted(ARTIFACTS)
    prov = json.loads((art / "text-only-s2" / "provenance.json").read_text())
    assert prov["identity"]["seed"] == 2 and prov["git"]["commit"] and prov["packages"]["torch"]
    assert prov["machine"]["cores"] and prov["machine"]["cpu_capability"]       # whose kernels summed it
    assert set(prov["data_files"]) >= {"data_dir/train.txt", "data_dir/test.txt", "captions"}
    assert prov["configs"]["model"]["visual"] == "none" and prov["wall_seconds"] > 0
    table = json.loads((tmp_path / "reports" / "t" / "table2.json").read_text())["tables"][0]
    rows = {r["setting"]: r for r in table["rows"]}
    # text-only misses 13/14 LOC spans against 5/6 for the reference: per-seed deltas, both intervals
    d = rows["text-only"]["delta"]
    f1 = {(q["setting"], sd): f for q in table["rows"] if q["seeds"] for sd, f in zip(q["seeds"], q["F1"])}
    assert d["per_seed"] == [pytest.approx(f1[("text-only", sd)] - f1[("tvomner+pgim", sd)], abs=0.01)
                             for sd in (1, 2)]                  # test F1, not valid F1
    assert len(d["per_seed"]) == 2 and all(x < 0 for x in d["per_seed"]) and d["beats_reference"] is False
    assert d["seed_ci95"] is not None and d["tweet_ci95"][1] < 0
    assert rows["tvomner+pgim"]["gate_mean"] == pytest.approx(0.915) and rows["text-only"]["gate_mean"] is None
    md = (tmp_path / "reports" / "t" / "table2.md").read_text()
    assert rows["tvomner+pgim"]["shuffle"]["per_seed"] == [-0.5, -0.6]        # the probe per seed, its interval
    assert rows["tvomner+pgim"]["shuffle"]["ci95"][0] < -0.55 < rows["tvomner+pgim"]["shuffle"]["ci95"][1]
    assert "| tvomner+pgim | 1,2 |" in md and "| 0.915 | -0.55 [" in md and "| — | — |" in md
    assert "| tvomner-wiki.wo-VAE | not run yet |" in md
    # the extra pairs: b − a per seed with both intervals, and which side (if any) is higher
    pairs = {(q["a"], q["b"]): q for q in table["pairs"]}
    fwd, back = pairs[("text-only", "tvomner+pgim")], pairs[("tvomner+pgim", "text-only")]
    assert fwd["per_seed"] == [-x for x in d["per_seed"]] and fwd["seeds"] == [1, 2]
    assert fwd["b_beats_a"] and not fwd["a_beats_b"] and back["a_beats_b"] and not back["b_beats_a"]
    assert back["tweet_ci95"][1] < 0 and back["seed_ci95"][1] < 0
    assert "| text-only | tvomner+pgim | 1,2 |" in md and md.count("| `tvomner+pgim` higher |") == 2
    assert "| text-only | tvomner-wiki.wo-VAE | no seed run by both yet |" in md
    assert "partial notebook" in out and str(tmp_path / "runs" / "t" / "sample" / "tvomner-wiki.wo-VAE-s1") in out
    # with one seed left, the interval over seeds is undefined and said so
    import shutil
    for run in ("text-only-s2", "tvomner+pgim-s2"):
        shutil.rmtree(art / run)
    write_tables(tmp_path / "reports" / "t")
    md = (tmp_path / "reports" / "t" / "table2.md").read_text()
    assert "undefined (1 seed)" in md and "| tvomner+pgim | 1 |" in md and "| reference |" in md
    assert md.count("| not shown |") == 2          # one seed: no interval over seeds, so no verdict
    # another recipe under the same name: run folders and committed artifacts hold other
    # parameters; refused, never overwritten
    shutil.rmtree(tmp_path / "runs" / "t" / "sample" / "text-only-s1")
    pf.write_text(pf.read_text().replace("epochs: 2", "epochs: 3"))
    r = cli(tmp_path, pf, "--jobs", "2")
    assert r.returncode == 1 and "holds a run with other parameters (recipe)" in r.log
    assert f"{art / 'text-only-s1'} holds a run with other parameters (recipe)" in r.log
    assert "[runs] start" not in r.log


@pytest.mark.slow
def test_kill_the_batch_then_resume(tmp_path):
    """Kill the process group in the middle of the second epoch: the same command skips the
    finished run and resumes the interrupted one from its last epoch (no kernel left behind)."""
    nb = fake_notebook(tmp_path / "nb.ipynb")
    nbj = nbformat.read(str(nb), as_version=4)
    nbj.cells[0].source = nbj.cells[0].source.replace("epoch_seconds = 0.0", "epoch_seconds = 3.0")
    nbformat.write(nbj, str(nb))
    pf = write_params(tmp_path / "p.yaml", ["text-only", "tvomner+pgim"], seeds=(1,), epochs=3)
    proc = cli(tmp_path, pf, "--jobs", "1", popen=True)
    run2 = tmp_path / "runs" / "t" / "sample" / "tvomner+pgim-s1"
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run2 / "last.json").exists() and json.loads((run2 / "last.json").read_text())["epoch"] >= 1:
            break
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the second run never finished an epoch:\n" + proc.communicate()[0])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not (tmp_path / "reports" / "t" / "sample" / "tvomner+pgim-s1" / "metrics.json").exists()
    r = cli(tmp_path, pf, "--jobs", "1")
    assert r.returncode == 0, r.log
    assert "2 runs, 1 finished before (skipped), 1 to run" in r.log
    calls = json.loads((run2 / "calls.json").read_text())
    assert calls[0] == 0 and calls[-1] >= 1            # started at 0, resumed after its last epoch
    assert json.loads((run2 / "last.json").read_text())["epoch"] == 3
    art = tmp_path / "reports" / "t" / "sample"
    assert (art / "tvomner+pgim-s1" / "metrics.json").exists()
    # the provenance tells the two executions apart: the killed one, then the resumed one
    prov = json.loads((art / "tvomner+pgim-s1" / "provenance.json").read_text())
    first, second = prov["executions"]
    assert first["status"] == "interrupted" and first["after_epoch"] == 0 and "wall_seconds" not in first
    assert second["status"] == "ok" and second["after_epoch"] == calls[-1] >= 1
    assert second["wall_seconds"] == prov["wall_seconds"] and first["started"] <= second["started"] <= prov["started"]
    assert first["commit"] == second["commit"] == prov["git"]["commit"] and second["machine"] == prov["machine"]
    assert second["dirty"] == prov["git"]["dirty"]
    assert prov["train_seconds"] == 4.5                  # all three epochs, both executions
    assert [e["status"] for e in json.loads((art / "text-only-s1" / "provenance.json").read_text())["executions"]] \
        == ["ok"]


@pytest.mark.slow
def test_real_run_notebook_on_the_sample(tmp_path):
    """notebooks/07_run.ipynb itself: one tiny text-only run on the sample, through the batch."""
    pf = write_params(tmp_path / "p.yaml", ["text-only"], seeds=(1,), epochs=1,
                      extra="threads: 1\n").read_text().replace(
        "recipe: {epochs: 1, batch_size: 8}", "recipe: {epochs: 1, batch_size: 16, micro_batch_size: 16, "
        "max_length: 48, max_train_samples: 16, max_eval_samples: 8}")
    (tmp_path / "p.yaml").write_text(pf + f"cache_dir: {tmp_path / 'cache'}\n")
    r = cli(tmp_path, tmp_path / "p.yaml", nb=NOTEBOOK)
    assert r.returncode == 0, r.log
    art = tmp_path / "reports" / "t" / "sample" / "text-only-s1"
    m = json.loads((art / "metrics.json").read_text())
    assert m["setting"] == "text-only" and m["epochs_run"] == 1 and set(m["test"]) >= {"Pre.", "Rec.", "F1"}
    from tvolib.evaluate import read_predictions
    gold, pred = read_predictions(art / "test_predictions.conll.gz")
    assert len(gold) == 8 and len(pred) == 8
    prov = json.loads((art / "provenance.json").read_text())
    assert prov["configs"]["data"]["max_train_samples"] == 16 and prov["notebook"].endswith("07_run.ipynb")


@pytest.mark.slow
def test_two_experiments_compared_run_by_run(tmp_path):
    """The same settings and seeds under two recipes (here fp32 and bf16): ΔF1 per seed, both
    intervals, and what differs between the recipes."""
    fake_notebook(tmp_path / "nb.ipynb")
    files = []
    for name, prec in (("a", "fp32"), ("b", "bf16")):
        text = write_params(tmp_path / f"{name}.yaml", ["tvomner+pgim"], name=name).read_text()
        (tmp_path / f"{name}.yaml").write_text(text.replace("batch_size: 8}", f"batch_size: 8, precision: {prec}}}"))
        files.append(tmp_path / f"{name}.yaml")
        r = cli(tmp_path, files[-1], "--jobs", "2")
        assert r.returncode == 0, r.log
    r = subprocess.run([sys.executable, "-m", "tvolib.runs", "--compare", *map(str, files), "--runs_dir",
                        str(tmp_path / "runs"), "--reports", str(tmp_path / "reports")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    c = json.loads((tmp_path / "reports" / "compare-a-vs-b.json").read_text())
    assert c["differs"] == {"precision": ["fp32", "bf16"]}
    rows = {x["setting"]: x for x in c["rows"]}
    assert set(rows) == {"tvomner+pgim"} and rows["tvomner+pgim"]["seeds"] == [1, 2]
    # b misses 2 (seed 1) and 3 (seed 2) more LOC spans: lower on every seed, and by more on seed 2
    d = rows["tvomner+pgim"]["per_seed"]
    assert d[0] < 0 and d[1] < d[0] and rows["tvomner+pgim"]["tweet_ci95"][1] < 0
    assert rows["tvomner+pgim"]["seed_ci95"] is not None and not rows["tvomner+pgim"]["b_beats_a"]
    md = (tmp_path / "reports" / "compare-a-vs-b.md").read_text()
    assert "`precision`: 'fp32' in `a`, 'bf16' in `b`" in md and "| sample | tvomner+pgim | nothing | 1,2 |" in md


@pytest.mark.slow
def test_a_run_finished_for_another_experiment_is_reused_not_rerun(tmp_path):
    """Two parameters files sharing a row (same data, setting, seed, recipe, model): the second
    copies the first one's finished runs, saying so, and runs only its own; a row whose recipe
    differs is run."""
    fake_notebook(tmp_path / "nb.ipynb")
    a = write_params(tmp_path / "a.yaml", ["text-only"], name="a", seeds=(1, 2, 3))
    assert cli(tmp_path, a, "--jobs", "2").returncode == 0
    # seed 3 as an older version saved it: no `adamw` field, i.e. torch's default AdamW then. The
    # parameters files are equal, the run is not: it is run again, not copied.
    old = tmp_path / "reports" / "a" / "sample" / "text-only-s3" / "provenance.json"
    prov = json.loads(old.read_text())
    del prov["configs"]["train"]["adamw"]
    old.write_text(json.dumps(prov))
    b = write_params(tmp_path / "b.yaml", ["text-only"], name="b", seeds=(1, 2, 3))
    b_runs = plan(b, str(tmp_path / "runs"), tmp_path / "reports").runs
    assert config_differences(b_runs[2], prov["configs"]) == ["train.adamw"]
    r = cli(tmp_path, b, "--dry-run")
    assert f"sample text-only s1: skip (reused from {tmp_path / 'reports' / 'a' / 'sample' / 'text-only-s1'})" \
        in r.stdout and "sample text-only s3: todo" in r.stdout
    assert not (tmp_path / "reports" / "b" / "sample" / "text-only-s1").exists()      # a dry run copies nothing
    r = cli(tmp_path, b, "--jobs", "2")
    assert r.returncode == 0, r.log
    assert "3 runs, 2 finished before (skipped), 1 to run" in r.log
    assert "[runs] start sample text-only s3" in r.log and "this batch: 1/1 runs ended (1 done, 0 failed)" in r.log
    assert "[runs] start sample text-only s1" not in r.log and "start sample text-only s2" not in r.log
    assert not (tmp_path / "runs" / "b" / "sample" / "text-only-s1").exists()
    for seed in (1, 2):
        src, dst = (tmp_path / "reports" / x / "sample" / f"text-only-s{seed}" for x in ("a", "b"))
        assert (dst / "metrics.json").read_bytes() == (src / "metrics.json").read_bytes()
        prov = json.loads((dst / "provenance.json").read_text())
        assert prov["reused_from"] == str(src) and prov["run_dir"] == str(tmp_path / "runs" / "a" / "sample"
                                                                             / f"text-only-s{seed}")
    rows = {x["setting"]: x for x in json.loads((tmp_path / "reports" / "b" / "table2.json").read_text())
            ["tables"][0]["rows"]}
    assert rows["text-only"]["seeds"] == [1, 2, 3]
    assert "reused_from" not in json.loads((tmp_path / "reports" / "b" / "sample" / "text-only-s3"
                                            / "provenance.json").read_text())
    # a third file copying from b names the executed run (a's), not b's copy
    c = write_params(tmp_path / "c.yaml", ["text-only"], name="c", seeds=(2,))
    assert cli(tmp_path, c).returncode == 0
    prov = json.loads((tmp_path / "reports" / "c" / "sample" / "text-only-s2" / "provenance.json").read_text())
    assert prov["reused_from"] == str(tmp_path / "reports" / "a" / "sample" / "text-only-s2")
    # --summary copies what finished elsewhere too (a batch of this file has not reached it yet)
    e = write_params(tmp_path / "e.yaml", ["text-only"], name="e", seeds=(1,))
    r = cli(tmp_path, e, "--summary")
    assert r.returncode == 0 and "| text-only | 1 |" in r.stdout and "[runs] start" not in r.log
    assert not (tmp_path / "runs" / "e").exists()
    # another recipe is another run
    d = write_params(tmp_path / "d.yaml", ["text-only"], name="d", seeds=(1,), epochs=3)
    r = cli(tmp_path, d)
    assert r.returncode == 0 and "1 runs, 0 finished before (skipped), 1 to run" in r.log
    assert "reused_from" not in json.loads((tmp_path / "reports" / "d" / "sample" / "text-only-s1"
                                            / "provenance.json").read_text())


def test_only_some_settings_and_seeds_are_run_and_the_table_keeps_the_rest(tmp_path):
    fake_notebook(tmp_path / "nb.ipynb")
    pf = write_params(tmp_path / "p.yaml", ["text-only", "tvomner+pgim"], seeds=(1, 2, 3))
    p = plan(pf, str(tmp_path / "runs"), tmp_path / "reports")
    assert [r.label for r in p.select(["tvomner+pgim"], [3, 2]).runs] == ["sample tvomner+pgim s2",
                                                                         "sample tvomner+pgim s3"]
    assert len(p.select(None, [1]).runs) == 2 and len(p.runs) == 6
    with pytest.raises(SystemExit, match=r"no run of seed\(s\) \[4\] here"):
        p.select(None, [4])
    with pytest.raises(SystemExit, match=r"no run of setting\(s\) \['tvomner-wiki'\] here"):
        p.select(["tvomner-wiki"], None)
    assert cli(tmp_path, pf, "--only", "text-only", "--seeds", "1").returncode == 0
    r = cli(tmp_path, pf, "--only", "tvomner+pgim", "--seeds", "2")
    assert r.returncode == 0, r.log
    assert "[runs] start sample tvomner+pgim s2" in r.log and r.log.count("[runs] start") == 1
    rows = {x["setting"]: x["seeds"] for x in json.loads((tmp_path / "reports" / "t" / "table2.json").read_text())
            ["tables"][0]["rows"]}
    assert rows == {"text-only": [1], "tvomner+pgim": [2]}        # the other command's run stays in the table


@pytest.mark.slow
def test_a_run_in_progress_elsewhere_is_left_alone_even_after_its_batch_is_killed(tmp_path):
    """The same command started twice (or again while an orphaned run goes on) must not run one
    run twice in one folder: the run's lock is held by its batch and by the run's own process."""
    fake_notebook(tmp_path / "nb.ipynb")
    pf = write_params(tmp_path / "p.yaml", ["tvomner+pgim"], seeds=(1,), epochs=3)
    run = tmp_path / "runs" / "t" / "sample" / "tvomner+pgim-s1"
    run.mkdir(parents=True)
    (run / "hold").write_text("")                # the run stays in progress after its first epoch
    first = cli(tmp_path, pf, "--jobs", "1", popen=True)
    deadline = time.time() + 300
    while not (run / "last.json").exists() and time.time() < deadline:
        time.sleep(0.3)
    assert (run / "last.json").exists(), "the run never finished an epoch"
    second = cli(tmp_path, pf, "--jobs", "1")
    assert second.returncode == 0, second.log
    assert "running in another process" in second.log and "[runs] start" not in second.log
    # its summary counts nothing of its own and names the run the other batch holds
    assert "this batch: 0/0 runs ended (0 done, 0 failed)" in second.log
    assert f"held by another batch (its lock), not counted: sample tvomner+pgim s1 ({run / 'run.lock'})" in second.log
    os.kill(first.pid, signal.SIGKILL)              # the batch alone: its run goes on, orphaned
    first.communicate()
    third = cli(tmp_path, pf, "--jobs", "1")
    assert "running in another process" in third.log and "[runs] start" not in third.log
    (run / "hold").unlink()
    art = tmp_path / "reports" / "t" / "sample" / "tvomner+pgim-s1"
    deadline = time.time() + 300
    while not (art / "provenance.json").exists() and time.time() < deadline:
        time.sleep(0.3)
    assert json.loads((run / "calls.json").read_text()) == [0]       # started once, never twice
    again = cli(tmp_path, pf, "--jobs", "1")
    assert "1 runs, 1 finished before (skipped), 0 to run" in again.log, again.log


def test_a_run_finished_by_another_batch_meanwhile_is_not_started(tmp_path, monkeypatch, caplog):
    """Classified when its turn comes, not only when the batch starts: a run that another
    experiment finished in the meantime is copied instead of run twice."""
    from tvolib.config import to_dict
    from tvolib.settings import configs
    pf = write_params(tmp_path / "b.yaml", ["text-only", "tvomner+pgim"], seeds=(1,), name="b")
    p = plan(pf, str(tmp_path / "runs"), tmp_path / "reports")
    started = []

    class Done:                                   # a child process that has already exited
        def poll(self):
            return 0

    def fake_start(r, notebook, every, executor=None):
        started.append(r.setting)
        r.proc, r.log_file, r.started, r.state = Done(), open(os.devnull, "wb"), time.time(), "running"
        r.artifacts.mkdir(parents=True)
        metrics = {"test": {"Pre.": 1.0, "Rec.": 1.0, "F1": 1.0}, "best_epoch": 1}
        for run in p.runs:                        # the other batch finishes pgim while text-only runs
            folder = run.artifacts if run is r else tmp_path / "reports" / "a" / "sample" / run.artifacts.name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps(metrics))
            (folder / "test_predictions.conll.gz").write_bytes(b"")
            pr = run.params
            saved = configs(pr["dataset"], pr["data"], pr["setting"], pr["seed"], pr["recipe"], pr["model"],
                            output_dir=pr["output_dir"], cache_dir=pr["cache_dir"])
            saved = dict(zip(("data", "model", "train"), map(to_dict, saved)))
            (folder / "provenance.json").write_text(json.dumps({"identity": run.identity, "configs": saved}))

    monkeypatch.setattr(runs_execute, "start", fake_start)
    monkeypatch.setattr(runs_execute, "write_tables", lambda exp_dir: None)
    caplog.set_level("INFO", logger="tvolib.runs")
    assert runs_execute.execute(p, jobs=1, reports_dir=tmp_path / "reports") == 0
    assert started == ["text-only"]
    lines = [r.getMessage() for r in caplog.records]
    assert any(l.startswith("sample tvomner+pgim s1: reused from ") and l.endswith("not run") for l in lines), lines
    assert any(l.startswith("this batch: 1/1 runs ended (1 done, 0 failed)") for l in lines), lines
    prov = json.loads((tmp_path / "reports" / "b" / "sample" / "tvomner+pgim-s1" / "provenance.json").read_text())
    assert prov["reused_from"] == str(tmp_path / "reports" / "a" / "sample" / "tvomner+pgim-s1")


def test_delta_f1_plot_says_when_a_setting_has_no_interval_over_seeds():
    def row(name, per_seed, ci):
        return {"setting": name, "delta": {"mean": sum(per_seed) / len(per_seed), "per_seed": per_seed, "seed_ci95": ci}}
    one_seed = {"dataset": "d", "reference": "ref", "rows": [row("a", [-1.6], None)]}
    mixed = {"dataset": "d", "reference": "ref", "rows": [row("a", [-1.0, -2.0, -1.5], [-2.7, -0.3]), row("b", [0.5], None)]}
    title = lambda t: plot_delta_f1([t]).axes[0].get_title()
    assert "no interval over seeds" in title(one_seed) and "t-interval" not in title(one_seed)
    assert "one seed shared with the reference" in title(one_seed)   # ΔF1 pairs seeds; a row may have more
    assert "t-interval over seeds" in title(mixed) and "1 with one seed" in title(mixed)
    ax = plot_delta_f1([mixed]).axes[0]
    assert [round(b.get_height(), 2) for b in ax.patches] == [-1.5, 0.5]


def stand_in_artifacts(folder: Path, misses: dict[str, dict[int, int]], valid_f1: dict[str, dict[int, float]]) -> None:
    """``<experiment>/<dataset>`` as the batch leaves it, without running anything: per setting and
    seed, test predictions of 60 tweets that miss the LOC span of the first ``misses`` tweets,
    their test scores, and a valid F1 of their own."""
    spec = {"recipe": {"epochs": 2}, "model": {}, "data": {}}
    settings = list(misses)
    man = {"experiment": "t", "dataset": "sample", "params_file": "p.yaml", "settings": settings,
           "reference": settings[0], "seeds": [1, 2, 3], "comparisons": [], "facts_text": "stand-in",
           "identical": {}, "summaries": {}, **spec}
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(man))
    tweets = [Tweet(str(i), ["Obama", "in", "Paris"], ["B-PER", "O", "B-LOC"]) for i in range(60)]
    for setting, per_seed in misses.items():
        for seed, k in per_seed.items():
            run = folder / f"{setting}-s{seed}"
            run.mkdir()
            pred = [["B-PER", "O", "O"] if i < k else list(t.labels) for i, t in enumerate(tweets)]
            write_predictions(run / "p.txt", tweets, pred)
            (run / "test_predictions.conll.gz").write_bytes(gzip.compress((run / "p.txt").read_bytes()))
            s = score([t.labels for t in tweets], pred)
            metrics = {"test": s.row(), "valid": {"Pre.": 0.0, "Rec.": 0.0, "F1": valid_f1[setting][seed]}}
            (run / "metrics.json").write_text(json.dumps(metrics))
            (run / "provenance.json").write_text(json.dumps({"identity": {"setting": setting, "seed": seed, **spec}}))


def test_beats_needs_the_interval_over_seeds_of_test_f1_not_the_tweet_bootstrap_alone(tmp_path):
    """A setting better on the test tweets of seeds 1 and 3 and slightly worse on seed 2: the tweet
    bootstrap lies above zero, the t-interval over seeds does not, so it does not beat the
    reference. Its valid F1 is above the reference's on every seed: an interval over valid F1
    would lie above zero."""
    folder = tmp_path / "t" / "sample"
    stand_in_artifacts(folder, {"ref": {1: 30, 2: 10, 3: 30}, "new": {1: 10, 2: 12, 3: 10}},
                       {"ref": {1: 80.0, 2: 81.0, 3: 82.0}, "new": {1: 83.0, 2: 84.5, 3: 86.0}})
    t = dataset_table(folder)
    rows = {r["setting"]: r for r in t["rows"]}
    d = rows["new"]["delta"]
    test_deltas = [rows["new"]["F1"][i] - rows["ref"]["F1"][i] for i in range(3)]
    assert d["per_seed"] == [pytest.approx(x, abs=0.01) for x in test_deltas]
    assert test_deltas[0] > 5 and test_deltas[1] < 0 and test_deltas[2] > 5
    assert d["tweet_ci95"][0] > 0                                     # the bootstrap alone would say "beats"
    assert d["seed_ci95"][0] < 0 < d["seed_ci95"][1]
    assert d["beats_reference"] is False
    assert "| new | 1,2,3 |" in table_markdown(t) and "| no |" in table_markdown(t)
    # the same rows with a seed 2 that is better too: now both intervals lie above zero
    folder2 = tmp_path / "t2" / "sample"
    stand_in_artifacts(folder2, {"ref": {1: 30, 2: 30, 3: 30}, "new": {1: 10, 2: 12, 3: 10}},
                       {"ref": {1: 80.0, 2: 81.0, 3: 82.0}, "new": {1: 83.0, 2: 84.5, 3: 86.0}})
    d2 = {r["setting"]: r for r in dataset_table(folder2)["rows"]}["new"]["delta"]
    assert d2["seed_ci95"][0] > 0 and d2["tweet_ci95"][0] > 0 and d2["beats_reference"] is True


def planned_run_and_saved_configs(tmp_path, setting):
    """The planned run of ``setting`` (seed 1) and the configs a finished run of it would have saved,
    with the ``resources`` record of today's resolution."""
    from tvolib.config import to_dict
    from tvolib.resources import resolve
    from tvolib.settings import configs
    pf = write_params(tmp_path / "b.yaml", [setting], seeds=(1,), name="b")
    run = plan(pf, str(tmp_path / "runs"), tmp_path / "reports").runs[0]
    pr = run.params
    cfgs = configs(pr["dataset"], pr["data"], pr["setting"], pr["seed"], pr["recipe"], pr["model"],
                   output_dir=pr["output_dir"], cache_dir=pr["cache_dir"])
    saved = dict(zip(("data", "model", "train"), map(to_dict, cfgs)))
    saved["resources"] = resolve(cfgs[0], cfgs[1]).describe()
    return run, saved


def test_a_finished_run_that_read_other_knowledge_is_not_reused(tmp_path):
    """Reuse compares the knowledge a finished run read, by content, beside its configs: a run made
    with another per-tweet knowledge file is another run."""
    from tvolib.runs.identity import config_differences
    run, saved = planned_run_and_saved_configs(tmp_path, "tvomner+pgim")
    assert config_differences(run, saved) == []
    path = next(iter(saved["resources"]["knowledge"]["knowledge_file"]))
    saved["resources"]["knowledge"]["knowledge_file"] = {path: "0" * 64}
    assert config_differences(run, saved) == ["resources.knowledge.knowledge_file"]


def test_a_finished_run_whose_side_inputs_were_made_otherwise_is_not_reused(tmp_path):
    """Reuse compares the settings of the stages that made a finished run's side inputs: another
    candidate tagger recipe or grounding threshold is another run; where they ran is not."""
    from tvolib.runs.identity import config_differences
    run, saved = planned_run_and_saved_configs(tmp_path, "tvomner-wiki")
    res = saved["resources"]
    for stage, key, value, differs in (("tagger", "k_folds", 5, True), ("relevance", "threshold", 0.9, True),
                                       ("grounding", "box_threshold", 0.5, True), ("llm", "model", "other", True),
                                       ("tagger", "threads", 7, False), ("llm", "timeout", 1.0, False),
                                       ("grounding", "device", "cuda", False)):
        saved["resources"] = json.loads(json.dumps(res))
        saved["resources"][stage][key] = value
        assert config_differences(run, saved) == ([f"resources.{stage}.{key}"] if differs else []), (stage, key)
    saved["resources"] = json.loads(json.dumps(res))
    del saved["resources"]["tagger"]["k_folds"]             # an older record without the setting
    assert config_differences(run, saved) == []
