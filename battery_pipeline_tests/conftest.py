"""Shared fixtures: where the real datasets are, and temporary warehouses."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from battery_pipeline.science import synth
from battery_pipeline.science.features import compute_cycle_features
from battery_pipeline.science.labels import compute_labels
from battery_pipeline.science.validation import CellLimits, validate_samples

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


@pytest.fixture(scope="session")
def postgres() -> str:
    """A throwaway PostgreSQL server for the session (`local_cluster.postgres_server`): the libpq
    URL of its `postgres` database; each test module makes the databases it needs. Skipped with
    the reason when PostgreSQL is not installed, failed instead under CI (`.ci/run` installs it)."""
    from battery_pipeline.local_cluster import postgres_bin_dir, postgres_server

    if postgres_bin_dir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL (initdb, pg_ctl) is not installed; .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    with postgres_server() as server:
        yield server


def dataset_file(datasets: Path, relative: str) -> Path:
    path = datasets / relative
    if not path.exists():
        pytest.skip(f"{relative} is not in {datasets}")
    return path


@pytest.fixture(scope="session")
def fleet_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(cycle_features, cycle_labels, cells) of 8 simulated cells run to end of life (NMC/LFP,
    25-45 degC), through the same validation -> features -> labels path as the pipeline."""
    fleet = synth.generate_fleet(n_cells=8, seed=7)
    features, labels = [], []
    for cell in fleet.cells.itertuples():
        limits = CellLimits(cell.voltage_min_v, cell.voltage_max_v, cell.nominal_capacity_ah)
        valid = validate_samples(fleet.samples[cell.cell_id], limits).valid
        cell_features = compute_cycle_features(valid, nominal_capacity_ah=cell.nominal_capacity_ah)
        features.append(cell_features)
        labels.append(compute_labels(cell_features, cell.nominal_capacity_ah))
    return pd.concat(features, ignore_index=True), pd.concat(labels, ignore_index=True), fleet.cells
