"""Tweets per second of ``tvomner predict`` on CPU, beside a plain Hugging Face token-classification
pipeline on the same encoder.

    .venv/bin/python benchmarks/predict_speed.py --text runs/t17-text/best --full runs/t17-full/best \
        --input tweets.conll --image_dir imgs --captions caps.json --threads 1
    .venv/bin/python benchmarks/predict_speed.py --quick        # trains throwaway sample checkpoints first

For each checkpoint: the time to load it, tweets/s of the first ``predict`` call on a fresh prediction
cache (cold: candidates, knowledge retrieval and filtering, image features are computed) and of the
same call again (warm: every cached stage is read back, only the model runs). The plain pipeline is
``transformers.pipeline("token-classification")`` over the checkpoint's encoder (a fresh linear
head; its accuracy is not the point, its cost is). Target: the full model within 3x of
the plain pipeline with its knowledge cached (the "warm / plain" column).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_checkpoints(out: Path, threads: int) -> dict[str, Path]:
    """A text-only and a full model trained one short epoch on the sample (speed, not accuracy)."""
    from tvolib.config import DataConfig, ModelConfig, TrainConfig
    from tvolib.train import train
    ckpts = {}
    data = DataConfig(cache_dir=str(out / "cache"), max_train_samples=16, max_eval_samples=8, max_length=96)
    for name, model in (("text-only", ModelConfig(visual="none", use_candidates=False)), ("full", ModelConfig())):
        res = train(data, model, TrainConfig(output_dir=str(out / name), epochs=1, batch_size=8, micro_batch_size=8,
                                             num_threads=threads, progress=False, resume=False))
        ckpts[name] = Path(res["checkpoint"])
    return ckpts


def plain_pipeline_rate(encoder_dir: Path, texts: list[str], batch_size: int) -> float:
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    model = AutoModelForTokenClassification.from_pretrained(str(encoder_dir), num_labels=9)
    nlp = pipeline("token-classification", model=model, tokenizer=tok, device=-1)
    nlp(texts[:2])                                   # first-call overheads out of the timing
    t0 = time.perf_counter()
    nlp(texts, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", help="text-only checkpoint folder")
    ap.add_argument("--full", help="full-model checkpoint folder")
    ap.add_argument("--quick", action="store_true", help="train throwaway sample checkpoints first")
    ap.add_argument("--input", help="tweets (text or CoNLL); default: the sample's 120 tweets")
    ap.add_argument("--image_dir", default=None)
    ap.add_argument("--captions", default=None)
    ap.add_argument("--n", type=int, default=60, help="tweets to tag")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    from tvolib.data import read_conll
    from tvolib.predict import Predictor, read_tweets
    from tvolib.sample import SAMPLE_DIR
    work = Path(tempfile.mkdtemp(prefix="predict_speed-"))
    ckpts = {}
    if args.quick:
        ckpts = quick_checkpoints(work, args.threads)
    if args.text:
        ckpts["text-only"] = Path(args.text)
    if args.full:
        ckpts["full"] = Path(args.full)
    if not ckpts:
        ap.error("give --text and/or --full checkpoints, or --quick")
    if args.input:
        tweets = read_tweets(args.input)
        image_dir, captions = args.image_dir, args.captions
    else:
        tweets = [t for s in ("test", "valid", "train") for t in read_conll(SAMPLE_DIR / "data" / f"{s}.txt")]
        image_dir = args.image_dir or SAMPLE_DIR / "images"
        captions = args.captions or SAMPLE_DIR / "captions.json"
    tweets = tweets[: args.n]            # distinct tweets: a repeated tweet is computed once
    rows = []
    for name, ckpt in ckpts.items():
        t0 = time.perf_counter()
        p = Predictor.from_checkpoint(ckpt, cache_dir=str(work / f"pcache-{name}"))
        load = time.perf_counter() - t0
        rates = []
        for _ in ("cold", "warm"):
            t0 = time.perf_counter()
            p.predict(tweets, image_dir=image_dir, captions=captions, batch_size=args.batch_size)
            rates.append(len(tweets) / (time.perf_counter() - t0))
        from tvolib.weights import resolve_text_encoder
        enc = Path(resolve_text_encoder(p.model_cfg.text_encoder))      # the pretrained encoder's own folder
        plain = plain_pipeline_rate(enc, [" ".join(t.tokens) for t in tweets], args.batch_size)
        rows.append({"model": name, "load_s": round(load, 2), "cold_tweets_per_s": round(rates[0], 2),
                     "warm_tweets_per_s": round(rates[1], 2), "plain_pipeline_tweets_per_s": round(plain, 2),
                     "warm_slowdown_vs_plain": round(plain / rates[1], 2)})
    print(f"{len(tweets)} tweets, {args.threads} thread(s), batch {args.batch_size}, CPU")
    print("| model | load (s) | cold tweets/s | warm tweets/s | plain pipeline tweets/s | warm / plain (x slower) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['load_s']} | {r['cold_tweets_per_s']} | {r['warm_tweets_per_s']} | "
              f"{r['plain_pipeline_tweets_per_s']} | {r['warm_slowdown_vs_plain']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
