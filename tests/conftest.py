"""Shared fixtures: the real data folder (../shared/data or $IMPACTREG_DATA) and helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("IMPACTREG_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real test images; skipped when absent, a failure under CI=true."""
    root = data_root()
    if not root.is_dir():
        message = f"real test data not found at {root} (set IMPACTREG_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root
