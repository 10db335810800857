"""Case studies (the paper's section 5.5): compare models tweet by tweet, with the image, the gold
spans, each model's spans, and what the full model did with the image — the gate g of Eq. 4 (the
weight of the text features) and the fusion weights ω of Eq. 3.

    from tvolib.demo import load_models, compare, case_study_widget, cases_html
    models = load_models({"TVOMNER": "runs/nb04/best", "text-only": "runs/nb06/text-only/best"})
    results = compare(models, tweets, image_dir=..., captions=...)
    case_study_widget(tweets, results, captions, models)   # JupyterLab: pick a tweet, or type one
    HTML(cases_html(tweets, results, captions, only_disagreements=True))   # static, for reports

The standalone demo page, ``demo_page`` (``make demo``: Voilà serves ``notebooks/demo.ipynb``), opens
any checkpoint folder, a sample model or a real-data run, on the tweets it was trained on, with each
absent image's caption in its place, and tags a typed tweet; what it cannot open (a bad folder, data
that is not here) is a line in the page, never a traceback. By default it opens notebook 06's two
sample models (``sample_checkpoints``, trained once when absent).
"""
from __future__ import annotations

import contextlib
import hashlib
import html
import os
import sys
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import parse_qs

from .config import DataConfig, ModelConfig, TrainConfig
from .data import Tweet, entity_spans
from .demo_inputs import DemoInputs, checkpoint_inputs, checkpoint_name, shown_path
from .inputs import dataset_from_config
from .predict import Predictor
from .sample import SAMPLE_DIR
from .train import train
from .viz import TYPE_COLOURS, caption_box_html, diagnostics_html, side_inputs_text, spans_html, thumb_html
import ipywidgets as W
from transformers.utils import logging as hf_logging

# notebook 06's two models on the embedded sample (the full one is notebook 04's): ``{name: (folder,
# ablation setting)}``, trained by ``ensure_checkpoint`` with notebook 06's short recipe when absent
SAMPLE_MODELS = {"TVOMNER": ("runs/nb04/best", "full"), "text-only": ("runs/nb06/text-only/best", "text-only")}


def load_models(checkpoints: dict, device: str = "cpu", cache_dir: str | None = None) -> dict:
    """``{name: model}`` from ``{name: checkpoint folder or model}``: a folder is loaded once as a
    ``tvolib.predict.Predictor`` (prediction caches in ``cache_dir``, default the per-user folder);
    anything with a ``predict`` method is kept as it is."""
    return {name: c if hasattr(c, "predict") else Predictor.from_checkpoint(c, device, cache_dir)
            for name, c in checkpoints.items()}


def compare(models: dict, tweets: Sequence[Tweet], image_dir=None, captions=None,
            device: str = "cpu", knowledge_file=None) -> dict[str, list[dict]]:
    """Run every model (a ``Predictor`` or a checkpoint folder) on the same tweets:
    ``{model name: [result per tweet]}`` where a result holds ``labels`` and, for a multimodal
    model, ``gate`` and ``fusion_weights``. ``knowledge_file``: per-tweet knowledge for a model
    trained with it whose own file is not here."""
    out = {}
    for name, pred in load_models(models, device).items():
        out[name] = pred.predict([Tweet(t.id, list(t.tokens), list(t.labels), "test", t.image_path,
                                        t.image_status) for t in tweets],
                                 image_dir=image_dir, captions=captions, diagnostics=True,
                                 **({"knowledge_file": knowledge_file} if knowledge_file else {}))
    return out


def typed_tweet(text: str) -> Tweet:
    """A tweet typed by the user (tokens split on whitespace), named by a hash of its tokens."""
    tokens = text.split()
    if not tokens:
        raise ValueError("the tweet is empty: type a few words")
    digest = hashlib.sha1("\t".join(tokens).encode("utf-8")).hexdigest()[:12]
    return Tweet(id=f"typed-{digest}", tokens=tokens, labels=["O"] * len(tokens), split="test")


def tag_text(models: dict, text: str) -> tuple[Tweet, dict[str, list[dict]]]:
    """Tag one typed tweet with every model: ``(tweet, {model name: [result]})``, each result with
    the side inputs the tweet had and the tags without them (``Predictor.predict``'s
    ``without_side_inputs``). No image: the full model falls back on the text through its gate."""
    tweet = typed_tweet(text)
    return tweet, {name: pred.predict([tweet], diagnostics=True, without_side_inputs=True)
                   for name, pred in load_models(models).items()}


def typed_html(tweet: Tweet, results: dict[str, list[dict]]) -> str:
    """A typed tweet: each model's spans, the side inputs it had, and its spans without them where
    they differ (the gate and ω as in ``case_html``)."""
    rows = [html.escape(" ".join(tweet.tokens))]
    for name, res in results.items():
        r = res[0]
        rows.append(f"<i>{html.escape(name)}:</i> {spans_html(tweet.tokens, r['labels'])}")
        if diagnostics_html(r):
            rows.append(diagnostics_html(r))
        said = side_inputs_text(r)
        if said is None:
            continue
        bare = (r.get("without_side_inputs") or {}).get("labels")
        same = bare is None or entity_spans(bare) == entity_spans(r["labels"])
        rows.append(f'<span class="tvomner-typed-side" style="font-size:11px;color:#444">{html.escape(said)}'
                    + ("; the same tags without them" if same and bare is not None else "") + "</span>")
        if not same:
            rows.append(f'<span class="tvomner-typed-without">&nbsp;&nbsp;<i>{html.escape(name)}, without side '
                        f'inputs:</i> {spans_html(tweet.tokens, bare)}</span>')
    return f"<div style='text-align:left'>{'<br>'.join(rows)}</div>"


def spans_all_right(tweet: Tweet, labels: Sequence[str]) -> bool:
    return set(entity_spans(tweet.labels)) == set(entity_spans(labels))


def case_html(tweet: Tweet, results: dict[str, list[dict]], k: int, captions: dict | None = None,
              gold: bool = True, image: bool = True) -> str:
    """One tweet: its image (when ``image``; the caption in its place when the image is absent),
    gold spans (✔/✘ per model when ``gold``), each model's spans, the full model's gate and fusion
    weights, and its caption."""
    rows = [f"<b>{html.escape(tweet.id)}</b> " + (f"<i>gold:</i> {spans_html(tweet.tokens, tweet.labels)}"
                                                   if gold else html.escape(" ".join(tweet.tokens)))]
    for name, res in results.items():
        r = res[k]
        mark = ("✔ " if spans_all_right(tweet, r["labels"]) else "✘ ") if gold else ""
        rows.append(f"{mark}<i>{html.escape(name)}:</i> {spans_html(tweet.tokens, r['labels'])}")
        if diagnostics_html(r):
            rows.append(diagnostics_html(r))
    caption = (captions or {}).get(tweet.id)
    in_place = image and caption is not None and (tweet.image_path is None or not Path(tweet.image_path).is_file())
    if caption is not None and not in_place:
        rows.append(f'<span style="color:#666">caption: {html.escape(caption)}</span>')
    thumb = f"<td>{caption_box_html(caption) if in_place else thumb_html(tweet)}</td>" if image else ""
    return f"<table><tr>{thumb}<td style='text-align:left'>{'<br>'.join(rows)}</td></tr></table>"


def disagreements(tweets: Sequence[Tweet], results: dict[str, list[dict]]) -> list[int]:
    """Indices of tweets on which the models do not all give the same spans."""
    names = list(results)
    return [k for k in range(len(tweets))
            if len({tuple(entity_spans(results[n][k]["labels"])) for n in names}) > 1]


def cases_html(tweets: Sequence[Tweet], results: dict[str, list[dict]], captions: dict | None = None,
               only_disagreements: bool = True, limit: int = 8) -> str:
    idx = disagreements(tweets, results) if only_disagreements else list(range(len(tweets)))
    legend = " ".join(f'<span style="background:{c};color:white;padding:1px 4px">{t}</span>'
                      for t, c in TYPE_COLOURS.items())
    body = "".join(case_html(tweets[k], results, k, captions) for k in idx[:limit])
    return f"<div>{legend} — {len(idx)} of {len(tweets)} tweets shown by this filter</div>{body}"


def case_study_widget(tweets: Sequence[Tweet], results: dict[str, list[dict]], captions: dict | None = None,
                      models: dict | None = None, gold: bool = True):
    """An ipywidgets browser (JupyterLab): a tweet picker, opened on the first case (only the tweets
    where the models disagree, or that a single model gets wrong, when there are any), its case
    view, and, given ``models`` (``{name: Predictor or checkpoint}``, loaded on first use), a box
    that tags a typed tweet with every model. ``gold=False``: the tweets carry no gold labels (none
    shown). Its parts carry CSS classes ``tvomner-*`` for the browser check."""

    wide = W.Layout(width="95%")
    label = {"description_width": "initial"}      # the default width cuts descriptions
    if len(results) == 1 and gold:                # one model: the tweets it gets wrong
        name, res = next(iter(results.items()))
        disagree = [k for k, t in enumerate(tweets) if not spans_all_right(t, res[k]["labels"])]
        what = f"{name} gets wrong"
    else:
        disagree, what = disagreements(tweets, results), "where the models disagree"
    only = W.Checkbox(value=bool(disagree), indent=False, layout=W.Layout(width="auto"),
                      description=f"only the {len(disagree)} tweets {what} (of {len(tweets)})")
    pick = W.Dropdown(description="tweet", style=label, layout=wide)
    view = W.HTML()

    def choices():
        idx = disagree if only.value else range(len(tweets))
        return [(f"{tweets[k].id}: {' '.join(tweets[k].tokens)}", k) for k in idx]

    refiltering = []

    def show(*_):
        if refiltering:
            return
        view.value = ("<i>no tweet to show</i>" if pick.value is None
                      else case_html(tweets[pick.value], results, pick.value, captions, gold=gold))

    def refilter(*_):
        keep = pick.value
        opts = choices()
        refiltering.append(1)          # one view update, after the value is set
        try:
            pick.options = opts
            # ipywidgets 8 selects nothing when the options change: keep the tweet or take the first
            pick.value = keep if keep in [k for _, k in opts] else (opts[0][1] if opts else None)
        finally:
            refiltering.clear()
        show()

    only.observe(refilter, "value")
    pick.observe(show, "value")
    refilter()
    for w, name in ((only, "only"), (pick, "pick"), (view, "view")):
        w.add_class(f"tvomner-case-{name}")
    parts = [only, pick, view]
    if models:
        parts.append(typed_tweet_box(models))
    return W.VBox(parts)


def typed_tweet_box(models: dict):
    """A text box and a button: the typed tweet tagged by every model (``{name: Predictor or
    checkpoint}``, loaded on the first tweet)."""

    loaded: dict = {}
    tagged = {"text": None}     # the click that blurs the box also commits its value: tag once
    text = W.Text(description="your tweet", placeholder="type a tweet, e.g. Kevin Durant scores 35 in Boston",
                  style={"description_width": "initial"}, layout=W.Layout(flex="1 1 auto", width="auto"),
                  continuous_update=False)
    go = W.Button(description={1: "tag", 2: "tag with both models"}.get(len(models), "tag with every model"),
                  layout=W.Layout(flex="0 0 auto", width="auto"), button_style="primary")
    view = W.HTML()

    def run(*_):
        if not text.value.strip():
            view.value = "<i>type a tweet first</i>"
            return
        if text.value == tagged["text"]:
            return
        go.disabled = True
        view.value = f"<i>tagging with {', '.join(map(html.escape, models))} …</i>"
        try:
            if not loaded:
                loaded.update(load_models(models))
            tweet, res = tag_text(loaded, text.value)
            view.value = typed_html(tweet, res)
            tagged["text"] = text.value
        except Exception as e:   # shown in the widget: a callback's exception is otherwise invisible
            view.value = f'<span style="color:#b00">{html.escape(type(e).__name__)}: {html.escape(str(e))}</span>'
        finally:
            go.disabled = False

    go.on_click(run)
    text.observe(run, "value")        # Enter (continuous_update=False) tags too
    for w, name in ((text, "text"), (go, "go"), (view, "view")):
        w.add_class(f"tvomner-typed-{name}")
    return W.VBox([W.HTML("<b>Your own tweet</b> (no image: a multimodal model falls back on the text; "
                          "each model says which side inputs the tweet had, and its tags without them "
                          "where they differ)"),
                   W.HBox([text, go], layout=W.Layout(width="95%")), view])


# -- notebook 06's sample models (also what the demo page opens by default) ---------------------------


def sample_data_config(cache_dir: str = "cache", max_length: int = 128) -> DataConfig:
    """Notebook 06's data: the embedded sample with its images and captions."""
    return DataConfig(data_dir=str(SAMPLE_DIR / "data"), image_dir=str(SAMPLE_DIR / "images"),
                      captions=str(SAMPLE_DIR / "captions.json"), dataset="sample", cache_dir=cache_dir,
                      max_length=max_length)


def ensure_checkpoint(checkpoint, setting: str, data_cfg=None, ds=None, *, seed: int = 1, epochs: int = 6,
                      lr: float = 2e-4, head_lr: float = 1e-3, say: Callable[[str], None] = print) -> str:
    """``checkpoint`` when it exists; else the ablation ``setting`` trained into its parent folder
    with notebook 06's short recipe (on ``data_cfg``, default the sample; a few minutes on 2 cores),
    saying so. Returns the checkpoint folder."""
    if Path(checkpoint).exists():
        return str(checkpoint)
    data_cfg = data_cfg or sample_data_config()
    out = str(Path(checkpoint).parent)
    say(f"{checkpoint} not found: training '{setting}' into {out}")
    res = train(data_cfg, ModelConfig().ablation(setting),
                TrainConfig(output_dir=out, seed=seed, epochs=epochs, batch_size=8, micro_batch_size=8,
                            lr=lr, head_lr=head_lr, patience=epochs, progress=False),
                ds=ds if ds is not None else dataset_from_config(data_cfg))
    return res["checkpoint"]


def sample_checkpoints(train_missing: bool = True, say: Callable[[str], None] = print) -> dict[str, str]:
    """Notebook 06's two models on the sample (``SAMPLE_MODELS``): ``{name: checkpoint folder}``,
    the missing ones trained once with notebook 06's recipe (``train_missing``) or left out."""
    out = {}
    for name, (folder, setting) in SAMPLE_MODELS.items():
        if Path(folder).exists():
            out[name] = folder
        elif train_missing:
            out[name] = ensure_checkpoint(folder, setting, say=say)
    return out


# -- the standalone demo page (notebooks/demo.ipynb, `make demo`) --------------------------------------


@contextlib.contextmanager
def _no_progress_bars():
    """transformers' "Loading weights" bars off while a page opens models (they would stay in the page)."""
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _error_html(e: BaseException) -> str:
    return (f'<span class="tvomner-demo-error" style="color:#b00">{html.escape(type(e).__name__)}: '
            f'{html.escape(str(e))}</span>')


def demo_page(checkpoints: dict | None = None, tweets_file=None, split: str = "test", image_dir=None,
              captions=None, max_tweets: int | None = 200, device: str = "cpu", cache_dir: str | None = None):
    """The standalone demo page (``notebooks/demo.ipynb``, served by Voilà with ``make demo``): a field
    that opens any checkpoint folder (``Load``: that model alone; ``Add``: beside the models shown,
    trained on the same dataset), a status line (what is shown, notes, or the error of a bad folder:
    never a traceback), and the case-study widget of the models on their tweets (see
    ``checkpoint_inputs`` for ``tweets_file``, ``split``, ``image_dir``, ``captions``,
    ``max_tweets``). ``checkpoints``: ``{name: folder or Predictor}`` opened first; ``cache_dir``: the
    prediction caches (default: the per-user folder)."""
    state: dict = {"models": {}, "folders": {}}
    folder = W.Text(description="checkpoint folder", style={"description_width": "initial"},
                    placeholder="runs/table2/twitter2017/tvomner+pgim-s1/best",
                    layout=W.Layout(flex="1 1 auto", width="auto"))
    load = W.Button(description="Load", button_style="primary", tooltip="show this model alone",
                    layout=W.Layout(flex="0 0 auto", width="auto"))
    add = W.Button(description="Add", tooltip="compare it with the models shown (same dataset)",
                   layout=W.Layout(flex="0 0 auto", width="auto"))
    status = W.HTML()
    body = W.VBox()

    def describe(inputs: DemoInputs) -> str:
        names = ", ".join(f"<b>{html.escape(n)}</b> ({html.escape(shown_path(state['folders'][n]))})"
                          for n in state["models"])
        shown = (f"{len(inputs.tweets)} tweets" + (f" (the first {len(inputs.tweets)} of {inputs.total})"
                                                   if len(inputs.tweets) < inputs.total else "")
                 + f" from the {html.escape(inputs.source)}")
        where = (f"images from {html.escape(shown_path(inputs.image_dir))}" if inputs.image_dir
                 else "images absent" + (": captions in their place" if inputs.captions else ""))
        notes = list(inputs.notes) + [n for p in state["models"].values() for n in getattr(p, "notes", [])]
        return (f'<div class="tvomner-demo-info">models: {names}<br>{shown}; {where}'
                + "".join(f'<br><span style="color:#666">note: {html.escape(n)}</span>' for n in dict.fromkeys(notes))
                + "</div>")

    def open_models(folders: dict, replace: bool) -> None:
        with _no_progress_bars():
            show_models(folders, replace)

    def show_models(folders: dict, replace: bool) -> None:
        loaded = load_models(folders, device, cache_dir)
        models = dict(loaded) if replace or not state["models"] else {**state["models"], **loaded}
        first = next(iter(models.values()))
        if not replace and state["models"]:
            datasets = {n: getattr(getattr(p, "data_cfg", None), "dataset", None) for n, p in models.items()}
            if len(set(datasets.values())) > 1:
                raise ValueError("these models were trained on different datasets ("
                                 + ", ".join(f"{n}: {d}" for n, d in datasets.items())
                                 + "): Load the new one alone instead")
        inputs = checkpoint_inputs(first, tweets_file, split, image_dir, captions, max_tweets)
        status.value = f"<i>tagging {len(inputs.tweets)} tweets with {', '.join(map(html.escape, models))} …</i>"
        results = compare(models, inputs.tweets, image_dir=inputs.image_dir, captions=inputs.captions_file,
                          device=device, knowledge_file=inputs.knowledge_file)
        body.children = [case_study_widget(inputs.tweets, results, inputs.captions, models, gold=inputs.gold)]
        state["models"] = models
        state["folders"] = {n: str(getattr(p, "checkpoint", None) or folders.get(n) or state["folders"].get(n, ""))
                            for n, p in models.items()}
        status.value = describe(inputs)

    def on_click(button) -> None:
        path = os.path.expanduser(folder.value.strip())
        if not path:
            status.value = '<span class="tvomner-demo-error" style="color:#b00">type a checkpoint folder first</span>'
            return
        replace = button is load
        name = checkpoint_name(path, () if replace else tuple(state["models"]))
        load.disabled = add.disabled = True
        status.value = f"<i>loading {html.escape(path)} …</i>"
        try:
            open_models({name: path}, replace)
        except Exception as e:   # shown in the page: a bad folder is a line, not a traceback
            status.value = _error_html(e)
        finally:
            load.disabled = add.disabled = False

    load.on_click(on_click)
    add.on_click(on_click)
    for w, n in ((folder, "folder"), (load, "load"), (add, "add"), (status, "status"), (body, "body")):
        w.add_class(f"tvomner-demo-{n}")
    if checkpoints:
        try:
            open_models(dict(checkpoints), True)
        except Exception as e:
            status.value = _error_html(e)
    else:
        status.value = "<i>no model loaded: type a checkpoint folder and press Load</i>"
    return W.VBox([W.HBox([folder, load, add], layout=W.Layout(width="95%")), status, body])


def say_everywhere(msg: str) -> None:
    """Print ``msg``, and in a kernel also to the server's terminal (where ``make demo`` runs: the page
    shows nothing before its cells have run)."""
    print(msg, flush=True)
    if sys.stdout is not sys.__stdout__ and sys.__stderr__ is not None:
        print(msg, file=sys.__stderr__, flush=True)


def page_checkpoints(checkpoints: dict | None = None, query: str | None = None,
                     train_missing: bool = True, say: Callable[[str], None] = say_everywhere) -> dict:
    """The checkpoints a demo page opens first: those named in its address (``?checkpoint=FOLDER``,
    repeatable; Voilà hands the kernel the query as ``QUERY_STRING``), else ``checkpoints``, else
    notebook 06's two sample models (``sample_checkpoints``, trained once when absent, saying so)."""
    named = [c for c in parse_qs(query or "").get("checkpoint", []) if c.strip()]
    if named:
        out: dict = {}
        for c in named:
            out[checkpoint_name(c, tuple(out))] = c.strip()
        return out
    return dict(checkpoints) if checkpoints else sample_checkpoints(train_missing, say)
