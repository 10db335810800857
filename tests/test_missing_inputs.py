"""Side inputs that a new tweet does not have: side-input dropout in training (knowledge and visual
input left out per tweet), the test set scored with them left out, and the missing-inputs table."""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_train import cfgs, same_weights, stand_ins, weights  # noqa: E402,F401  (stand_ins: a fixture)
from test_model import tiny_encoder_config  # noqa: E402

from tvolib.data import LABELS  # noqa: E402
from tvolib.evaluate import read_predictions, score  # noqa: E402


def _prepared(tmp_path):
    from tvolib.inputs import dataset_from_config, prepare_data
    from tvolib.resources import resolve
    data, model, _ = cfgs(tmp_path)
    ds = dataset_from_config(data)
    return prepare_data(ds, data, model, resolve(data, model))


def test_dropout_draws_are_fixed_per_tweet_and_epoch_and_leave_torch_alone(tmp_path, stand_ins):
    from tvolib.inputs import with_dropout
    from tvolib.vfo.fusion import GLOB_NONE
    p = _prepared(tmp_path)
    ex = p.examples["train"][:16]
    assert all("bare" in e for e in ex)                       # the model reads knowledge: a bare variant each
    state = torch.random.get_rng_state()
    plain = p.collate(ex)
    off = with_dropout(p, ex, 3, 1)
    assert all(torch.equal(plain[k], off[k]) for k in ("input_ids", "word_index"))
    all_gone = with_dropout(p, ex, 3, 1, knowledge=1.0, visual=1.0)
    bare = p.collate([{**e, **e["bare"]} for e in ex])
    assert torch.equal(all_gone["input_ids"], bare["input_ids"])
    assert (all_gone["visual"]["glob_kind"] == GLOB_NONE).all() and not all_gone["visual"]["obj_mask"].any()
    half = with_dropout(p, ex, 3, 1, knowledge=0.5)
    again = with_dropout(p, ex, 3, 1, knowledge=0.5)
    other_epoch = with_dropout(p, ex, 3, 2, knowledge=0.5)
    assert torch.equal(half["input_ids"], again["input_ids"])
    def row(b, i):
        return b["input_ids"][i][b["attention_mask"][i].bool()]
    changed = [i for i in range(len(ex)) if not torch.equal(row(half, i), row(plain, i))]
    assert 0 < len(changed) < len(ex)                          # some tweets lost their knowledge, not all
    assert not torch.equal(half["input_ids"], other_epoch["input_ids"])   # drawn anew each epoch
    assert torch.equal(torch.random.get_rng_state(), state)


def test_dropout_off_changes_nothing_on_changes_training_and_resumes_alike(tmp_path, stand_ins):
    from tvolib.train import train
    torch.set_num_threads(1)
    enc = tiny_encoder_config()
    train(*cfgs(tmp_path, "default"), encoder_config=enc)
    train(*cfgs(tmp_path, "zero", knowledge_dropout=0.0, visual_dropout=0.0), encoder_config=enc)
    assert same_weights(weights(tmp_path / "default" / "best"), weights(tmp_path / "zero" / "best"))
    straight = train(*cfgs(tmp_path, "drop", knowledge_dropout=0.5, visual_dropout=0.3), encoder_config=enc)
    assert not same_weights(weights(tmp_path / "default" / "best"), weights(tmp_path / "drop" / "best"))
    data, model, tr = cfgs(tmp_path, "killed", knowledge_dropout=0.5, visual_dropout=0.3)
    train(data, model, tr, encoder_config=enc, stop_after=1)
    resumed = train(data, model, tr, encoder_config=enc)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in straight["history"]]


def test_test_is_also_scored_with_side_inputs_left_out(tmp_path, stand_ins):
    from tvolib.train import train
    from tvolib.inputs import dataset_from_config
    torch.set_num_threads(1)
    data, model, tr = cfgs(tmp_path, "full")
    res = train(data, model, tr, encoder_config=tiny_encoder_config())
    assert set(res["missing_inputs"]) == {"no_knowledge", "no_visual", "neither"}
    gold = [t.labels for t in dataset_from_config(data).splits["test"]]
    for name, row in res["missing_inputs"].items():
        _, pred = read_predictions(tmp_path / "full" / f"test_predictions.{name}.txt")
        assert score(gold, pred).row()["F1"] == row["F1"]      # the file holds what was scored
    # valid too (a dropout probability is chosen on valid): the saved best model, scored anew
    from tvolib.checkpoint import load_checkpoint
    from tvolib.evaluate import evaluate
    from tvolib.inputs import withheld
    best, _, _ = load_checkpoint(tmp_path / "full" / "best")
    p = _prepared(tmp_path)
    assert set(res["missing_inputs_valid"]) == set(res["missing_inputs"])
    for name, (kn, vis) in {"no_knowledge": (True, False), "neither": (True, True)}.items():
        ex, coll = withheld(p, "valid", knowledge=kn, visual=vis)
        assert evaluate(best, ex, coll)[0].row() == res["missing_inputs_valid"][name]
    assert res["missing_inputs_valid"]["neither"] != res["missing_inputs"]["neither"]   # not test's rows
    # a model that reads neither knowledge nor the visual input has nothing to leave out
    data, model, tr = cfgs(tmp_path, "plain")
    res = train(data, model.ablation("text-only"), tr, encoder_config=tiny_encoder_config())
    assert res["missing_inputs"] == {}
    off = train(*cfgs(tmp_path, "off", missing_inputs=False), encoder_config=tiny_encoder_config())
    assert "missing_inputs" not in off and not list((tmp_path / "off").glob("test_predictions.*.txt"))


def _run(folder: Path, setting: str, seed: int, gold, pred: dict[str, list], manifest: dict):
    d = folder / f"{setting}-s{seed}"
    d.mkdir(parents=True)
    from tvolib.data import Tweet
    from tvolib.evaluate import write_predictions
    tweets = [Tweet(str(i), ["w"] * len(g), list(g)) for i, g in enumerate(gold)]
    rows = {}
    for cond, p in pred.items():
        f = d / ("test_predictions.txt" if cond == "all" else f"test_predictions.{cond}.txt")
        write_predictions(f, tweets, p)
        f.with_name(f.stem + ".conll.gz").write_bytes(gzip.compress(f.read_bytes(), mtime=0))
        f.unlink()
        rows[cond] = score(gold, p).row()
    metrics = {"test": rows["all"], "missing_inputs": {c: r for c, r in rows.items() if c != "all"} or None}
    (d / "metrics.json").write_text(json.dumps(metrics))
    ident = {"dataset": "toy", "data": manifest["data"], "setting": setting, "seed": seed,
             "recipe": manifest["recipe"], "model": manifest["model"]}
    (d / "provenance.json").write_text(json.dumps({"identity": ident}))


def test_the_missing_inputs_table_pairs_each_condition_with_text_only(tmp_path):
    from tvolib.runs.tables import missing_inputs_markdown, missing_inputs_table, write_tables
    folder = tmp_path / "exp" / "toy"
    folder.mkdir(parents=True)
    man = {"dataset": "toy", "settings": ["text-only", "tvomner+pgim"], "reference": "tvomner+pgim",
           "recipe": {"epochs": 1}, "model": {}, "data": {}, "identical": {},
           "summaries": {"text-only": "tweet alone", "tvomner+pgim": "per-tweet PGIM texts"}, "comparisons": [],
           "facts_text": "", "params_file": "p.yaml"}
    (folder / "manifest.json").write_text(json.dumps(man))
    gold = [["B-PER", "O", "B-LOC"]] * 40
    miss = lambda n: [["B-PER", "O", "O"] if i < n else ["B-PER", "O", "B-LOC"] for i in range(40)]  # noqa: E731
    for seed, (t, full, nok) in {1: (10, 4, 14), 2: (12, 5, 16), 3: (11, 3, 13)}.items():
        _run(folder, "text-only", seed, gold, {"all": miss(t)}, man)
        _run(folder, "tvomner+pgim", seed, gold, {"all": miss(full), "no_knowledge": miss(nok),
                                                   "no_visual": miss(full), "neither": miss(nok)}, man)
    t = missing_inputs_table(folder)
    row = next(r for r in t["rows"] if r["setting"] == "tvomner+pgim")
    f1 = {sd: score(gold, miss(n)).row()["F1"] for sd, n in {1: 14, 2: 16, 3: 13}.items()}
    ref = {sd: score(gold, miss(n)).row()["F1"] for sd, n in {1: 10, 2: 12, 3: 11}.items()}
    d = row["cells"]["no_knowledge"]["delta"]
    assert d["per_seed"] == pytest.approx([f1[s] - ref[s] for s in (1, 2, 3)])      # test F1, paired by seed
    assert d["seed_ci95"][1] < 0 and d["tweet_ci95"][1] < 0 and d["a_beats_b"]    # below text-only
    assert row["cells"]["all"]["delta"]["b_beats_a"]
    md = missing_inputs_markdown(t)
    assert "| tvomner+pgim | knowledge | 1,2,3 |" in md and "lower" in md and "higher" in md
    assert 'Recipe: `{"epochs": 1}` (p.yaml)' in md and "`tvomner+pgim`: per-tweet PGIM texts" in md
    assert "valid F1" not in md                  # no run was scored on valid with inputs left out
    # runs scored on valid too: the valid F1 beside the test F1 (what a recipe is chosen on)
    for setting in ("text-only", "tvomner+pgim"):
        for seed in (1, 2, 3):
            m = json.loads((folder / f"{setting}-s{seed}" / "metrics.json").read_text())
            m["valid"] = {"F1": 70.0 + seed}
            if setting != "text-only":
                m["missing_inputs_valid"] = {"no_knowledge": {"F1": 60.0 + seed}}
            (folder / f"{setting}-s{seed}" / "metrics.json").write_text(json.dumps(m))
    t = missing_inputs_table(folder)
    row = next(r for r in t["rows"] if r["setting"] == "tvomner+pgim")
    assert row["cells"]["no_knowledge"]["valid_F1"] == [61.0, 62.0, 63.0]
    assert "valid_F1" not in row["cells"]["no_visual"]
    md = missing_inputs_markdown(t)
    assert "| F1 | valid F1 |" in md and "| tvomner+pgim | knowledge | 1,2,3 | " in md
    line = next(x for x in md.splitlines() if x.startswith("| tvomner+pgim | knowledge |"))
    assert line.split(" | ")[4] == "62.00 ± 1.00"
    assert next(x for x in md.splitlines() if x.startswith("| text-only |")).split(" | ")[4] == "72.00 ± 1.00"
    write_tables(tmp_path / "exp")
    assert (tmp_path / "exp" / "missing_inputs.md").exists()
    assert LABELS  # the label set the predictions use


def test_tables_of_a_dropout_experiment_keep_text_only_whose_run_has_no_dropout(tmp_path):
    # the batch leaves the dropout of inputs a setting does not read out of its run (and reuses
    # Table 2's); the tables must still count that run as the experiment's
    from tvolib.runs.tables import finished_runs, missing_inputs_table
    folder = tmp_path / "exp" / "toy"
    folder.mkdir(parents=True)
    man = {"dataset": "toy", "settings": ["text-only", "tvomner+pgim"], "reference": "tvomner+pgim",
           "recipe": {"epochs": 1, "knowledge_dropout": 0.25, "visual_dropout": 0.25}, "model": {}, "data": {},
           "identical": {}, "summaries": {}, "comparisons": [], "facts_text": "", "params_file": "p.yaml"}
    (folder / "manifest.json").write_text(json.dumps(man))
    gold = [["B-PER", "O", "B-LOC"]] * 20
    miss = lambda n: [["B-PER", "O", "O"] if i < n else ["B-PER", "O", "B-LOC"] for i in range(20)]  # noqa: E731
    _run(folder, "text-only", 1, gold, {"all": miss(5)}, {**man, "recipe": {"epochs": 1}})
    _run(folder, "tvomner+pgim", 1, gold, {"all": miss(3), "no_knowledge": miss(6)}, man)
    _run(folder, "tvomner+pgim", 2, gold, {"all": miss(3), "no_knowledge": miss(6)},
         {**man, "recipe": {"epochs": 2}})                     # another recipe's run: not this table's
    _, runs = finished_runs(folder)
    assert {s: sorted(r) for s, r in runs.items()} == {"text-only": [1], "tvomner+pgim": [1]}
    row = next(r for r in missing_inputs_table(folder)["rows"] if r["setting"] == "tvomner+pgim")
    assert row["cells"]["no_knowledge"]["delta"]["per_seed"] == pytest.approx(
        [score(gold, miss(6)).row()["F1"] - score(gold, miss(5)).row()["F1"]])


def test_two_experiments_are_compared_under_each_missing_inputs_condition(tmp_path):
    # e.g. side-input dropout against none: with the knowledge left out is where it should differ
    from tvolib.runs.tables import compare_experiments, compare_markdown
    gold = [["B-PER", "O", "B-LOC"]] * 30
    miss = lambda n: [["B-PER", "O", "O"] if i < n else ["B-PER", "O", "B-LOC"] for i in range(30)]  # noqa: E731
    for name, recipe, nok in (("a", {"epochs": 1}, {1: 12, 2: 13}), ("b", {"epochs": 1, "knowledge_dropout": 0.25},
                                                                       {1: 6, 2: 8})):
        folder = tmp_path / name / "toy"
        folder.mkdir(parents=True)
        man = {"dataset": "toy", "settings": ["tvomner+pgim"], "reference": "tvomner+pgim", "recipe": recipe,
               "model": {}, "data": {}, "identical": {}, "summaries": {}}
        (folder / "manifest.json").write_text(json.dumps(man))
        for seed in (1, 2):
            _run(folder, "tvomner+pgim", seed, gold, {"all": miss(3), "no_knowledge": miss(nok[seed])}, man)
    c = compare_experiments(tmp_path / "a", tmp_path / "b")
    rows = {r["left_out"]: r for r in c["rows"]}
    assert set(rows) == {"nothing", "knowledge"} and c["differs"] == {"knowledge_dropout": (None, 0.25)}
    assert rows["nothing"]["per_seed"] == [0.0, 0.0]
    want = [score(gold, miss(b)).row()["F1"] - score(gold, miss(a)).row()["F1"] for a, b in ((12, 6), (13, 8))]
    assert rows["knowledge"]["per_seed"] == pytest.approx(want) and rows["knowledge"]["tweet_ci95"][0] > 0
    md = compare_markdown(c)
    assert "| toy | tvomner+pgim | knowledge | 1,2 |" in md and '"left out"' in md


def test_a_comparison_of_two_recipes_shows_the_valid_f1_a_choice_reads(tmp_path):
    """The valid F1 of the selected epochs stands beside test, per condition where the runs were scored
    on valid with it; a condition not scored on valid reads "—", never a test figure. The recipe, the
    parameters files and the knowledge each setting reads are stated above the table."""
    from tvolib.runs.tables import compare_experiments, compare_markdown
    gold = [["B-PER", "O", "B-LOC"]] * 30
    miss = lambda n: [["B-PER", "O", "O"] if i < n else ["B-PER", "O", "B-LOC"] for i in range(30)]  # noqa: E731
    valid = {"a": {1: 71.25, 2: 72.75}, "b": {1: 74.5, 2: 73.5}}
    for name, epochs in (("a", 4), ("b", 12)):
        folder = tmp_path / name / "toy"
        folder.mkdir(parents=True)
        man = {"dataset": "toy", "settings": ["tvomner+pgim"], "reference": "tvomner+pgim",
               "recipe": {"epochs": epochs}, "model": {}, "data": {}, "identical": {}, "params_file": f"{name}.yaml",
               "facts_text": "typed per-tweet knowledge: yes", "summaries": {"tvomner+pgim": "per-tweet PGIM texts"}}
        (folder / "manifest.json").write_text(json.dumps(man))
        for seed in (1, 2):
            _run(folder, "tvomner+pgim", seed, gold, {"all": miss(seed), "no_knowledge": miss(5)}, man)
            m = folder / f"tvomner+pgim-s{seed}" / "metrics.json"
            m.write_text(json.dumps({**json.loads(m.read_text()), "valid": {"F1": valid[name][seed]}}))
    c = compare_experiments(tmp_path / "a", tmp_path / "b")
    rows = {r["left_out"]: r for r in c["rows"]}
    assert rows["nothing"]["valid_a"] == [71.25, 72.75] and rows["nothing"]["valid_b"] == [74.5, 73.5]
    assert rows["knowledge"]["valid_a"] == [None, None]
    md = compare_markdown(c).splitlines()
    assert "- `toy`, `a`'s Recipe: `{\"epochs\": 4}` (a.yaml; `b`: b.yaml). Dataset: typed per-tweet knowledge: yes." in md
    assert "Settings (the knowledge each reads): `tvomner+pgim`: per-tweet PGIM texts" in md
    h = next(i for i, line in enumerate(md) if line.startswith("| dataset"))
    assert "| valid F1 `a` | valid F1 `b` | F1 `a` | F1 `b` |" in md[h]
    assert md[h + 2].startswith("| toy | tvomner+pgim | nothing | 1,2 | 72.00 ± 1.06 | 74.00 ± 0.71 | ")
    assert md[h + 3].startswith("| toy | tvomner+pgim | knowledge | 1,2 | — | — | ")
    assert all(line.count("|") == md[h].count("|") for line in md[h:])
