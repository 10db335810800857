"""Plots and HTML views shared by the notebooks (matplotlib; no state kept here).

Plots draw on the axes they are given (or a new figure) and never change matplotlib's backend, so
they show inline in a notebook; ``save_figure`` writes a PNG copy beside the report.
"""
from __future__ import annotations

import base64
import functools
import html
import io
from collections import Counter
from pathlib import Path
from typing import Sequence

from .data import ENTITY_TYPES, Dataset, Tweet, entity_spans
import matplotlib.pyplot as plt
import numpy as np
from .images import load_image
from .cache import atomic_write_bytes
from matplotlib.figure import Figure

TYPE_COLOURS = {"PER": "#e45756", "LOC": "#54a24b", "ORG": "#4c78a8", "MISC": "#f2a93b"}


def plot_lengths(ds: Dataset, ax=None):
    """Histogram of tweet length (tokens) per split."""
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


def thumb_html(tweet: Tweet, size: int = 128) -> str:
    """The tweet's image as an inline ``<img>`` (or a grey box naming why there is none)."""
    img, status = load_image(tweet.image_path)
    if img is None:
        return f'<div style="width:{size}px;height:{size}px;background:#eee;font-size:11px;' \
               f'display:flex;align-items:center;justify-content:center">{html.escape(status)}</div>'
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" ' \
           f'width="{size}" height="{size}">'


def gate_bars_html(weights: Sequence[float] | None, gate: float | None) -> str:
    """The gate g of Eq. 4 and the fusion weights ω of Eq. 3 of one tweet, in words and bars."""
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


def diagnostics_html(r: dict) -> str:
    """A model result's gate and ω (``gate_bars_html``), or "" for a model without them."""
    if r.get("gate") is None and r.get("fusion_weights") is None:
        return ""
    return f'<span style="font-size:11px;color:#444">{gate_bars_html(r.get("fusion_weights"), r.get("gate"))}</span>'


def caption_box_html(caption: str, size: int = 128) -> str:
    """The caption of an absent image, in the image's place."""
    return (f'<div class="tvomner-caption" style="width:{size}px;min-height:{size}px;background:#f3f3f3;'
            f'font-size:11px;line-height:1.3;padding:4px;box-sizing:border-box;text-align:left">'
            f'<span style="color:#888">image absent; its caption:</span><br><i>{html.escape(caption)}</i></div>')


def side_inputs_text(r: dict) -> str | None:
    """What a tweet had beside its words, in words (None: the model reads nothing beside them)."""
    side = r.get("side_inputs") or {}
    parts = []
    if side.get("knowledge") is not None:
        have, cands = side["knowledge"]
        parts.append(f"knowledge for {have} of {cands} candidate{'s' * (cands != 1)}" if cands
                     else "no candidate, so no knowledge")
    if side.get("image") is not None:
        parts.append("an image" if side["image"] else "a caption" if side.get("caption") else "no image or caption")
    if not parts:
        return None
    note = r.get("knowledge_note")
    return "side inputs: " + ", ".join(parts) + (f" ({note})" if note else "")


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
        rows.append(f"<tr><td>{thumb_html(t)}</td><td style='text-align:left'>{'<br>'.join(cells)}</td></tr>")
    legend = " ".join(f'<span style="background:{c};color:white;padding:1px 4px">{t}</span>'
                      for t, c in TYPE_COLOURS.items())
    return f"<div>{legend}</div><table>{''.join(rows)}</table>"


def save_figure(fig, figure_dir: str | Path | None, name: str, dpi: int = 120) -> Path | None:
    """Write ``fig`` to ``<figure_dir>/<name>.png`` atomically and return the path; nothing when
    ``figure_dir`` is None (the report runner passes its output folder)."""
    if figure_dir is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    path = Path(figure_dir) / f"{name}.png"
    atomic_write_bytes(path, buf.getvalue())
    return path


_WIDGET_RENDERER = Path(__file__).resolve().parent / "static" / "html-manager" / "embed.js"


@functools.lru_cache(maxsize=1)
def widget_renderer_url() -> str:
    """A ``data:`` URL of the vendored Jupyter widgets renderer (``tvolib/static/html-manager``), for
    nbconvert's ``HTMLExporter(widget_renderer_url=...)``: an HTML copy then shows its saved widgets
    with no network (nbconvert's default loads the renderer from a CDN). "" when the file is absent,
    which leaves nbconvert's default."""
    if not _WIDGET_RENDERER.is_file():
        return ""
    return "data:text/javascript;base64," + base64.b64encode(_WIDGET_RENDERER.read_bytes()).decode("ascii")


# ----------------------------------------------------------------------------------------------
# training curves and the type confusion (``tvolib.train``, notebook 04)


def _new_figure(figsize, ncols: int = 1, standalone: bool = False):
    """(fig, axes): a pyplot figure (shown inline in a notebook), or with ``standalone`` a bare
    ``matplotlib.figure.Figure`` that touches no pyplot state (files written by the trainer)."""
    if standalone:
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(1, ncols)
    return plt.subplots(1, ncols, figsize=figsize)


def plot_history(history: list[dict], path: str | Path | None = None):
    """Training curves: loss per step and per epoch, valid F1 per epoch. With ``path`` the figure is
    written there (PNG) without pyplot, so a notebook's backend and open figures are left alone."""
    fig, ax = _new_figure((10, 3.5), 2, standalone=path is not None)
    steps = [l for h in history for l in h.get("step_losses", [])]
    if steps:
        ax[0].plot(range(1, len(steps) + 1), steps, alpha=0.4, label="step loss")
    per_epoch = [h["train_loss"] for h in history]
    spe = max(1, len(steps) // max(1, len(history)))
    ax[0].plot([spe * (i + 1) for i in range(len(history))], per_epoch, "o-", label="epoch mean")
    ax[0].set_xlabel("optimizer step"); ax[0].set_ylabel("L = L_NER + λ L_VAE"); ax[0].legend()
    ax[1].plot([h["epoch"] for h in history], [h["valid_f1"] for h in history], "o-", label="valid F1")
    ax[1].set_xlabel("epoch"); ax[1].set_ylabel("F1 (%)"); ax[1].legend()
    fig.tight_layout()
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        atomic_write_bytes(path, buf.getvalue())
    return fig


def plot_confusion(names: list[str], m: list[list[int]], ax=None, title: str = "entity types (test)"):
    """The matrix of ``tvolib.evaluate.type_confusion`` as a heat map with counts."""
    if ax is None:
        _, ax = _new_figure((4.5, 4))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(names)), names); ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted"); ax.set_ylabel("gold"); ax.set_title(title)
    hi = max(max(r) for r in m) or 1
    for i, row in enumerate(m):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > hi / 2 else "black")
    return ax
