"""Embedded synthetic sample dataset (see README.md in this folder)."""
from pathlib import Path

SAMPLE_DIR = Path(__file__).parent


def sample_paths() -> dict:
    """Paths of the shipped sample files (all under ``SAMPLE_DIR``)."""
    d = SAMPLE_DIR
    return {
        "root": d,
        "data_dir": d / "data",
        "train": d / "data" / "train.txt",
        "valid": d / "data" / "valid.txt",
        "test": d / "data" / "test.txt",
        "image_dir": d / "images",
        "captions": d / "captions.json",
        "objects": d / "objects.jsonl",
        "kb": d / "kb.jsonl",
        "llm_knowledge": d / "llm_knowledge.jsonl",
        "phrases": d / "phrases.jsonl",
        "readme": d / "README.md",
    }
