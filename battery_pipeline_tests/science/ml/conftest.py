"""Shared data for the model-zoo tests: a simulated fleet through features and labels."""

from __future__ import annotations

import pandas as pd
import pytest

from battery_pipeline.science import synth
from battery_pipeline.science.features import compute_cycle_features
from battery_pipeline.science.labels import compute_labels
from battery_pipeline.science.validation import CellLimits, validate_samples


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
