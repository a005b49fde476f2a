"""Shared fixtures: where the real datasets are, and temporary warehouses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def datasets_root() -> Path:
    return Path(os.environ.get("BATTERY_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The real measured datasets (../shared/datasets or $BATTERY_DATASETS); skip if absent."""
    root = datasets_root()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set BATTERY_DATASETS to their folder)")
    return root


def dataset_file(datasets: Path, relative: str) -> Path:
    path = datasets / relative
    if not path.exists():
        pytest.skip(f"{relative} is not in {datasets}")
    return path
