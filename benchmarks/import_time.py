"""Start-up cost of the entry points: seconds to import a module in a fresh interpreter (best of
``--repeat``), and which of the heavy libraries it pulled in. Every run's first cell reads settings
(``tvolib.settings``), every ``python -m tvolib.runs`` call imports its CLI, and the test suite starts
both dozens of times, so seconds here are paid over and over.

    python benchmarks/import_time.py                 # a table of the default modules
    python benchmarks/import_time.py --repeat 5 tvolib.predict
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

MODULES = ("tvolib.settings", "tvolib.runs.cli", "tvolib.runs.child", "tvolib.predict", "tvolib.train")
HEAVY = ("torch", "transformers", "timm", "torchvision", "openai", "matplotlib.pyplot", "nbformat", "seqeval",
         "rfc3987_syntax")

PROBE = """
import json, sys, time
t = time.perf_counter()
import {module}
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "loaded": [m for m in {heavy!r} if sys.modules.get(m) is not None]}}))
"""


def measure(module: str, repeat: int) -> dict:
    best = None
    for _ in range(repeat):
        r = subprocess.run([sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
                           capture_output=True, text=True, check=True)
        got = json.loads(r.stdout.strip().splitlines()[-1])
        if best is None or got["seconds"] < best["seconds"]:
            best = got
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", default=list(MODULES))
    ap.add_argument("--repeat", type=int, default=3, help="fresh interpreters per module; the fastest counts")
    a = ap.parse_args(argv)
    print("| module | import, s (best of %d) | heavy libraries loaded |" % a.repeat)
    print("|---|---:|---|")
    for m in a.modules:
        r = measure(m, a.repeat)
        print(f"| `{m}` | {r['seconds']:.2f} | {', '.join(r['loaded']) or '—'} |")


if __name__ == "__main__":
    main()
