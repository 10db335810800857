"""The summary of the old real-data runs (``benchmarks/realdata.py --summary``, history): seeds
grouped into mean ± std and each full-model run compared with the text-only run of the same seed
(paired bootstrap). New experiments run through ``tvolib.runs`` (tests/test_experiments.py). Also the
start-up benchmark (``benchmarks/import_time.py``)."""
import importlib.util
import json
import statistics
from pathlib import Path

from tvolib.data import Tweet
from tvolib.evaluate import write_predictions

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_run(runs, name, f1, preds, tweets, epochs=4, max_train_samples=None):
    d = runs / "twitter2017" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"data": {"max_train_samples": max_train_samples,
                                                        "max_eval_samples": None}}))
    test = {"PER": f1, "LOC": f1, "ORG": f1, "MISC": f1, "Pre.": f1, "Rec.": f1, "F1": f1}
    (d / "results.json").write_text(json.dumps({
        "dataset": "twitter2017", "best_epoch": 2, "best_valid_f1": f1 + 1, "test": test,
        "epochs_run": epochs, "train": {"epochs": epochs},
        "history": [{"tweets_per_s": 5.0, "valid_f1": f1 + 1}]}))
    write_predictions(d / "test_predictions.txt", tweets, preds)


def _toy_predictions():
    """30 tweets "Obama in Paris", their gold labels, and predictions that miss every other LOC."""
    tweets = [Tweet(id=str(i), tokens=["Obama", "in", "Paris"], labels=["B-PER", "O", "B-LOC"])
              for i in range(30)]
    gold = [t.labels for t in tweets]
    half = [["B-PER", "O", "O"] if i % 2 else g for i, g in enumerate(gold)]
    return tweets, gold, half


def test_summary_groups_seeds_and_pairs_with_text_only(tmp_path):
    realdata = _load("realdata")
    tweets, gold, half = _toy_predictions()
    runs = tmp_path / "runs"
    _fake_run(runs, "text-only-minilm-s1", 80.0, half, tweets)
    _fake_run(runs, "text-only-minilm-s2", 82.0, half, tweets)
    _fake_run(runs, "full-tweetfiles-minilm-s1", 84.0, gold, tweets)
    _fake_run(runs, "full-tweetfiles-minilm-s2", 85.0, gold, tweets, epochs=3)   # no partner: other epochs
    _fake_run(runs, "text-only-minilm-s3", 10.0, half, tweets, max_train_samples=64)  # quick run: left out
    _fake_run(runs, "full-minilm-s1", 84.0, gold, tweets)
    _fake_run(runs, "full-minilm-s2", 83.0, half, tweets)
    realdata.summary(runs, tmp_path / "out")
    res = json.loads((tmp_path / "out" / "realdata.json").read_text())
    agg = {(a["setting"], a["epochs"]): a for a in res["by_setting"]}
    assert agg[("text-only-minilm", 4)]["seeds"] == [1, 2]
    assert agg[("text-only-minilm", 4)]["test"]["F1"] == f"81.00 ± {statistics.stdev([80, 82]):.2f}"
    assert agg[("full-tweetfiles-minilm", 3)]["test"]["F1"] == "85.00"
    p, q, r = sorted(res["paired"], key=lambda x: (x["setting"] != "full-tweetfiles-minilm", x["seed"]))
    # full-minilm beats text-only by +x on seed 1 and ties on seed 2: over seeds, +x/2
    assert (q["setting"], q["seed"], r["seed"], r["delta_f1"]) == ("full-minilm", 1, 2, 0.0)
    (pooled,) = res["paired_over_seeds"]
    assert pooled["setting"] == "full-minilm" and pooled["seeds"] == [1, 2]
    assert pooled["per_seed"] == [q["delta_f1"], 0.0] and abs(pooled["delta_f1"] - q["delta_f1"] / 2) < 1e-2
    assert (p["setting"], p["seed"], p["against"]) == ("full-tweetfiles-minilm", 1, "text-only-minilm")
    # half of the 30 tweets lose the LOC span: 45 predicted of 60 gold, all correct -> 2*45/105
    assert abs(p["delta_f1"] - (100 - 200 * 45 / 105)) < 1e-2 and p["p_b_not_better"] == 0.0
    md = (tmp_path / "out" / "realdata.md").read_text()
    assert "81.00 ± 1.41" in md and "| twitter2017 | full-tweetfiles-minilm | 1 | 4 |" in md
    assert "| twitter2017 | full-minilm | 4 | 1,2 |" in md
    assert res["subsampled"] == [str(runs / "twitter2017" / "text-only-minilm-s3")] and "Left out" in md


def test_scratch_runs_folder_keeps_its_summary_out_of_reports(tmp_path, monkeypatch):
    """``--runs /tmp/x`` without ``--out`` writes the tables into /tmp/x, not reports/results."""
    realdata = _load("realdata")
    seen = []
    monkeypatch.setattr(realdata, "summary", lambda runs, out: seen.append((runs, out)))
    realdata.main(["--summary", "--runs", str(tmp_path)])
    realdata.main(["--summary"])
    assert seen == [(tmp_path, tmp_path), (Path("runs/realdata"), Path("reports/results"))]


def test_realdata_no_longer_trains(capsys):
    """Training goes through ``python -m tvolib.runs``; the old script only summarises."""
    import pytest
    realdata = _load("realdata")
    with pytest.raises(SystemExit):
        realdata.main(["--dataset", "twitter2017"])
    assert "python -m tvolib.runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        realdata.main(["--setting", "text-only", "--seed", "1"])


def test_compare_pairs_two_settings_over_shared_seeds(tmp_path, capsys):
    """``--compare A B``: B against A over the seeds both finished (here 1 and 2: A's seed 3 has no
    full-data partner), with a clear message when they share none."""
    import pytest
    realdata = _load("realdata")
    tweets, gold, half = _toy_predictions()
    runs = tmp_path / "runs"
    for sd in (1, 2, 3):
        _fake_run(runs, f"full+gate_init0.95-minilm-s{sd}", 80.0, half, tweets)
    _fake_run(runs, "full+gate_init0.95+len160-minilm-s1", 84.0, gold, tweets)
    _fake_run(runs, "full+gate_init0.95+len160-minilm-s2", 80.0, half, tweets)
    _fake_run(runs, "full+gate_init0.95+len160+x-minilm-s3", 84.0, gold, tweets)   # another setting
    _fake_run(runs, "full+gate_init0.95+len160-minilm-s3", 10.0, half, tweets, max_train_samples=64)  # quick run
    realdata.main(["--runs", str(runs), "--compare", "full+gate_init0.95-minilm",
                   "full+gate_init0.95+len160-minilm"])
    out = capsys.readouterr().out
    res = realdata.compare(runs, "twitter2017", "full+gate_init0.95-minilm", "full+gate_init0.95+len160-minilm")
    gain = 100 - 200 * 45 / 105
    assert res["seeds"] == [1, 2] and abs(res["per_seed"][0] - gain) < 1e-2 and res["per_seed"][1] == 0.0
    assert abs(res["delta_f1"] - gain / 2) < 1e-2
    assert "seeds 1,2" in out and f"mean {res['delta_f1']:+.2f}" in out
    with pytest.raises(SystemExit, match="no seed has finished both"):
        realdata.compare(runs, "twitter2017", "full+gate_init0.95-minilm", "text-only-minilm")


def test_import_time_prints_a_row_per_module_with_what_it_loaded(capsys):
    """``benchmarks/import_time.py``: one table row per module, its seconds and the heavy libraries
    that importing it loaded (the batch CLI reads notebooks, not image models)."""
    bench = _load("import_time")
    bench.main(["--repeat", "1", "tvolib.data", "tvolib.runs.cli"])
    rows = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| `")]
    assert [r.split("|")[1].strip() for r in rows] == ["`tvolib.data`", "`tvolib.runs.cli`"]
    assert float(rows[0].split("|")[2]) > 0
    assert "timm" not in rows[1] and "nbformat" in rows[1]


def test_bf16_units_measures_both_precisions_and_names_the_cpu_flags(capsys, monkeypatch):
    """``benchmarks/bf16_units.py``: fp32 and bf16 GFLOP/s of each product, and which bf16 flags the CPU has."""
    bench = _load("bf16_units")
    g = bench.measure(repeat=1, tokens=8, d=16, n=32)
    assert set(g) == {"fp32", "bf16"} and all(v > 0 for p in g.values() for v in p.values())
    monkeypatch.setattr(bench, "measure", lambda repeat: g)
    monkeypatch.setattr(bench, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    bench.main(["--repeat", "1"])
    out = capsys.readouterr().out
    assert "bf16 flags: avx512_bf16" in out
    assert f"| matmul 1024 x 1024 | {g['fp32']['matmul']:.2f} | {g['bf16']['matmul']:.2f} |" in out


def test_scoring_benchmark_groups_the_passes_without_changing_a_prediction(tmp_path, monkeypatch):
    """``benchmarks/scoring.py``: every scoring pass of a trained full model on its own and grouped
    as ``tvolib.scoring`` groups them; the predictions must agree pass by pass."""
    import torch
    import tvolib.inputs
    from test_model import tiny_encoder_config
    from test_train import cfgs, fake_augmentations, fake_visual_features
    from tvolib.train import train
    monkeypatch.setattr(tvolib.inputs, "visual_features", fake_visual_features)
    monkeypatch.setattr(tvolib.inputs, "augmentations", fake_augmentations)
    monkeypatch.setattr(tvolib.inputs, "candidate_tagger", lambda *a, **k: None)
    torch.set_num_threads(1)
    data, model, tr = cfgs(tmp_path, "run", epochs=1)
    train(data, model, tr, encoder_config=tiny_encoder_config())
    r = _load("scoring").scoring_cost(tmp_path / "run", max_samples=8)
    assert r["identical"] and r["different"] == []
    # test, no_visual, the four probes; no_knowledge, neither: two encoder passes instead of eight
    assert (r["passes"], r["encoder_passes_alone"], r["encoder_passes_grouped"]) == (8, 8, 2)
    # with valid: no_visual; no_knowledge, neither (no test pass, no probe there): two more encoder passes
    r = _load("scoring").scoring_cost(tmp_path / "run", max_samples=8, valid=True)
    assert r["identical"] and r["valid_tweets"] > 0
    assert (r["passes"], r["encoder_passes_alone"], r["encoder_passes_grouped"]) == (11, 11, 4)
