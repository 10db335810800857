"""``tvomner`` command line.

    tvomner train --data_dir ../shared/data/twitter2017 --image_dir none \\
        --captions ../shared/data/captions/blip2_twitter2017.json --dataset twitter2017 \\
        --output_dir runs/t17-full --epochs 4 [--visual none --use_candidates false ...]
    torchrun --nproc_per_node 2 -m tvolib.cli train ...          # DDP (gloo on CPU, nccl on GPU)
    tvomner predict --checkpoint runs/t17-full/best --input tweets.txt [--image_dir imgs] \\
        [--format json|conll] [--output out.json]
    tvomner ablations                                            # the Table 2 settings

``train`` takes every field of ``DataConfig``, ``ModelConfig`` and ``TrainConfig`` as ``--name value``
(Hugging Face ``HfArgumentParser``), plus ``--ablation NAME`` to start from a Table 2 setting.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys


def _none(v):
    return None if isinstance(v, str) and v.lower() in ("none", "null", "") else v


def cmd_train(argv: list[str]) -> int:
    from transformers import HfArgumentParser
    from .config import DataConfig, ModelConfig, TrainConfig
    ablation = None
    if "--ablation" in argv:
        i = argv.index("--ablation")
        ablation = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    parser = HfArgumentParser((DataConfig, ModelConfig, TrainConfig), prog="tvomner train")
    data_cfg, model_cfg, train_cfg = parser.parse_args_into_dataclasses(args=argv)
    data_cfg = dataclasses.replace(data_cfg, image_dir=_none(data_cfg.image_dir), captions=_none(data_cfg.captions))
    if ablation:
        overrides = {k: getattr(model_cfg, k) for k in ModelConfig.ABLATIONS.get(ablation, {})
                     if f"--{k}" in argv}
        model_cfg = dataclasses.replace(model_cfg.ablation(ablation), **overrides)
    from .train import train
    res = train(data_cfg, model_cfg, train_cfg)
    if "test" in res:
        from .evaluate import table1_markdown
        print(table1_markdown({f"{data_cfg.dataset} (best valid epoch {res['best_epoch']})": res["test"]}))
    return 0


def cmd_predict(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tvomner predict", description="tag tweets with a checkpoint")
    ap.add_argument("--checkpoint", required=True, help="a checkpoint folder (<output_dir>/best)")
    ap.add_argument("--input", required=True, help="tweets, one per line (optional 'IMGID<TAB>'), or CoNLL")
    ap.add_argument("--input_format", default="auto", choices=["auto", "text", "conll"])
    ap.add_argument("--image_dir", default=None)
    ap.add_argument("--captions", default=None, help="{IMGID: caption} JSON (image stand-in)")
    ap.add_argument("--format", default="json", choices=["json", "conll"])
    ap.add_argument("--output", default=None, help="file to write (default: stdout)")
    ap.add_argument("--cache_dir", default=None)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    from .predict import Predictor, format_output, read_tweets
    tweets = read_tweets(a.input, a.input_format)
    res = Predictor(a.checkpoint, a.device, a.cache_dir).predict(tweets, a.image_dir, a.captions)
    text = format_output(res, a.format)
    if a.output:
        from .cache import atomic_write_text
        atomic_write_text(a.output, text)
        print(f"wrote {len(res)} tweets to {a.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_ablations(argv: list[str]) -> int:
    from .config import ModelConfig
    for name, ov in ModelConfig.ABLATIONS.items():
        print(f"{name:10s} {ov}")
    return 0


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "ablations": cmd_ablations}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        print("commands:", ", ".join(COMMANDS))
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
