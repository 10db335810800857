"""The visual-probe benchmark: does the model read the image when only the image tells the type?

    python benchmarks/visual_probe.py                      # full and text-only, seeds 1-3 -> reports/visual_probe.*
    python benchmarks/visual_probe.py --settings full --seeds 1 --model_set gate_init=0.95

Generates the benchmark with ``tvolib.sample.probe`` (into ``--data``, once: 2000 / 500 / 1000 tweets),
trains each setting for each seed (``tvolib.visual_probe.train_on_probe``: the 2000 training tweets,
2 epochs, batch 16, lr 3e-5 for MiniLM and 1e-3 for the new layers, 48 sub-tokens, bf16 where the CPU
has it) and probes each trained model on the test split (``tvolib.probing.branch_probe``): F1 on the
``ambiguous`` tweets (the type is in the image only) and on the rest, F1 when every tweet gets another
tweet's image (``shuffled``) or when Eq. 5 keeps T alone (g = 1), and the per-tweet gate g (Eq. 4),
fusion weights ω (Eq. 3) and attention to V by subset.

Both settings see the tweet alone on the text side (``use_candidates=False``: no candidate tagger,
no knowledge), so they differ only by the visual half:

* ``full``: VFO (VAE Eq. 2, global image feature, grounded objects, fusion Eq. 3) + CFF (Eq. 4-5);
* ``text-only``: ``visual="none"``, the encoder-BiLSTM-CRF.

Runs go to ``--runs`` (resumable: a finished run is read back, not retrained); the table and the
per-run figures go to ``reports/visual_probe.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from tvolib.config import DEFAULT_MAX_LENGTH

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ("full", "text-only")


def _coerce(v: str):
    for f in (int, float):
        try:
            return f(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


def run_one(setting: str, seed: int, args, overrides: dict) -> dict:
    import torch
    from tvolib.probing import subset_groups
    from tvolib.visual_probe import train_on_probe

    tag = "".join(f"+{k}{v}" for k, v in sorted(overrides.items()))
    out_dir = Path(args.runs) / f"{setting}{tag}-s{seed}"
    probe_file = out_dir / "probe.json"
    if probe_file.exists():
        return json.loads(probe_file.read_text())
    t0 = time.time()
    run = train_on_probe(args.data, str(out_dir), setting, seed, max_train_samples=args.max_train_samples,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr,
                         max_length=args.max_length, num_threads=args.threads, cache_dir=args.cache,
                         model_overrides=overrides, precision=args.precision)
    torch.set_num_threads(args.threads)
    groups = subset_groups(run["subsets"])
    by_subset = {name: run["probe"].summary(groups.get(name, set()))
                 for name in ("ambiguous", "text", "unrelated", "noimage", "rest")}
    by_subset["all"] = run["probe"].summary()
    result = run["result"]
    rec = {"setting": setting, "seed": seed, "overrides": overrides, "best_epoch": result.get("best_epoch"),
           "best_valid_f1": result.get("best_valid_f1"), "precision": result.get("precision"),
           "seconds": round(time.time() - t0, 1), "by_subset": by_subset}
    from tvolib.cache import atomic_write_json
    atomic_write_json(probe_file, rec)
    return rec


def _ms(xs):
    xs = [x for x in xs if x == x]
    if not xs:
        return "—"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def render(records: list[dict]) -> str:
    from tvolib.stats import seed_interval
    lines = ["| setting | seeds | F1 ambiguous | F1 rest | ΔF1 ambiguous, images shuffled | ΔF1 rest, shuffled | "
             "ΔF1 ambiguous, g = 1 (no C) | g ambiguous | g text | g unrelated | g no image | "
             "attention to V: ambiguous / unrelated | ω (t, glob, obj) ambiguous |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    groups: dict = {}
    for r in records:
        groups.setdefault((r["setting"], json.dumps(r["overrides"], sort_keys=True)), []).append(r)
    for (setting, ov), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])

        def sub(name, key):
            return [r["by_subset"][name].get(key, float("nan")) for r in rs]

        def f1(name, probe="learned"):
            return [r["by_subset"][name]["f1"].get(probe, float("nan")) for r in rs]

        no_c = [a - b for a, b in zip(f1("ambiguous", "gate=1"), f1("ambiguous"))]
        om = [r["by_subset"]["ambiguous"].get("omega_mean") for r in rs]
        om = [statistics.mean(o[k] for o in om) for k in range(3)] if all(om) else None
        att = f"{_ms(sub('ambiguous', 'visual_attn_mean'))} / {_ms(sub('unrelated', 'visual_attn_mean'))}"
        name = setting + ("" if ov == "{}" else f" {ov}")
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in rs)} | {_ms(f1('ambiguous'))} | {_ms(f1('rest'))} | "
                     f"{_ms(sub('ambiguous', 'shuffle_delta_f1'))} | {_ms(sub('rest', 'shuffle_delta_f1'))} | "
                     f"{_ms(no_c)} | {_ms(sub('ambiguous', 'gate_mean'))} | {_ms(sub('text', 'gate_mean'))} | "
                     f"{_ms(sub('unrelated', 'gate_mean'))} | {_ms(sub('noimage', 'gate_mean'))} | "
                     f"{'—' if att == '— / —' else att} | {'—' if om is None else ', '.join(f'{x:.2f}' for x in om)} |")
    # full against text-only, paired by seed
    full = {r["seed"]: r for r in records if r["setting"] == "full" and not r["overrides"]}
    text = {r["seed"]: r for r in records if r["setting"] == "text-only" and not r["overrides"]}
    seeds = sorted(set(full) & set(text))
    if seeds:
        lines += ["", "Full against text-only, paired by seed (t-interval over seeds, 95 %):", ""]
        for name in ("ambiguous", "rest"):
            d = [full[s]["by_subset"][name]["f1"]["learned"] - text[s]["by_subset"][name]["f1"]["learned"]
                 for s in seeds]
            iv = seed_interval(d)
            ci = iv["ci95"]
            lines.append(f"- {name}: " + ", ".join(f"{x:+.2f}" for x in d) + f" → mean {iv['mean']:+.2f}"
                         + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else f" ({iv['note']})"))
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--data", default="cache/probe/data", help="benchmark folder (generated when absent)")
    ap.add_argument("--data_seed", type=int, default=0)
    ap.add_argument("--runs", default="runs/visual_probe")
    ap.add_argument("--cache", default="cache")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--head_lr", type=float, default=1e-3)
    ap.add_argument("--max_length", type=int, default=DEFAULT_MAX_LENGTH)
    ap.add_argument("--max_train_samples", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model_set", action="append", default=[], metavar="FIELD=VALUE",
                    help="ModelConfig override for every run (named in the run folder)")
    ap.add_argument("--report", default=str(ROOT / "reports" / "visual_probe"),
                    help="writes <report>.md and <report>.json ('none': print only)")
    args = ap.parse_args(argv)
    overrides = {k: _coerce(v) for k, v in (s.split("=", 1) for s in args.model_set)}
    if not (Path(args.data) / "subsets.json").exists():
        from tvolib.sample.probe import generate
        print(f"generating the benchmark into {args.data}", file=sys.stderr)
        generate(args.data, seed=args.data_seed)
    records = []
    for seed in args.seeds:
        for setting in args.settings:
            rec = run_one(setting, seed, args, overrides)
            records.append(rec)
            a = rec["by_subset"]["ambiguous"]
            print(f"{setting} seed {seed}: F1 ambiguous {a['f1']['learned']:.2f} "
                  f"(shuffled {a['f1'].get('shuffled', float('nan')):.2f}), rest "
                  f"{rec['by_subset']['rest']['f1']['learned']:.2f}, gate {a.get('gate_mean', '—')}", flush=True)
    table = render(records)
    print(table)
    if args.report != "none":
        rep = Path(args.report)
        rep.parent.mkdir(parents=True, exist_ok=True)
        from tvolib.cache import atomic_write_json
        atomic_write_json(rep.with_suffix(".json"), {"args": vars(args), "runs": records})
        rep.with_suffix(".md").write_text("# Visual-probe benchmark\n\n" + table)


if __name__ == "__main__":
    main()
