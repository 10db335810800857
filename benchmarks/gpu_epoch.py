"""Seconds per training epoch of the full TVOMNER at the paper's scale, on one GPU (prepared; run it
where a GPU is lent: ``python benchmarks/gpu_epoch.py``; goal <= 30 s on one H200).

The model is built from configs in code (no weights needed for speed): a RoBERTa-large-sized text
encoder (24 layers, 1024 wide, 16 heads, vocabulary 50265) with Eq. 1, the VFO module (ViT-B/32-sized
visual width 768, caption width 384), CFF (1 cross-attention layer), BiLSTM (256 per direction),
CRF. Inputs are synthetic but Twitter-2015-sized: 4000 tweets, 8–35 words each, augmented sequences
of 40–``--seq_len`` sub-tokens (tweet + knowledge), visual features for every tweet. AdamW with the
two learning rates, batch 64, bf16 autocast, gradient clipping: exactly the trainer's step.

    python benchmarks/gpu_epoch.py                 # GPU, bf16, RoBERTa-large-sized
    python benchmarks/gpu_epoch.py --tiny --device cpu --tweets 64     # smoke test on CPU

Prints seconds per epoch and tweets/s; writes ``reports/benchmarks/gpu_epoch.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tweets", type=int, default=4000)          # Twitter-2015 train
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--seq_len", type=int, default=160)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no_bf16", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="a tiny encoder (CPU smoke test)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the text encoder backbone")
    ap.add_argument("--out", default="reports/benchmarks")
    args = ap.parse_args(argv)

    import torch
    from transformers import RobertaConfig
    from tvolib.config import ModelConfig, TrainConfig
    from tvolib.model import TVOMNER
    from tvolib.tfo.encoder import TextEncoder
    from tvolib.model import TEXT_KEYS
    from tvolib.train import param_groups
    from tvolib.vfo.fusion import GLOB_CAPTION, OBJ_PHRASES
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    if args.tiny:
        enc_cfg = RobertaConfig(vocab_size=50265, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=514)
    else:
        enc_cfg = RobertaConfig(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1)
    cfg = ModelConfig(text_encoder="roberta-large", num_heads=8 if not args.tiny else 4)
    feats = {"image": 768, "caption": 384}
    from tvolib.vfo.fusion import VisualFeatureOptimizer
    text = TextEncoder.from_config(enc_cfg, num_heads=cfg.num_heads, dropout=cfg.dropout)
    model = TVOMNER(cfg, 9, text, VisualFeatureOptimizer(cfg, text.hidden_size, feats), TEXT_KEYS).to(device)
    if args.compile:
        model.text.backbone = torch.compile(model.text.backbone, dynamic=True)
    tcfg = TrainConfig(lr=3e-5, head_lr=1e-3)
    opt = torch.optim.AdamW(param_groups(model, tcfg), lr=tcfg.lr, fused=device.type == "cuda")

    g = torch.Generator().manual_seed(0)
    n_words = torch.randint(8, 36, (args.tweets,), generator=g)
    lengths = torch.maximum(torch.randint(40, args.seq_len + 1, (args.tweets,), generator=g), n_words + 2)

    def make_batch(idx):
        B = len(idx)
        L, W = int(lengths[idx].max()), int(n_words[idx].max())
        input_ids = torch.randint(5, 50000, (B, L), generator=g)
        attention_mask = torch.zeros(B, L, dtype=torch.long)
        word_index = torch.zeros(B, W, dtype=torch.long)
        word_mask = torch.zeros(B, W, dtype=torch.bool)
        for b, i in enumerate(idx.tolist()):
            attention_mask[b, :lengths[i]] = 1
            word_index[b, :n_words[i]] = torch.arange(1, int(n_words[i]) + 1)
            word_mask[b, :n_words[i]] = True
        labels = torch.randint(0, 9, (B, W), generator=g) * word_mask
        visual = {"glob_image": torch.zeros(B, 768), "glob_caption": torch.randn(B, 384, generator=g),
                  "glob_kind": torch.full((B,), GLOB_CAPTION), "obj_image": torch.zeros(B, 768),
                  "obj_text": torch.randn(B, 384, generator=g), "obj_kind": torch.full((B,), OBJ_PHRASES)}
        visual["glob_mask"] = visual["glob_kind"] > 0
        visual["obj_mask"] = visual["obj_kind"] > 0
        b = {"input_ids": input_ids, "attention_mask": attention_mask, "word_index": word_index,
             "word_mask": word_mask, "labels": labels, "visual": visual}
        return {k: ({kk: vv.to(device, non_blocking=True) for kk, vv in v.items()} if isinstance(v, dict)
                    else v.to(device, non_blocking=True)) for k, v in b.items()}

    order = torch.randperm(args.tweets, generator=g)
    batches = [make_batch(order[i:i + args.batch_size]) for i in range(0, args.tweets, args.batch_size)]
    use_bf16 = device.type == "cuda" and not args.no_bf16

    def step(b):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            out = model(b)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    for b in batches[:2]:                          # warm-up (kernels, allocator, compile)
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    # evaluation pass (Viterbi) over a Twitter-2015-sized valid split (1000 tweets)
    model.eval()
    t1 = time.perf_counter()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
        for b in batches[: max(1, 1000 // args.batch_size)]:
            model.decode({k: v for k, v in b.items() if k != "labels"})
    if device.type == "cuda":
        torch.cuda.synchronize()
    eval_sec = time.perf_counter() - t1
    res = {"seconds_per_epoch": sec, "tweets": args.tweets, "tweets_per_s": args.tweets / sec,
           "valid_1000_decode_seconds": eval_sec, "batch_size": args.batch_size, "seq_len_max": args.seq_len,
           "bf16": use_bf16, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
           "tiny": args.tiny, "compile": args.compile, "goal_seconds": 30}
    print(json.dumps(res, indent=2))
    print(f"seconds per epoch: {sec:.1f} ({args.tweets / sec:.0f} tweets/s) on {res['device']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu_epoch" if not args.tiny else "gpu_epoch_tiny"
    (out / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{name}.md").write_text(
        f"# One Twitter-2015-sized training epoch, RoBERTa-large-sized TVOMNER\n\n"
        f"{res['seconds_per_epoch']:.1f} s per epoch ({res['tweets_per_s']:.0f} tweets/s), batch {args.batch_size}, "
        f"bf16 {use_bf16}, {res['params_m']:.0f} M parameters, device {res['device']}, peak memory "
        f"{res['peak_memory_gb']} GB; decoding 1000 tweets {eval_sec:.1f} s. Goal: <= 30 s on one H200.\n\n"
        f"Command: `python benchmarks/gpu_epoch.py{' --tiny' if args.tiny else ''}`\n")


if __name__ == "__main__":
    main()
