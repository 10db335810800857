"""Does a trained model use the image? Inference-time probes of the visual branch.

For a model and a split's examples, ``branch_probe`` returns, per tweet, the learned gate g of Eq. 4
(share of the text branch T in R), the fusion weights ω of Eq. 3, the share of attention the tweet's
words give the visual slot of the cross-attention (the rest goes to the null slot), and the predicted
labels, and the
predictions again when

* ``gate=1``: Eq. 5 keeps T alone (the cross-modal branch C is switched off);
* ``gate=0``: Eq. 5 keeps C alone;
* ``shuffled``: every tweet gets another tweet's visual input (a fixed derangement of the split, so
  each tweet is paired with one other tweet), text and knowledge unchanged.

A model that ignores the image scores the same with shuffled images; ``ProbeResult.f1`` scores any
subset of tweets (e.g. the visual-probe benchmark's ``ambiguous`` tweets).
"""
from __future__ import annotations

import dataclasses
import html
import statistics
from dataclasses import dataclass, field
from typing import Callable, Iterable

import matplotlib.pyplot as plt
import torch

from .data import LABELS
from .evaluate import Variant, predict_visual_variants, score
from .viz import spans_html, thumb_html


def derangement(n: int, seed: int = 0) -> list[int]:
    """A permutation of ``range(n)`` with no fixed point (a cyclic shift of a random order)."""
    if n < 2:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g).tolist()
    perm = [0] * n
    for i in range(n):
        perm[order[i]] = order[(i + 1) % n]
    return perm


@dataclass
class ProbeResult:
    ids: list[str]
    gold: list[list[str]]
    pred: dict[str, list[list[str]]]                 # "learned", "gate=1", "gate=0", "shuffled"
    gate: list[float] = field(default_factory=list)  # per tweet (empty for a text-only model)
    omega: list[list[float]] = field(default_factory=list)   # per tweet [ω_t, ω_g, ω_o]
    visual_attn: list[float] = field(default_factory=list)   # per tweet: mean attention of its words to V
    other: list[str] = field(default_factory=list)   # per tweet: whose visual input it got in "shuffled"

    def f1(self, probe: str = "learned", keep: Iterable[str] | None = None) -> float:
        """Span F1 (%) of one probe over all tweets, or over the tweets whose id is in ``keep``."""
        idx = range(len(self.ids)) if keep is None else [i for i, k in enumerate(self.ids) if k in set(keep)]
        idx = list(idx)
        if not idx:
            return float("nan")
        return 100 * score([self.gold[i] for i in idx], [self.pred[probe][i] for i in idx]).f1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeResult":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def summary(self, keep: Iterable[str] | None = None) -> dict:
        """Mean gate and ω, and F1 of every probe, over all tweets or those in ``keep``."""
        keep = None if keep is None else set(keep)
        idx = [i for i, k in enumerate(self.ids) if keep is None or k in keep]
        out = {"tweets": len(idx), "f1": {p: round(self.f1(p, keep), 2) for p in self.pred}}
        if self.gate and idx:
            out["gate_mean"] = round(statistics.mean(self.gate[i] for i in idx), 4)
            out["gate_std"] = round(statistics.pstdev(self.gate[i] for i in idx), 4)
            out["omega_mean"] = [round(statistics.mean(self.omega[i][k] for i in idx), 4) for k in range(3)]
            out["omega_std"] = [round(statistics.pstdev(self.omega[i][k] for i in idx), 4) for k in range(3)]
        if self.visual_attn and idx:
            out["visual_attn_mean"] = round(statistics.mean(self.visual_attn[i] for i in idx), 4)
        if "shuffled" in self.pred:
            out["shuffle_delta_f1"] = round(out["f1"]["shuffled"] - out["f1"]["learned"], 2)
        return out


PROBES = ("learned", "gate=1", "gate=0", "shuffled")


def probe_variants(collate: Callable, ids: list[str], visual=None, probes: tuple[str, ...] = PROBES,
                   seed: int = 0) -> dict[str, Variant]:
    """The probes as ``tvolib.evaluate.Variant``s of one T (``probe:<name>``), for
    ``predict_visual_variants``; ``shuffled`` gives each tweet the visual input of ``derangement``'s
    partner among ``ids``."""
    if "shuffled" in probes and visual is None:
        raise ValueError("the 'shuffled' probe needs the split's VisualFeatures (visual=...)")
    other = dict(zip(ids, (ids[j] for j in derangement(len(ids), seed))))
    gates = {"learned": None, "gate=1": 1.0, "gate=0": 0.0}
    out = {f"probe:{p}": Variant(collate, gates[p]) for p in probes if p in gates}
    if "shuffled" in probes:
        out["probe:shuffled"] = Variant(
            lambda chunk: dict(collate(chunk), visual=visual.batch([other[str(e["id"])] for e in chunk])))
    return out


def probe_result(examples: list[dict], preds: dict[str, list], diag: list[dict], seed: int = 0,
                 labels=LABELS) -> ProbeResult:
    """The ``ProbeResult`` of ``predict_visual_variants`` run with ``probe_variants`` (diagnosing
    ``probe:learned``)."""
    ids = [str(e["id"]) for e in examples]
    probes = [n.removeprefix("probe:") for n in preds if n.startswith("probe:")]
    res = ProbeResult(ids=ids, gold=[[labels[j] for j in e["labels"]] for e in examples],
                      pred={p: preds[f"probe:{p}"] for p in probes})
    if "shuffled" in probes:
        perm = derangement(len(ids), seed)
        res.other = [ids[perm[i]] for i in range(len(ids))]
    if diag:
        res.gate = [d["gate"] for d in diag]
        res.omega = [d["omega"] for d in diag]
        if all(d["visual_attn"] is not None for d in diag):
            res.visual_attn = [d["visual_attn"] for d in diag]
    return res


def branch_probe(model, examples: list[dict], collate: Callable, visual=None, batch_size: int = 64,
                 probes: tuple[str, ...] = PROBES, seed: int = 0,
                 labels=LABELS, device="cpu", precision: str = "fp32") -> ProbeResult:
    """Run the probes (module docstring) on ``examples`` (each with ``id`` and ``labels``), the
    encoder once a batch (``tvolib.evaluate.predict_visual_variants``).

    ``collate`` is the one the model was trained with; ``visual`` (``VisualFeatures``) is needed for
    ``shuffled``. A model without a visual branch gets only ``learned``. ``precision`` ("fp32" |
    "bf16"): the one the model was evaluated in, so that ``learned`` is the reported test F1."""
    if getattr(model, "cff", None) is None:
        preds, _ = predict_visual_variants(model, examples, {"probe:learned": collate}, batch_size, device,
                                           precision, labels)
        return probe_result(examples, preds, [], seed, labels)
    ids = [str(e["id"]) for e in examples]
    preds, diag = predict_visual_variants(model, examples, probe_variants(collate, ids, visual, probes, seed),
                                          batch_size, device, precision, labels, diagnose="probe:learned")
    return probe_result(examples, preds, diag, seed, labels)


def plot_probe(res: ProbeResult, groups: dict[str, Iterable[str]] | None = None, title: str = ""):
    """Per-tweet gate g (Eq. 4), fusion weights ω (Eq. 3) and attention to V, one box per group of
    tweets (e.g. the probe benchmark's subsets, or "all"), beside F1 learned / images shuffled / g = 1.
    Returns a matplotlib figure (pyplot's, so that a notebook shows it)."""
    groups = {"all": res.ids} if groups is None else {k: set(v) for k, v in groups.items()}
    idx = {name: [i for i, k in enumerate(res.ids) if k in set(ids)] for name, ids in groups.items()}
    idx = {k: v for k, v in idx.items() if v}
    names = list(idx)
    fig, ax = plt.subplots(1, 4, figsize=(15, 3.4))
    if res.gate:
        ax[0].boxplot([[res.gate[i] for i in idx[n]] for n in names], tick_labels=names)
        ax[0].set_ylim(-0.02, 1.02)
    ax[0].set_title("gate g (share of T in R)")
    if res.omega:
        for k, (lab, off) in enumerate(zip(("ω_t", "ω_glob", "ω_obj"), (-0.25, 0.0, 0.25))):
            ax[1].boxplot([[res.omega[i][k] for i in idx[n]] for n in names],
                          positions=[j + 1 + off for j in range(len(names))], widths=0.2,
                          patch_artist=True, boxprops={"facecolor": f"C{k}", "alpha": 0.6})
            ax[1].plot([], [], color=f"C{k}", lw=6, alpha=0.6, label=lab)
        ax[1].set_xticks(range(1, len(names) + 1), names)
        ax[1].legend(fontsize=8)
    ax[1].set_title("fusion weights ω (Eq. 3)")
    if res.visual_attn:
        ax[2].boxplot([[res.visual_attn[i] for i in idx[n]] for n in names], tick_labels=names)
    ax[2].set_title("words' attention to V")
    probes = [p for p in ("learned", "shuffled", "gate=1", "gate=0") if p in res.pred]
    w = 0.8 / max(1, len(probes))
    for j, p in enumerate(probes):
        vals = [res.f1(p, [res.ids[i] for i in idx[n]]) for n in names]
        ax[3].bar([x + j * w for x in range(len(names))], vals, w, label=p)
    ax[3].set_xticks([x + w * (len(probes) - 1) / 2 for x in range(len(names))], names)
    ax[3].set_ylabel("F1 (%)")
    ax[3].set_title("F1 by probe")
    ax[3].legend(fontsize=8)
    for a in ax:
        a.tick_params(axis="x", labelrotation=20)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def subset_groups(subsets: dict[str, str]) -> dict[str, set]:
    """{subset: IMGIDs} of a probe benchmark, plus ``rest`` (every tweet but the ambiguous ones)."""
    groups: dict[str, set] = {}
    for k, s in subsets.items():
        groups.setdefault(s, set()).add(k)
    groups["rest"] = {k for k, s in subsets.items() if s != "ambiguous"}
    return groups


def probe_table(res: ProbeResult, groups: dict[str, Iterable[str]] | None = None) -> str:
    """A Markdown table of ``res.summary`` per group of tweets: F1 as learned, with the images
    shuffled, with T alone (g = 1) and C alone (g = 0); mean gate, ω and attention to V."""
    groups = {"all": res.ids} if groups is None else groups
    has_v = bool(res.gate)
    head = "| tweets | n | F1 | images shuffled | g = 1 (T only) | g = 0 (C only) | gate g | ω (t, glob, obj) | attention to V |"
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name, ids in groups.items():
        s = res.summary(ids)
        if not s["tweets"]:
            continue
        f = s["f1"]
        cell = lambda p: f"{f[p]:.2f}" if p in f else "—"                                     # noqa: E731
        om = ", ".join(f"{x:.2f}" for x in s["omega_mean"]) if has_v and "omega_mean" in s else "—"
        rows.append(f"| {name} | {s['tweets']} | {cell('learned')} | {cell('shuffled')} | {cell('gate=1')} | "
                    f"{cell('gate=0')} | {s.get('gate_mean', '—')} | {om} | {s.get('visual_attn_mean', '—')} |")
    return "\n".join(rows) + "\n"


def image_changes(res: ProbeResult, max_cases: int = 5) -> list[dict]:
    """Tweets whose predicted labels change when they get another tweet's image (``shuffled``):
    ``{"id", "other" (whose image they got), "gold", "with_own", "with_other"}``."""
    if "shuffled" not in res.pred:
        return []
    out = []
    for i, k in enumerate(res.ids):
        if res.pred["learned"][i] != res.pred["shuffled"][i]:
            out.append({"id": k, "other": res.other[i], "gold": res.gold[i],
                        "with_own": res.pred["learned"][i], "with_other": res.pred["shuffled"][i]})
            if len(out) >= max_cases:
                break
    return out


def image_changes_html(res: ProbeResult, tweets: dict, max_cases: int = 5) -> str:
    """HTML rows for ``image_changes``: the tweet with its own image and its prediction, then with
    the other tweet's image and the prediction it gets then. ``tweets``: {IMGID: Tweet}."""
    rows = []
    for c in image_changes(res, max_cases):
        t, o = tweets[c["id"]], tweets[c["other"]]
        rows.append(f"<tr><td>{thumb_html(t, 96)}</td><td style='text-align:left'><b>{html.escape(t.id)}</b> "
                    f"gold: {spans_html(t.tokens, c['gold'])}<br>with its own image: "
                    f"{spans_html(t.tokens, c['with_own'])}</td>"
                    f"<td>{thumb_html(o, 96)}</td><td style='text-align:left'>with the image of "
                    f"{html.escape(o.id)}: {spans_html(t.tokens, c['with_other'])}</td></tr>")
    if not rows:
        return "<p>No prediction changes when the tweets' images are exchanged.</p>"
    return "<table>" + "".join(rows) + "</table>"
