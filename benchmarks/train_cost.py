"""Training cost of the full TVOMNER against a plain encoder + linear head at equal input.

Both models see exactly the same padded batches of the same tokens (the augmented
``[CLS] tweet [SEP] E: K [SEP] ...`` sequences of the sample, or of a real dataset whose caches are
warm) and the same encoder; the plain model is ``AutoModel`` + a linear layer on each word's first
sub-token with cross-entropy (what a Hugging Face token-classification fine-tune does). We time
forward + backward + AdamW step, after one warm-up step, alternating the two models, and measure
peak memory of each in its own process (CPU: peak RSS growth after the inputs are loaded; GPU:
``torch.cuda.max_memory_allocated``).

    python benchmarks/train_cost.py                       # sample, MiniLM, batch 16, 2 threads
    python benchmarks/train_cost.py --data_dir ../shared/data/twitter2017 --dataset twitter2017 \\
        --image_dir none --captions ../shared/data/captions/blip2_twitter2017.json

Targets (issue 5): ratio full / plain time per tweet <= 1.3, peak memory <= 4 GB with MiniLM.
Writes ``reports/benchmarks/train_cost.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(args) -> dict:
    """Run in a child process: one model variant, returns tweets/s and peak memory."""
    import torch
    import torch.nn as nn
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from tvolib.config import DataConfig, ModelConfig
    from tvolib.sample import SAMPLE_DIR
    from tvolib.assemble import build_model
    from tvolib.device import to_device
    from tvolib.inputs import dataset_from_config, prepare_data
    none = lambda v: None if v in (None, "none", "None") else v
    data_cfg = DataConfig(data_dir=args.data_dir or str(SAMPLE_DIR / "data"),
                          image_dir=none(args.image_dir) if args.data_dir else str(SAMPLE_DIR / "images"),
                          captions=none(args.captions) if args.data_dir else str(SAMPLE_DIR / "captions.json"),
                          dataset=args.dataset, cache_dir=args.cache_dir, max_length=args.max_length,
                          max_train_samples=args.batch_size * (args.steps + 1))
    model_cfg = ModelConfig(text_encoder=args.encoder)
    ds = dataset_from_config(data_cfg)
    prepared = prepare_data(ds, data_cfg, model_cfg)
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    ex = prepared.examples["train"]
    batches = [prepared.collate(ex[i * args.batch_size:(i + 1) * args.batch_size]) for i in range(args.steps + 1)]
    batches = [b for b in batches if b["ids"]]
    base_rss = rss_peak_mb()

    if args.variant == "full":
        model = build_model(model_cfg, prepared.meta).to(device)
    else:
        from transformers import AutoModel
        from tvolib.resources import resolve_text_encoder

        class Plain(nn.Module):
            def __init__(self):
                super().__init__()
                self.enc = AutoModel.from_pretrained(resolve_text_encoder(args.encoder))
                self.head = nn.Linear(self.enc.config.hidden_size, 9)

            def forward(self, batch):
                h = self.enc(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
                h = torch.gather(h, 1, batch["word_index"].unsqueeze(-1).expand(-1, -1, h.size(-1)))
                logits = self.head(h)
                y = batch["labels"].masked_fill(~batch["word_mask"], -100)
                return {"loss": nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)}
        model = Plain().to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, n = [], 0
    for i, b in enumerate(batches):
        b = to_device(b, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(b)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:                                   # first step = warm-up
            times.append(time.perf_counter() - t0)
            n += len(b["ids"])
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else rss_peak_mb()
    return {"variant": args.variant, "tweets_per_s": n / sum(times), "seconds": sum(times), "tweets": n,
            "peak_mb": peak, "peak_growth_mb": peak - (0 if device.type == "cuda" else base_rss),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "mean_input_len": sum(len(e["input_ids"]) for e in ex) / len(ex), "device": device.type}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--dataset", default="sample")
    ap.add_argument("--image_dir", default=None)
    ap.add_argument("--captions", default=None)
    ap.add_argument("--cache_dir", default="cache")
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="alternate full/plain this many times")
    ap.add_argument("--max_length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="reports/benchmarks")
    args = ap.parse_args(argv)
    if args.variant:
        print("RESULT " + json.dumps(measure(args)))
        return
    runs: dict[str, list[dict]] = {"full": [], "plain": []}
    child = [a for a in (argv if argv is not None else sys.argv[1:])]
    for r in range(args.rounds):
        for v in ("plain", "full"):
            out = subprocess.run([sys.executable, __file__, *child, "--variant", v], capture_output=True, text=True)
            line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"{v} failed:\n{out.stderr[-3000:]}")
            res = json.loads(line[0][7:])
            runs[v].append(res)
            print(f"round {r + 1} {v:5s}: {res['tweets_per_s']:.1f} tweets/s, peak {res['peak_mb']:.0f} MB", flush=True)
    best = {v: max(rs, key=lambda x: x["tweets_per_s"]) for v, rs in runs.items()}
    ratio = best["plain"]["tweets_per_s"] / best["full"]["tweets_per_s"]
    summary = {"config": {k: v for k, v in vars(args).items() if k != "variant"},
               "plain_tweets_per_s": best["plain"]["tweets_per_s"], "full_tweets_per_s": best["full"]["tweets_per_s"],
               "time_ratio_full_over_plain": ratio, "target_ratio": 1.3,
               "full_peak_mb": best["full"]["peak_mb"], "plain_peak_mb": best["plain"]["peak_mb"],
               "target_peak_mb": 4096, "mean_input_len": best["full"]["mean_input_len"],
               "params_m": {v: best[v]["params_m"] for v in best}, "runs": runs}
    md = ["# Training cost: full TVOMNER vs plain encoder + linear head (equal input)", "",
          f"Encoder `{args.encoder}`, batch {args.batch_size}, {args.steps} timed steps after one warm-up, "
          f"{args.threads} threads, dataset `{args.dataset}` (mean input {summary['mean_input_len']:.0f} sub-tokens), "
          f"device {best['full']['device']}; best of {args.rounds} alternating rounds.", "",
          "| model | params (M) | fwd+bwd+step tweets/s | peak memory (MB) |", "|---|---:|---:|---:|",
          f"| plain encoder + linear | {best['plain']['params_m']:.1f} | {best['plain']['tweets_per_s']:.1f} | {best['plain']['peak_mb']:.0f} |",
          f"| TVOMNER (full) | {best['full']['params_m']:.1f} | {best['full']['tweets_per_s']:.1f} | {best['full']['peak_mb']:.0f} |",
          "", f"Time ratio full / plain: **{ratio:.2f}x** (target <= 1.3x); full-model peak memory "
          f"**{best['full']['peak_mb'] / 1024:.2f} GB** (target <= 4 GB).",
          "", f"Command: `python benchmarks/train_cost.py {' '.join(child)}`"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_cost.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "train_cost.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
