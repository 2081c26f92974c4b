"""Shared test fixtures: where the TinyStories sample lives (set FHA_SAMPLE_DATA to move it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("FHA_SAMPLE_DATA", REPO_ROOT.parent / "shared" / "data" / "tinystories-sample"))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The sample folder with train.txt and valid.txt; skips the test when it is absent."""
    if not (SAMPLE_DIR / "train.txt").is_file() or not (SAMPLE_DIR / "valid.txt").is_file():
        pytest.skip(f"TinyStories sample not found at {SAMPLE_DIR}")
    return SAMPLE_DIR
