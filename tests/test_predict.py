"""Prediction on a user's own tweets from a checkpoint alone (function and CLI), and the notebooks."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tvolib.config import DataConfig, ModelConfig, TrainConfig
from test_model import tiny_encoder_config
from test_train import stand_ins  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny text-only model trained briefly on the sample; returns (checkpoint, results, ds)."""
    from tvolib.inputs import dataset_from_config
    from tvolib.train import train
    tmp = tmp_path_factory.mktemp("pred")
    data = DataConfig(cache_dir=str(tmp / "cache"), max_length=64)
    model = ModelConfig(num_heads=4, lstm_hidden=8, visual="none", use_candidates=False)
    tr = TrainConfig(output_dir=str(tmp / "run"), epochs=2, batch_size=16, micro_batch_size=16, lr=1e-3,
                     head_lr=1e-2, progress=False, seed=5)
    ds = dataset_from_config(data)
    res = train(data, model, tr, ds=ds, encoder_config=tiny_encoder_config())
    return Path(res["checkpoint"]), res, ds, tmp


def test_checkpoint_alone_reproduces_test_predictions(trained, tmp_path):
    from tvolib.evaluate import read_predictions
    from tvolib.predict import predict
    ckpt, res, ds, _ = trained
    moved = tmp_path / "moved_ckpt"
    shutil.copytree(ckpt, moved)                       # nothing outside the folder is needed
    out = predict(moved, ds.splits["test"])
    _, want = read_predictions(Path(res["output_dir"]) / "test_predictions.txt")
    assert [r["labels"] for r in out] == want
    for r in out:
        assert len(r["labels"]) == len(r["tokens"])
        for e in r["entities"]:
            assert e["text"] == " ".join(r["tokens"][e["start"]:e["end"]])
            assert e["type"] in ("PER", "LOC", "ORG", "MISC")


def test_read_tweets_text_and_conll(tmp_path):
    from tvolib.io import read_tweets
    p = tmp_path / "t.txt"
    p.write_text("Obama visits Paris\n\n12345\tRT @nba : Curry scores 40\n", encoding="utf-8")
    tw = read_tweets(p)
    assert [t.id for t in tw] == ["line1", "12345"] and tw[1].tokens[0] == "RT"
    c = tmp_path / "t.conll"
    c.write_text("IMGID:9\nObama\tB-PER\nspeaks\tO\n", encoding="utf-8")
    assert read_tweets(c)[0].tokens == ["Obama", "speaks"]
    with pytest.raises(FileNotFoundError):
        read_tweets(tmp_path / "nope.txt")


def test_cli_predict_json_and_conll(trained, tmp_path):
    ckpt, _, _, _ = trained
    inp = tmp_path / "tweets.txt"
    inp.write_text("Steph Curry drops 40 in Oakland tonight\nhello world\n", encoding="utf-8")
    from tvolib.cli import main
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(inp), "--output", str(tmp_path / "o.json")]) == 0
    res = json.loads((tmp_path / "o.json").read_text())
    assert len(res) == 2 and res[0]["tokens"][0] == "Steph" and len(res[0]["labels"]) == 7
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(inp), "--format", "conll",
                 "--output", str(tmp_path / "o.conll")]) == 0
    from tvolib.data import read_conll
    tw = read_conll(tmp_path / "o.conll")
    assert [t.tokens for t in tw] == [r["tokens"] for r in res]
    assert [t.labels for t in tw] == [r["labels"] for r in res]
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(inp), "--without_side_inputs",
                 "--output", str(tmp_path / "w.json")]) == 0
    w = json.loads((tmp_path / "w.json").read_text())
    assert [r["labels"] for r in w] == [r["labels"] for r in res] and "without_side_inputs" not in res[0]
    assert [len(r["without_side_inputs"]["labels"]) for r in w] == [7, 2]
    assert w[0]["side_inputs"] == {"knowledge": None, "image": None, "caption": None}   # reads neither


def test_cli_predict_reads_jsonl_tab_and_label_less_conll(trained, tmp_path, capsys):
    """JSONL is read as JSONL (auto-detected), a tab that would drop words is an error naming the
    line, label-less CoNLL is accepted; the output JSON is strict."""
    ckpt, _, _, _ = trained
    from tvolib.cli import main
    j = tmp_path / "tweets.jsonl"
    j.write_text(json.dumps({"id": "a1", "text": "Obama in Paris"}) + "\n"
                 + json.dumps({"id": "a2", "tokens": ["hello", "world"]}) + "\n", encoding="utf-8")
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(j), "--output", str(tmp_path / "j.json")]) == 0
    res = json.loads((tmp_path / "j.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert [r["id"] for r in res] == ["a1", "a2"] and res[0]["tokens"] == ["Obama", "in", "Paris"]
    t = tmp_path / "tab.txt"
    t.write_text("I love\tNew York\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(t)]) == 1
    assert f"{t}:1" in capsys.readouterr().err
    c = tmp_path / "nolabels.conll"
    c.write_text("IMGID:7\nObama\nspeaks\n", encoding="utf-8")
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(c), "--output", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())[0]["tokens"] == ["Obama", "speaks"]


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    from tvolib.checkpoint import load_checkpoint
    with pytest.raises(FileNotFoundError, match="not a tvomner checkpoint"):
        load_checkpoint(tmp_path)


def test_full_model_checkpoint_predicts_new_tweets(tmp_path, stand_ins):
    """Full model (TFO + VFO stand-ins): user tweets get candidates and visual features too."""
    from tvolib.predict import predict
    from tvolib.train import train
    data = DataConfig(cache_dir=str(tmp_path / "cache"), max_length=64, max_train_samples=16,
                      max_eval_samples=8)
    model = ModelConfig(num_heads=4, lstm_hidden=8, latent_dim=6)
    import dataclasses
    from test_model import D_CAP, D_IMG  # noqa: F401
    res = train(data, model, TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=8,
                                         micro_batch_size=8, progress=False), encoder_config=tiny_encoder_config())
    out = predict(res["checkpoint"], ["Obama visits Paris", "the NBA finals"], cache_dir=str(tmp_path / "cache"))
    assert [len(r["labels"]) for r in out] == [3, 3]


@pytest.mark.slow
@pytest.mark.parametrize("nb,params", [
    ("04_train_tvomner", {"epochs": 1}),
    ("05_ablations", {"run_batch": False}),     # renders the committed sample runs (a copy)
])
def test_notebook_runs_on_sample(nb, params, tmp_path):
    import shutil
    import papermill as pm
    out = tmp_path / f"{nb}.ipynb"
    if nb.startswith("05"):
        shutil.copytree(REPO / "reports" / "experiments" / "table2-sample", tmp_path / "exp" / "table2-sample")
        params = dict(params, reports_dir=str(tmp_path / "exp"), figure_dir=str(tmp_path / "figures"))
    else:
        # one thread: `make test` runs two workers, a core each
        params = dict(params, output_dir=str(tmp_path / "run"), figure_dir=str(tmp_path / "figures"), num_threads=1)
    pm.execute_notebook(str(REPO / "notebooks" / f"{nb}.ipynb"), str(out), parameters=params, cwd=str(REPO),
                        kernel_name="python3", progress_bar=False)
    import nbformat
    outputs = [o for c in nbformat.read(out, 4).cells if c.cell_type == "code" for o in c.get("outputs", [])]
    # tables render as tables (a Markdown output, not printed text), figures render inline
    assert any("| F1 |" in o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= (3 if nb.startswith("04") else 1)
    if nb.startswith("04"):   # and are saved beside the report
        assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
            "04_train_tvomner-branch_probe.png", "04_train_tvomner-curves.png",
            "04_train_tvomner-type_confusion.png"]
        # the prediction path on the run's own test set, given the same side-input files, scores what
        # training scored: with everything and with each side input left out
        from tvolib.cross_dataset import cross_evaluate
        run = json.loads((tmp_path / "run" / "results.json").read_text())
        sample = REPO / "tvolib" / "sample"
        rec = cross_evaluate(tmp_path / "run" / "best", sample / "data" / "test.txt", tmp_path / "cross",
                             image_dir=sample / "images", captions=sample / "captions.json",
                             phrases=sample / "phrases.jsonl", boxes=sample / "objects.jsonl",
                             cache_dir=str(tmp_path / "pc"))
        assert rec["test"]["all"] == run["test"] and set(run["missing_inputs"]) == {"no_knowledge", "no_visual", "neither"}
        assert {c: rec["test"][c] for c in run["missing_inputs"]} == run["missing_inputs"]


def test_cli_train_parses_hf_style_args(tmp_path, monkeypatch):
    """``tvomner train`` builds the three configs from ``--field value`` and ``--ablation``."""
    import tvolib.cli
    seen = {}
    monkeypatch.setattr(tvolib.cli, "train", lambda d, m, t, **kw: seen.update(d=d, m=m, t=t, **kw) or {})
    from tvolib.cli import main
    assert main(["train", "--ablation", "w/o O-V", "--image_dir", "none", "--epochs", "2", "--lr", "5e-5",
                 "--use_vae", "false", "--output_dir", str(tmp_path / "r"), "--max_length", "96",
                 "--knowledge_dropout", "0.3"]) == 0
    assert seen["t"].knowledge_dropout == 0.3 and seen["tracking_tags"]["setting"] == "w/o O-V"
    assert seen["m"].visual == "global" and seen["m"].use_vae is False
    assert seen["d"].image_dir is None and seen["d"].max_length == 96
    assert seen["t"].epochs == 2 and seen["t"].lr == 5e-5
    assert main(["nope"]) == 2


def test_word_baseline_checkpoint_is_self_contained(tmp_path, monkeypatch):
    """CNN-BiLSTM-CRF with encoder-initialised word vectors: trained, then loaded and used with
    the text encoder unavailable (vocabulary and table size travel in the checkpoint)."""
    from tvolib.predict import predict
    from tvolib.train import train
    data = DataConfig(cache_dir=str(tmp_path / "cache"), max_train_samples=16, max_eval_samples=8)
    model = ModelConfig(arch="cnn_bilstm_crf", visual="none", use_candidates=False, lstm_hidden=8)
    res = train(data, model, TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=8,
                                         micro_batch_size=8, progress=False))
    import tvolib.assemble
    import tvolib.inputs
    from tvolib.weights import ResourceMissing

    def gone(name):
        raise ResourceMissing("no encoder here")
    for module in (tvolib.assemble, tvolib.inputs):
        monkeypatch.setattr(module, "resolve_text_encoder", gone)
    out = predict(res["checkpoint"], ["Obama visits Paris"])
    assert len(out[0]["labels"]) == 3


# ---------------------------------------------------------------------------------------------- self-contained
# checkpoints, content-keyed caches, input checks (a tiny random candidate tagger stands in for MiniLM)


@pytest.fixture
def tiny_tagger(tmp_path, monkeypatch):
    """A saved random-weight candidate tagger that training runs pick up (instead of MiniLM's)."""
    import tvolib.inputs
    from tvolib.tfo.tagger import CandidateTagger, TaggerConfig, save_tagger
    torch.manual_seed(0)
    tagger = CandidateTagger.from_config(tiny_encoder_config(16))
    path = save_tagger(tagger, tmp_path / "tagger", TaggerConfig(encoder="random:bert", max_length=64))
    monkeypatch.setattr(tvolib.inputs, "candidate_tagger", lambda *a, **k: path)
    return path


class CapitalisedTagger:
    """Candidates = runs of capitalised words (a deterministic stand-in for the trained tagger)."""

    def predict(self, tokens, batch_size=64, max_length=128):
        out = []
        for toks in tokens:
            spans, start = [], None
            for i, w in enumerate(list(toks) + ["x"]):
                if w[:1].isupper() and start is None:
                    start = i
                elif not w[:1].isupper() and start is not None:
                    spans.append((start, i))
                    start = None
            out.append(spans)
        return out


def test_saved_tagger_round_trip(tmp_path):
    from tvolib.tfo.tagger import CandidateTagger, TaggerConfig, load_tagger, save_tagger
    torch.manual_seed(0)
    tagger = CandidateTagger.from_config(tiny_encoder_config(16))
    path = save_tagger(tagger, tmp_path / "t", TaggerConfig(encoder="random:bert"))
    again, info = load_tagger(path)
    tokens = [["Obama", "visits", "Paris"], ["the", "NBA", "finals", "tonight"]]
    assert again.predict(tokens) == tagger.predict(tokens)
    assert info["config_hash"] == TaggerConfig(encoder="random:bert").hash() and len(info["weights_hash"]) == 16
    (path / "tagger.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"tagger\.safetensors: not a readable safetensors file"):
        load_tagger(path)


def test_candidates_cache_follows_the_tagger_settings(tmp_path):
    """Candidates made with other tagger settings (or for other tokens under the same id) are redone."""
    from tvolib.data import Dataset, Tweet
    from tvolib.tfo.candidates import make_candidates
    from tvolib.tfo.tagger import CandidateTagger, TaggerConfig
    def tw(i, split, toks):
        return Tweet(id=str(i), tokens=toks, labels=["O"] * len(toks), split=split)
    ds = Dataset("t", tmp_path, None, {"train": [tw(1, "train", ["Obama", "speaks"]), tw(2, "train", ["hi", "Paris"])],
                                       "test": [tw(3, "test", ["NBA", "finals"])]})
    factory = lambda: CandidateTagger.from_config(tiny_encoder_config(16))
    cfg = TaggerConfig(encoder="random:bert", epochs=1, k_folds=1, batch_size=2)
    c = make_candidates(ds, tmp_path / "c.jsonl", cfg, model_factory=factory)
    assert c["3"]["epochs"] == 1
    cfg2 = dataclasses.replace(cfg, epochs=2)
    c = make_candidates(ds, tmp_path / "c.jsonl", cfg2, model_factory=factory)
    assert c["3"]["epochs"] == 2 and c["3"]["config_hash"] == cfg2.hash()
    ds.splits["test"][0].tokens = ["I", "like", "pizza"]; ds.splits["test"][0].labels = ["O"] * 3
    c = make_candidates(ds, tmp_path / "c.jsonl", cfg2, model_factory=factory)
    assert all(x in ("I", "like", "pizza", "I like", "like pizza", "I like pizza") for x in c["3"]["candidates"])
    from tvolib.tfo.tagger import tagger_dir
    assert (tagger_dir(tmp_path, cfg2, ds.splits["train"]) / "tagger.json").exists()   # the full-train tagger is kept


def test_checkpoint_alone_tags_another_corpus_with_its_own_tagger(tmp_path, stand_ins, tiny_tagger, monkeypatch):
    """Full model: the checkpoint folder, copied alone, tags new tweets (no training data, no images)."""
    from tvolib.predict import Predictor
    from tvolib.train import train
    data = DataConfig(cache_dir=str(tmp_path / "cache"), max_length=64, max_train_samples=16, max_eval_samples=8)
    res = train(data, ModelConfig(num_heads=4, lstm_hidden=8, latent_dim=6),
                TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=8, micro_batch_size=8,
                            progress=False, precision="fp32"), encoder_config=tiny_encoder_config())
    import tvolib.inputs
    import tvolib.tfo.pipeline
    # one input builder for training and prediction: the checkpoint's tagger tags the new tweets for real
    monkeypatch.setattr(tvolib.inputs, "augmentations", tvolib.tfo.pipeline.augmentations)
    alone = tmp_path / "elsewhere" / "ckpt"
    shutil.copytree(res["checkpoint"], alone)
    assert (alone / "tagger" / "tagger.json").exists() and (alone / "encoder" / "config.json").exists()
    shutil.rmtree(tmp_path / "run")
    import tvolib.tfo.candidates
    import tvolib.tfo.tagger
    def no_training(*a, **k):
        raise AssertionError("predict must not train a tagger")
    for module in (tvolib.tfo.candidates, tvolib.tfo.tagger):
        monkeypatch.setattr(module, "train_tagger", no_training)
    p = Predictor.from_checkpoint(alone, cache_dir=str(tmp_path / "pcache"))
    out = p.predict(["Lakers beat the Celtics in Boston", "what a day"])
    assert [len(r["labels"]) for r in out] == [6, 3]
    assert all(0.0 < r["gate"] < 1.0 and len(r["fusion_weights"]) == 3 for r in out)
    assert any("none were given" in n for n in p.notes)           # trained with images, given none: said once
    assert (tmp_path / "pcache" / "predict").is_dir()


@pytest.fixture
def text_checkpoint_with_candidates(tmp_path_factory):
    """Text-only model with candidates and sample-KB knowledge (stand-in augmentations in training)."""
    import tvolib.inputs
    from tvolib.train import train
    tmp = tmp_path_factory.mktemp("kn")
    mp = pytest.MonkeyPatch()
    from test_train import fake_augmentations
    mp.setattr(tvolib.inputs, "augmentations", fake_augmentations)
    mp.setattr(tvolib.inputs, "candidate_tagger", lambda *a, **k: None)
    try:
        res = train(DataConfig(cache_dir=str(tmp / "cache"), max_length=64, max_train_samples=16, max_eval_samples=8),
                    ModelConfig(num_heads=4, lstm_hidden=8, visual="none"),
                    TrainConfig(output_dir=str(tmp / "run"), epochs=1, batch_size=8, micro_batch_size=8,
                                progress=False, precision="fp32"), encoder_config=tiny_encoder_config())
    finally:
        mp.undo()
    return Path(res["checkpoint"])


def test_two_files_with_the_same_ids_never_share_knowledge(text_checkpoint_with_candidates, tmp_path):
    from tvolib.io import read_tweets
    from tvolib.predict import Predictor
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("Barack Obama visits Paris\n", encoding="utf-8")
    b.write_text("i like pizza\n", encoding="utf-8")
    cache = str(tmp_path / "pcache")

    def run(f):
        p = Predictor.from_checkpoint(text_checkpoint_with_candidates, cache_dir=cache)
        p.tagger = (CapitalisedTagger(), {"weights_hash": "capitalised"})
        return p.predict(read_tweets(f))[0]
    ra = run(a)
    assert ra["id"] == "line1" and ra["candidates"][0]["text"] == "Barack Obama"
    assert "politician" in ra["candidates"][0]["knowledge"]
    rb = run(b)                                         # same id line1, another tweet
    assert rb["id"] == "line1" and rb["candidates"] == [] and len(rb["labels"]) == 3
    b.write_text("Paris in spring\n", encoding="utf-8")
    rc = run(b)
    assert [c["text"] for c in rc["candidates"]] == ["Paris"] and "Obama" not in json.dumps(rc)
    assert run(a) == ra                                 # the same tweet again: the same record


def tweet_files_predictor(checkpoint, tmp_path):
    """The checkpoint as if trained on per-tweet knowledge texts (no file of its own), tagging capitalised
    words as candidates, and a knowledge file with a text for tweet 7 only."""
    from tvolib.predict import Predictor
    p = Predictor.from_checkpoint(checkpoint, cache_dir=str(tmp_path / "pc"))
    p.model_cfg = dataclasses.replace(p.model_cfg, knowledge_source="tweet_files")
    p.data_cfg = dataclasses.replace(p.data_cfg, knowledge_file=None)
    p.tagger = (CapitalisedTagger(), {"weights_hash": "capitalised"})
    kf = tmp_path / "k.jsonl"
    kf.write_text(json.dumps({"split": "test", "imgid": "7", "aux": "Obama is a politician."}) + "\n")
    return p, kf


def test_tweet_files_checkpoint_without_knowledge_says_so_with_the_coverage(text_checkpoint_with_candidates, tmp_path):
    p, kf = tweet_files_predictor(text_checkpoint_with_candidates, tmp_path)
    assert p.predict([], knowledge_file=kf) == []
    out = p.predict(["Obama speaks", "Paris rocks"], knowledge_file=kf)
    assert [r["candidates"][0]["knowledge"] for r in out] == ["", ""]
    assert any("0 of 2 input tweets have knowledge" in n for n in p.notes)
    from tvolib.data import Tweet
    out = p.predict([Tweet("7", ["Obama", "speaks"], ["O", "O"])], knowledge_file=kf)
    assert "politician" in out[0]["candidates"][0]["knowledge"]


def test_tags_without_side_inputs_are_those_of_the_tweet_without_knowledge(text_checkpoint_with_candidates,
                                                                           tmp_path, monkeypatch):
    """``without_side_inputs``: the second pass reads exactly what a tweet with no knowledge reads."""
    p, kf = tweet_files_predictor(text_checkpoint_with_candidates, tmp_path)
    from tvolib.predict import Predictor
    read, run = [], Predictor.run
    monkeypatch.setattr(Predictor, "run", lambda self, ex, *a: read.append([e["input_ids"] for e in ex]) or run(self, ex, *a))
    from tvolib.data import Tweet
    tweet = Tweet("7", ["Obama", "speaks"], ["O", "O"])
    r = p.predict([tweet], knowledge_file=kf, without_side_inputs=True)[0]
    assert r["side_inputs"] == {"knowledge": [1, 1], "image": None, "caption": None}
    assert len(read) == 2 and read[0] != read[1]            # with the knowledge, then without it
    assert r["without_side_inputs"]["labels"] == p.predict([Tweet("8", ["Obama", "speaks"], ["O", "O"])],
                                                           knowledge_file=kf)[0]["labels"]
    assert read[2] == read[1]                                # tweet 8 has no knowledge: the same input
    assert p.predict([tweet], knowledge_file=kf)[0]["side_inputs"]["knowledge"] == [1, 1]
    assert "without_side_inputs" not in p.predict([tweet], knowledge_file=kf)[0]


def test_bad_inputs_name_file_and_line(tmp_path, trained):
    """The readers' cases are in tests/test_io.py; here the command line and damaged checkpoints."""
    f = tmp_path / "latin1.txt"
    f.write_bytes("Caf\xe9 in M\xfcnchen\n".encode("latin-1"))
    from tvolib.cli import main
    assert main(["predict", "--checkpoint", str(tmp_path), "--input", str(f)]) == 1
    # damaged checkpoints name the file
    from tvolib.checkpoint import load_checkpoint
    ckpt, _, _, _ = trained
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    (bad / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"bad/model\.safetensors: sha256 differs"):
        load_checkpoint(bad)
    shutil.rmtree(bad)
    shutil.copytree(ckpt, bad)
    shutil.rmtree(bad / "encoder")
    with pytest.raises(FileNotFoundError, match=r"bad/encoder/config.json: missing"):
        load_checkpoint(bad)


def test_predictor_api_and_exports(trained, tmp_path):
    from tvolib.data import read_conll
    from tvolib.io import write_output
    from tvolib.predict import Predictor
    ckpt, _, _, _ = trained
    p = Predictor.from_checkpoint(ckpt, cache_dir=str(tmp_path / "c"))
    res = p.predict(["Steph Curry drops 40", ["hello", "world"]])
    assert [r["id"] for r in res] == ["t1", "t2"] and [len(r["labels"]) for r in res] == [4, 2]
    assert all(set(e) == {"start", "end", "type", "text"} for r in res for e in r["entities"])
    tw = read_conll(write_output(res, tmp_path / "o.conll"))
    assert [t.labels for t in tw] == [r["labels"] for r in res]
    assert json.loads((write_output(res, tmp_path / "o.json")).read_text())[1]["tokens"] == ["hello", "world"]


def test_new_images_without_llm_phrases_go_on_without_objects_and_say_so_once(tmp_path, stand_ins, monkeypatch):
    """The VFO stage refuses (no LLM phrases for a new image): prediction goes on without object
    features, says so once, naming the user's IMGID; images found in any --image_dir are used."""
    import tvolib.inputs
    from test_train import fake_visual_features
    from tvolib.data import Tweet
    from tvolib.predict import Predictor
    from tvolib.weights import ResourceMissing
    from tvolib.train import train
    data = DataConfig(cache_dir=str(tmp_path / "cache"), max_length=64, max_train_samples=16, max_eval_samples=8)
    res = train(data, ModelConfig(num_heads=4, lstm_hidden=8, latent_dim=6, use_candidates=False),
                TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=8, micro_batch_size=8,
                            progress=False, precision="fp32"), encoder_config=tiny_encoder_config())
    seen = []

    def needs_phrases(ds, model_cfg, res, side, progress=False):
        seen.append((model_cfg.object_source, sorted(str(t.image_path) for t in ds.all() if t.image_path)))
        if model_cfg.object_source == "llm":
            raise ResourceMissing(f"1 tweet(s) with an image have no LLM phrases (e.g. {[t.id for t in ds.all()][:1]})")
        return fake_visual_features(ds, model_cfg, res, side)
    monkeypatch.setattr(tvolib.inputs, "visual_features", needs_phrases)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(REPO / "tvolib" / "sample" / "images" / "s0002.png", imgs / "zz1.png")
    p = Predictor.from_checkpoint(res["checkpoint"], cache_dir=str(tmp_path / "pc"))
    for _ in range(2):
        out = p.predict([Tweet("zz1", ["Lakers", "win"], ["O", "O"])], image_dir=imgs)
    assert len(out[0]["labels"]) == 2 and out[0]["gate"] is not None
    assert [s[0] for s in seen] == ["llm", "none", "llm", "none"] and seen[0][1] == [str(imgs / "zz1.png")]
    notes = [n for n in p.notes if "object features left out" in n]
    assert len(notes) == 1 and "(e.g. ['zz1'])" in notes[0]          # the user's IMGID, not an internal key


# ---------------------------------------------------------------------------------------------- resources


def test_a_moved_checkpoint_without_cache_dir_writes_to_the_users_cache(trained, tmp_path, monkeypatch):
    """Without --cache_dir the caches go to $TVOMNER_HOME/predict, never to the training run's cache
    path recorded in the checkpoint (which another machine does not have)."""
    from tvolib.predict import Predictor
    ckpt, _, ds, train_tmp = trained
    moved = tmp_path / "moved"
    shutil.copytree(ckpt, moved)
    monkeypatch.setenv("TVOMNER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in (train_tmp / "cache").rglob("*"))
    p = Predictor.from_checkpoint(moved)
    assert p.cache_root == tmp_path / "home" / "predict"
    out = p.predict(["Obama visits Paris"])
    assert len(out[0]["labels"]) == 3
    assert sorted(p.name for p in (train_tmp / "cache").rglob("*")) == before


def test_a_checkpoint_reads_its_own_knowledge_base_from_any_folder(text_checkpoint_with_candidates, tmp_path,
                                                                   monkeypatch):
    """The local base travels in the checkpoint (kb.sqlite, hashed): from another working directory
    and with another data root, the sample-trained model still gets the sample's knowledge; another
    base is an explicit choice that the notes say."""
    from tvolib.predict import Predictor
    ckpt = text_checkpoint_with_candidates
    assert (ckpt / "kb.sqlite").exists()
    info = json.loads((ckpt / "checkpoint.json").read_text())
    assert info["kb"] == "kb.sqlite" and "kb.sqlite" in info["files"]
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    monkeypatch.setenv("TVOMNER_DATA", str(tmp_path / "no-data"))
    p = Predictor.from_checkpoint(ckpt, cache_dir=str(tmp_path / "pc"))
    p.tagger = (CapitalisedTagger(), {"weights_hash": "capitalised"})
    r = p.predict(["Barack Obama visits Paris"])[0]
    assert r["candidates"][0]["text"] == "Barack Obama" and "politician" in r["candidates"][0]["knowledge"]
    assert not [n for n in p.notes if "knowledge" in n and "candidate tagger" not in n]
    from tvolib.tfo.knowledge import build_kb
    kb = tmp_path / "other.sqlite"
    build_kb(kb, [_write_kb(tmp_path)])
    q = Predictor.from_checkpoint(ckpt, cache_dir=str(tmp_path / "pc2"), kb=str(kb))
    q.tagger = (CapitalisedTagger(), {"weights_hash": "capitalised"})
    r2 = q.predict(["Barack Obama visits Paris"])[0]
    assert "a painter" in r2["candidates"][0]["knowledge"]
    assert any("not the base this checkpoint was trained with" in n for n in q.notes)


def _write_kb(tmp_path):
    f = tmp_path / "kb.jsonl"
    f.write_text(json.dumps({"title": "Barack Obama", "text": "Barack Obama is a painter from Lyon."}) + "\n")
    return f


def test_damaged_weights_are_refused_naming_the_file(trained, tmp_path):
    """A checkpoint records the sha256 of every file; 4 KB overwritten in the tensor data is an error
    naming model.safetensors, not a NaN gate."""
    from tvolib.predict import Predictor
    ckpt, *_ = trained
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    f = bad / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = b"\xff" * 4096
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors: sha256 differs"):
        Predictor.from_checkpoint(bad)


def test_a_checkpoint_without_file_hashes_is_refused_until_rehashed_then_predicts_the_same(trained, tmp_path):
    from tvolib.checkpoint import rehash
    from tvolib.predict import Predictor
    ckpt, _, ds, _ = trained
    old = tmp_path / "old"
    shutil.copytree(ckpt, old)
    info = json.loads((old / "checkpoint.json").read_text())
    del info["files"]
    (old / "checkpoint.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"no file hashes recorded.*tvomner rehash"):
        Predictor.from_checkpoint(old)
    rehash(old)
    tweets = ds.splits["test"][:5]
    assert [r["labels"] for r in Predictor.from_checkpoint(old, cache_dir=str(tmp_path / "a")).predict(tweets)] == \
           [r["labels"] for r in Predictor.from_checkpoint(ckpt, cache_dir=str(tmp_path / "b")).predict(tweets)]


def test_a_tweet_longer_than_the_encoder_is_tagged_in_windows_and_named(trained, tmp_path):
    """300 short tweets and a 600-word tweet on line 301: every tweet is tagged; the long one in
    windows of whole words, named by its input line and id."""
    from tvolib.io import read_tweets
    from tvolib.predict import Predictor, word_windows
    ckpt, *_ = trained
    f = tmp_path / "t.txt"
    f.write_text("".join(f"tweet number {i} from Paris\n" for i in range(300)) + " ".join(["Obama"] * 600) + "\n")
    p = Predictor.from_checkpoint(ckpt, cache_dir=str(tmp_path / "pc"))
    out = p.predict(read_tweets(f))
    assert len(out) == 301 and len(out[-1]["labels"]) == 600 and out[-1]["tokens"] == ["Obama"] * 600
    assert all(len(r["labels"]) == len(r["tokens"]) for r in out)
    assert any(f"{f}:301" in n and "(id line301)" in n and "windows" in n for n in p.notes)
    assert word_windows([3, 3, 3], 6) == [(0, 2), (2, 3)] and word_windows([9], 4) == [(0, 1)]
