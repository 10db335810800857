"""The case-study views of notebook 06 (tvolib.demo) and the HTML copy's offline widgets, with
stand-in models (the real checkpoints are exercised by the notebook and the browser check)."""
import base64
import json

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

    def __init__(self, fail=False):
        self.fail, self.seen = fail, []

    def predict(self, tweets, diagnostics=True):
        if self.fail:
            raise RuntimeError("no train.txt for the candidate tagger")
        self.seen += [t.id for t in tweets]
        return [{"labels": ["B-PER" if w[:1].isupper() else "O" for w in t.tokens], "gate": 0.9,
                 "fusion_weights": [0.1, 0.6, 0.3]} for t in tweets]


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
