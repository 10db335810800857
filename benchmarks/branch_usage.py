"""How much does a trained full model use each branch? Probes at inference on one split.

For a run's best checkpoint this prints the learned gate g of Eq. 4 (share of the text branch T),
the fusion weights ω of Eq. 3 and the share of attention the tokens give the visual slot, then the
split's F1 when

* ``learned``: the model as trained;
* ``g=1 (T only)``: Eq. 5 keeps T alone (the cross-modal branch C is switched off);
* ``g=0 (C only)``: Eq. 5 keeps C alone;
* ``visual shuffled``: every tweet gets another tweet's visual input (its caption features and
  objects, rolled by one within each batch), knowledge and text unchanged.

A model that ignores the visual side scores the same under ``visual shuffled``; one that ignores C
scores the same under ``g=1``.

    python benchmarks/branch_usage.py runs/realdata/twitter2017/full-tweetfiles-minilm-s1 --split test

Writes ``<run>/branch_usage_<split>.json`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


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
    from tvolib.config import DataConfig, ModelConfig, from_dict
    from tvolib.data import Dataset
    from tvolib.evaluate import score
    from tvolib.train import LABELS, _to, dataset_from_config, load_checkpoint, predict_examples, prepare_data

    run = Path(args.run)
    ckpt = run / "best" if (run / "best").exists() else run
    model, info, meta = load_checkpoint(ckpt)
    model_cfg = from_dict(ModelConfig, info["model"])
    if model.cff is None:
        raise SystemExit(f"{ckpt}: a text-only model (visual='none') has no gate or visual branch to probe")
    data_cfg = from_dict(DataConfig, info["data"])
    full = dataset_from_config(data_cfg)
    tweets = full.splits[args.split][: args.max_samples]
    ds = Dataset(name=full.name, data_dir=full.data_dir, image_dir=full.image_dir,
                 splits={"train": full.splits["train"], "valid": [], "test": []} | {args.split: tweets})
    prepared = prepare_data(ds, data_cfg, model_cfg, meta=meta)
    examples = prepared.examples[args.split]
    gold = [[LABELS[j] for j in e["labels"]] for e in examples]

    # diagnostics of the learned model
    gates, omegas, vis = [], [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), args.batch_size):
            batch = _to(prepared.collate(examples[i:i + args.batch_size]), torch.device("cpu"))
            batch.pop("labels", None)
            out = model.emissions(batch)
            gates += out["gate"].float().tolist()
            omegas += out["fusion_weights"].float().tolist()
            if out.get("visual_attn") is not None:
                m = batch["word_mask"].bool()
                va = out["visual_attn"][:, 1:].float()          # drop the t_cls query
                vis += [float(va[b][m[b]].mean()) for b in range(len(m))]

    def f1(collate):
        pred = predict_examples(model, examples, collate, args.batch_size, "cpu", bf16=False)
        return round(100 * score(gold, pred).f1, 2)

    def shuffled_collate(exs):
        batch = prepared.collate(exs)
        ids = batch["ids"]
        batch["visual"] = prepared.visual.batch(ids[1:] + ids[:1])   # rolled by one tweet
        return batch

    rows = {"learned": f1(prepared.collate)}
    for name, g in (("g=1 (T only)", 1.0), ("g=0 (C only)", 0.0)):
        model.cff.gate_override = g
        rows[name] = f1(prepared.collate)
    model.cff.gate_override = None
    rows["visual shuffled"] = f1(shuffled_collate)

    q = sorted(gates)
    res = {"checkpoint": str(ckpt), "split": args.split, "n_tweets": len(examples),
           "gate": {"mean": statistics.mean(gates), "min": q[0], "p10": q[len(q) // 10],
                    "median": statistics.median(gates), "max": q[-1]},
           "omega_mean": [round(statistics.mean(w[k] for w in omegas), 4) for k in range(len(omegas[0]))],
           "visual_attention_share": statistics.mean(vis) if vis else None,
           "f1": rows}
    (run / f"branch_usage_{args.split}.json").write_text(json.dumps(res, indent=2) + "\n")
    g = res["gate"]
    print(f"{ckpt} on {args.split} ({len(examples)} tweets)")
    print(f"gate g (Eq. 4): mean {g['mean']:.4f}, min {g['min']:.4f}, p10 {g['p10']:.4f}, "
          f"median {g['median']:.4f}, max {g['max']:.4f}")
    print(f"ω (Eq. 3) mean [t, glob, obj]: {res['omega_mean']}")
    if vis:
        print(f"attention share of the visual slot: {res['visual_attention_share']:.4f}")
    print("\n| probe | F1 |\n|---|---:|")
    for k, v in rows.items():
        print(f"| {k} | {v:.2f} |")


if __name__ == "__main__":
    main()
