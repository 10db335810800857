"""MLflow tracking (tvolib.tracking): a training run logged and read back with MlflowClient, training
without mlflow or without a store, and the import of committed batch results. Each test has a SQLite
store of its own in tmp_path (conftest turns tracking off for every other test)."""
from __future__ import annotations

import gzip
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tvolib.cli import main as cli_main
from tvolib.data import file_sha256
from tvolib.resources import REPO, resolve
from tvolib.tracking import HOW_TO, RUN_POINTER, Tracker, TrackingConfig, import_runs, main, tracking_config
from test_model import tiny_encoder_config
from test_train import cfgs, stand_ins  # noqa: F401  (stand_ins: a fixture)

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")   # inside mlflow
EXPERIMENTS = REPO / "reports" / "experiments"
COMMITTED = ["precision-bf16/twitter2017/tvomner+pgim-s1", "table2/twitter2017/text-only-s1"]


def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def assert_series(client, run_id: str, key: str, expected) -> None:
    """The history of metric ``key`` is ``expected``, a list of (step, value), each step once."""
    got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    assert [s for s, _ in got] == [s for s, _ in expected], key
    assert [v for _, v in got] == pytest.approx([v for _, v in expected]), key


def test_the_environment_picks_the_store_once_at_the_edge(tmp_path):
    default = tracking_config({})
    assert default.enabled and default.uri == f"sqlite:///{REPO / 'mlflow.db'}"
    assert default.artifact_root == REPO / "mlartifacts" and default.experiment is None
    mine = tracking_config({"MLFLOW_TRACKING_URI": store(tmp_path), "MLFLOW_EXPERIMENT_NAME": "x"})
    assert (mine.uri, mine.artifact_root, mine.experiment) == (store(tmp_path), tmp_path / "mlartifacts", "x")
    remote = tracking_config({"MLFLOW_TRACKING_URI": "http://tracker:5000"})
    assert remote.artifact_root is None                 # the server decides
    assert not tracking_config({"TVOMNER_TRACKING": "0"}).enabled
    data, model, _ = cfgs(tmp_path)
    assert resolve(data, model, env={"MLFLOW_TRACKING_URI": store(tmp_path)}).tracking == mine.__class__(
        uri=store(tmp_path), enabled=True, artifact_root=tmp_path / "mlartifacts")
    assert mine.experiment_for({"experiment": "table2"}) == "x"
    assert tracking_config({}).experiment_for({"experiment": "table2"}) == "table2"
    assert tracking_config({}).experiment_for({}) == "tvomner"


def test_a_training_run_is_logged_and_a_resumed_run_continues_it(tmp_path, stand_ins):
    from mlflow import MlflowClient
    from tvolib.train import train
    torch.set_num_threads(1)
    data, model, tr = cfgs(tmp_path, "run")
    res = resolve(data, model, env={"MLFLOW_TRACKING_URI": store(tmp_path)})
    tags = {"experiment": "unit", "setting": "tvomner+pgim", "recipe": {"epochs": 2, "lr": 1e-3}}
    part = train(data, model, tr, res=res, encoder_config=tiny_encoder_config(), stop_after=1, tracking_tags=tags)
    assert part["interrupted"]
    client = MlflowClient(store(tmp_path))
    exp = client.get_experiment_by_name("unit")
    assert exp is not None and exp.artifact_location == (tmp_path / "mlartifacts" / "unit").as_uri()
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "KILLED"
    # started again (another eval batch size, which a resumed run may have): the same MLflow run goes on
    _, _, tr = cfgs(tmp_path, "run", eval_batch_size=8)
    result = train(data, model, tr, res=res, encoder_config=tiny_encoder_config(), tracking_tags=tags)
    out = tmp_path / "run"
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert json.loads((out / RUN_POINTER).read_text())["run_id"] == run.info.run_id
    on_disk = json.loads((out / "results.json").read_text())
    history = json.loads((out / "history.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert on_disk["test"] == result["test"] and len(history) == 2

    p, t, m = run.data.params, run.data.tags, run.data.metrics
    assert p["train.lr"] == "0.001" and p["train.seed"] == "3" and p["model.arch"] == config["model"]["arch"]
    assert p["data.max_train_samples"] == "32" and p["precision"] == "fp32" and p["world_size"] == "1"
    assert p["data.data_dir"] == data.data_dir and p["train.eval_batch_size"] == "64"   # as it started
    assert (t["experiment"], t["dataset"], t["setting"], t["seed"]) == ("unit", "sample", "tvomner+pgim", "3")
    assert json.loads(t["recipe"]) == {"epochs": 2, "lr": 1e-3}
    assert t["data_sha256.data_dir/train.txt"] == file_sha256(Path(data.data_dir) / "train.txt")
    assert t["data_sha256.captions"] == file_sha256(data.captions)
    if (REPO / ".git").exists():
        assert len(t["git_commit"]) == 40 and t["mlflow.source.git.commit"] == t["git_commit"]

    # per epoch, each once, with the epoch as step; per optimizer step
    rid = run.info.run_id
    assert_series(client, rid, "valid/f1", [(h["epoch"], h["valid_f1"]) for h in history])
    assert_series(client, rid, "train/loss", [(h["epoch"], h["train_loss"]) for h in history])
    assert_series(client, rid, "valid/PER/f1", [(h["epoch"], h["valid"]["PER"]) for h in history])
    losses = [v for h in history for v in h["step_losses"]]
    assert_series(client, rid, "train/step_loss", list(zip(range(1, len(losses) + 1), losses)))

    # the test split once: micro and per type, in percent as in results.json
    assert m["test/f1"] == pytest.approx(on_disk["test"]["F1"])
    assert m["test/precision"] == pytest.approx(on_disk["test"]["Pre."])
    assert m["test/recall"] == pytest.approx(on_disk["test"]["Rec."])
    for typ in ("PER", "LOC", "ORG", "MISC"):
        scores = on_disk["test_scores"]["per_type"][typ]
        assert m[f"test/{typ}/f1"] == pytest.approx(on_disk["test"][typ])
        assert m[f"test/{typ}/precision"] == pytest.approx(100 * scores["precision"])
        assert m[f"test/{typ}/recall"] == pytest.approx(100 * scores["recall"])
    assert m["test/n_gold"] == on_disk["test_scores"]["n_gold"]
    assert m["best_valid_f1"] == pytest.approx(on_disk["best_valid_f1"]) and m["best_epoch"] == on_disk["best_epoch"]
    assert "probe" in on_disk and m["probe/gate_mean"] == pytest.approx(on_disk["probe"]["gate_mean"])
    assert m["probe/f1/gate_1"] == pytest.approx(on_disk["probe"]["f1"]["gate=1"])

    arts = {a.path for a in client.list_artifacts(rid)}
    assert {"config.json", "history.json", "results.json", "curves.png", "test_predictions.txt"} <= arts
    local = Path(client.download_artifacts(rid, "results.json", str(tmp_path / "dl")))
    assert json.loads(local.read_text())["test"] == on_disk["test"]


def test_training_without_mlflow_trains_and_says_how_to_turn_tracking_on(tmp_path, stand_ins, monkeypatch, caplog):
    from tvolib.train import train
    torch.set_num_threads(1)
    monkeypatch.setitem(sys.modules, "mlflow", None)          # `import mlflow` raises ImportError
    data, model, tr = cfgs(tmp_path, "run", epochs=1)
    res = resolve(data, model, env={"MLFLOW_TRACKING_URI": store(tmp_path)})
    with caplog.at_level(logging.INFO):
        result = train(data, model, tr, res=res, encoder_config=tiny_encoder_config())
    assert "test" in result and (tmp_path / "run" / "results.json").exists()
    lines = [r.getMessage() for r in caplog.records if r.name == "tvolib.tracking"]
    assert len(lines) == 1 and "mlflow is not installed" in lines[0] and 'pip install -e ".[track]"' in lines[0]
    assert "MLFLOW_TRACKING_URI" in lines[0]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "run" / RUN_POINTER).exists()


def test_tracking_off_or_a_store_that_does_not_answer_is_one_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        assert not Tracker(TrackingConfig()).start(tmp_path, {}, {})             # made by hand: silent
        off = Tracker(tracking_config({"TVOMNER_TRACKING": "0", "MLFLOW_TRACKING_URI": store(tmp_path)}))
        assert not off.start(tmp_path, {}, {})
        down = Tracker(TrackingConfig(uri="http://127.0.0.1:9", enabled=True))   # nothing listens on port 9
        assert not down.start(tmp_path, {}, {})
        down.log_epoch({"epoch": 1}), down.log_result({}), down.end()              # no-ops
    lines = [r.getMessage() for r in caplog.records if r.name == "tvolib.tracking"]
    assert len(lines) == 2 and "TVOMNER_TRACKING=0" in lines[0]
    assert "http://127.0.0.1:9 cannot be reached (no answer" in lines[1] and "MLFLOW_TRACKING_URI" in lines[1]
    assert not (tmp_path / "mlflow.db").exists()


def test_a_failure_while_logging_is_one_warning_and_then_nothing(tmp_path, caplog):
    from mlflow import MlflowClient
    tracker = Tracker(tracking_config({"MLFLOW_TRACKING_URI": store(tmp_path)}))
    assert tracker.start(tmp_path / "r", {"train": {"lr": 0.1}}, {"experiment": "e"})
    rec = {"epoch": 1, "train_loss": 1.0, "l_ner": 1.0, "l_vae": 0.0, "valid_f1": 10.0, "valid": {}, "tweets_per_s": 1,
           "train_seconds": 1}
    tracker.log_epoch(rec)

    def broken(*a, **k):
        raise RuntimeError("database is locked")
    tracker.client.log_batch = broken
    with caplog.at_level(logging.WARNING):
        tracker.log_epoch({**rec, "epoch": 2})
        tracker.log_epoch({**rec, "epoch": 3})
        tracker.end()
    warnings = [r.getMessage() for r in caplog.records if r.name == "tvolib.tracking" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "database is locked" in warnings[0] and "training goes on" in warnings[0]
    assert not tracker.active
    [run] = MlflowClient(store(tmp_path)).search_runs([MlflowClient(store(tmp_path)).get_experiment_by_name("e")
                                                       .experiment_id])
    assert run.data.params == {"train.lr": "0.1"} and run.data.metrics["valid/f1"] == 10.0


def test_the_committed_runs_are_imported_once(tmp_path, capsys, monkeypatch):
    from mlflow import MlflowClient
    root = tmp_path / "experiments"
    for rel in COMMITTED:
        shutil.copytree(EXPERIMENTS / rel, root / rel)
    env = {"MLFLOW_TRACKING_URI": store(tmp_path)}
    assert main(["import", str(root)], env=env) == 0
    assert capsys.readouterr().out.startswith("2 run(s) imported, 0 skipped")
    client = MlflowClient(store(tmp_path))
    for rel in COMMITTED:
        exp_name, dataset, name = rel.split("/")
        metrics = json.loads((EXPERIMENTS / rel / "metrics.json").read_text())
        prov = json.loads((EXPERIMENTS / rel / "provenance.json").read_text())
        runs = client.search_runs([client.get_experiment_by_name(exp_name).experiment_id],
                                  filter_string=f"tags.setting = '{metrics['setting']}'")
        assert len(runs) == 1
        run = runs[0]
        t, m, p = run.data.tags, run.data.metrics, run.data.params
        assert (t["experiment"], t["dataset"], t["setting"], t["seed"]) == (exp_name, dataset, metrics["setting"],
                                                                            str(metrics["seed"]))
        assert t["git_commit"] == prov["git"]["commit"] and t["imported_from"].endswith(rel)
        assert json.loads(t["recipe"]) == prov["identity"]["recipe"]
        assert t["data_sha256.data_dir/train.txt"] == prov["data_files"]["data_dir/train.txt"]
        assert p["train.lr"] == json.dumps(prov["configs"]["train"]["lr"])
        assert p["precision"] == prov["configs"]["precision"]
        assert m["test/f1"] == pytest.approx(metrics["test"]["F1"])
        assert m["test/PER/f1"] == pytest.approx(metrics["test"]["PER"])
        assert m["test/precision"] == pytest.approx(metrics["test"]["Pre."])
        assert m["test/n_correct"] == metrics["test_counts"]["n_correct"]
        assert m["best_valid_f1"] == pytest.approx(metrics["best_valid_f1"])
        assert_series(client, run.info.run_id, "valid/f1", list(enumerate(metrics["valid_f1_per_epoch"], start=1)))
        assert_series(client, run.info.run_id, "valid/precision", [(metrics["best_epoch"], metrics["valid"]["Pre."])])
        if metrics.get("probe"):
            assert m["probe/gate_mean"] == pytest.approx(metrics["probe"]["gate_mean"])
            assert m["probe/omega_mean/2"] == pytest.approx(metrics["probe"]["omega_mean"][2])
        assert run.info.status == "FINISHED"
        got = Path(client.download_artifacts(run.info.run_id, "test_predictions.conll.gz", str(tmp_path / "dl" / name)))
        assert gzip.decompress(got.read_bytes()) == gzip.decompress((EXPERIMENTS / rel / "test_predictions.conll.gz")
                                                                    .read_bytes())
    # again, as `tvomner track-import`: nothing new
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store(tmp_path))
    assert cli_main(["--help"]) == 0 and "  track-import " in capsys.readouterr().out
    assert cli_main(["track-import", str(root)]) == 0
    assert capsys.readouterr().out.startswith("0 run(s) imported, 2 skipped")
    assert import_runs(root, tracking_config(env), label_root=tmp_path) == ([], [f"experiments/{r}" for r in COMMITTED])
    assert sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments()) == 2
