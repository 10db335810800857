"""Parity snapshot: train three settings on the embedded sample with the real MiniLM-L6 and record
every figure a refactoring must not move (per-epoch loss and valid F1, test F1, the sha256 of the
test predictions and of ``Predictor`` output from the checkpoint folder alone).

    python benchmarks/parity.py --out parity.json              # writes the snapshot
    python benchmarks/parity.py --out new.json --compare tests/data/parity_sample.json

Uses only ``tvolib.settings.configs``, ``tvolib.train.train`` and ``tvolib.predict.Predictor``,
whose signatures are part of the public API, so the same script runs before and after a change.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

SETTINGS = ("text-only", "tvomner-wiki", "tvomner+pgim")
RECIPE = dict(epochs=8, batch_size=8, micro_batch_size=8, lr=1e-4, head_lr=2e-3, max_length=64,
              patience=8, precision="fp32")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def snapshot(work: Path, settings=SETTINGS) -> dict:
    from tvolib.predict import Predictor
    try:
        from tvolib.io import format_output
    except ImportError:                         # before tvolib.io existed
        from tvolib.predict import format_output
    from tvolib.settings import configs
    from tvolib.data import read_conll
    from tvolib.sample import SAMPLE_DIR
    torch.set_num_threads(1)
    out = {}
    test = read_conll(SAMPLE_DIR / "data" / "test.txt", split="test")
    for setting in settings:
        data, model, train_cfg = configs("sample", {}, setting, 1, RECIPE, output_dir=str(work / setting),
                                         cache_dir=str(work / "cache"))
        from tvolib.train import train
        res = train(data, model, train_cfg)
        pred_file = Path(train_cfg.output_dir) / "test_predictions.txt"
        p = Predictor.from_checkpoint(Path(train_cfg.output_dir) / "best", cache_dir=str(work / "pcache"))
        got = p.predict(test, image_dir=str(SAMPLE_DIR / "images"), captions=str(SAMPLE_DIR / "captions.json"),
                        knowledge_file=str(SAMPLE_DIR / "llm_knowledge.jsonl"))
        conll = format_output(got, "conll")
        out[setting] = {
            "train_loss": [round(h["train_loss"], 6) for h in res["history"]],
            "valid_f1": [round(h["valid_f1"], 4) for h in res["history"]],
            "test_f1": round(res["test"]["F1"], 4),
            "test_predictions_sha256": sha(pred_file.read_text()) if pred_file.exists() else None,
            "predictor_conll_sha256": sha(conll),
            "predictor_labels": [r["labels"] for r in got],
        }
        print(setting, out[setting]["valid_f1"], out[setting]["test_f1"], file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--compare", help="a snapshot to compare with; exit 1 on any difference")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        snap = snapshot(Path(d), a.settings)
    Path(a.out).write_text(json.dumps(snap, indent=1) + "\n")
    if a.compare:
        ref = json.loads(Path(a.compare).read_text())
        bad = [f"{s}.{k}" for s in snap for k in ref[s] if snap[s].get(k) != ref[s][k]]
        print("parity: identical" if not bad else f"parity: differs in {bad}")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
