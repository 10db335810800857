"""Whether bf16 pays on this CPU: GFLOP/s of fp32 and bf16 matrix products on one thread (best of
``--repeat``), at the shapes an MPNet-base step has (a 768 -> 3072 linear layer over 16 x 96 tokens,
under autocast as training runs it, and a plain square matmul), with the CPU's bf16 flags.
Where the CPU has neither ``amx_bf16`` nor ``avx512_bf16`` the bf16 products are emulated and
``precision: bf16`` is many times slower than fp32 (``tvolib.device.slow_bf16``).

    python benchmarks/bf16_units.py
    python benchmarks/bf16_units.py --threads 2 --repeat 5
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from tvolib.device import CPU_BF16_FLAGS, cpu_flags


def gflops(fn, flops: float, repeat: int) -> float:
    fn()                                                     # warm-up (kernel choice, allocation)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def measure(repeat: int = 3, tokens: int = 16 * 96, d: int = 768, n: int = 1024) -> dict:
    lin = torch.nn.Linear(d, 4 * d)
    x = torch.randn(tokens, d)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        def linear():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                lin(x)
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out[name] = {"linear": gflops(linear, 2 * tokens * d * 4 * d, repeat),
                     "matmul": gflops(lambda: a @ b, 2 * n ** 3, repeat)}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    flags = sorted(cpu_flags() & set(CPU_BF16_FLAGS))
    res = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "bf16_flags": flags, "threads": args.threads, "gflops": measure(args.repeat)}
    if args.json:
        print(json.dumps(res))
        return
    print(f"torch {res['torch']}, CPU capability {res['cpu_capability']}, bf16 flags: {', '.join(flags) or 'none'}, "
          f"{args.threads} thread(s); GFLOP/s, best of {args.repeat}")
    print("| product | fp32 | bf16 | bf16 / fp32 |")
    print("|---|---:|---:|---:|")
    g = res["gflops"]
    for k, label in (("linear", "linear 768->3072, 1536 tokens (autocast)"), ("matmul", "matmul 1024 x 1024")):
        print(f"| {label} | {g['fp32'][k]:.2f} | {g['bf16'][k]:.2f} | {g['bf16'][k] / g['fp32'][k]:.3f}x |")


if __name__ == "__main__":
    main()
