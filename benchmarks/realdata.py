"""History: tables of the real-data runs made before the experiment batch existed.

Experiments now run through the papermill batch (``python -m tvolib.runs --params
params/table2_twitter2017.yaml``; settings in ``tvolib.settings``). This script no longer trains;
it only rebuilds ``reports/results/realdata.{json,md}`` from the old run folders
``runs/realdata/<dataset>/<setting>-<encoder>-s<seed>/`` where they still exist, and compares two
of their settings:

    python benchmarks/realdata.py --summary            # tables from every finished old run
    python benchmarks/realdata.py --dataset twitter2015 --compare A B   # setting B against A

Old setting names: ``text-only`` = tweet alone (now ``text-only``), ``full`` = local knowledge (now
``tvomner-wiki``), ``full-tweetfiles`` = per-tweet PGIM texts (now ``tvomner+pgim``); ``+lenN`` and
``+FIELDVALUE`` suffixes record a non-default ``max_length`` or model field. With another
``--runs`` folder, the tables go into that folder. Runs on a subsample are listed but left out.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def _group(run_dir: Path) -> tuple[str, int]:
    """``full-tweetfiles-minilm-s2`` -> (``full-tweetfiles-minilm``, 2)."""
    m = re.fullmatch(r"(.+)-s(\d+)", run_dir.name)
    return (m.group(1), int(m.group(2))) if m else (run_dir.name, 0)


def _mean_std(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def _section(title: str, columns: list[str]) -> list[str]:
    """A markdown section opening a table; a column named ``"x:"`` is right-aligned."""
    names = [c.rstrip(":") for c in columns]
    rule = ["---:" if c.endswith(":") else "---" for c in columns]
    return ["", f"## {title}", "", "| " + " | ".join(names) + " |", "|" + "|".join(rule) + "|"]


def finished_runs(runs: Path) -> tuple[list[dict], list[str]]:
    """Every finished run under ``runs/<dataset>/<setting>-s<seed>/`` as a dict (dataset, group,
    seed, epochs, test scores...), and the runs on a subsample (``max_*_samples``), which are
    quick checks, not results, and are left out of every table and comparison."""
    raw, subsampled = [], []
    for res in sorted(runs.glob("*/*/results.json")):
        r = json.loads(res.read_text())
        cfg = res.parent / "config.json"
        data_cfg = json.loads(cfg.read_text()).get("data", {}) if cfg.exists() else {}
        if data_cfg.get("max_train_samples") is not None or data_cfg.get("max_eval_samples") is not None:
            subsampled.append(str(res.parent))
            continue
        group, seed = _group(res.parent)
        raw.append({"run": str(res.parent), "dataset": r["dataset"], "group": group, "seed": seed,
                    "epochs": r.get("train", {}).get("epochs"), "best_epoch": r["best_epoch"],
                    "best_valid_f1": r["best_valid_f1"], "test": r["test"], "epochs_run": r["epochs_run"],
                    "tweets_per_s": [h["tweets_per_s"] for h in r["history"]],
                    "valid_f1_per_epoch": [h["valid_f1"] for h in r["history"]]})
    return raw, subsampled


def paired_over_seeds(pairs: list[tuple[str, str]], predictions) -> dict:
    """:func:`tvolib.stats.paired_bootstrap_seeds` for (run a, run b) folder pairs, one per seed;
    ``predictions(run)`` gives (gold, predicted). Every run must be scored on the same test set."""
    from tvolib.stats import paired_bootstrap_seeds
    gold, preds_a, preds_b = None, [], []
    for run_a, run_b in pairs:
        g_a, p_a = predictions(run_a)
        g_b, p_b = predictions(run_b)
        if g_a != g_b or (gold is not None and g_a != gold):
            raise ValueError(f"{run_a} and {run_b} were not scored on the same test set as the other seeds")
        gold = g_a
        preds_a.append(p_a)
        preds_b.append(p_b)
    return paired_bootstrap_seeds(gold, preds_a, preds_b, n=2000, seed=0)


def summary(runs: Path, out: Path, baseline: str = "text-only") -> None:
    """Tables from every finished run: one row per run, one row per setting over its seeds
    (mean ± sample std), each full-model setting against the text-only run of the same seed and
    epochs (paired bootstrap over test tweets), and the same pooled over the seeds they share.
    Runs on a subsample (``max_*_samples``) are listed but left out of every table."""
    from tvolib.cache import atomic_write_text
    from tvolib.evaluate import TABLE1_COLUMNS, read_predictions, table1_markdown
    from tvolib.stats import paired_bootstrap
    raw, subsampled = finished_runs(runs)
    rows = {f"{i['dataset']} · {Path(i['run']).name}": i["test"] for i in raw}
    groups: dict[tuple, list[dict]] = {}
    for item in raw:
        groups.setdefault((item["dataset"], item["group"], item["epochs"]), []).append(item)
    # runs still in progress: per-epoch valid F1 so far
    partial = []
    for st in sorted(runs.glob("*/*/last/state.json")):
        if (st.parent.parent / "results.json").exists():
            continue
        s = json.loads(st.read_text())
        partial.append({"run": str(st.parent.parent), "epochs_done": s["epoch"],
                        "valid_f1_per_epoch": [h["valid_f1"] for h in s["history"]]})
    agg = []
    for (ds, group, epochs), items in sorted(groups.items()):
        agg.append({"dataset": ds, "setting": group, "epochs": epochs, "seeds": sorted(i["seed"] for i in items),
                    "test": {c: _mean_std([i["test"][c] for i in items]) for c in TABLE1_COLUMNS},
                    "test_f1": [round(i["test"]["F1"], 2) for i in items],
                    "valid_f1": _mean_std([i["best_valid_f1"] for i in items])})
    preds: dict[str, tuple] = {}        # run -> (gold, predicted): each file is read once

    def predictions(run: str) -> tuple:
        if run not in preds:
            preds[run] = read_predictions(Path(run) / "test_predictions.txt")
        return preds[run]

    # each setting against the text-only run of the same dataset, encoder, seed and epochs
    paired = []
    by_key = {(i["dataset"], i["group"], i["seed"], i["epochs"]): i for i in raw}
    for i in raw:
        setting, _, enc = i["group"].rpartition("-")
        if setting == baseline:
            continue
        base = by_key.get((i["dataset"], f"{baseline}-{enc}", i["seed"], i["epochs"]))
        if base is None:
            continue
        gold, pa = predictions(base["run"])
        gold_b, pb = predictions(i["run"])
        if gold != gold_b:
            raise ValueError(f"{i['run']} and {base['run']} were scored on different test sets")
        bs = paired_bootstrap(gold, pa, pb, n=2000, seed=0)
        paired.append({"dataset": i["dataset"], "setting": i["group"], "against": base["group"],
                       "seed": i["seed"], "epochs": i["epochs"],
                       "delta_valid_f1": round(i["best_valid_f1"] - base["best_valid_f1"], 2), **bs})
    # the same over all seeds a setting shares with text-only: mean Δ over seeds, one interval
    pooled = []
    by_group: dict[tuple, list[dict]] = {}
    for p in paired:
        by_group.setdefault((p["dataset"], p["setting"], p["against"], p["epochs"]), []).append(p)
    for (ds, group, against, epochs), ps in sorted(by_group.items()):
        if len(ps) < 2:
            continue
        seeds = sorted(p["seed"] for p in ps)
        pairs = [(by_key[(ds, against, sd, epochs)]["run"], by_key[(ds, group, sd, epochs)]["run"]) for sd in seeds]
        pooled.append({"dataset": ds, "setting": group, "against": against, "epochs": epochs, "seeds": seeds,
                       **paired_over_seeds(pairs, predictions)})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "realdata.json", json.dumps({"finished": raw, "by_setting": agg, "paired": paired,
                                                   "paired_over_seeds": pooled, "in_progress": partial,
                                                   "subsampled": subsampled}, indent=2) + "\n")
    md = ["# Real-data results (test set, seqeval, best valid epoch)", "", "## Every run", "",
          table1_markdown(rows, "Run")]
    md += _section("Per setting over seeds (mean ± sample std)",
                   ["dataset", "setting", "epochs:", "seeds", *(c + ":" for c in TABLE1_COLUMNS), "best valid F1:"])
    md += [f"| {a['dataset']} | {a['setting']} | {a['epochs']} | {','.join(map(str, a['seeds']))} | "
           + " | ".join(a["test"][c] for c in TABLE1_COLUMNS) + f" | {a['valid_f1']} |" for a in agg]
    if paired:
        md += _section(f"Against {baseline} (same dataset, encoder, seed, epochs; paired bootstrap over test "
                       "tweets, 2000 resamples)", ["dataset", "setting", "seed:", "epochs:", "Δ test F1:",
                                                   "95 % interval", "p(not better):", "Δ valid F1:"])
        md += [f"| {p['dataset']} | {p['setting']} | {p['seed']} | {p['epochs']} | {p['delta_f1']:+.2f} | "
               f"[{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] | {p['p_b_not_better']:.3f} | {p['delta_valid_f1']:+.2f} |"
               for p in paired]
    if pooled:
        md += _section(f"Against {baseline}, over seeds (mean over seeds of the paired Δ; each resample scores "
                       "every seed on the same tweets)", ["dataset", "setting", "epochs:", "seeds", "Δ per seed",
                                                          "mean Δ test F1:", "95 % interval", "p(not better):"])
        md += [f"| {q['dataset']} | {q['setting']} | {q['epochs']} | {','.join(map(str, q['seeds']))} | "
               + ", ".join(f"{d:+.2f}" for d in q["per_seed"]) + f" | {q['delta_f1']:+.2f} | "
               f"[{q['ci95'][0]:+.2f}, {q['ci95'][1]:+.2f}] | {q['p_b_not_better']:.3f} |" for q in pooled]
    if subsampled:
        md += ["", "## Left out: runs on a subsample (max_train_samples / max_eval_samples)", ""]
        md += [f"- `{r}`" for r in subsampled]
    if partial:
        md += ["", "## Unfinished runs (valid F1 per epoch so far)", ""]
        md += [f"- `{p['run']}`: epochs {p['epochs_done']}, valid F1 {[round(x, 2) for x in p['valid_f1_per_epoch']]}"
               for p in partial]
    atomic_write_text(out / "realdata.md", "\n".join(md) + "\n")
    print("\n".join(md))


def compare(runs: Path, dataset: str, a: str, b: str) -> dict:
    """Setting ``b`` against setting ``a`` (run names without ``-s<seed>``, e.g.
    ``full-tweetfiles+gate_init0.95-minilm``) over the seeds both finished on ``dataset`` (runs on a
    subsample left out, as in the tables): the pooled paired bootstrap of :func:`paired_over_seeds`."""
    from tvolib.evaluate import read_predictions
    raw, _ = finished_runs(runs)
    runs_a = {i["seed"]: i["run"] for i in raw if i["dataset"] == dataset and i["group"] == a}
    runs_b = {i["seed"]: i["run"] for i in raw if i["dataset"] == dataset and i["group"] == b}
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        raise SystemExit(f"--compare: no seed has finished both {a!r} ({sorted(runs_a) or 'none'}) and {b!r} "
                         f"({sorted(runs_b) or 'none'}) under {runs / dataset}")
    try:
        res = paired_over_seeds([(runs_a[sd], runs_b[sd]) for sd in seeds],
                                lambda run: read_predictions(Path(run) / "test_predictions.txt"))
    except ValueError as e:
        raise SystemExit(f"--compare: {e}") from None
    res = {"dataset": dataset, "a": a, "b": b, "seeds": seeds, **res}
    print(f"{dataset}: {b} against {a}, seeds {','.join(map(str, seeds))}: Δ test F1 per seed "
          + ", ".join(f"{d:+.2f}" for d in res["per_seed"]) + f"; mean {res['delta_f1']:+.2f} "
          f"(95 % interval {res['ci95'][0]:+.2f} to {res['ci95'][1]:+.2f}, p(not better) {res['p_b_not_better']:.3f})")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="twitter2017", choices=["twitter2015", "twitter2017"])
    ap.add_argument("--runs", default="runs/realdata")
    ap.add_argument("--summary", action="store_true", help="write reports/results/realdata.* from the old runs")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                    help="print setting B against setting A on --dataset (run names without -s<seed>), "
                         "paired bootstrap over the seeds both finished")
    ap.add_argument("--out", default=None,
                    help="where the summary goes: reports/results for the default --runs, else the --runs folder "
                         "(a scratch run never overwrites the committed tables)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = "reports/results" if args.runs == "runs/realdata" else args.runs
    if args.summary:
        summary(Path(args.runs), Path(args.out))
        return
    if args.compare:
        compare(Path(args.runs), args.dataset, *args.compare)
        return
    ap.error("training moved to `python -m tvolib.runs --params <file>`; here only --summary or --compare")


if __name__ == "__main__":
    main()
