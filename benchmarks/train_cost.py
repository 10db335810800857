"""Training cost at the real input: full TVOMNER against a plain encoder + linear head.

Both models see the same padded batches of the same tokens: the augmented
``[CLS] tweet [SEP] E: K [SEP] ...`` inputs of a setting (default ``tvomner+pgim`` on the dataset of
a parameters file, truncated at each ``--max_length``), in the trainer's order (random batches of
``--batch_size`` tweets, padded to the longest). The plain model is ``AutoModel`` + a linear layer on
each word's first sub-token with cross-entropy, what a Hugging Face token-classification fine-tune
does. One training step is forward + backward + AdamW; each cell times ``--steps`` steps after one
warm-up step, for every encoder x length x precision x thread count.

Reported per cell: tweets/s; tokens/s (real and padded); the share of padding; GFLOP/s achieved
(``torch.utils.flop_counter`` counts the matrix products of one step, forward and backward); and
the same against the core's measured matrix-product peak (a square fp32 / bf16 ``matmul`` on the same
threads). With ``--pairs``, two 1-thread runs of the full model side by side are set against one
2-thread run: which gives more tweets per hour on this machine.

    python benchmarks/train_cost.py                                        # sample, MiniLM
    python benchmarks/train_cost.py --params params/visual_twitter2017.yaml --cache_dir cache \\
        --encoder minilm mpnet --max_length 96 160 --precision fp32 bf16 --threads 1 2 --pairs

Targets: full / plain time at equal input <= 1.3; bf16 steps >= 1.3x (MiniLM) and >= 2x
(MPNet-base) faster than fp32. Writes ``<out>/train_cost.{json,md}``. Run it on an otherwise idle
machine: every figure is a wall-clock time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def prepare(args, encoder: str, out: Path) -> dict:
    """Collate the batches every cell of one encoder uses; saves them (and the model meta) to ``out``."""
    import dataclasses
    import torch
    from tvolib.config import DEFAULT_TEXT_ENCODER
    from tvolib.inputs import dataset_from_config, prepare_data
    from tvolib.resources import resolve
    from tvolib.tfo.pipeline import augmentations
    from tvolib.settings import configs
    if args.params:
        from tvolib.runs.plan import load_experiment
        exp = load_experiment(args.params)
        name, spec = next(iter(exp["datasets"].items()))
    else:
        name, spec = "sample", {}
    lengths = {}
    meta = None
    for L in args.max_length:
        data_cfg, model_cfg, _ = configs(name, spec, args.setting, 1, {"max_length": L},
                                         model={"text_encoder": encoder}, cache_dir=args.cache_dir,
                                         materialize=True)
        ds = dataset_from_config(data_cfg)
        # the candidates and knowledge of the default encoder's tagger (cached by training runs), so
        # every encoder sees the same text; only the tokenizer differs
        base_cfg = dataclasses.replace(model_cfg, text_encoder=DEFAULT_TEXT_ENCODER)
        augs = augmentations(ds, base_cfg, resolve(data_cfg, base_cfg))
        prepared = prepare_data(ds, data_cfg, model_cfg, resolve(data_cfg, model_cfg), augs=augs)
        ex = prepared.examples["train"]
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(ex), generator=g).tolist()
        n = args.batch_size * (args.steps + 2)                  # warm-up, FLOP count, timed steps
        batches = [prepared.collate([ex[i] for i in order[k:k + args.batch_size]])
                   for k in range(0, n, args.batch_size)]
        # padding if the whole training split were batched this way vs. grouped by length
        lens = [len(e["input_ids"]) for e in ex]
        rand = [lens[i] for i in order]
        padded_random = sum(max(rand[k:k + args.batch_size]) * len(rand[k:k + args.batch_size])
                            for k in range(0, len(rand), args.batch_size))
        srt = sorted(lens)
        padded_sorted = sum(max(srt[k:k + args.batch_size]) * len(srt[k:k + args.batch_size])
                            for k in range(0, len(srt), args.batch_size))
        lengths[L] = {"batches": batches, "mean_len": sum(lens) / len(lens),
                      "split_padding_random": 1 - sum(lens) / padded_random,
                      "split_padding_grouped": 1 - sum(lens) / padded_sorted,
                      "dataset": name}
        meta = prepared.meta
        mcfg = model_cfg
    torch.save({"lengths": lengths, "meta": meta, "model_cfg": mcfg}, out)
    return {L: {k: v for k, v in d.items() if k != "batches"} for L, d in lengths.items()}


def matmul_peak(dtype, threads: int, n: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of a square ``matmul`` in ``dtype`` on ``threads`` threads (the achievable peak)."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.matmul(a, b)
        k += 1
    return 2 * n ** 3 * k / (time.perf_counter() - t0) / 1e9


def build(variant: str, model_cfg, meta: dict):
    import torch.nn as nn
    from tvolib.assemble import build_model
    if variant == "full":
        return build_model(model_cfg, meta)
    from transformers import AutoModel
    from tvolib.weights import resolve_text_encoder
    import torch

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = AutoModel.from_pretrained(resolve_text_encoder(model_cfg.text_encoder))
            self.head = nn.Linear(self.enc.config.hidden_size, 9)

        def forward(self, batch):
            h = self.enc(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            h = torch.gather(h, 1, batch["word_index"].unsqueeze(-1).expand(-1, -1, h.size(-1)))
            logits = self.head(h).float()
            y = batch["labels"].masked_fill(~batch["word_mask"].bool(), -100)
            return {"loss": nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)}
    return Plain()


def step(model, opt, batch, precision: str):
    import torch
    from tvolib.device import autocast
    with autocast(torch.device("cpu"), precision):
        loss = model(batch)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure(args) -> list[dict]:
    """Child process: every (length, precision, threads) cell of one encoder and variant."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    saved = torch.load(args.batches, weights_only=False)
    model = build(args.variant, saved["model_cfg"], saved["meta"])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=args.adamw == "fused" or None)
    cells = []
    for L in args.max_length:
        batches = saved["lengths"][L]["batches"]
        counter = FlopCounterMode(display=False)
        with counter:
            step(model, opt, batches[1], "fp32")
        flops_per_tweet = counter.get_total_flops() / len(batches[1]["ids"])
        for precision in args.precision:
            for threads in args.threads:
                torch.set_num_threads(threads)
                step(model, opt, batches[0], precision)             # warm-up
                t, tw, real, pad = 0.0, 0, 0, 0
                for b in batches[2:]:
                    t0 = time.perf_counter()
                    step(model, opt, b, precision)
                    t += time.perf_counter() - t0
                    tw += len(b["ids"])
                    real += int(b["attention_mask"].sum())
                    pad += b["attention_mask"].numel()
                cells.append({"encoder": args.encoder[0], "variant": args.variant, "max_length": L,
                              "precision": precision, "threads": threads, "seconds_per_step": t / len(batches[2:]),
                              "tweets_per_s": tw / t, "real_tokens_per_s": real / t, "padded_tokens_per_s": pad / t,
                              "batch_padding": 1 - real / pad, "gflop_per_tweet": flops_per_tweet / 1e9,
                              "gflops": flops_per_tweet * tw / t / 1e9,
                              "params_m": sum(p.numel() for p in model.parameters()) / 1e6})
                print(f"  {args.encoder[0]:6s} {args.variant:5s} L={L:3d} {precision} {threads}t: "
                      f"{cells[-1]['seconds_per_step']:.2f} s/step", file=sys.stderr, flush=True)
    return cells


def child(args, extra: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def result(p: subprocess.Popen, what: str):
    out, err = p.communicate()
    line = [l for l in out.splitlines() if l.startswith("RESULT ")]
    if p.returncode or not line:
        sys.exit(f"{what} failed:\n{err[-3000:]}")
    sys.stderr.write(err)
    return json.loads(line[0][7:])


def markdown(summary: dict) -> str:
    c = summary["config"]
    peak = summary["peak_gflops"]
    md = ["# Training cost at the real input: full TVOMNER vs plain encoder + linear head", "",
          f"Setting `{c['setting']}` on `{summary['dataset']}` ({c['params'] or 'the embedded sample'}), batches of "
          f"{c['batch_size']} training tweets in random order padded to the longest, {c['steps']} timed "
          f"steps (forward + backward + AdamW, {c.get('adamw', 'torch-default')}) after one warm-up; CPU, otherwise idle. GFLOP/s: matrix-product "
          "FLOPs of one step (torch flop counter, forward + backward) per second; peak: a square 2048 matmul "
          "in the same precision on the same threads "
          + ", ".join(f"{k}: {v:.0f} GFLOP/s" for k, v in peak.items()) + ".", "",
          "| encoder | input | precision | threads | plain s/step | full s/step | full / plain | full tweets/s "
          "| full real tok/s | padding | full GFLOP/s | % of peak | bf16 speed-up (full) |",
          "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cells = {(x["encoder"], x["variant"], x["max_length"], x["precision"], x["threads"]): x for x in summary["cells"]}
    order = lambda k: (k[0], k[2], k[3] != "fp32", k[4])
    for (enc, var, L, prec, th), full in sorted(cells.items(), key=lambda kv: order(kv[0])):
        if var != "full":
            continue
        plain = cells.get((enc, "plain", L, prec, th))
        fp32 = cells.get((enc, "full", L, "fp32", th))
        speed = f"{fp32['seconds_per_step'] / full['seconds_per_step']:.2f}x" if fp32 and prec == "bf16" else ""
        md.append(f"| {enc} | {L} | {prec} | {th} | {plain['seconds_per_step']:.2f} | {full['seconds_per_step']:.2f} | "
                  f"{full['seconds_per_step'] / plain['seconds_per_step']:.2f} | {full['tweets_per_s']:.1f} | "
                  f"{full['real_tokens_per_s']:.0f} | {100 * full['batch_padding']:.0f} % | {full['gflops']:.0f} | "
                  f"{100 * full['gflops'] / peak[f'{prec} {th}t']:.0f} % | {speed} |")
    md += ["", "Mean input length and padding over the whole training split (batches of "
           f"{c['batch_size']}): "
           + "; ".join(f"{L} sub-tokens: mean {d['mean_len']:.1f}, padding {100 * d['split_padding_random']:.0f} % "
                       f"in random batches, {100 * d['split_padding_grouped']:.0f} % if grouped by length"
                       for L, d in summary["lengths"][c["encoder"][0]].items())]
    if summary.get("pairs"):
        md += ["", "## One run on two threads, or two runs on one thread each", "",
               "| encoder | input | precision | one run, 2 threads: tweets/s | two 1-thread runs side by side: "
               "tweets/s (sum) | ratio |", "|---|---:|---|---:|---:|---:|"]
        for p in summary["pairs"]:
            md.append(f"| {p['encoder']} | {p['max_length']} | {p['precision']} | {p['one_run_2_threads']:.2f} | "
                      f"{p['two_runs_1_thread']:.2f} ({' + '.join(f'{x:.2f}' for x in p['each'])}) | "
                      f"{p['two_runs_1_thread'] / p['one_run_2_threads']:.2f} |")
    md += ["", f"Command: `python benchmarks/train_cost.py {' '.join(summary['argv'])}`"]
    return "\n".join(md) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=None, help="a tvolib.runs parameters file: its first dataset")
    ap.add_argument("--setting", default="tvomner+pgim")
    ap.add_argument("--cache_dir", default="cache")
    ap.add_argument("--encoder", nargs="+", default=["minilm"])
    ap.add_argument("--max_length", nargs="+", type=int, default=[96])
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--adamw", default="fused", choices=["fused", "torch-default"], help="as TrainConfig.adamw")
    ap.add_argument("--pairs", action="store_true", help="also: two 1-thread full runs side by side vs one 2-thread run")
    ap.add_argument("--out", default="reports/benchmarks")
    ap.add_argument("--name", default="train_cost", help="file stem of the report")
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batches", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--peak", action="store_true", help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    if args.peak:
        import torch
        print("RESULT " + json.dumps({f"{p} {t}t": matmul_peak(torch.float32 if p == "fp32" else torch.bfloat16, t)
                                      for p in args.precision for t in args.threads}))
        return
    if args.variant:
        print("RESULT " + json.dumps(measure(args)))
        return
    if args.params and not Path(args.params).exists():
        sys.exit(f"{args.params}: no such parameters file")
    tmp = Path(tempfile.mkdtemp(prefix="train_cost-"))
    lengths, cells, pairs = {}, [], []
    common = ["--max_length", *map(str, args.max_length), "--precision", *args.precision,
              "--threads", *map(str, args.threads), "--batch_size", str(args.batch_size), "--steps", str(args.steps),
              "--adamw", args.adamw]
    peak = result(child(args, ["--peak", *common]), "peak")
    print("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()), flush=True)
    for enc in args.encoder:
        f = tmp / f"{enc}.pt"
        lengths[enc] = prepare(args, enc, f)
        for variant in ("plain", "full"):
            cells += result(child(args, [*common, "--encoder", enc, "--variant", variant, "--batches", str(f)]),
                            f"{enc} {variant}")
        if args.pairs and 1 in args.threads and 2 in args.threads:
            for L in args.max_length:
                for prec in args.precision:
                    one = ["--max_length", str(L), "--precision", prec, "--threads", "1", "--batch_size",
                           str(args.batch_size), "--steps", str(args.steps), "--adamw", args.adamw,
                           "--encoder", enc, "--variant", "full",
                           "--batches", str(f)]
                    ps = [child(args, one), child(args, one)]
                    each = [result(p, "pair")[0]["tweets_per_s"] for p in ps]
                    two = [x for x in cells if (x["encoder"], x["variant"], x["max_length"], x["precision"],
                                                x["threads"]) == (enc, "full", L, prec, 2)][0]
                    pairs.append({"encoder": enc, "max_length": L, "precision": prec, "each": each,
                                  "two_runs_1_thread": sum(each), "one_run_2_threads": two["tweets_per_s"]})
    summary = {"config": {k: v for k, v in vars(args).items() if k not in ("variant", "batches", "peak")},
               "argv": argv, "dataset": next(iter(next(iter(lengths.values())).values()))["dataset"],
               "peak_gflops": peak, "lengths": lengths, "cells": cells, "pairs": pairs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from tvolib.cache import atomic_write_json, atomic_write_text
    atomic_write_json(out / f"{args.name}.json", summary)
    md = markdown(summary)
    atomic_write_text(out / f"{args.name}.md", md)
    print(md)


if __name__ == "__main__":
    main()
