"""Case studies (the paper's section 5.5): compare models tweet by tweet, with the image, the gold
spans, each model's spans, and what the full model did with the image — the gate g of Eq. 4 (the
weight of the text features) and the fusion weights ω of Eq. 3.

    from tvolib.demo import compare, case_study_widget, cases_html
    results = compare({"TVOMNER": "runs/nb04/best", "text-only": "runs/nb06/text-only/best"},
                      tweets, image_dir=..., captions=...)
    case_study_widget(tweets, results, captions)   # JupyterLab: pick a tweet
    HTML(cases_html(tweets, results, captions, only_disagreements=True))   # static, for reports
"""
from __future__ import annotations

import html
from typing import Sequence

from .data import Tweet, entity_spans
from .viz import TYPE_COLOURS, _thumb, spans_html


def compare(checkpoints: dict[str, str], tweets: Sequence[Tweet], image_dir=None, captions=None,
            device: str = "cpu") -> dict[str, list[dict]]:
    """Run every checkpoint on the same tweets: ``{model name: [result per tweet]}`` where a
    result holds ``labels`` and, for a multimodal model, ``gate`` and ``fusion_weights``."""
    from .predict import Predictor
    out = {}
    for name, ckpt in checkpoints.items():
        pred = Predictor(ckpt, device)
        out[name] = pred.predict([Tweet(t.id, list(t.tokens), list(t.labels), "test", t.image_path,
                                        t.image_status) for t in tweets],
                                 image_dir=image_dir, captions=captions, diagnostics=True)
    return out


def _correct(tweet: Tweet, labels: Sequence[str]) -> bool:
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


def case_html(tweet: Tweet, results: dict[str, list[dict]], k: int, captions: dict | None = None) -> str:
    rows = [f"<b>{html.escape(tweet.id)}</b> <i>gold:</i> {spans_html(tweet.tokens, tweet.labels)}"]
    for name, res in results.items():
        r = res[k]
        mark = "✔" if _correct(tweet, r["labels"]) else "✘"
        rows.append(f"{mark} <i>{html.escape(name)}:</i> {spans_html(tweet.tokens, r['labels'])}")
        if r.get("gate") is not None or r.get("fusion_weights") is not None:
            rows.append(f'<span style="font-size:11px;color:#444">{_bars(r.get("fusion_weights"), r.get("gate"))}</span>')
    if captions and tweet.id in captions:
        rows.append(f'<span style="color:#666">caption: {html.escape(captions[tweet.id])}</span>')
    return (f"<table><tr><td>{_thumb(tweet)}</td><td style='text-align:left'>{'<br>'.join(rows)}"
            f"</td></tr></table>")


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


def case_study_widget(tweets: Sequence[Tweet], results: dict[str, list[dict]], captions: dict | None = None):
    """An ipywidgets browser: a tweet picker (optionally only disagreements) and its case view."""
    import ipywidgets as W
    from IPython.display import HTML, display

    only = W.Checkbox(value=True, description="only tweets where the models disagree")
    pick = W.Dropdown(description="tweet", layout=W.Layout(width="90%"))
    out = W.Output()

    def options(*_):
        idx = disagreements(tweets, results) if only.value else range(len(tweets))
        pick.options = [(f"{tweets[k].id}: {' '.join(tweets[k].tokens)[:70]}", k) for k in idx]

    def show(*_):
        out.clear_output()
        with out:
            if pick.value is not None:
                display(HTML(case_html(tweets[pick.value], results, pick.value, captions)))

    only.observe(options, "value")
    pick.observe(show, "value")
    options()
    show()
    return W.VBox([only, pick, out])
