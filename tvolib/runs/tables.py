"""Table 2 of an experiment and comparisons of two experiments, from the committed artifacts only.

Per dataset: test P / R / F1 of every setting (mean ± sample std over seeds), ΔF1 against the
reference on the seeds both ran with two 95 % intervals (over seeds, t; over test tweets, paired
bootstrap), "beats" when both lie above zero (``tvolib.stats``), the branch probe, and the pairs
named in the parameters file. :func:`compare_experiments` pairs two experiments run by run (e.g.
the same runs in fp32 and bf16); :func:`plot_delta_f1` draws the ΔF1 column.
"""
from __future__ import annotations

import functools
import json
import statistics
from pathlib import Path

from matplotlib.figure import Figure

from ..cache import atomic_write_json, atomic_write_text
from ..evaluate import CONDITIONS, read_predictions
from ..settings import setting_recipe
from ..stats import beats, paired_bootstrap_seeds, seed_interval
from .identity import same_identity


def _fmt_mean_sd(xs: list[float]) -> str:
    if not xs:
        return "—"
    return f"{xs[0]:.2f}" if len(xs) == 1 else f"{statistics.fmean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def finished_runs(folder: Path) -> tuple[dict, dict[str, dict[int, dict]]]:
    """The manifest of ``<experiment>/<dataset>`` and its finished runs of the manifest's recipe:
    ``{setting: {seed: {"metrics": ..., "dir": artifact folder}}}``."""
    man = json.loads((folder / "manifest.json").read_text())
    runs: dict[str, dict[int, dict]] = {}
    for pf in sorted(folder.glob("*/provenance.json")):      # written last by collect(): the run is complete
        m = pf.parent / "metrics.json"
        prov = json.loads(pf.read_text())
        ident = prov["identity"]
        try:                                         # the recipe as the batch planned the setting's run
            own = setting_recipe(ident["setting"], man["recipe"], man["model"])
        except KeyError:                             # a setting this code does not define: as written
            own = man["recipe"]
        if not same_identity({k: ident.get(k) for k in ("recipe", "model", "data")},
                              {"recipe": own, "model": man["model"], "data": man["data"]}):
            continue                                 # another recipe: not this table's run
        runs.setdefault(ident["setting"], {})[ident["seed"]] = {"metrics": json.loads(m.read_text()),
                                                                "dir": m.parent}
    return man, runs


def paired_delta(a: dict[int, dict], b: dict[int, dict], seeds: list[int], where: str, read,
                 file_b: str = "test_predictions.conll.gz",
                 file_a: str = "test_predictions.conll.gz") -> tuple[dict, dict]:
    """ΔF1 = b − a on test over ``seeds`` (runs as in :func:`finished_runs`): the paired tweet
    bootstrap (every seed scored on each resample) and the t-interval over the per-seed deltas.
    ``read`` maps a predictions file to (gold, predictions); ``file_a``, ``file_b``: the runs'
    predictions files (another missing-inputs condition's)."""
    gold, pa, pb = None, [], []
    for sd in seeds:
        g_a, p_a = read(a[sd]["dir"] / file_a)
        g_b, p_b = read(b[sd]["dir"] / file_b)
        if g_a != g_b or (gold is not None and gold != g_a):
            raise ValueError(f"{where} (seed {sd}) were scored on different test sets")
        gold = g_a
        pa.append(p_a)
        pb.append(p_b)
    boot = paired_bootstrap_seeds(gold, pa, pb, n=2000, seed=0)
    over = seed_interval([b[sd]["metrics"]["test"]["F1"] - a[sd]["metrics"]["test"]["F1"] for sd in seeds])
    return boot, over


def _mirror(ci):
    return None if ci is None else [-ci[1], -ci[0]]


def delta_record(boot: dict, over: dict) -> dict:
    """ΔF1 = b − a from :func:`paired_delta`'s two results: per seed, mean, both intervals and which
    side, if either, is shown higher (both intervals on one side of zero)."""
    return {"per_seed": over["per_seed"], "mean": over["mean"], "seed_ci95": over["ci95"],
            "tweet_ci95": boot["ci95"], "b_beats_a": beats(boot, over),
            "a_beats_b": beats({"ci95": _mirror(boot["ci95"])}, {"ci95": _mirror(over["ci95"])})}


def _verdict(d: dict, a: str, b: str) -> str:
    return f"`{b}` higher" if d["b_beats_a"] else f"`{a}` higher" if d["a_beats_b"] else "not shown"


def _condition_f1(metrics: dict, cond: str) -> float | None:
    """Test F1 of a run with the side inputs of ``cond`` left out (``all``: with everything)."""
    if cond == "all":
        return metrics["test"]["F1"]
    return ((metrics.get("missing_inputs") or {}).get(cond) or {}).get("F1")


def compare_experiments(a: Path, b: Path) -> dict:
    """Each (dataset, setting) finished in both experiments ``a`` and ``b`` (folders under
    ``reports/experiments``), paired by seed: ΔF1 = b − a per seed, the t-interval over seeds and the
    paired tweet bootstrap, and what differs between the two recipes (e.g. the precision). A setting
    whose runs of both were also scored with side inputs left out gets a row per condition. Each row
    carries the valid F1 of the selected epochs too: a choice between the recipes reads those."""
    rows, diff, described, summaries = [], {}, {}, {}
    for fa in sorted(p for p in a.glob("*") if (p / "manifest.json").exists()):
        fb = b / fa.name
        if not (fb / "manifest.json").exists():
            continue
        man_a, runs_a = finished_runs(fa)
        man_b, runs_b = finished_runs(fb)
        if man_a["data"] != man_b["data"]:
            raise ValueError(f"{fa} and {fb}: the dataset fields differ; the runs are not comparable")
        diff = {k: (man_a["recipe"].get(k), man_b["recipe"].get(k))
                for k in sorted(set(man_a["recipe"]) | set(man_b["recipe"]))
                if man_a["recipe"].get(k) != man_b["recipe"].get(k)}
        if man_a["model"] != man_b["model"]:
            diff["model"] = (man_a["model"], man_b["model"])
        described[fa.name] = {"recipe": man_a["recipe"], "model": man_a["model"], "facts": man_a.get("facts_text"),
                              "params_file": f"{man_a.get('params_file')}; `{b.name}`: {man_b.get('params_file')}"}
        summaries.update(man_a.get("summaries", {}))
        for setting in [s for s in man_a["settings"] if s in runs_a and s in runs_b]:
            seeds = sorted(set(runs_a[setting]) & set(runs_b[setting]))
            if not seeds:
                continue
            for cond, fname, what in CONDITIONS:
                fa_ = [_condition_f1(runs_a[setting][sd]["metrics"], cond) for sd in seeds]
                fb_ = [_condition_f1(runs_b[setting][sd]["metrics"], cond) for sd in seeds]
                if None in fa_ or None in fb_:
                    continue
                pair = [{sd: {"metrics": {"test": {"F1": f}}, "dir": runs[setting][sd]["dir"]}
                         for sd, f in zip(seeds, fs)} for runs, fs in ((runs_a, fa_), (runs_b, fb_))]
                boot, over = paired_delta(*pair, seeds, f"{fa.name} {setting} ({what} left out)",
                                          read_predictions, file_b=fname, file_a=fname)
                va, vb = ([_valid_f1(r[setting][sd]["metrics"], cond, False) for sd in seeds] for r in (runs_a, runs_b))
                rows.append({"dataset": fa.name, "setting": setting, "left_out": what, "seeds": seeds, "f1_a": fa_,
                             "f1_b": fb_, "valid_a": va, "valid_b": vb, **delta_record(boot, over)})
    return {"a": a.name, "b": b.name, "differs": diff, "rows": rows, "datasets": described,
            "settings": {s: summaries[s] for s in dict.fromkeys(r["setting"] for r in rows) if summaries.get(s)}}


def compare_markdown(c: dict) -> str:
    """The comparison of :func:`compare_experiments` as markdown."""
    what = "; ".join(f"`{k}`: {va!r} in `{c['a']}`, {vb!r} in `{c['b']}`" for k, (va, vb) in c["differs"].items())
    lines = [f"# `{c['b']}` against `{c['a']}`", "",
             f"Recipes differ in: {what or 'nothing'}. Valid F1: the selected epoch's, on the valid split; a "
             "choice between the two recipes reads these columns, never test. ΔF1 = "
             f"`{c['b']}` − `{c['a']}` on test, paired by seed; 95 % intervals over seeds (t) and over test "
             "tweets (paired bootstrap).", "",
             *[f"- `{ds}`, `{c['a']}`'s {_recipe_line(d)}" for ds, d in c.get("datasets", {}).items()], "",
             "Settings (the knowledge each reads): "
             + "; ".join(f"`{s}`: {w}" for s, w in c.get("settings", {}).items()), "",
             f"| dataset | setting | left out | seeds | valid F1 `{c['a']}` | valid F1 `{c['b']}` | F1 `{c['a']}` "
             f"| F1 `{c['b']}` | ΔF1 per seed | mean ΔF1 | over seeds | over tweets | differ? |",
             "|---|---|---|---|---:|---:|---:|---:|---|---:|---|---|---|"]
    if any(r.get("left_out", "nothing") != "nothing" for r in c["rows"]):
        lines[2] += (" \"left out\": the same runs scored with that side input left out of every test tweet "
                     "(as a new tweet without it gets).")
    for r in c["rows"]:
        verdict = _verdict(r, c["a"], c["b"])
        valid = [_fmt_mean_sd([] if None in (r.get(k) or [None]) else r[k]) for k in ("valid_a", "valid_b")]
        lines.append(f"| {r['dataset']} | {r['setting']} | {r.get('left_out', 'nothing')} | "
                     f"{','.join(map(str, r['seeds']))} | {valid[0]} | {valid[1]} | "
                     f"{_fmt_mean_sd(r['f1_a'])} | {_fmt_mean_sd(r['f1_b'])} | "
                     f"{', '.join(f'{x:+.2f}' for x in r['per_seed'])} | {r['mean']:+.2f} | "
                     f"{_ci(r['seed_ci95'])} | {_ci(r['tweet_ci95'])} | {verdict} |")
    if not c["rows"]:
        lines.append("| — | no setting finished in both yet | | | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def dataset_table(folder: Path) -> dict:
    """Table 2 of one dataset from its committed artifacts (``folder`` = ``<experiment>/<dataset>``)."""
    man, runs = finished_runs(folder)
    ref = man["reference"]
    pred = functools.cache(lambda d: read_predictions(d / "test_predictions.conll.gz"))
    rows = []
    for s in man["settings"]:
        row = {"setting": s, "what": man["summaries"].get(s, ""), "identical_to": None, "seeds": []}
        if s in man["identical"]:
            row["identical_to"] = man["identical"][s]["as"]
            row["why"] = man["identical"][s]["why"]
            rows.append(row)
            continue
        got = runs.get(s, {})
        seeds = sorted(got)
        row["seeds"] = seeds
        for c in ("Pre.", "Rec.", "F1"):
            row[c] = [round(got[sd]["metrics"]["test"][c], 6) for sd in seeds]   # rounded when printed
        probes = [got[sd]["metrics"].get("probe") or {} for sd in seeds]
        row["gate_mean"] = _mean([p.get("gate_mean") for p in probes])
        row["shuffle_delta_f1"] = _mean([p.get("shuffle_delta_f1") for p in probes])
        shuffles = [p["shuffle_delta_f1"] for p in probes if p.get("shuffle_delta_f1") is not None]
        if shuffles:                     # the caption-shuffle probe: its spread over seeds as well
            row["shuffle"] = seed_interval(shuffles)
        shared = sorted(set(seeds) & set(runs.get(ref, {})))
        if s != ref and shared:
            boot, over = paired_delta(runs[ref], got, shared, f"{folder}: {s} and {ref}",
                                      lambda f: pred(f.parent))
            row.update(delta_seeds=shared, delta={"per_seed": over["per_seed"], "mean": over["mean"],
                                                  "seed_ci95": over["ci95"], "tweet_ci95": boot["ci95"],
                                                  "p_not_better": boot["p_b_not_better"],
                                                  "beats_reference": beats(boot, over)})
        rows.append(row)
    pairs = []
    for a, b in man.get("comparisons", []):
        shared = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
        pair = {"a": a, "b": b, "seeds": shared}
        if a != b and shared:
            boot, over = paired_delta(runs[a], runs[b], shared, f"{folder}: {b} and {a}", lambda f: pred(f.parent))
            pair.update(f1_a=[round(runs[a][sd]["metrics"]["test"]["F1"], 6) for sd in shared],
                        f1_b=[round(runs[b][sd]["metrics"]["test"]["F1"], 6) for sd in shared],
                        **delta_record(boot, over))
        pairs.append(pair)
    return {"dataset": man["dataset"], "reference": ref, "recipe": man["recipe"], "model": man["model"],
            "facts": man["facts_text"], "params_file": man["params_file"], "rows": rows, "pairs": pairs}


def _ci(ci) -> str:
    return "undefined (1 seed)" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def table_markdown(t: dict) -> str:
    """One dataset's Table 2 as markdown."""
    lines = [f"## {t['dataset']}", "",
             _recipe_line(t) + f" ΔF1 = setting − `{t['reference']}` on the seeds "
             "both ran; intervals at 95 %: over seeds (t) and over test tweets (paired bootstrap, every seed "
             "scored on each resample). \"beats\" needs both above zero. Branch probe on test (full "
             "models): gate = mean g of Eq. 4; shuffle ΔF1 = F1 with every tweet given another tweet's "
             "visual input − F1 as trained, mean over seeds [t-interval over seeds].", "",
             "| setting | seeds | P | R | F1 | ΔF1 per seed | mean ΔF1 | over seeds | over tweets | beats ref. "
             "| gate | shuffle ΔF1 |", "|---|---|---:|---:|---:|---|---:|---|---|---|---:|---:|"]
    for r in t["rows"]:
        if r["identical_to"]:
            lines.append(f"| {r['setting']} | {r['why']} | | | | | | | | | | |")
            continue
        if not r["seeds"]:
            lines.append(f"| {r['setting']} | not run yet | | | | | | | | | | |")
            continue
        d = r.get("delta")
        dcells = ["reference", "", "", "", ""] if r["setting"] == t["reference"] else ["—"] * 5
        if d:
            dcells = [", ".join(f"{x:+.2f}" for x in d["per_seed"]), f"{d['mean']:+.2f}", _ci(d["seed_ci95"]),
                      _ci(d["tweet_ci95"]), "yes" if d["beats_reference"] else "no"]
        gate = "—" if r["gate_mean"] is None else f"{r['gate_mean']:.3f}"
        shuf = "—" if r["shuffle_delta_f1"] is None else f"{r['shuffle_delta_f1']:+.2f}"
        if r.get("shuffle") and r["shuffle"]["ci95"] is not None:
            shuf += f" {_ci(r['shuffle']['ci95'])}"
        lines.append(f"| {r['setting']} | {','.join(map(str, r['seeds']))} | {_fmt_mean_sd(r['Pre.'])} | "
                     f"{_fmt_mean_sd(r['Rec.'])} | {_fmt_mean_sd(r['F1'])} | " + " | ".join(dcells)
                     + f" | {gate} | {shuf} |")
    if t.get("pairs"):
        lines += ["", "Pairs: ΔF1 = b − a on the seeds both ran, with the same two intervals; a side is "
                  "\"higher\" only when both lie on that side of zero.", "",
                  "| a | b | seeds | F1 a | F1 b | ΔF1 per seed | mean ΔF1 | over seeds | over tweets | verdict |",
                  "|---|---|---|---:|---:|---|---:|---|---|---|"]
        for q in t["pairs"]:
            if "per_seed" not in q:
                why = "the same setting on this dataset" if q["a"] == q["b"] else "no seed run by both yet"
                lines.append(f"| {q['a']} | {q['b']} | {why} | | | | | | | |")
                continue
            lines.append(f"| {q['a']} | {q['b']} | {','.join(map(str, q['seeds']))} | {_fmt_mean_sd(q['f1_a'])} | "
                         f"{_fmt_mean_sd(q['f1_b'])} | {', '.join(f'{x:+.2f}' for x in q['per_seed'])} | "
                         f"{q['mean']:+.2f} | {_ci(q['seed_ci95'])} | {_ci(q['tweet_ci95'])} | "
                         f"{_verdict(q, q['a'], q['b'])} |")
    lines += ["", "Settings: " + "; ".join(f"`{r['setting']}`: {r['what']}" for r in t["rows"] if r["what"])]
    return "\n".join(lines)


def missing_inputs_table(folder: Path, reference: str = "text-only") -> dict | None:
    """Test F1 of every setting with its side inputs, and with the knowledge, the visual input or
    both left out of every tweet (``metrics.json`` → ``missing_inputs``), and ΔF1 against
    ``reference`` (which reads neither) under each condition, paired by seed, with the interval over
    seeds and the paired tweet bootstrap. None when no run of ``folder`` has the figures."""
    man, runs = finished_runs(folder)
    return missing_rows(man, runs, str(folder), reference)


def missing_rows(man: dict, runs: dict[str, dict[int, dict]], where: str, reference: str = "text-only",
                 any_rows: bool = False) -> dict | None:
    """The missing-inputs table of runs shaped as :func:`finished_runs`'s (``metrics``: ``test``
    and ``missing_inputs``; ``dir``: the folder of their predictions files); None when no setting
    was scored with side inputs left out (with ``any_rows``: when no run was scored at all)."""
    ref = runs.get(reference, {})
    rows = []
    for s in man["settings"]:
        got = {sd: r for sd, r in runs.get(s, {}).items()
               if s == reference or r["metrics"].get("missing_inputs") is not None}
        if not got:
            continue
        row = {"setting": s, "what": man["summaries"].get(s, ""), "seeds": sorted(got), "cells": {}}
        for cond, fname, _ in CONDITIONS:
            def f1(r, c=("all" if s == reference else cond)):     # text-only reads no side input
                return _condition_f1(r["metrics"], c)
            seeds = [sd for sd in row["seeds"] if f1(got[sd]) is not None]
            if not seeds:
                continue
            cell = {"seeds": seeds, "F1": [round(f1(got[sd]), 6) for sd in seeds]}
            valid = [_valid_f1(got[sd]["metrics"], cond, s == reference) for sd in seeds]
            if any(v is not None for v in valid):       # what a choice among settings may look at
                cell["valid_F1"] = valid
            shared = sorted(set(seeds) & set(ref))
            if s != reference and shared:
                a = {sd: {"metrics": ref[sd]["metrics"], "dir": ref[sd]["dir"]} for sd in shared}
                b = {sd: {"metrics": {"test": {"F1": f1(got[sd])}}, "dir": got[sd]["dir"]} for sd in shared}
                boot, over = paired_delta(a, b, shared, f"{where}: {s} ({cond}) and {reference}",
                                          read_predictions, file_b=fname)
                cell["delta"] = delta_record(boot, over)
            row["cells"][cond] = cell
        rows.append(row)
    if not rows or not (any_rows or any(r["setting"] != reference and len(r["cells"]) > 1 for r in rows)):
        return None
    return {"dataset": man["dataset"], "reference": reference, "recipe": man["recipe"], "model": man["model"],
            "facts": man["facts_text"], "params_file": man["params_file"], "rows": rows}


def _valid_f1(metrics: dict, cond: str, reference: bool) -> float | None:
    """Valid F1 of a run under a missing-inputs condition (the selected epoch's; None when the run
    was not scored on valid with the inputs left out)."""
    if cond == "all" or reference:
        v = (metrics.get("valid") or {}).get("F1")
    else:
        v = ((metrics.get("missing_inputs_valid") or {}).get(cond) or {}).get("F1")
    return None if v is None else round(v, 6)


def _recipe_line(t: dict) -> str:
    """What produced a table's runs: the recipe, the model beside the defaults, the parameters file
    and the dataset's facts."""
    return (f"Recipe: `{json.dumps(t['recipe'])}`" + (f", model `{json.dumps(t['model'])}`" if t["model"] else "")
            + f" ({t['params_file']}). Dataset: {t['facts']}.")


def missing_inputs_markdown(t: dict) -> str:
    has_valid = any("valid_F1" in c for r in t["rows"] for c in r["cells"].values())
    lines = [f"## {t['dataset']}: side inputs left out at test time", "", _recipe_line(t), "",
             "Test F1 with every tweet's side inputs, and with the knowledge (the candidates stay), the visual "
             "input (image, caption, objects) or both left out of every tweet, as a new tweet without them "
             f"gets. ΔF1 = setting − `{t['reference']}` (which reads neither) on the seeds both ran; 95 % "
             "intervals over seeds (t) and over test tweets (paired bootstrap); \"higher\"/\"lower\" only when "
             "both intervals lie on one side of zero." + (" Valid F1: the same on the valid split (the selected "
             "epoch), which a choice between recipes may use (test never)." if has_valid else ""), "",
             "| setting | left out | seeds | F1 |" + (" valid F1 |" if has_valid else "")
             + " ΔF1 per seed | mean ΔF1 | over seeds | over tweets | verdict |",
             "|---|---|---|---:|" + ("---:|" if has_valid else "") + "---|---:|---|---|---|"]
    for r in t["rows"]:
        for cond, _, what in CONDITIONS:
            c = r["cells"].get(cond)
            if c is None or (r["setting"] == t["reference"] and cond != "all"):
                continue
            d = c.get("delta")
            cells = ["reference", "", "", "", ""] if r["setting"] == t["reference"] else ["—"] * 5
            if d:
                verdict = "higher" if d["b_beats_a"] else "lower" if d["a_beats_b"] else "not shown"
                cells = [", ".join(f"{x:+.2f}" for x in d["per_seed"]), f"{d['mean']:+.2f}", _ci(d["seed_ci95"]),
                         _ci(d["tweet_ci95"]), verdict]
            valid = [v for v in c.get("valid_F1") or [] if v is not None]
            f1 = _fmt_mean_sd(c["F1"]) + (f" | {_fmt_mean_sd(valid) if valid else '—'}" if has_valid else "")
            lines.append(f"| {r['setting']} | {what} | {','.join(map(str, c['seeds']))} | {f1} | "
                         + " | ".join(cells) + " |")
    lines += ["", "Settings (what each reads, its knowledge source included): "
              + "; ".join(f"`{r['setting']}`: {r['what']}" for r in t["rows"] if r["what"])]
    return "\n".join(lines)


def write_tables(exp_dir: Path) -> dict:
    """``table2.md`` and ``table2.json`` of an experiment from every dataset folder in it, and
    ``missing_inputs.{md,json}`` where its runs were also scored with side inputs left out."""
    folders = [d for d in sorted(exp_dir.glob("*")) if (d / "manifest.json").exists()]
    tables = [dataset_table(d) for d in folders]
    out = {"experiment": exp_dir.name, "tables": tables}
    if tables:
        atomic_write_json(exp_dir / "table2.json", out)
        md = [f"# Experiment `{exp_dir.name}`: test set (seqeval micro P/R/F1, epoch selected on valid F1), "
              "mean ± sample std over seeds", ""]
        md += [table_markdown(t) + "\n" for t in tables]
        atomic_write_text(exp_dir / "table2.md", "\n".join(md))
    missing = [t for t in (missing_inputs_table(d) for d in folders) if t is not None]
    if missing:
        atomic_write_json(exp_dir / "missing_inputs.json", {"experiment": exp_dir.name, "tables": missing})
        atomic_write_text(exp_dir / "missing_inputs.md",
                          f"# Experiment `{exp_dir.name}`: side inputs left out at test time\n\n"
                          + "\n\n".join(missing_inputs_markdown(t) for t in missing) + "\n")
    return out


def _plot_caption(rows: list[dict]) -> str:
    """What the bars and error bars of ``plot_delta_f1`` show, honest about settings with one seed."""
    with_ci = sum(1 for r in rows if r["delta"]["seed_ci95"])
    if with_ci == 0:
        return "one seed shared with the reference per setting: bars = ΔF1, no interval over seeds"
    note = "" if with_ci == len(rows) else f" ({len(rows) - with_ci} with one seed shared: no interval)"
    return f"mean over seeds, 95 % t-interval over seeds{note}, dots = seeds"


def plot_delta_f1(tables: list[dict]):
    """ΔF1 against the reference per setting and dataset: bars = mean over seeds, error bars = the
    t-interval over seeds (none with one seed), dots = the seeds. Returns the figure."""
    fig = Figure(figsize=(max(5.0, 1.2 * max((len(t["rows"]) for t in tables), default=1)), 3.2 * max(len(tables), 1)))
    axes = fig.subplots(max(len(tables), 1), 1, squeeze=False)[:, 0]
    for ax, t in zip(axes, tables):
        rows = [r for r in t["rows"] if r.get("delta")]
        xs = list(range(len(rows)))
        means = [r["delta"]["mean"] for r in rows]
        lo = [m - r["delta"]["seed_ci95"][0] if r["delta"]["seed_ci95"] else 0 for m, r in zip(means, rows)]
        hi = [r["delta"]["seed_ci95"][1] - m if r["delta"]["seed_ci95"] else 0 for m, r in zip(means, rows)]
        ax.bar(xs, means, yerr=[lo, hi], capsize=4, color=["tab:green" if m > 0 else "tab:red" for m in means],
               alpha=0.6)
        for x, r in zip(xs, rows):
            ax.plot([x] * len(r["delta"]["per_seed"]), r["delta"]["per_seed"], "k.", ms=5)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(xs, [r["setting"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"ΔF1 vs {t['reference']}")
        ax.set_title(f"{t['dataset']}: {_plot_caption(rows)}", fontsize=9)
    fig.tight_layout()
    return fig
