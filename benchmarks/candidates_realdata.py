"""Candidate tagger on a real benchmark: trains the k-fold + full taggers, fills
``<cache_dir>/<dataset>/candidates.jsonl`` (reused by ``tvolib.tfo.pipeline`` and the CFF runs) and
reports untyped candidate span P/R/F1 per split.

    python benchmarks/candidates_realdata.py --data_dir ../shared/data/twitter2017 --dataset twitter2017 \
        --epochs 2 --k_folds 2 --threads 1

Writes ``reports/benchmarks/candidates_realdata_<dataset>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tvolib.cache import atomic_write_json, atomic_write_text
from tvolib.data import load_dataset
from tvolib.tfo.candidates import make_candidates, span_scores
from tvolib.tfo.tagger import TaggerConfig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default="../shared/data/twitter2017")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--cache_dir", default="cache")
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--k_folds", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--max_train_samples", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--coverage", nargs="*", default=None, metavar="SOURCE",
                    help="also measure knowledge coverage for these sources (local, tweet_files, wikipedia)")
    ap.add_argument("--coverage_splits", nargs="+", default=["train", "valid", "test"])
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--out", default="reports/benchmarks")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    name = a.dataset or Path(a.data_dir).name
    ds = load_dataset(a.data_dir, None, name)
    cfg = TaggerConfig(encoder=a.encoder, epochs=a.epochs, k_folds=a.k_folds, lr=a.lr, batch_size=a.batch_size,
                       max_train_samples=a.max_train_samples, threads=a.threads)
    cache_path = Path(a.cache_dir) / name / "candidates.jsonl"
    t0 = time.time()
    cache = make_candidates(ds, cache_path, cfg)
    wall = time.time() - t0
    scores = {s: span_scores(ds[s], cache) for s in ds.splits}
    from collections import Counter
    prov = Counter(f"model={r.get('model')} epochs={r.get('epochs')} k_folds={r.get('k_folds')} "
                   f"config_hash={r.get('config_hash')}" for r in cache.values())
    rec = {"dataset": name, "data_dir": a.data_dir, "cache": str(cache_path), "tagger": cfg.__dict__,
           "wall_s_this_run": round(wall, 1), "span_scores": scores, "cache_provenance": dict(prov),
           "note": "untyped candidate spans vs gold (lenient seqeval spans); train = out-of-fold predictions"}
    if a.coverage:
        from tvolib.config import DataConfig
        from tvolib.data import Dataset
        from tvolib.config import ModelConfig
        from tvolib.resources import resolve
        from tvolib.tfo.pipeline import knowledge_source, retrieve
        from tvolib.tfo.relevance import RelevanceConfig, RelevanceFilter
        dc = DataConfig(data_dir=a.data_dir, image_dir=None, captions=None, dataset=name, cache_dir=a.cache_dir)
        view = Dataset(name, ds.data_dir, None, {s: ds[s] for s in a.coverage_splits})
        filt = RelevanceFilter(cfg=RelevanceConfig(threshold=a.threshold, budget=a.budget))
        rec["coverage"] = {}
        for src_name in a.coverage:
            src = knowledge_source(resolve(dc, ModelConfig(knowledge_source=src_name)))
            t1 = time.time()
            kc = retrieve(view, dc.dataset_cache / "knowledge.jsonl", cache, src, filt=filt, progress=False)
            per = {}
            for s in a.coverage_splits:
                items = [it for t in ds[s] for it in kc[t.id]["items"]]
                hit = sum(1 for it in items if it["knowledge"])
                per[s] = {"candidates": len(items), "with_knowledge": hit,
                          "coverage": round(100 * hit / len(items), 2) if items else 0.0}
            rec["coverage"][src_name] = {"per_split": per, "wall_s_this_run": round(time.time() - t1, 1),
                                         "threshold": a.threshold, "budget": a.budget}
            print(src_name, json.dumps(per), flush=True)
            src.close()
    out = Path(a.out)
    prev_file = out / f"candidates_realdata_{name}.json"
    prev = json.loads(prev_file.read_text()) if prev_file.exists() else {}
    # the tagger's training time, kept from the run that filled the cache
    rec["tagger_wall_s"] = round(wall, 1) if wall > 5 else prev.get("tagger_wall_s")
    print(json.dumps(rec, indent=2))
    atomic_write_json(out / f"candidates_realdata_{name}.json", rec)
    md = [f"# Candidate span detection, {name}", "", "Candidates made by: " + "; ".join(f"{k} ({v} tweets)" for k, v in prov.items()), "",
          "| split | P | R | F1 | gold | pred |", "|---|---:|---:|---:|---:|---:|"]
    md += [f"| {s} | {v['precision']} | {v['recall']} | {v['f1']} | {v['n_gold']} | {v['n_pred']} |" for s, v in scores.items()]
    md += ["", f"wall time of this run: {wall:.0f} s (0 when the cache was already complete); "
               f"tagger training + prediction when the cache was filled: {rec['tagger_wall_s']} s "
               f"(2 shared CPU cores, 1 thread)"]
    for src_name, c in rec.get("coverage", {}).items():
        md += ["", f"Knowledge coverage, source `{src_name}` (share of candidates with >= 1 kept sentence; "
                   f"threshold {c['threshold']}, budget {c['budget']}):", "",
               "| split | candidates | with knowledge | coverage % |", "|---|---:|---:|---:|"]
        md += [f"| {s} | {v['candidates']} | {v['with_knowledge']} | {v['coverage']} |" for s, v in c["per_split"].items()]
    atomic_write_text(out / f"candidates_realdata_{name}.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
