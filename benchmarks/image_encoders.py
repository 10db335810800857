"""Image-encoder throughput on this CPU, and the visual pipeline's cold vs warm-cache wall time.

    python benchmarks/image_encoders.py [--threads 2] [--images 64] [--batch 16] [--skip-pipeline]

* images/s of EfficientNet-Lite0 (real offline weights) and of a randomly initialised ViT-B/32
  (``vit_base_patch32_224``, ``allow_random``: the speed does not depend on the weights), measured
  end to end (PIL image → 224x224 preprocessing → pooled / [CLS] feature) after one warm-up batch,
  on the sample's 256x256 images;
* ``visual_features`` on the embedded sample with default settings (EfficientNet-Lite0, MiniLM
  captions, sample phrases + drawn boxes), first into an empty cache folder (cold), then again
  (warm), each in a fresh process so model loading counts; target: warm < 10 % of cold.

Writes ``reports/benchmarks/image_encoders.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# nothing is downloaded: set before huggingface_hub is imported (it reads the variable once)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PIPELINE_SNIPPET = """
import sys, time, json, torch
torch.set_num_threads(int(sys.argv[2]))
t0 = time.perf_counter()
from tvolib.config import DataConfig, ModelConfig
from tvolib.data import load_dataset
from tvolib.resources import resolve
from tvolib.vfo.pipeline import SideInputs, visual_features
dc = DataConfig(cache_dir=sys.argv[1])
ds = load_dataset(dc.data_dir, dc.image_dir, name=dc.dataset)
t1 = time.perf_counter()
vf = visual_features(ds, ModelConfig(), resolve(dc, ModelConfig()), SideInputs.from_config(dc))
t2 = time.perf_counter()
print(json.dumps({"call_s": t2 - t1, "process_s": t2 - t0, "counts": vf.counts}))
"""


def bench_encoder(name: str, allow_random: bool, images, batch: int) -> dict:
    import torch
    from tvolib.vfo.encoders import ImageEncoder
    t0 = time.perf_counter()
    enc = ImageEncoder(name, allow_random=allow_random)
    load_s = time.perf_counter() - t0
    enc.encode(images[:batch], batch_size=batch)                     # warm-up
    t0 = time.perf_counter()
    feats = enc.encode(images, batch_size=batch)
    dt = time.perf_counter() - t0
    x = torch.stack([enc.transform(im) for im in images[:batch]])
    t0 = time.perf_counter()
    with torch.no_grad():
        enc.model(x)
    fwd = time.perf_counter() - t0
    return {"encoder": name, "weights": "random" if allow_random else "pretrained (offline package)",
            "dim": enc.dim, "params_M": round(sum(p.numel() for p in enc.model.parameters()) / 1e6, 2),
            "images": len(images), "batch": batch, "seconds": round(dt, 3),
            "images_per_s": round(len(images) / dt, 2),
            "forward_only_images_per_s": round(batch / fwd, 2), "load_s": round(load_s, 2),
            "feature_shape": list(feats.shape)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "image_encoders"))
    args = ap.parse_args()
    import torch
    from PIL import Image
    from tvolib.sample import SAMPLE_DIR
    torch.set_num_threads(args.threads)
    paths = sorted((SAMPLE_DIR / "images").glob("*.png"))
    images = [Image.open(paths[i % len(paths)]).convert("RGB") for i in range(args.images)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "torch_threads": args.threads, "loadavg_1min_at_start": load,
                       "note": "shared machine: other processes compete for the cores"},
           "encoders": []}
    for name, rnd in (("efficientnet_lite0", False), ("vit_base_patch32_224", True)):
        r = bench_encoder(name, rnd, images, args.batch)
        print(f"{name:24s} {r['images_per_s']:7.2f} images/s end to end, "
              f"{r['forward_only_images_per_s']:7.2f} forward only ({r['weights']})", flush=True)
        res["encoders"].append(r)
    if not args.skip_pipeline:
        with tempfile.TemporaryDirectory() as d:
            runs = {}
            for phase in ("cold", "warm"):
                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", PIPELINE_SNIPPET, d, str(args.threads)],
                                     capture_output=True, text=True, cwd=ROOT, check=True)
                runs[phase] = json.loads(out.stdout.strip().splitlines()[-1])
                runs[phase]["process_s"] = time.perf_counter() - t0      # interpreter start included
                print(f"visual_features {phase}: {runs[phase]['call_s']:.2f} s in the call, "
                      f"{runs[phase]['process_s']:.2f} s for the whole process", flush=True)
        res["pipeline"] = {
            "cold_call_s": round(runs["cold"]["call_s"], 3), "warm_call_s": round(runs["warm"]["call_s"], 3),
            "cold_process_s": round(runs["cold"]["process_s"], 3),
            "warm_process_s": round(runs["warm"]["process_s"], 3),
            "warm_over_cold_call": round(runs["warm"]["call_s"] / runs["cold"]["call_s"], 4),
            "warm_over_cold_process": round(runs["warm"]["process_s"] / runs["cold"]["process_s"], 4),
            "cold_timings": runs["cold"]["counts"]["timings"], "warm_timings": runs["warm"]["counts"]["timings"],
            "counts": {k: runs["cold"]["counts"][k] for k in ("glob_kind", "obj_kind", "boxes")}}
        print(f"warm / cold = {res['pipeline']['warm_over_cold_call']:.2%} (call), "
              f"{res['pipeline']['warm_over_cold_process']:.2%} (process)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    md = ["# Image encoders and visual-cache benchmark", "",
          f"`python benchmarks/image_encoders.py --threads {args.threads} --images {args.images} "
          f"--batch {args.batch}` on {res['machine']['cores']} shared CPU cores "
          f"(load average {load:.1f} at start)." if load is not None else "", "",
          "| encoder | weights | dim | params (M) | images/s end to end | images/s forward only |",
          "|---|---|---|---|---|---|"]
    for r in res["encoders"]:
        md.append(f"| {r['encoder']} | {r['weights']} | {r['dim']} | {r['params_M']} | {r['images_per_s']} "
                  f"| {r['forward_only_images_per_s']} |")
    if "pipeline" in res:
        p = res["pipeline"]
        md += ["", "| visual_features on the sample | cold | warm | warm / cold |", "|---|---|---|---|",
               f"| inside the call (s) | {p['cold_call_s']} | {p['warm_call_s']} | {p['warm_over_cold_call']:.2%} |",
               f"| whole process, interpreter start included (s) | {p['cold_process_s']} | {p['warm_process_s']} | "
               f"{p['warm_over_cold_process']:.2%} |"]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
