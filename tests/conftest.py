import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("TVOMNER_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data():
    """The real benchmark files, or a skip that says why."""
    if not (SHARED_DATA / "twitter2015" / "train.txt").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set TVOMNER_SHARED_DATA to run this test)")
    return SHARED_DATA
