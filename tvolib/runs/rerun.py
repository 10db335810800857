"""Re-run a committed run from its recorded parameters and say whether it gives its figures.

    python -m tvolib.runs --rerun reports/experiments/table2/twitter2015/tvomner+pgim-s1

The run is executed exactly as a batch executes it (the child command ``python -m tvolib.runs.child``, one papermill execution of notebook 07, the recorded number of threads) into
``<runs_dir>/rerun/<experiment>/<dataset>/<run>/``; its artifacts go to ``rerun-artifacts/`` in that
folder, so the committed ones are never touched. The caches are those of ``--cache_dir`` (a new
folder re-builds the candidate tagger and every side input, as a fresh clone does). An interrupted
re-run resumes after its last finished epoch; a finished one is compared again, not re-executed.

The comparison (``rerun.json`` beside, and printed) puts the committed and the re-run figures side
by side: valid F1 per epoch, the selected epoch, test P/R/F1 (the unrounded values), the gate of the
branch probe, the sha256 of the test predictions, and the side-input digests where the committed
run recorded them. The exit status is 0 when every figure is identical, 1 otherwise.

What the committed run then gets:

* an identical re-run that also scored what the committed run did not (the test set with side
  inputs left out, which code newer than the run scores) adds those figures and predictions to
  it, its provenance saying so under ``missing_inputs_from`` (commit, time, why);
* with ``--replace WHY``, a re-run that is not identical replaces it: the re-run's metrics,
  predictions and provenance, which names the replaced run under ``replaces`` (commit, test F1,
  valid F1 per epoch, ``WHY``); the copies other experiments made of it are replaced too, and the
  old run's scores on the other benchmark (``cross-*``) are removed. Rewrite the tables afterwards
  (``--summary``, ``--cross``).
"""
from __future__ import annotations

import gzip
import hashlib
import shutil
import json
import os
import subprocess
import sys
from pathlib import Path

from ..cache import atomic_write_bytes, atomic_write_json
from .child import FINISHED, child_command
from .notebook import REPO
from .plan import ARTIFACTS, NOTEBOOK

TYPES = ("PER", "LOC", "ORG", "MISC")
LATER_KEYS = ("missing_inputs", "missing_inputs_valid")   # scored after training by newer code


def _figures(metrics: dict) -> dict:
    probe = metrics.get("probe") or {}
    gate = probe.get("gate_mean") if isinstance(probe, dict) else None
    return {"valid_f1_per_epoch": metrics.get("valid_f1_per_epoch"), "best_epoch": metrics.get("best_epoch"),
            "test_precision": metrics["test"].get("Pre."), "test_recall": metrics["test"].get("Rec."),
            "test_f1": metrics["test"]["F1"], "test_per_type": {k: metrics["test"].get(k) for k in TYPES},
            "gate": gate}


def _predictions_sha(path: Path) -> str | None:
    if not path.exists():
        return None
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return hashlib.sha256(data).hexdigest()


def compare(committed: Path, rerun_artifacts: Path) -> dict:
    """The committed figures against the re-run's, key by key; ``identical`` when all agree."""
    a = json.loads((committed / "metrics.json").read_text())
    b = json.loads((rerun_artifacts / "metrics.json").read_text())
    fa, fb = _figures(a), _figures(b)
    fa["test_predictions_sha256"] = _predictions_sha(committed / "test_predictions.conll.gz")
    fb["test_predictions_sha256"] = _predictions_sha(rerun_artifacts / "test_predictions.conll.gz")
    pa = json.loads((committed / "provenance.json").read_text())
    pb = json.loads((rerun_artifacts / "provenance.json").read_text())
    sa, sb = (p.get("configs", {}).get("side_inputs") for p in (pa, pb))
    rows = {k: {"committed": fa[k], "rerun": fb[k], "same": fa[k] == fb[k]} for k in fa}
    if sa is not None:
        rows["side_inputs"] = {"committed": sa, "rerun": sb, "same": sa == sb}
    else:
        rows["side_inputs"] = {"committed": None, "rerun": sb, "same": None,
                               "note": "the committed run did not record its side inputs"}
    return {"committed": str(committed), "rerun": str(rerun_artifacts),
            "committed_commit": (pa.get("git") or {}).get("commit"), "rerun_commit": (pb.get("git") or {}).get("commit"),
            "committed_machine": pa.get("machine"), "rerun_machine": pb.get("machine"),
            "figures": rows, "identical": all(r["same"] is not False for r in rows.values())}


def describe(c: dict) -> str:
    lines = [f"re-run of {c['committed']} (commit {str(c['committed_commit'])[:7]}) at commit "
             f"{str(c['rerun_commit'])[:7]}:"]
    for k, r in c["figures"].items():
        if k == "side_inputs":
            lines.append(f"  side inputs: {'identical' if r['same'] else r.get('note') or 'DIFFER'}")
            continue
        mark = "=" if r["same"] else "≠"
        lines.append(f"  {k}: committed {r['committed']!r} {mark} re-run {r['rerun']!r}")
    lines.append("identical to the last digit" if c["identical"] else "NOT identical (see above)")
    return "\n".join(lines)


def adopt_later_figures(committed: Path, rerun_artifacts: Path) -> list[str]:
    """Add to the committed run what an identical re-run scored and it did not (``LATER_KEYS`` of
    ``metrics.json``, the left-out test predictions); returns the keys added."""
    a = json.loads((committed / "metrics.json").read_text())
    b = json.loads((rerun_artifacts / "metrics.json").read_text())
    keys = [k for k in LATER_KEYS if a.get(k) is None and b.get(k) is not None]
    if not keys:
        return []
    if "missing_inputs" in keys:
        for f in sorted(rerun_artifacts.glob("test_predictions.*.conll.gz")):
            atomic_write_bytes(committed / f.name, f.read_bytes())
    atomic_write_json(committed / "metrics.json", {**a, **{k: b[k] for k in keys}})
    prov = json.loads((committed / "provenance.json").read_text())
    pb = json.loads((rerun_artifacts / "provenance.json").read_text())
    prov["missing_inputs_from"] = {
        "commit": (pb.get("git") or {}).get("commit"), "started": pb.get("started"), "adds": keys,
        "why": "scored by a re-run that gave this run's figures and predictions to the last digit "
               "(python -m tvolib.runs --rerun)"}
    atomic_write_json(committed / "provenance.json", prov)
    return keys


def copies_of(committed: Path, reports_root: Path) -> list[Path]:
    """The run folders of other experiments that are copies of ``committed`` (``reused_from``)."""
    me = committed.resolve()
    out = []
    for prov_file in sorted(reports_root.glob("*/*/*/provenance.json")):
        src = json.loads(prov_file.read_text()).get("reused_from")
        if src and ((REPO / src).resolve() == me or Path(src).resolve() == me):
            out.append(prov_file.parent)
    return out


def replace_committed(committed: Path, rerun_artifacts: Path, why: str) -> list[Path]:
    """The re-run's artifacts in place of the committed run's (and of its copies); the provenance
    names the replaced run. Returns the copies replaced."""
    a = json.loads((committed / "metrics.json").read_text())
    pa = json.loads((committed / "provenance.json").read_text())
    prov = json.loads((rerun_artifacts / "provenance.json").read_text())
    prov["run_dir"] = prov.get("run_dir") or str(rerun_artifacts.parent)
    prov["replaces"] = {"commit": (pa.get("git") or {}).get("commit"), "dirty": (pa.get("git") or {}).get("dirty"),
                        "test_f1": a["test"]["F1"], "valid_f1_per_epoch": a.get("valid_f1_per_epoch"), "why": why}
    copies = copies_of(committed, committed.parents[2])
    for folder in [committed, *copies]:
        for f in folder.glob("test_predictions.*.conll.gz"):       # the old run's left-out passes go too,
            f.unlink()
        for d in folder.glob("cross-*"):                             # and its scores on the other test set
            shutil.rmtree(d)
        for f in [*(x for x in ARTIFACTS if x != "provenance.json"),
                  *(g.name for g in rerun_artifacts.glob("test_predictions.*.conll.gz"))]:
            atomic_write_bytes(folder / f, (rerun_artifacts / f).read_bytes())
        own = dict(prov)
        if folder != committed:
            own["reused_from"] = str(committed.resolve().relative_to(REPO)) if committed.resolve().is_relative_to(
                REPO) else str(committed)
        atomic_write_json(folder / "provenance.json", own)     # written last, as a batch writes it
    return copies


def rerun(committed: str | Path, runs_dir: str | Path = "runs", cache_dir: str | None = None,
          every: float = 60, notebook: Path = NOTEBOOK, replace: str | None = None) -> int:
    """Re-execute the committed run ``committed`` (a folder of ``reports/experiments``) and compare;
    an identical re-run adds what it scored and the committed run lacks; ``replace`` (the reason)
    puts a re-run that is not identical in the committed run's place."""
    committed = Path(committed)
    prov_file = committed / "provenance.json"
    if not prov_file.exists() or not (committed / "metrics.json").exists():
        raise SystemExit(f"{committed}: not a committed run folder (needs metrics.json and provenance.json)")
    prov = json.loads(prov_file.read_text())
    if replace is not None and prov.get("reused_from"):
        raise SystemExit(f"{committed}: a copy of {prov['reused_from']}; re-run and replace that one "
                         f"(its copies are replaced with it)")
    if replace is not None and not replace.strip():
        raise SystemExit("--replace needs the reason, recorded in the new run's provenance")
    ident, recorded = prov["identity"], prov.get("parameters") or {}
    exp = committed.parent.parent.name
    run_dir = Path(runs_dir) / "rerun" / exp / ident["dataset"] / committed.name
    run_dir.mkdir(parents=True, exist_ok=True)
    artifacts = run_dir / "rerun-artifacts"
    threads = int(recorded.get("num_threads") or 1)
    params = {"dataset": ident["dataset"], "data": ident["data"], "setting": ident["setting"], "seed": ident["seed"],
              "recipe": ident["recipe"], "model": ident.get("model") or {},
              "cache_dir": cache_dir or recorded.get("cache_dir") or "cache", "output_dir": str(run_dir),
              "num_threads": threads}
    launch = run_dir / "launch.json"
    atomic_write_json(launch, {"dataset": ident["dataset"], "setting": ident["setting"], "seed": ident["seed"],
                               "run_dir": str(run_dir), "artifacts": str(artifacts), "identity": ident,
                               "params": params, "notebook": str(notebook), "every": every})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    print(f"re-running {committed} into {run_dir} ({threads} thread(s); log {run_dir / 'run.log'})", flush=True)
    with open(run_dir / "run.log", "ab") as log_file:
        code = subprocess.call(child_command(launch), cwd=REPO,
                               stdout=log_file, stderr=subprocess.STDOUT, env=env)
    if code not in (0, FINISHED) or not (artifacts / "metrics.json").exists():
        print(f"the re-run did not finish (exit status {code}); see {run_dir / 'run.log'}", file=sys.stderr)
        return 2
    c = compare(committed, artifacts)
    atomic_write_json(run_dir / "rerun.json", c)
    print(describe(c))
    if c["identical"]:
        added = adopt_later_figures(committed, artifacts)
        if added:
            print(f"added to {committed}: {', '.join(added)} (scored by the re-run; provenance: missing_inputs_from)")
        return 0
    if replace is None:
        return 1
    copies = replace_committed(committed, artifacts, replace)
    print(f"{committed}: replaced by the re-run (provenance: replaces)"
          + "".join(f"\n  and its copy {c}" for c in copies)
          + "\nrewrite the tables: python -m tvolib.runs --params <its parameters file> --summary (and --cross)")
    return 0
