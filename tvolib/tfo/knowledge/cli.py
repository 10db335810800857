"""``python -m tvolib.tfo.knowledge {build, lookup}``: build or query a local knowledge base."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from ...weights import ResourceMissing
from .local_kb import LocalKB, build_kb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tvolib.tfo.knowledge",
                                 description="Build or query a local knowledge base (SQLite FTS5).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a base from JSON/JSONL/TSV of (title, text) and abstract dumps")
    b.add_argument("--out", required=True, help="the .sqlite file to write")
    b.add_argument("inputs", nargs="+", help="input files (.json .jsonl .tsv .xml[.gz|.bz2])")
    q = sub.add_parser("lookup", help="look candidate strings up")
    q.add_argument("--kb", required=True)
    q.add_argument("-k", type=int, default=3)
    q.add_argument("queries", nargs="+")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if a.cmd == "build":
            info = build_kb(a.out, a.inputs)
            print(json.dumps(info, indent=2))
        else:
            kb = LocalKB(a.kb)
            for query in a.queries:
                print(f"== {query!r}")
                for p in kb.lookup(query, a.k):
                    print(f"  [{p.match} {p.score}] {p.title}: {p.text[:150]}")
    except (FileNotFoundError, ResourceMissing, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
