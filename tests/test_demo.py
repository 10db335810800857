"""The case-study views of notebook 06 (tvolib.demo) and the HTML copy's offline widgets, with
stand-in models (the real checkpoints are exercised by the notebook and the browser check); the
standalone demo page (demo_page, tvolib.demo_inputs) with a tiny checkpoint trained here."""
import base64
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from tvolib import demo, viz
from tvolib.data import Tweet

W = pytest.importorskip("ipywidgets")


def tweets():
    return [Tweet("a1", ["Obama", "visits", "Paris"], ["B-PER", "O", "B-LOC"], "test"),
            Tweet("a2", ["the", "NBA", "finals"], ["O", "B-ORG", "O"], "test"),
            Tweet("a3", ["Kevin", "Durant", "scores"], ["B-PER", "I-PER", "O"], "test"),
            Tweet("a4", ["hello", "Boston"], ["O", "B-LOC"], "test")]


def results(ts):
    """Two models; they disagree on a2 and a4 only."""
    full = [{"labels": list(t.labels), "gate": 0.7, "fusion_weights": [0.2, 0.5, 0.3]} for t in ts]
    text = [{"labels": list(t.labels)} for t in ts]
    text[1]["labels"] = ["O", "O", "O"]
    text[3]["labels"] = ["O", "B-PER"]
    return {"TVOMNER": full, "text-only": text}


class FakeModel:
    """Tags every capitalised token as a one-token PER (or fails, to show the error path)."""

    def __init__(self, fail=False, side=None, without=None):
        self.fail, self.seen, self.side, self.without = fail, [], side, without

    def predict(self, tweets, diagnostics=True, without_side_inputs=False):
        if self.fail:
            raise RuntimeError("no train.txt for the candidate tagger")
        self.seen += [t.id for t in tweets]
        out = [{"labels": ["B-PER" if w[:1].isupper() else "O" for w in t.tokens], "gate": 0.9,
                "fusion_weights": [0.1, 0.6, 0.3]} for t in tweets]
        for r in out:
            if self.side is not None:
                r["side_inputs"] = self.side
            if without_side_inputs:
                r["without_side_inputs"] = {"labels": self.without(r["labels"]) if self.without else r["labels"]}
        return out


def parts(box):
    only, pick, view = box.children[:3]
    return only, pick, view


def test_widget_opens_on_the_first_disagreement_with_readable_labels():
    ts = tweets()
    only, pick, view = parts(demo.case_study_widget(ts, results(ts)))
    assert only.value is True and [k for _, k in pick.options] == [1, 3]
    assert pick.value == 1 and pick.index == 0            # a value, not an empty dropdown
    assert "a2" in view.value and "gold:" in view.value and "✘" in view.value
    assert pick.style.description_width == "initial" and only.layout.width == "auto" and not only.indent
    assert "2 tweets where the models disagree (of 4)" in only.description
    pick.value = 3
    assert "a4" in view.value
    only.value = False                                     # all tweets: the current one stays
    assert [k for _, k in pick.options] == [0, 1, 2, 3] and pick.value == 3 and "a4" in view.value
    only.value = True
    assert pick.value == 3


def test_widget_without_disagreements_shows_every_tweet():
    ts = tweets()
    res = results(ts)
    res["text-only"] = [{"labels": list(t.labels)} for t in ts]
    only, pick, view = parts(demo.case_study_widget(ts, res))
    assert only.value is False and pick.value == 0 and "a1" in view.value
    only.value = True
    assert pick.options == () and pick.value is None and "no tweet to show" in view.value


def test_widget_of_one_model_filters_the_tweets_it_gets_wrong():
    ts = tweets()
    res = {"text-only": results(ts)["text-only"]}
    only, pick, view = parts(demo.case_study_widget(ts, res))
    assert only.value is True and [k for _, k in pick.options] == [1, 3] and "text-only gets wrong (of 4)" in only.description
    only, pick, view = parts(demo.case_study_widget(ts, res, gold=False))   # no gold labels: no filter
    assert only.value is False and len(pick.options) == 4 and "gold:" not in view.value


def test_typed_tweet_is_tagged_by_every_model():
    ts = tweets()
    models = {"TVOMNER": FakeModel(), "text-only": FakeModel()}
    box = demo.case_study_widget(ts, results(ts), models=models)
    typed = box.children[3]
    text, go = typed.children[1].children
    out = typed.children[2]
    text.value = "Kevin Durant scores 35 in Boston"          # Enter
    assert "TVOMNER:" in out.value and "text-only:" in out.value and "Boston <sub>PER</sub>" in out.value
    assert "gold:" not in out.value and "gate g = 0.90" in out.value and "<img" not in out.value
    assert not go.disabled
    first = models["TVOMNER"].seen[-1]
    text.value = "Obama in Paris"
    assert models["TVOMNER"].seen[-1] != first               # a new text never reuses a cached id
    n = len(models["text-only"].seen)
    go.click()                                                # the same text again: not re-tagged
    assert len(models["text-only"].seen) == n and "Obama" in out.value
    text.value = "   "
    assert "type a tweet first" in out.value


def test_typed_tweet_says_its_side_inputs_and_the_tags_without_them_where_they_differ():
    knows = FakeModel(side={"knowledge": [1, 2], "image": False, "caption": False},
                      without=lambda labels: ["O"] * len(labels))      # nothing found without knowledge
    same = FakeModel(side={"knowledge": [0, 1], "image": None, "caption": None})
    box = demo.typed_tweet_box({"TVOMNER": knows, "tvomner-wiki": same, "text-only": FakeModel()})
    text, _ = box.children[1].children
    text.value = "Kevin Durant scores 35 in Boston"
    out = box.children[2].value
    assert "side inputs: knowledge for 1 of 2 candidates, no image or caption" in out
    assert "TVOMNER, without side inputs:" in out and out.count("tvomner-typed-without") == 1
    assert "side inputs: knowledge for 0 of 1 candidate; the same tags without them" in out
    assert out.count("tvomner-typed-side") == 2      # text-only reads nothing beside the words
    assert "side inputs" in box.children[0].value


def test_side_inputs_text():
    assert viz.side_inputs_text({"side_inputs": {"knowledge": [0, 0], "image": True, "caption": False}}) == \
        "side inputs: no candidate, so no knowledge, an image"
    assert viz.side_inputs_text({"side_inputs": {"knowledge": [2, 2], "image": False, "caption": True},
                                  "knowledge_note": "no knowledge: no endpoint configured"}) == \
        "side inputs: knowledge for 2 of 2 candidates, a caption (no knowledge: no endpoint configured)"
    assert viz.side_inputs_text({"side_inputs": {"knowledge": None, "image": None, "caption": None}}) is None
    assert viz.side_inputs_text({}) is None


def test_typed_tweet_error_is_shown_in_the_widget():
    box = demo.typed_tweet_box({"TVOMNER": FakeModel(fail=True)})
    text, go = box.children[1].children
    text.value = "Obama in Paris"
    assert "RuntimeError: no train.txt" in box.children[2].value and not go.disabled


def test_typed_tweet_ids():
    a, b = demo.typed_tweet("Obama  in Paris"), demo.typed_tweet("Obama in Paris")
    assert a.id == b.id and a.id.startswith("typed-") and a.tokens == ["Obama", "in", "Paris"]
    assert demo.typed_tweet("Obama in Rome").id != a.id and a.labels == ["O"] * 3
    with pytest.raises(ValueError, match="empty"):
        demo.typed_tweet("  \n")


def test_save_figure(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    fig = Figure()
    fig.subplots().plot([1, 2, 3])
    assert viz.save_figure(fig, None, "x") is None
    p = viz.save_figure(fig, tmp_path / "figures", "04_curves")
    assert p == tmp_path / "figures" / "04_curves.png" and p.read_bytes()[:4] == b"\x89PNG"


def test_html_copy_inlines_the_widget_renderer(tmp_path):
    """The HTML copy of a notebook with saved widgets loads the renderer from itself, not a CDN."""
    from tvolib.runs.notebook import html_export
    url = viz.widget_renderer_url()
    assert url.startswith("data:text/javascript;base64,")
    js = base64.b64decode(url.split(",", 1)[1])
    assert b"jupyter-widgets" in js and len(js) > 500_000
    nb = nbformat.v4.new_notebook()
    view = {"model_id": "m1", "version_major": 2, "version_minor": 0}
    nb.cells = [nbformat.v4.new_code_cell("w", execution_count=1, outputs=[nbformat.v4.new_output(
        "execute_result", {"application/vnd.jupyter.widget-view+json": view, "text/plain": "HTML()"},
        execution_count=1)])]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "version_major": 2, "version_minor": 0,
        "state": {"m1": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
                         "model_module_version": "2.0.0", "state": {"value": "<b>s0101</b> gold:"}}}}}
    executed, html = tmp_path / "06.ipynb", tmp_path / "06.html"
    nbformat.write(nb, str(executed))
    html_export(executed, html)
    body = html.read_text()
    assert url in body and "unpkg.com" not in body
    assert 'type="application/vnd.jupyter.widget-state+json"' in body and "s0101" in body
    state = json.loads(body.split('<script type="application/vnd.jupyter.widget-state+json">')[1].split("</script>")[0])
    assert state["state"]["m1"]["state"]["value"].startswith("<b>s0101</b>")


# -- the caption in place of an absent image; the standalone demo page (tvolib.demo.demo_page) -------------


def test_an_absent_image_shows_its_caption_in_its_place(tmp_path):
    from PIL import Image
    ts = tweets()
    img = tmp_path / "a1.png"
    Image.new("RGB", (8, 8), "red").save(img)
    ts[0].image_path = img
    caps = {"a1": "a red square", "a2": "a <b>court</b> at night"}
    with_image = demo.case_html(ts[0], results(ts), 0, caps)
    assert "<img" in with_image and "caption: a red square" in with_image and "tvomner-caption" not in with_image
    absent = demo.case_html(ts[1], results(ts), 1, caps)
    assert 'class="tvomner-caption"' in absent and "image absent; its caption:" in absent
    assert "a &lt;b&gt;court&lt;/b&gt; at night" in absent and "caption: a" not in absent.split("</div>", 1)[1]
    assert "missing" in demo.case_html(ts[2], results(ts), 2, caps)          # no image, no caption
    no_gold = demo.case_html(ts[1], results(ts), 1, caps, gold=False)
    assert "gold:" not in no_gold and "✘" not in no_gold


def test_checkpoint_names():
    from tvolib.demo_inputs import checkpoint_name
    assert checkpoint_name("runs/table2/twitter2017/tvomner+pgim-s1/best") == "tvomner+pgim-s1"
    assert checkpoint_name("runs/t17/last/") == "t17" and checkpoint_name("my-model") == "my-model"
    assert checkpoint_name("runs/a/best", taken=("a", "a (2)")) == "a (3)"
    from tvolib.demo_inputs import shown_path                # paths in the page: relative inside the root
    assert shown_path(Path.cwd() / "runs" / "a") == str(Path("runs") / "a") and shown_path("/elsewhere/a") == "/elsewhere/a"


def test_page_checkpoints_address_then_parameter_then_sample(tmp_path, monkeypatch):
    q = "checkpoint=runs/x/best&checkpoint=runs/x/best&checkpoint=%20"
    assert demo.page_checkpoints({"m": "a"}, q) == {"x": "runs/x/best", "x (2)": "runs/x/best"}
    assert demo.page_checkpoints({"m": "a"}, "") == {"m": "a"}
    (tmp_path / "full").mkdir()
    monkeypatch.setattr(demo, "SAMPLE_MODELS", {"TVOMNER": (str(tmp_path / "full"), "full"),
                                                "text-only": (str(tmp_path / "t" / "best"), "text-only")})
    assert demo.page_checkpoints(None, None, train_missing=False) == {"TVOMNER": str(tmp_path / "full")}


def test_a_missing_sample_model_is_trained_with_notebook_06s_recipe(tmp_path, monkeypatch):
    calls, said = [], []

    def fake_train(data_cfg, model_cfg, train_cfg, ds=None):
        calls.append((data_cfg, model_cfg, train_cfg, ds))
        return {"checkpoint": str(Path(train_cfg.output_dir) / "best")}
    monkeypatch.setattr(demo, "train", fake_train)
    ckpt = tmp_path / "nb06" / "text-only" / "best"
    assert demo.ensure_checkpoint(ckpt, "text-only", ds="DS", say=said.append) == str(ckpt)
    (data_cfg, model_cfg, train_cfg, ds), = calls
    assert ds == "DS" and data_cfg.dataset == "sample" and data_cfg.image_dir.endswith("images")
    assert model_cfg.visual == "none" and train_cfg.output_dir == str(ckpt.parent)
    assert (train_cfg.epochs, train_cfg.lr, train_cfg.head_lr, train_cfg.seed, train_cfg.batch_size) == (6, 2e-4, 1e-3, 1, 8)
    assert said == [f"{ckpt} not found: training 'text-only' into {ckpt.parent}"]
    ckpt.mkdir(parents=True)
    assert demo.ensure_checkpoint(ckpt, "text-only", say=said.append) == str(ckpt) and len(calls) == 1


def fake_predictor(data, **model):
    from types import SimpleNamespace
    from tvolib.config import DataConfig, ModelConfig
    return SimpleNamespace(data_cfg=DataConfig(**data), model_cfg=ModelConfig(**model), info={}, notes=[])


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A data root (TVOMNER_DATA) with a benchmark "twitter2099" (the sample's test split), its captions
    and per-tweet knowledge files."""
    from tvolib.sample import SAMPLE_DIR
    root = tmp_path / "data"
    (root / "twitter2099").mkdir(parents=True)
    shutil.copy(SAMPLE_DIR / "data" / "test.txt", root / "twitter2099" / "test.txt")
    (root / "captions").mkdir()
    shutil.copy(SAMPLE_DIR / "captions.json", root / "captions" / "blip2_twitter2099.json")
    (root / "llm_knowledge").mkdir()
    (root / "llm_knowledge" / "pgim_twitter2099.jsonl").write_text('{"split": "test", "imgid": "s0101", "aux": "x"}\n')
    monkeypatch.setenv("TVOMNER_DATA", str(root))
    return root


ELSEWHERE = dict(data_dir="/elsewhere/twitter2099", image_dir="/elsewhere/images", dataset="twitter2099",
                 captions="/elsewhere/captions/blip2_twitter2099.json")


def test_checkpoint_inputs_finds_the_data_and_captions_of_a_run_trained_elsewhere(data_root, tmp_path):
    """A real-data run records paths of the machine that trained it: the tweets, captions and per-tweet
    knowledge are found in the data root instead, and the absent images are said."""
    from tvolib.demo_inputs import checkpoint_inputs
    root = data_root
    p = fake_predictor(ELSEWHERE, knowledge_source="tweet_files")
    got = checkpoint_inputs(p, max_tweets=5)
    assert len(got.tweets) == 5 and got.total == 20 and got.gold and "test split of twitter2099" in got.source
    assert got.image_dir is None and all(t.image_path is None for t in got.tweets)
    assert got.captions_file == root / "captions" / "blip2_twitter2099.json" and len(got.captions) == 120
    assert got.knowledge_file == (root / "llm_knowledge" / "pgim_twitter2099.jsonl").resolve()
    assert any("/elsewhere/images" in n for n in got.notes)
    # a file of the user's own tweets: CoNLL keeps its gold labels, plain text has none
    plain = tmp_path / "mine.txt"
    plain.write_text("Obama visits Paris\nthe NBA finals\n")
    got = checkpoint_inputs(p, tweets_file=plain, captions="none")
    assert [t.id for t in got.tweets] == ["line1", "line2"] and not got.gold and got.captions == {}
    got = checkpoint_inputs(p, tweets_file=root / "twitter2099" / "test.txt", max_tweets=None)
    assert got.total == len(got.tweets) == 20 and got.gold
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        checkpoint_inputs(p, tweets_file=tmp_path / "nowhere.txt")
    lost = fake_predictor(dict(data_dir="/elsewhere/twitter2088", dataset="twitter2088"))
    with pytest.raises(FileNotFoundError, match="give tweets_file"):
        checkpoint_inputs(lost)


def test_checkpoint_inputs_of_a_sample_model_use_the_sample():
    from tvolib.demo_inputs import checkpoint_inputs
    from tvolib.sample import SAMPLE_DIR
    got = checkpoint_inputs(fake_predictor(dict(data_dir="/gone/sample/data", image_dir="/gone/sample/images",
                                                captions="/gone/sample/captions.json", dataset="sample")))
    assert got.image_dir == SAMPLE_DIR / "images" and got.captions_file == SAMPLE_DIR / "captions.json"
    assert len(got.tweets) == 20 and any(t.image_path is None for t in got.tweets) and got.notes == []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny text-only checkpoint trained for one epoch on part of the sample (seconds), and a copy of it
    that records the paths of another machine, as a real-data run copied here does."""
    from test_model import tiny_encoder_config
    from tvolib.config import DataConfig, ModelConfig, TrainConfig
    from tvolib.train import train
    tmp = tmp_path_factory.mktemp("demo")
    res = train(DataConfig(cache_dir=str(tmp / "cache"), max_length=64, max_train_samples=16, max_eval_samples=8),
                ModelConfig(num_heads=4, lstm_hidden=8, visual="none", use_candidates=False),
                TrainConfig(output_dir=str(tmp / "run"), epochs=1, batch_size=8, micro_batch_size=8, lr=1e-3,
                            head_lr=1e-2, progress=False, seed=5, precision="fp32"),
                encoder_config=tiny_encoder_config())
    moved = tmp / "t99" / "best"
    shutil.copytree(res["checkpoint"], moved)
    info = json.loads((moved / "checkpoint.json").read_text())   # not among the hashed files
    info["data"].update(ELSEWHERE, image_dir=None)
    (moved / "checkpoint.json").write_text(json.dumps(info))
    return Path(res["checkpoint"]), moved, tmp


def page_parts(page):
    (folder, load, add), status, body = page.children[0].children, page.children[1], page.children[2]
    return folder, load, add, status, body


def test_demo_page_opens_checkpoint_folders_and_says_what_it_cannot_open(tiny_run, data_root, tmp_path):
    ckpt, moved, tmp = tiny_run
    page = demo.demo_page({"A": str(ckpt)}, max_tweets=6, cache_dir=str(tmp_path / "c"))
    folder, load, add, status, body = page_parts(page)
    assert "tvomner-demo-error" not in status.value, status.value
    assert "<b>A</b>" in status.value and "the first 6 of 20" in status.value and "images from" in status.value
    widget = body.children[0]
    only, pick, view = widget.children[:3]
    assert "A gets wrong (of 6)" in only.description and "gold:" in view.value and "A:" in view.value
    only.value = False
    assert len(pick.options) == 6
    typed = widget.children[3]
    text, go = typed.children[1].children
    assert go.description == "tag"
    text.value = "Kevin Durant scores 35 in Boston"
    assert "A:" in typed.children[2].value and "Error" not in typed.children[2].value
    # a bad folder: one line in the page, and the models shown stay
    folder.value = str(tmp_path / "no-such-run")
    load.click()
    assert "tvomner-demo-error" in status.value and "no such checkpoint folder" in status.value
    assert body.children[0] is widget and not load.disabled
    folder.value = str(tmp_path)
    add.click()
    assert "no checkpoint.json" in status.value and body.children[0] is widget
    # Add: the same run beside it, named apart
    folder.value = str(ckpt)
    add.click()
    assert "tvomner-demo-error" not in status.value, status.value
    assert "<b>A</b>" in status.value and "<b>run</b>" in status.value
    assert "tag with both models" in body.children[0].children[3].children[1].children[1].description
    # Load: a run trained elsewhere, whose images are absent: its captions stand in their place
    folder.value = str(moved)
    load.click()
    assert "tvomner-demo-error" not in status.value, status.value
    assert "<b>t99</b>" in status.value and "<b>A</b>" not in status.value and "test split of twitter2099" in status.value
    assert "images absent: captions in their place" in status.value
    view = body.children[0].children[2]
    assert "image absent; its caption:" in view.value and "t99:" in view.value


def test_demo_page_without_models_asks_for_a_folder():
    folder, load, add, status, body = page_parts(demo.demo_page({}))
    assert "type a checkpoint folder" in status.value and body.children == ()
    load.click()
    assert "type a checkpoint folder first" in status.value


def test_demo_notebook_is_thin_clean_and_on_the_projects_kernel():
    from pathlib import Path as P
    import ast
    import papermill as pm
    path = P(__file__).resolve().parents[1] / "notebooks" / "demo.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in code) and len(code) == 2
    assert nb.metadata["kernelspec"]["name"] == "tvomner"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and set(pm.inspect_notebook(str(path))) == {
        "checkpoints", "tweets_file", "split", "image_dir", "captions", "max_tweets"}
    body = ast.parse(code[1].source).body
    assert [ast.unparse(n) for n in body[:3]] == ["import os", "from tvolib.paths import use_project_root",
                                                  "use_project_root()"]
