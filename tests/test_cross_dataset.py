"""Cross-dataset evaluation: a finished run's checkpoint tags another benchmark's test set with and
without side inputs (``tvolib.cross_dataset``; ``python -m tvolib.runs --cross``: ``tvolib.runs.cross``)."""
from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_missing_inputs import _run  # noqa: E402
from test_predict import trained  # noqa: E402,F401  (a tiny text-only run on the sample: a fixture)

from tvolib.cross_dataset import cross_evaluate  # noqa: E402
from tvolib.evaluate import CONDITIONS, only_types, read_predictions, score  # noqa: E402
from tvolib.runs.cross import checkpoint_of, write_cross_tables  # noqa: E402

SAMPLE_TEST = Path(__file__).resolve().parents[1] / "tvolib" / "sample" / "data" / "test.txt"


def test_a_checkpoint_on_its_own_test_set_scores_what_its_run_scored(trained, tmp_path):
    ckpt, res, ds, _ = trained
    rec = cross_evaluate(ckpt, SAMPLE_TEST, tmp_path / "out", cache_dir=str(tmp_path / "c"))
    assert rec["tweets"] == len(ds.splits["test"]) and rec["test"]["all"] == res["test"]   # the prediction path
    gold, want = read_predictions(Path(res["output_dir"]) / "test_predictions.txt")
    for cond, fname, _ in CONDITIONS:       # a model that reads no side input tags alike under every condition
        g, pred = read_predictions(tmp_path / "out" / fname)
        assert (g, pred) == (gold, want) and rec["test"][cond] == res["test"]
        core = score([only_types(x) for x in gold], [only_types(x) for x in want]).row()
        assert rec["core_types"][cond]["F1"] == core["F1"] and "MISC" not in rec["core_types"][cond]
    assert json.loads((tmp_path / "out" / "cross.json").read_text())["test"] == rec["test"]
    # and it tags them once: leaving out what it does not read is no other pass
    from tvolib.predict import Predictor
    p, calls = Predictor(ckpt, cache_dir=str(tmp_path / "c")), []
    run = p.run
    p.run = lambda *a, **k: calls.append(1) or run(*a, **k)
    out = p.predict(["Obama visits Paris"], left_out=["no_knowledge", "no_visual", "neither"])
    assert len(calls) == 1 and set(out[0]["left_out"]) == {"no_knowledge", "no_visual", "neither"}
    assert cross_evaluate(ckpt, SAMPLE_TEST, tmp_path / "few", max_eval_samples=5,
                          cache_dir=str(tmp_path / "c"))["tweets"] == 5


def test_only_types_turns_other_types_into_o():
    assert only_types(["B-PER", "I-PER", "B-MISC", "I-MISC", "O", "B-ORG"]) == ["B-PER", "I-PER", "O", "O", "O", "B-ORG"]


def _cross(run: Path, target: str, gold, pred: dict[str, list]) -> None:
    """A run's scores on ``target`` as ``cross_evaluate`` leaves them."""
    from tvolib.data import Tweet
    from tvolib.evaluate import write_predictions
    out = run / f"cross-{target}"
    out.mkdir()
    tweets = [Tweet(str(i), ["w"] * len(g), list(g)) for i, g in enumerate(gold)]
    rec = {"test": {}, "core_types": {}}
    for cond, fname, _ in CONDITIONS:
        p = pred.get(cond, pred["all"])
        write_predictions(out / "p.txt", tweets, p)
        (out / fname).write_bytes(gzip.compress((out / "p.txt").read_bytes(), mtime=0))
        rec["test"][cond] = score(gold, p).row()
        rec["core_types"][cond] = score([only_types(g) for g in gold], [only_types(q) for q in p]).row()
    (out / "p.txt").unlink()
    (out / "cross.json").write_text(json.dumps(rec))


def test_the_cross_table_pairs_each_condition_with_text_only_on_the_target(tmp_path):
    folder = tmp_path / "exp" / "toy"
    folder.mkdir(parents=True)
    man = {"dataset": "toy", "settings": ["text-only", "tvomner+pgim"], "reference": "tvomner+pgim",
           "recipe": {"epochs": 1}, "model": {}, "data": {}, "identical": {}, "comparisons": [],
           "summaries": {"text-only": "tweet alone", "tvomner+pgim": "per-tweet PGIM texts"},
           "facts_text": "", "params_file": "p.yaml"}
    (folder / "manifest.json").write_text(json.dumps(man))
    own = [["B-PER", "O"]] * 10
    gold = [["B-PER", "O", "B-LOC", "B-MISC"]] * 40

    def miss(n, misc_wrong=0):       # the first n tweets lose their LOC; the first misc_wrong their MISC
        return [["B-PER", "O", "O" if i < n else "B-LOC", "O" if i < misc_wrong else "B-MISC"] for i in range(40)]
    for seed, (t, full, nok) in {1: (10, 14, 4), 2: (12, 16, 5), 3: (11, 13, 3)}.items():
        _run(folder, "text-only", seed, own, {"all": own}, man)
        _cross(folder / f"text-only-s{seed}", "other", gold, {"all": miss(t)})
        _run(folder, "tvomner+pgim", seed, own, {"all": own}, man)
        _cross(folder / f"tvomner+pgim-s{seed}", "other", gold,
               {"all": miss(full, 20), "no_knowledge": miss(nok), "neither": miss(nok)})
    _run(folder, "tvomner+pgim", 4, own, {"all": own}, man)            # not scored on the target: not a row
    t = write_cross_tables(folder, "other")
    row = next(r for r in t["rows"] if r["setting"] == "tvomner+pgim")
    assert row["seeds"] == [1, 2, 3]
    f1 = lambda n, m=0: score(gold, miss(n, m)).row()["F1"]       # noqa: E731
    d = row["cells"]["all"]["delta"]
    assert d["per_seed"] == pytest.approx([f1(14, 20) - f1(10), f1(16, 20) - f1(12), f1(13, 20) - f1(11)])
    assert d["a_beats_b"] and row["cells"]["no_knowledge"]["delta"]["b_beats_a"]
    assert t["core_f1"]["tvomner+pgim"]["no_knowledge"] == [round(score(
        [only_types(g) for g in gold], [only_types(q) for q in miss(n)]).row()["F1"], 6) for n in (4, 5, 3)]
    md = (folder / "cross_other.md").read_text()
    assert md.startswith("## Trained on toy, tested on other: with and without side inputs")
    assert "| tvomner+pgim | knowledge | 1,2,3 |" in md and "PER, LOC and ORG only" in md
    assert json.loads((folder / "cross_other.json").read_text())["target"] == "other"


def test_the_checkpoint_of_a_run_is_found_where_a_rerun_left_it_and_another_runs_is_passed_over(tmp_path):
    from tvolib.runs.plan import Run
    art = tmp_path / "reports" / "exp" / "toy" / "text-only-s1"
    art.mkdir(parents=True)
    (art / "metrics.json").write_text(json.dumps({"best_epoch": 3, "best_valid_f1": 71.25}))
    (art / "provenance.json").write_text(json.dumps({"run_dir": str(tmp_path / "gone")}))
    run = Run("toy", "text-only", 1, tmp_path / "runs" / "exp" / "toy" / "text-only-s1", art, {}, {})

    def ckpt(folder: Path, epoch: int, f1: float) -> None:
        (folder / "best").mkdir(parents=True)
        (folder / "best" / "checkpoint.json").write_text(json.dumps({"epoch": epoch, "valid": {"F1": f1}}))
    ckpt(run.run_dir, 2, 70.0)                                      # the folder holds another run's now
    assert checkpoint_of(run, tmp_path / "runs") is None
    ckpt(tmp_path / "runs" / "rerun" / "exp" / "toy" / "text-only-s1", 3, 71.25)
    assert checkpoint_of(run, tmp_path / "runs") == tmp_path / "runs" / "rerun" / "exp" / "toy" / "text-only-s1" / "best"


def test_cross_command_scores_each_finished_run_once_and_writes_the_table(trained, tmp_path, capsys):
    from tvolib.runs import cli
    from tvolib.runs.plan import plan
    ckpt, res, ds, _ = trained
    reports = tmp_path / "reports"
    src = tmp_path / "a.yaml"
    src.write_text("name: x\ndatasets:\n  sample: {}\nsettings: [text-only]\nseeds: [5]\n"
                   f"runs_dir: {tmp_path / 'runs'}\ncache_dir: {tmp_path / 'cache'}\n"
                   "recipe: {epochs: 2, max_length: 64}\n")
    other = tmp_path / "other"
    shutil.copytree(SAMPLE_TEST.parent, other)
    target = tmp_path / "b.yaml"
    target.write_text(f"name: y\ndatasets:\n  other: {{data_dir: {other}}}\nsettings: [text-only]\nseeds: [1]\n")
    r, = plan(src, reports_dir=reports).runs
    r.artifacts.mkdir(parents=True)
    (r.artifacts / "metrics.json").write_text(json.dumps({"test": res["test"], "best_epoch": res["best_epoch"],
                                                          "best_valid_f1": res["best_valid_f1"]}))
    (r.artifacts / "provenance.json").write_text(json.dumps({"identity": r.identity}))
    shutil.copytree(ckpt, r.run_dir / "best")
    argv = ["--params", str(src), "--cross", str(target), "--reports", str(reports), "--max_eval_samples", "12"]
    with pytest.raises(SystemExit, match=r"--only: \['tvomner\+pgim'\] are not settings of"):
        cli.main(argv + ["--only", "tvomner+pgim"])
    assert cli.main(argv + ["--only", "text-only"]) == 0
    out = r.artifacts / "cross-other"
    rec = json.loads((out / "cross.json").read_text())
    assert rec["tweets"] == 12 and rec["checkpoint"] == str(r.run_dir / "best")
    prov = json.loads((out / "08_cross_dataset.json").read_text())
    assert prov["status"] == "ok" and prov["parameters"]["data_dir"] == str(other)
    assert "data_dir/test.txt" in prov["data_checksums"]                  # what was tagged, and by what
    assert rec["model_sha256"] == json.loads((ckpt / "checkpoint.json").read_text())["files"]["model.safetensors"]
    table = (reports / "x" / "sample" / "cross_other.md").read_text()
    assert "| text-only | nothing | 5 |" in table
    assert "Side inputs of the other tweets" in table and "captions.json`" in table      # what the target gave
    stamp = (out / "cross.json").stat().st_mtime_ns
    assert cli.main(argv) == 0 and (out / "cross.json").stat().st_mtime_ns == stamp     # scored once


def test_an_unknown_condition_is_refused_naming_the_known_ones(trained):
    from tvolib.predict import Predictor
    with pytest.raises(ValueError, match="unknown condition.*no_knowledge, no_visual, neither"):
        Predictor(trained[0]).predict(["Obama visits Paris"], left_out=["no_images"])
