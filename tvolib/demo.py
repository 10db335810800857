"""Case studies (the paper's section 5.5): compare models tweet by tweet, with the image, the gold
spans, each model's spans, and what the full model did with the image — the gate g of Eq. 4 (the
weight of the text features) and the fusion weights ω of Eq. 3.

    from tvolib.demo import load_models, compare, case_study_widget, cases_html
    models = load_models({"TVOMNER": "runs/nb04/best", "text-only": "runs/nb06/text-only/best"})
    results = compare(models, tweets, image_dir=..., captions=...)
    case_study_widget(tweets, results, captions, models)   # JupyterLab: pick a tweet, or type one
    HTML(cases_html(tweets, results, captions, only_disagreements=True))   # static, for reports
"""
from __future__ import annotations

import hashlib
import html
from typing import Sequence

from .data import Tweet, entity_spans
from .viz import TYPE_COLOURS, thumb_html, spans_html
from .predict import Predictor
import ipywidgets as W


def load_models(checkpoints: dict, device: str = "cpu") -> dict:
    """``{name: model}`` from ``{name: checkpoint folder or model}``: a folder is loaded once as a
    ``tvolib.predict.Predictor``; anything with a ``predict`` method is kept as it is."""
    return {name: c if hasattr(c, "predict") else Predictor.from_checkpoint(c, device)
            for name, c in checkpoints.items()}


def compare(models: dict, tweets: Sequence[Tweet], image_dir=None, captions=None,
            device: str = "cpu") -> dict[str, list[dict]]:
    """Run every model (a ``Predictor`` or a checkpoint folder) on the same tweets:
    ``{model name: [result per tweet]}`` where a result holds ``labels`` and, for a multimodal
    model, ``gate`` and ``fusion_weights``."""
    out = {}
    for name, pred in load_models(models, device).items():
        out[name] = pred.predict([Tweet(t.id, list(t.tokens), list(t.labels), "test", t.image_path,
                                        t.image_status) for t in tweets],
                                 image_dir=image_dir, captions=captions, diagnostics=True)
    return out


def typed_tweet(text: str) -> Tweet:
    """A tweet typed by the user (tokens split on whitespace), named by a hash of its tokens."""
    tokens = text.split()
    if not tokens:
        raise ValueError("the tweet is empty: type a few words")
    digest = hashlib.sha1("\t".join(tokens).encode("utf-8")).hexdigest()[:12]
    return Tweet(id=f"typed-{digest}", tokens=tokens, labels=["O"] * len(tokens), split="test")


def tag_text(models: dict, text: str) -> tuple[Tweet, dict[str, list[dict]]]:
    """Tag one typed tweet with every model: ``(tweet, {model name: [result]})`` (no image: the full
    model falls back on the text through its gate)."""
    tweet = typed_tweet(text)
    return tweet, {name: pred.predict([tweet], diagnostics=True) for name, pred in load_models(models).items()}


def spans_all_right(tweet: Tweet, labels: Sequence[str]) -> bool:
    return set(entity_spans(tweet.labels)) == set(entity_spans(labels))


def _bars(weights: Sequence[float], gate: float | None) -> str:
    parts = []
    if gate is not None:
        parts.append(f"gate g = {gate:.2f} (text) / {1 - gate:.2f} (cross-modal)")
    if weights is not None:
        names = ("ω_t (VAE)", "ω_g (global)", "ω_o (objects)")
        cells = "".join(f'<div style="display:inline-block;width:{int(160 * w)}px;height:10px;'
                        f'background:{c}" title="{n} {w:.2f}"></div>'
                        for n, w, c in zip(names, weights, ("#9467bd", "#7f7f7f", "#17becf")))
        parts.append(f'{cells} ' + ", ".join(f"{n} {w:.2f}" for n, w in zip(names, weights)))
    return "<br>".join(parts)


def case_html(tweet: Tweet, results: dict[str, list[dict]], k: int, captions: dict | None = None,
              gold: bool = True, image: bool = True) -> str:
    """One tweet: its image (when ``image``), gold spans (✔/✘ per model when ``gold``), each model's
    spans, the full model's gate and fusion weights, and its caption."""
    rows = [f"<b>{html.escape(tweet.id)}</b> " + (f"<i>gold:</i> {spans_html(tweet.tokens, tweet.labels)}"
                                                   if gold else html.escape(" ".join(tweet.tokens)))]
    for name, res in results.items():
        r = res[k]
        mark = ("✔ " if spans_all_right(tweet, r["labels"]) else "✘ ") if gold else ""
        rows.append(f"{mark}<i>{html.escape(name)}:</i> {spans_html(tweet.tokens, r['labels'])}")
        if r.get("gate") is not None or r.get("fusion_weights") is not None:
            rows.append(f'<span style="font-size:11px;color:#444">{_bars(r.get("fusion_weights"), r.get("gate"))}</span>')
    if captions and tweet.id in captions:
        rows.append(f'<span style="color:#666">caption: {html.escape(captions[tweet.id])}</span>')
    thumb = f"<td>{thumb_html(tweet)}</td>" if image else ""
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
                      models: dict | None = None):
    """An ipywidgets browser (JupyterLab): a tweet picker, opened on the first case (only the tweets
    where the models disagree, when there are any), its case view, and, given ``models``
    (``{name: Predictor or checkpoint}``, loaded on first use), a box that tags a typed tweet with
    every model. Its parts carry CSS classes ``tvomner-*`` for the browser check."""

    wide = W.Layout(width="95%")
    label = {"description_width": "initial"}      # the default width cuts descriptions
    disagree = disagreements(tweets, results)
    only = W.Checkbox(value=bool(disagree), indent=False, layout=W.Layout(width="auto"),
                      description=f"only the {len(disagree)} tweets where the models disagree "
                                  f"(of {len(tweets)})")
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
                      else case_html(tweets[pick.value], results, pick.value, captions))

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
    go = W.Button(description="tag with both models" if len(models) == 2 else "tag with every model",
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
            view.value = case_html(tweet, res, 0, gold=False, image=False)
            tagged["text"] = text.value
        except Exception as e:   # shown in the widget: a callback's exception is otherwise invisible
            view.value = f'<span style="color:#b00">{html.escape(type(e).__name__)}: {html.escape(str(e))}</span>'
        finally:
            go.disabled = False

    go.on_click(run)
    text.observe(run, "value")        # Enter (continuous_update=False) tags too
    for w, name in ((text, "text"), (go, "go"), (view, "view")):
        w.add_class(f"tvomner-typed-{name}")
    return W.VBox([W.HTML("<b>Your own tweet</b> (no image: the full model falls back on the text)"),
                   W.HBox([text, go], layout=W.Layout(width="95%")), view])
