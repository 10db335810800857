"""Plots and HTML views shared by the notebooks (matplotlib; no state kept here)."""
from __future__ import annotations

import base64
import html
import io
from collections import Counter
from typing import Sequence

from .data import ENTITY_TYPES, Dataset, Tweet, entity_spans

TYPE_COLOURS = {"PER": "#e45756", "LOC": "#54a24b", "ORG": "#4c78a8", "MISC": "#f2a93b"}


def plot_lengths(ds: Dataset, ax=None):
    """Histogram of tweet length (tokens) per split."""
    import matplotlib.pyplot as plt
    import numpy as np
    ax = ax or plt.subplots(figsize=(6, 3.2))[1]
    lengths = {s: [len(t.tokens) for t in tw] for s, tw in ds.splits.items()}
    top = max(max(v, default=1) for v in lengths.values())
    bins = np.arange(0.5, top + 1.5, max(1, top // 30))
    for split, ls in lengths.items():
        ax.hist(ls, bins=bins, histtype="step", linewidth=1.8, density=True,
                label=f"{split} ({len(ls)} tweets, mean {np.mean(ls):.1f})")
    ax.set(xlabel="tokens per tweet", ylabel="share of tweets", title=f"{ds.name}: tweet length")
    ax.legend()
    return ax


def plot_entity_types(ds: Dataset, ax=None):
    """Grouped bars: entities (spans) per type and split."""
    import matplotlib.pyplot as plt
    import numpy as np
    ax = ax or plt.subplots(figsize=(6, 3.2))[1]
    splits = list(ds.splits)
    x = np.arange(len(ENTITY_TYPES))
    w = 0.8 / max(len(splits), 1)
    for i, s in enumerate(splits):
        c = Counter(typ for t in ds.splits[s] for _, _, typ in t.spans())
        ax.bar(x + i * w, [c.get(tp, 0) for tp in ENTITY_TYPES], w, label=s)
    ax.set_xticks(x + w * (len(splits) - 1) / 2, ENTITY_TYPES)
    ax.set(ylabel="entities", title=f"{ds.name}: entity types")
    ax.legend()
    return ax


def spans_html(tokens: Sequence[str], labels: Sequence[str]) -> str:
    """Tokens with entity spans coloured by type (as inline HTML)."""
    spans = {s: (e, t) for s, e, t in entity_spans(labels)}
    out, i = [], 0
    while i < len(tokens):
        if i in spans:
            e, t = spans[i]
            text = html.escape(" ".join(tokens[i:e]))
            out.append(f'<span style="background:{TYPE_COLOURS[t]};color:white;padding:1px 4px;'
                       f'border-radius:3px">{text} <sub>{t}</sub></span>')
            i = e
        else:
            out.append(html.escape(tokens[i]))
            i += 1
    return " ".join(out)


def _thumb(tweet: Tweet, size: int = 128) -> str:
    from .images import load_image
    img, status = load_image(tweet.image_path)
    if img is None:
        return f'<div style="width:{size}px;height:{size}px;background:#eee;font-size:11px;' \
               f'display:flex;align-items:center;justify-content:center">{html.escape(status)}</div>'
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" ' \
           f'width="{size}" height="{size}">'


def tweets_html(tweets: Sequence[Tweet], captions: dict | None = None,
                predictions: Sequence[Sequence[str]] | None = None) -> str:
    """A table of tweets: image (or its status), gold spans, optional predicted spans, caption."""
    rows = []
    for k, t in enumerate(tweets):
        cells = [f"<b>{html.escape(t.id)}</b> ({t.split})<br>{spans_html(t.tokens, t.labels)}"]
        if predictions is not None:
            cells.append("<i>predicted:</i> " + spans_html(t.tokens, predictions[k]))
        if captions and t.id in captions:
            cells.append(f'<span style="color:#666">caption: {html.escape(captions[t.id])}</span>')
        rows.append(f"<tr><td>{_thumb(t)}</td><td style='text-align:left'>{'<br>'.join(cells)}</td></tr>")
    legend = " ".join(f'<span style="background:{c};color:white;padding:1px 4px">{t}</span>'
                      for t, c in TYPE_COLOURS.items())
    return f"<div>{legend}</div><table>{''.join(rows)}</table>"
