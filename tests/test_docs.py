"""README and docs/ stay an accurate entry point: every relative link resolves (headings too), and the
README's layout table names every module and package of tvolib, and nothing that is not there."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "reports" / "experiments" / "README.md"]


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_of_the_readme_and_docs_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for link in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://|mailto:", link):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.relative_to(REPO)}: {link}")
            elif anchor and target.suffix == ".md":
                heads = {slug(h) for h in re.findall(r"^#+ (.*)$", target.read_text(encoding="utf-8"), flags=re.M)}
                if anchor not in heads:
                    broken.append(f"{page.relative_to(REPO)}: #{anchor}")
    assert not broken, broken


def test_the_readme_layout_table_matches_the_tree():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    table = readme[readme.index("| path | what |"):readme.index("Data flows one way")]
    named = set(re.findall(r"`(tvolib/[\w/]+(?:\.py)?)`", table))
    pkg = REPO / "tvolib"
    tree = {f"tvolib/{p.name}" for p in pkg.glob("*.py") if p.name != "__init__.py"}
    tree |= {f"tvolib/{p.name}/" for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert tree <= named, sorted(tree - named)
    assert all((REPO / n).exists() for n in named), sorted(n for n in named if not (REPO / n).exists())


def test_the_package_has_no_import_cycle_at_most_8_levels_and_no_imports_in_functions():
    import importlib.util
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "benchmarks" / "import_graph.py")
    ig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ig)
    g = ig.graph()
    assert g["cycles"] == [] and g["levels"] <= 8, (g["cycles"], g["levels"])
    assert g["imports_in_functions"] == []
    assert all(n <= 420 for _, n in g["over_400_lines"]), g["over_400_lines"]


def test_reading_settings_and_the_batch_cli_leave_the_model_libraries_unimported():
    """Every run's first cell and every ``python -m tvolib.runs`` call read settings and resolve
    resources; timm (with torchvision and torch._dynamo), the openai client and GroundingDINO's model
    code are imported only where a model or a client is made (they cost seconds per process)."""
    import subprocess
    import sys
    heavy = ("timm", "torchvision", "openai", "transformers.models.grounding_dino.modeling_grounding_dino")
    code = ("import sys, tvolib.settings, tvolib.resources, tvolib.runs.cli, tvolib.llm_client;"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr[-2000:]
