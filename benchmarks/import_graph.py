"""The package's import graph, with each subpackage (tfo/, vfo/, runs/, sample/) as one node: modules and
folders, import edges, cycles, import levels (the longest chain of imports), imports of the package made
inside functions, and the modules over 400 lines.

    python benchmarks/import_graph.py            # figures, then one line per node: level, name, imports
    python benchmarks/import_graph.py --json     # the figures as JSON
"""
from __future__ import annotations

import argparse
import ast
import collections
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "tvolib"


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for p in root.rglob("*.py"):
        name = ".".join(p.relative_to(root.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def graph(root: Path = ROOT) -> dict:
    mods = modules(root)

    def node(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 and (root / parts[1]).is_dir() else m

    def targets(mod: str, n) -> list[str]:
        if isinstance(n, ast.Import):
            return [a.name for a in n.names]
        base = mod.split(".")
        if n.level:
            keep = len(base) - n.level + (1 if mods[mod].name == "__init__.py" else 0)
            prefix = ".".join(base[:keep] + ([n.module] if n.module else []))
        else:
            prefix = n.module or ""
        return [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix for a in n.names]

    edges: dict[str, set] = collections.defaultdict(set)
    inner, lines, nodes = [], {}, set()
    for m, p in mods.items():
        src = p.read_text(encoding="utf-8")
        lines[m] = src.count("\n")
        nodes.add(node(m))
        tree = ast.parse(src)
        top = {id(x) for x in tree.body}
        for n in ast.walk(tree):
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                for t in targets(m, n):
                    while t and t not in mods:
                        t = t.rpartition(".")[0]
                    if t and t.startswith(root.name) and node(t) != node(m):
                        edges[node(m)].add(node(t))
                        if id(n) not in top:
                            inner.append(f"{m}:{n.lineno}")

    def reach(a: str) -> set:
        seen, stack = set(), [a]
        while stack:
            for y in edges[stack.pop()]:
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
        return seen
    cycles = sorted({tuple(sorted((a, b))) for a in nodes for b in edges[a] if a in reach(b)})
    level: dict[str, int] = {}

    def lev(v: str, stack=()) -> int:
        if v not in level:
            level[v] = 0 if v in stack else 1 + max((lev(w, stack + (v,)) for w in edges[v]), default=0)
        return level[v]
    for v in nodes:
        lev(v)
    return {"nodes": len(nodes), "edges": sum(len(e) for e in edges.values()), "cycles": cycles,
            "levels": max(level.values()), "imports_in_functions": inner,
            "largest": max(lines.items(), key=lambda kv: kv[1]),
            "over_400_lines": sorted((m, n) for m, n in lines.items() if n > 400),
            "level": level, "edges_by_node": {k: sorted(v) for k, v in edges.items()}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    g = graph()
    figures = {k: g[k] for k in ("nodes", "edges", "cycles", "levels", "largest", "over_400_lines")}
    figures["imports_in_functions"] = len(g["imports_in_functions"])
    print(json.dumps(figures, indent=None if a.json else 1))
    if not a.json:
        for v in sorted(g["level"], key=lambda v: (g["level"][v], v)):
            print(g["level"][v], v, g["edges_by_node"].get(v, []))


if __name__ == "__main__":
    main()
