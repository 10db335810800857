"""Local knowledge base: build time from ``../shared/data/kb/`` and look-ups per second.

    python benchmarks/kb_lookup.py [--kb_dir ../shared/data/kb] [--data ../shared/data] [--k 3]

Builds the base fresh (timed) into ``<cache_dir>/kb/benchmark.sqlite`` (the same inputs as the
pipeline's default base ``<cache_dir>/kb/default.sqlite``, which is left untouched), then looks up every gold entity string of the Twitter-2015/2017 test sets
(realistic candidate strings with hashtags, mentions and case noise) in one thread, several passes.
Writes ``reports/benchmarks/kb_lookup.json`` and ``.md``. Target: >= 2,000 look-ups/s.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from tvolib.cache import atomic_write_json, atomic_write_text
from tvolib.data import read_conll
from tvolib.tfo.knowledge import LocalKB, build_kb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kb_dir", default="../shared/data/kb")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache_dir", default="cache")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--out", default="reports/benchmarks")
    a = ap.parse_args(argv)
    kb_dir = Path(a.kb_dir)
    inputs = sorted(p for p in kb_dir.glob("*") if p.name.lower().endswith((".json", ".jsonl", ".tsv", ".xml.gz")))
    if not inputs:
        raise SystemExit(f"no knowledge inputs in {kb_dir}")
    # a fresh build into its own file: rebuilding the pipeline's default base (<cache_dir>/kb/default.sqlite)
    # would change its build stamp and so invalidate every knowledge.jsonl made from it
    out = Path(a.cache_dir) / "kb" / "benchmark.sqlite"
    t0 = time.perf_counter()
    info = build_kb(out, [p.resolve() for p in inputs])
    build_s = time.perf_counter() - t0
    queries = []
    for name in ("twitter2015", "twitter2017"):
        f = Path(a.data) / name / "test.txt"
        if f.exists():
            queries += [" ".join(t.tokens[s:e]) for t in read_conll(f) for s, e, _ in t.spans()]
    queries += ["", "AND", '"quoted', "NEAR *", "😀", "#", "@"]          # the odd ones, too
    kb = LocalKB(out, memo_size=0)        # cold: every look-up hits SQLite
    matches = Counter()
    for q in queries:                                                    # warm-up + hit breakdown
        res = kb.lookup(q, a.k)
        matches[res[0].match if res else "none"] += 1
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.passes):
        for q in queries:
            kb.lookup(q, a.k)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = a.passes * len(queries)
    warm = LocalKB(out)                   # with the in-memory memo (what the pipeline uses)
    for q in queries:
        warm.lookup(q, a.k)
    t1 = time.perf_counter()
    for q in queries:
        warm.lookup(q, a.k)
    warm_rate = len(queries) / (time.perf_counter() - t1)
    rec = {"kb": str(out), "inputs": [str(p) for p in inputs], "n_docs": info["n_docs"],
           "build_s": round(build_s, 2), "size_mb": round(out.stat().st_size / 2**20, 1),
           "lookups": n, "k": a.k, "lookups_per_s": round(n / dt, 1), "ms_per_lookup": round(1000 * dt / n, 3),
           "lookups_per_cpu_s": round(n / max(cpu, 1e-9), 1), "memo_lookups_per_s": round(warm_rate, 1),
           "load_average": list(__import__("os").getloadavg()),
           "first_hit_match": dict(matches), "queries": "gold entity strings of Twitter-2015/2017 test + odd strings",
           "threads": 1, "target_lookups_per_s": 2000}
    print(json.dumps(rec, indent=2))
    atomic_write_json(Path(a.out) / "kb_lookup.json", rec)
    md = ["# Local knowledge base benchmark", "",
          f"- base: {rec['n_docs']} entries from {', '.join(p.name for p in inputs)} ({rec['size_mb']} MB)",
          f"- build time: **{rec['build_s']} s**",
          f"- cold look-ups (no memo): {n} (k={a.k}, one thread): **{rec['lookups_per_s']} /s** wall "
          f"({rec['ms_per_lookup']} ms each), {rec['lookups_per_cpu_s']} per CPU-second; target >= 2000/s",
          f"- repeated look-ups through the in-memory memo: {rec['memo_lookups_per_s']} /s",
          f"- machine load average during the run: {rec['load_average']} (2 shared cores)",
          f"- first hit by stage: {dict(matches)}", ""]
    atomic_write_text(Path(a.out) / "kb_lookup.md", "\n".join(md))
    kb.close(); warm.close()
    out.unlink()


if __name__ == "__main__":
    main()
