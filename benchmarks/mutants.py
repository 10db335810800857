"""Mutation check of the statistics and of model selection: do the tests notice a wrong interval?

    python benchmarks/mutants.py            # every mutant; prints one line each, then `killed N/M`
    python benchmarks/mutants.py --only a f # some of them

Each mutant is one hand-made edit of the package (a wrong percentile, an unpaired bootstrap, F1
replaced by precision...). It is applied to a copy of ``tvolib/`` in a temporary folder that comes
first on ``PYTHONPATH``, and the tests that guard that code run against the copy. A mutant is
*killed* when a test fails (pytest exit status 1). The unmutated copy runs the same tests first:
they must pass, or the figure means nothing. A mutant whose original text is no longer in the code
is reported as such and not counted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

STATS = ["tests/test_stats.py"]
SCORES = ["tests/test_evaluate.py", "tests/test_stats.py"]
TABLES = ["tests/test_experiments.py::test_beats_needs_the_interval_over_seeds_of_test_f1_not_the_tweet_bootstrap_alone"]
SELECTION = ["tests/test_selection.py"]


@dataclass
class Mutant:
    key: str
    what: str
    file: str               # inside tvolib/
    old: str
    new: str
    tests: list[str]


MUTANTS = [
    Mutant("a", "paired bootstrap percentiles 2.5/97.5 -> 5/95 (a 90 % interval shown as 95 %)", "stats.py",
           "np.percentile(diffs, [2.5, 97.5])", "np.percentile(diffs, [5, 95])", STATS),
    Mutant("b", "interval over seeds built from valid F1 instead of test F1", "runs/tables.py",
           'seed_interval([b[sd]["metrics"]["test"]["F1"] - a[sd]["metrics"]["test"]["F1"] for sd in seeds])',
           'seed_interval([b[sd]["metrics"]["valid"]["F1"] - a[sd]["metrics"]["valid"]["F1"] for sd in seeds])',
           TABLES),
    Mutant("c1", "Table 2 'beats ref.' from the tweet bootstrap alone (in the table)", "runs/tables.py",
           '"beats_reference": beats(boot, over)', '"beats_reference": beats(boot, boot)', TABLES),
    Mutant("c2", "'beats' from the tweet bootstrap alone (in the rule)", "stats.py",
           "return above(tweet_bootstrap) and above(over_seeds)", "return above(tweet_bootstrap)", STATS + TABLES),
    Mutant("d", "test scored with the last epoch's model instead of the selected one", "train.py",
           'best_model, _, _ = load_checkpoint(out_dir / "best", device=str(device))', "best_model = model",
           SELECTION),
    Mutant("e1", "F1 replaced by precision (scores)", "evaluate.py",
           "F = 2 * P * R / (P + R) if P + R else 0.0", "F = P", SCORES),
    Mutant("e2", "F1 replaced by recall (scores)", "evaluate.py",
           "F = 2 * P * R / (P + R) if P + R else 0.0", "F = R", SCORES),
    Mutant("e3", "F1 replaced by precision (bootstrap)", "stats.py",
           "np.where(denom > 0, 200.0 * tp / np.maximum(denom, 1), 0.0)",
           "np.where(n_pred > 0, 100.0 * tp / np.maximum(n_pred, 1), 0.0)", STATS),
    Mutant("e4", "F1 replaced by recall (bootstrap)", "stats.py",
           "np.where(denom > 0, 200.0 * tp / np.maximum(denom, 1), 0.0)",
           "np.where(n_gold > 0, 100.0 * tp / np.maximum(n_gold, 1), 0.0)", STATS),
    Mutant("f", "bootstrap unpaired (the two systems' tweets drawn apart)", "stats.py",
           "diffs[i] = (_f1(cb[:, idx].sum(1)) - _f1(ca[:, idx].sum(1))).mean()",
           "diffs[i] = (_f1(cb[:, idx].sum(1)) - _f1(ca[:, rng.integers(0, m, m)].sum(1))).mean()", STATS),
    Mutant("g", "model selection on test instead of valid", "train.py",
           "vs, _ = evaluate(model, valid_ex,", 'vs, _ = evaluate(model, prepared.examples["test"],', SELECTION),
]


def run_tests(pkg_root: Path, tests: list[str]) -> tuple[int, str]:
    """pytest on ``tests`` with the package copy under ``pkg_root`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(pkg_root), "OMP_NUM_THREADS": "1"}
    # a basetemp of its own: another pytest session on the machine never cleans this one's folders
    r = subprocess.run([str(Path(sys.executable).parent / "pytest"), "-q", "-x", "-p", "no:cacheprovider",
                        "--basetemp", str(pkg_root / "pytest"), *tests],
                       cwd=REPO, env=env, capture_output=True, text=True)
    tail = [l for l in r.stdout.splitlines() if l.strip()]
    return r.returncode, tail[-1] if tail else r.stderr.strip()[-200:]


def copy_package(dest: Path) -> Path:
    shutil.copytree(REPO / "tvolib", dest / "tvolib", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="mutant keys (a, b, c1, ...)")
    args = ap.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or m.key in args.only]
    tests = sorted({t for m in mutants for t in m.tests})
    with tempfile.TemporaryDirectory() as tmp:
        base = copy_package(Path(tmp) / "base")
        probe = subprocess.run([sys.executable, "-c", "import tvolib; print(tvolib.__file__)"], capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(base)}, cwd=tmp)
        if not probe.stdout.startswith(str(base)):
            print(f"the package copy is not the one imported ({probe.stdout.strip()}); nothing checked")
            return 2
        code, tail = run_tests(base, tests)
        print(f"unmutated: {'tests pass' if code == 0 else 'TESTS FAIL'} ({tail})", flush=True)
        if code != 0:
            return 2
        killed = counted = 0
        for m in mutants:
            root = copy_package(Path(tmp) / m.key)
            f = root / "tvolib" / m.file
            text = f.read_text()
            if text.count(m.old) != 1:
                print(f"{m.key:3} not applicable: the original text occurs {text.count(m.old)} times in {m.file}")
                continue
            f.write_text(text.replace(m.old, m.new))
            t0 = time.time()
            code, tail = run_tests(root, m.tests)
            counted += 1
            killed += code == 1
            verdict = "killed" if code == 1 else "SURVIVED" if code == 0 else f"error (pytest status {code})"
            print(f"{m.key:3} {verdict:8} {m.what} [{time.time() - t0:.0f} s; {tail}]", flush=True)
    print(f"killed {killed}/{counted}")
    return 0 if killed == counted else 1


if __name__ == "__main__":
    sys.exit(main())
