import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# no test run is logged to the repository's MLflow store (or MLFLOW_TRACKING_URI); tests/test_tracking.py
# gives its runs a store of their own
os.environ["TVOMNER_TRACKING"] = "0"

REPO = Path(__file__).resolve().parent.parent
# the real benchmarks: the data root of tvolib.resources (TVOMNER_DATA, default data/, which `make data` links)
SHARED_DATA = Path(os.environ.get("TVOMNER_DATA") or REPO / "data")


@pytest.fixture
def shared_data():
    """The real benchmark files, or a skip that says why."""
    if not (SHARED_DATA / "twitter2015" / "train.txt").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (run `make data` or set TVOMNER_DATA to run this test)")
    return SHARED_DATA
