"""What sharing the encoder pass saves when a checkpoint is scored (``tvolib.scoring``), and that it
changes no prediction.

For a run folder (its ``best/``) or a checkpoint folder, on the test split (and valid, with
``--valid``), every scoring pass is run twice: once each on its own (its own encoder pass, as before
the passes were grouped), once grouped as ``tvolib.scoring.score_checkpoint`` groups them (test,
``no_visual`` and the four branch probes over one T; ``no_knowledge`` with ``neither``). Prints the
seconds of each way, the encoder passes, and whether every pass's predictions are identical.

    python benchmarks/scoring.py runs/table2/twitter2015/tvomner-wiki-s3 --max_samples 500 \
        --out reports/benchmarks/scoring.md
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def scoring_cost(run: str | Path, max_samples: int | None = None, batch_size: int = 64,
                 valid: bool = False) -> dict:
    from tvolib.checkpoint import load_checkpoint
    from tvolib.config import DataConfig, ModelConfig, from_dict
    from tvolib.data import Dataset
    from tvolib.evaluate import predict_visual_variants
    from tvolib.inputs import dataset_from_config, prepare_data
    from tvolib.resources import resolve
    from tvolib.scoring import pass_groups

    run = Path(run)
    ckpt = run / "best" if (run / "best").exists() else run
    model, info, meta = load_checkpoint(ckpt)
    model_cfg, data_cfg = from_dict(ModelConfig, info["model"]), from_dict(DataConfig, info["data"])
    full = dataset_from_config(data_cfg)
    ds = Dataset(name=full.name, data_dir=full.data_dir, image_dir=full.image_dir,
                 splits={"train": full.splits["train"], "test": full.splits["test"][:max_samples],
                         "valid": full.splits["valid"][:max_samples] if valid else []})
    prepared = prepare_data(ds, data_cfg, model_cfg, resolve(data_cfg, model_cfg), meta=meta)
    # one group per encoder pass, exactly as tvolib.scoring.score_checkpoint scores a run
    groups = [(g.examples, g.variants) for g in pass_groups(model, prepared, reads_knowledge=model_cfg.reads_knowledge,
                                                            splits=("test", "valid") if valid else ("test",))]

    t0 = time.perf_counter()
    alone = {}
    for ex, variants in groups:
        for n, v in variants.items():
            alone[n] = predict_visual_variants(model, ex, {n: v}, batch_size)[0][n]
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    grouped = {}
    for ex, variants in groups:
        grouped |= predict_visual_variants(model, ex, variants, batch_size)[0]
    t_grouped = time.perf_counter() - t0
    return {"checkpoint": str(ckpt), "tweets": len(ds.splits["test"]), "valid_tweets": len(ds.splits["valid"]),
            "passes": len(alone),
            "encoder_passes_alone": len(alone), "encoder_passes_grouped": len(groups),
            "seconds_alone": round(t_alone, 1), "seconds_grouped": round(t_grouped, 1),
            "identical": all(alone[n] == grouped[n] for n in alone),
            "different": sorted(n for n in alone if alone[n] != grouped[n])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder (its best/ checkpoint is used) or a checkpoint folder")
    ap.add_argument("--max_samples", type=int, default=None, help="the first N test (and valid) tweets")
    ap.add_argument("--valid", action="store_true", help="also the valid passes (missing inputs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--out", help="also write the table to this Markdown file, with the command and the commit")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    r = scoring_cost(args.run, args.max_samples, args.batch_size, args.valid)
    text = "\n".join([
        f"{r['checkpoint']}: {r['passes']} passes over {r['tweets']} test"
        + (f" and {r['valid_tweets']} valid" if args.valid else "") + f" tweets, {args.threads} thread(s)", "",
        "| scoring | encoder passes | seconds |", "|---|---:|---:|",
        f"| each pass on its own | {r['encoder_passes_alone']} | {r['seconds_alone']} |",
        f"| grouped (tvolib.scoring) | {r['encoder_passes_grouped']} | {r['seconds_grouped']} |", "",
        "predictions: " + ("identical in every pass" if r["identical"] else f"DIFFERENT in {r['different']}")])
    print(text)
    if args.out:
        import shlex
        import sys
        from tvolib.cache import atomic_write_text
        from tvolib.runs.notebook import git_commit
        git = git_commit()
        atomic_write_text(args.out, f"# Scoring a checkpoint: passes on their own and grouped\n\n"
                          f"`python benchmarks/scoring.py {shlex.join(sys.argv[1:] if argv is None else argv)}`"
                          f" at {git['commit']}{' with uncommitted changes' if git['dirty'] else ''}\n\n{text}\n")
    raise SystemExit(0 if r["identical"] else 1)


if __name__ == "__main__":
    main()
