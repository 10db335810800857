"""How much does a trained full model use each branch? ``tvolib.probing.branch_probe`` on one split.

For a run's best checkpoint this prints the learned gate g of Eq. 4 (share of the text branch T),
the fusion weights ω of Eq. 3 and the share of attention the words give the visual slot, then the
split's F1 when

* ``learned``: the model as trained;
* ``gate=1``: Eq. 5 keeps T alone (the cross-modal branch C is switched off);
* ``gate=0``: Eq. 5 keeps C alone;
* ``shuffled``: every tweet gets another tweet's visual input (its caption features and objects),
  knowledge and text unchanged.

A model that ignores the visual side scores the same under ``shuffled``; one that ignores C scores
the same under ``gate=1``.

    python benchmarks/branch_usage.py runs/experiments/visual/twitter2017/tvomner+pgim-s1 --split test

Writes ``<run>/branch_usage_<split>.json`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def probe_run(run: str | Path, split: str = "test", max_samples: int | None = None, batch_size: int = 64) -> dict:
    """The probe summary of a run folder (its ``best/``) or a checkpoint folder on one split."""
    from tvolib.checkpoint import load_checkpoint
    from tvolib.config import DataConfig, ModelConfig, from_dict
    from tvolib.data import Dataset
    from tvolib.inputs import dataset_from_config, prepare_data
    from tvolib.probing import branch_probe
    from tvolib.resources import resolve

    run = Path(run)
    ckpt = run / "best" if (run / "best").exists() else run
    model, info, meta = load_checkpoint(ckpt)
    if model.cff is None:
        raise SystemExit(f"{ckpt}: a model without a visual part (visual='none') has no gate or visual branch to probe")
    model_cfg = from_dict(ModelConfig, info["model"])
    data_cfg = from_dict(DataConfig, info["data"])
    full = dataset_from_config(data_cfg)
    tweets = full.splits[split][:max_samples]
    ds = Dataset(name=full.name, data_dir=full.data_dir, image_dir=full.image_dir,
                 splits={"train": full.splits["train"], "valid": [], "test": []} | {split: tweets})
    prepared = prepare_data(ds, data_cfg, model_cfg, resolve(data_cfg, model_cfg), meta=meta)
    res = branch_probe(model, prepared.examples[split], prepared.collate, prepared.visual, batch_size=batch_size)
    return {"checkpoint": str(ckpt), "split": split, **res.summary()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder (its best/ checkpoint is used) or a checkpoint folder")
    ap.add_argument("--split", default="valid", choices=["train", "valid", "test"])
    ap.add_argument("--max_samples", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch_size", type=int, default=64)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    res = probe_run(args.run, args.split, args.max_samples, args.batch_size)
    run = Path(args.run)
    (run / f"branch_usage_{args.split}.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"{res['checkpoint']} on {args.split} ({res['tweets']} tweets)")
    print(f"gate g (Eq. 4): mean {res['gate_mean']:.4f} ± {res['gate_std']:.4f}")
    print(f"ω (Eq. 3) mean [t, glob, obj]: {res['omega_mean']} (std {res['omega_std']})")
    if res.get("visual_attn_mean") is not None:
        print(f"attention share of the visual slot: {res['visual_attn_mean']:.4f}")
    print("\n| probe | F1 |\n|---|---:|")
    for k, v in res["f1"].items():
        print(f"| {k} | {v:.2f} |")


if __name__ == "__main__":
    main()
