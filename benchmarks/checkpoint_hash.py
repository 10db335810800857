"""Cost of the checkpoint integrity check: sha256 of every file of a checkpoint folder, as
``tvolib.checkpoint.load_checkpoint`` verifies them before loading.

    python benchmarks/checkpoint_hash.py                      # the MiniLM-L6 weights folder as a stand-in
    python benchmarks/checkpoint_hash.py --folder runs/x/best # a real checkpoint

Prints the folder's size, the seconds the hashes take (best of 3) and the throughput.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tvolib.checkpoint import file_hashes
from tvolib.weights import minilm_path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=None, help="a checkpoint folder (default: the MiniLM-L6 weights)")
    a = ap.parse_args(argv)
    folder = Path(a.folder) if a.folder else minilm_path()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        file_hashes(folder)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(json.dumps({"folder": str(folder), "mb": round(size / 2**20, 1), "seconds": round(best, 3),
                      "mb_per_s": round(size / 2**20 / best, 1)}))


if __name__ == "__main__":
    main()
