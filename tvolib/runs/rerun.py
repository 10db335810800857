"""Re-run a committed run from its recorded parameters and say whether it gives its figures.

    python -m tvolib.runs --rerun reports/experiments/table2/twitter2015/tvomner+pgim-s1

The run is executed exactly as a batch executes it (the child command ``python -m tvolib.runs
--run-one``, one papermill execution of notebook 07, the recorded number of threads) into
``<runs_dir>/rerun/<experiment>/<dataset>/<run>/``; its artifacts go to ``rerun-artifacts/`` in that
folder, so the committed ones are never touched. The caches are those of ``--cache_dir`` (a new
folder re-builds the candidate tagger and every side input, as a fresh clone does). An interrupted
re-run resumes after its last finished epoch; a finished one is compared again, not re-executed.

The comparison (``rerun.json`` beside, and printed) puts the committed and the re-run figures side
by side: valid F1 per epoch, the selected epoch, test P/R/F1 (the unrounded values), the gate of the
branch probe, the sha256 of the test predictions, and the side-input digests where the committed
run recorded them. The exit status is 0 when every figure is identical, 1 otherwise.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from ..cache import atomic_write_json
from .execute import FINISHED
from .notebook import REPO
from .plan import NOTEBOOK

TYPES = ("PER", "LOC", "ORG", "MISC")


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


def rerun(committed: str | Path, runs_dir: str | Path = "runs", cache_dir: str | None = None,
          every: float = 60, notebook: Path = NOTEBOOK) -> int:
    """Re-execute the committed run ``committed`` (a folder of ``reports/experiments``) and compare."""
    committed = Path(committed)
    prov_file = committed / "provenance.json"
    if not prov_file.exists() or not (committed / "metrics.json").exists():
        raise SystemExit(f"{committed}: not a committed run folder (needs metrics.json and provenance.json)")
    prov = json.loads(prov_file.read_text())
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
        code = subprocess.call([sys.executable, "-m", "tvolib.runs", "--run-one", str(launch)], cwd=REPO,
                               stdout=log_file, stderr=subprocess.STDOUT, env=env)
    if code not in (0, FINISHED) or not (artifacts / "metrics.json").exists():
        print(f"the re-run did not finish (exit status {code}); see {run_dir / 'run.log'}", file=sys.stderr)
        return 2
    c = compare(committed, artifacts)
    atomic_write_json(run_dir / "rerun.json", c)
    print(describe(c))
    return 0 if c["identical"] else 1
