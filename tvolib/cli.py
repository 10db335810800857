"""``tvomner``: train TVOMNER, tag tweets with a checkpoint, list the ablations.

    tvomner train --data_dir data/twitter2017 --image_dir none \\
        --captions data/captions/blip2_twitter2017.json --dataset twitter2017 \\
        --output_dir runs/t17-full --epochs 4 [--ablation "w/o VAE"] [--visual none ...]
    torchrun --nproc_per_node 2 -m tvolib.cli train ...          # DDP (gloo on CPU, nccl on GPU)
    tvomner predict --checkpoint runs/t17-full/best --input tweets.txt [--image_dir imgs] \\
        [--format json|conll] [--output out.json]
    tvomner ablations                                            # the Table 2 settings
    tvomner track-import [reports/experiments]                   # the committed results into MLflow

``train`` takes every field of ``DataConfig``, ``ModelConfig`` and ``TrainConfig`` as ``--name value``
(Hugging Face ``HfArgumentParser``; ``tvomner train --help`` lists them with their defaults), plus
``--ablation NAME`` to start from a Table 2 setting. Errors are one line on stderr (exit status 1);
``--debug`` shows the full traceback. Logs go to stderr, data (tables, JSON) to stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from transformers import HfArgumentParser
from transformers.utils import logging as hf_logging

from .cache import atomic_write_text
from .checkpoint import rehash
from .config import DataConfig, ModelConfig, TrainConfig
from .evaluate import table1_markdown
from .io import format_output, read_tweets
from .predict import Predictor
from .tracking import main as track_main
from .train import train

COMMANDS_HELP = {
    "train": "train a model (every config field is a flag; --ablation NAME for a Table 2 setting)",
    "predict": "tag tweets (text, one per line, or CoNLL) with a checkpoint folder",
    "ablations": "list the Table 2 settings and the config switches of each",
    "rehash": "record the sha256 of every file of a checkpoint folder saved without them",
    "track-import": "load the committed experiment results (reports/experiments) into the MLflow store",
}

def _none(v):
    return None if isinstance(v, str) and v.lower() in ("none", "null", "") else v


def short_errors(parser):
    """Usage errors as one line (the full flag list is what ``--help`` is for)."""
    def error(message):
        print(f"{parser.prog}: error: {message} ({parser.prog} --help lists the flags)", file=sys.stderr)
        raise SystemExit(2)
    parser.error = error
    return parser


def train_parser():
    """``HfArgumentParser`` over the three configs, every flag with its help and default."""
    parser = HfArgumentParser((DataConfig, ModelConfig, TrainConfig), prog="tvomner train",
                              description="Train TVOMNER (or a baseline); flags are the fields of DataConfig, "
                                          "ModelConfig and TrainConfig (tvolib/config.py). 'none' means None.",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ablation", default=None, choices=list(ModelConfig.ABLATIONS),
                        help="start from a Table 2 setting; explicit model flags still win")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return short_errors(parser)


def cmd_train(argv: list[str]) -> int:
    parser = train_parser()
    out = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    (data_cfg, model_cfg, train_cfg), ns, rest = out[:3], out[3], out[-1]   # ns: --ablation, --debug
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    data_cfg = dataclasses.replace(data_cfg, image_dir=_none(data_cfg.image_dir), captions=_none(data_cfg.captions))
    if ns.ablation:
        given = {a.split("=")[0][2:].replace("-", "_").removeprefix("no_") for a in argv if a.startswith("--")}
        overrides = {k: getattr(model_cfg, k) for k in ModelConfig.ABLATIONS[ns.ablation] if k in given}
        model_cfg = dataclasses.replace(model_cfg.ablation(ns.ablation), **overrides)
    res = train(data_cfg, model_cfg, train_cfg, tracking_tags={"setting": ns.ablation or "full"})
    if "test" in res:
        print(table1_markdown({f"{data_cfg.dataset} (best valid epoch {res['best_epoch']})": res["test"]}))
    return 0


def predict_parser():
    ap = argparse.ArgumentParser(prog="tvomner predict", description="Tag tweets with a checkpoint folder.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a checkpoint folder (<output_dir>/best)")
    ap.add_argument("--input", required=True,
                    help="tweets: one per line (optional 'IMGID<TAB>' prefix), JSONL ({id, text|tokens, image?}), "
                         "or CoNLL with IMGID: lines (labels optional)")
    ap.add_argument("--input_format", default="auto", choices=["auto", "text", "jsonl", "conll"],
                    help="auto: JSONL when the first line starts with '{', CoNLL when it starts with IMGID:")
    ap.add_argument("--image_dir", default=None, help="folder of <IMGID>.jpg|png images (none: text and captions only)")
    ap.add_argument("--captions", default=None, help="{IMGID: caption} JSON (image stand-in)")
    ap.add_argument("--knowledge_file", default=None,
                    help="per-tweet knowledge JSONL for a checkpoint trained with knowledge_source=tweet_files")
    ap.add_argument("--phrases", default=None, help='LLM phrases by IMGID (JSONL {"imgid","phrases"}) for a model '
                    "whose objects come from them (default: none; the checkpoint's own for its own images)")
    ap.add_argument("--boxes", default=None, help='grounded boxes by IMGID (JSONL {"imgid","objects"}), with --phrases')
    ap.add_argument("--without_side_inputs", action="store_true",
                    help="JSON: also the tags with the knowledge and visual input left out, per tweet")
    ap.add_argument("--format", default="json", choices=["json", "conll"], help="output format")
    ap.add_argument("--output", default=None, help="file to write (default: stdout)")
    ap.add_argument("--cache_dir", default=None,
                    help="prediction caches go to <cache_dir>/predict/ (default: $TVOMNER_HOME, ~/.cache/tvomner)")
    ap.add_argument("--kb", default=None,
                    help="another local knowledge base (.sqlite) than the one in the checkpoint (noted in the output)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return short_errors(ap)


def cmd_predict(argv: list[str]) -> int:
    a = predict_parser().parse_args(argv)
    tweets = read_tweets(a.input, a.input_format)
    predictor = Predictor.from_checkpoint(a.checkpoint, device=a.device, cache_dir=a.cache_dir, kb=_none(a.kb))
    res = predictor.predict(tweets, image_dir=_none(a.image_dir), captions=_none(a.captions),
                            knowledge_file=_none(a.knowledge_file), without_side_inputs=a.without_side_inputs,
                            phrases=_none(a.phrases), boxes=_none(a.boxes))
    if predictor.knowledge_summary:             # what per-tweet knowledge the tweets got, or why none
        print(predictor.knowledge_summary, file=sys.stderr)
    text = format_output(res, a.format)
    if a.output:
        atomic_write_text(a.output, text)
        logging.getLogger("tvomner").info("wrote %d tweets to %s", len(res), a.output)
    else:
        sys.stdout.write(text)
    return 0


def cmd_ablations(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="tvomner ablations", description=COMMANDS_HELP["ablations"]).parse_args(
        [a for a in argv if a != "--debug"])
    for name, ov in ModelConfig.ABLATIONS.items():
        print(f"{name:10s} {ov}")
    return 0


def cmd_rehash(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tvomner rehash", description=COMMANDS_HELP["rehash"])
    ap.add_argument("checkpoint", help="a checkpoint folder whose files you trust")
    print(rehash(ap.parse_args([a for a in argv if a != "--debug"]).checkpoint))
    return 0


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "ablations": cmd_ablations, "rehash": cmd_rehash,
            "track-import": lambda argv: track_main(["import", *[a for a in argv if a != "--debug"]])}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: tvomner {" + ",".join(COMMANDS) + "} [--help] [--debug] ...", "",
             "commands:"] + [f"  {c:{width}s}  {COMMANDS_HELP[c]}" for c in COMMANDS]
    lines += ["", "`tvomner COMMAND --help` lists a command's flags with their defaults.",
              "--debug (any command): full traceback on errors instead of one line."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"tvomner: unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
        return 2
    debug = "--debug" in rest
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ:    # no "Loading weights" bar per model opened
        hf_logging.disable_progress_bar()
    if debug and cmd == "train":
        rest = [a for a in rest if a != "--debug"]
    try:
        return COMMANDS[cmd](rest)
    except KeyboardInterrupt:
        print(f"tvomner {cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"tvomner {cmd}: error: {type(e).__name__}: {msg} (--debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
