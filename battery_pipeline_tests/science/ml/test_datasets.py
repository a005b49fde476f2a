"""Training tables: no label leakage, causal history features, a stable and sensitive data hash."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.features import SOH_LEAKAGE_COLUMNS
from battery_pipeline.science.labels import LABEL_COLUMNS, compute_labels
from battery_pipeline.science.ml.datasets import (
    RELATIVE_COLUMNS,
    RUL_FORBIDDEN_INPUTS,
    RUL_HISTORY_COLUMNS,
    cycle_life_dataset,
    frame_hash,
    rul_dataset,
    soh_dataset,
    trailing_slope,
)


def test_soh_table_has_no_same_cycle_capacity(fleet_tables):
    features, labels, _ = fleet_tables
    table = soh_dataset(features, labels)
    assert not set(table.feature_columns) & (set(SOH_LEAKAGE_COLUMNS) | set(LABEL_COLUMNS))
    assert "charge_capacity_ah" in table.feature_columns  # measured before the discharge: allowed
    assert table.dropped_columns == ("re_ohm", "rct_ohm")  # no impedance spectroscopy in the demo
    assert list(table.X.columns) == list(table.feature_columns)
    assert table.X.dtypes.eq("float64").all() and np.isfinite(table.y).all()
    assert len(table) == labels["soh"].notna().sum()
    key = table.frame()[["cell_id", "cycle_number"]]
    assert key.equals(key.sort_values(["cell_id", "cycle_number"]).reset_index(drop=True))
    joined = key.merge(labels.assign(cell_id=labels["cell_id"].astype(str)), on=["cell_id", "cycle_number"])
    np.testing.assert_array_equal(joined["soh"].to_numpy(), table.y.to_numpy())
    with pytest.raises(ValueError, match="not allowed"):
        soh_dataset(features, labels, feature_columns=["charge_capacity_ah", "discharge_energy_wh"])


def test_charge_capacity_relative_to_the_cell_reference(fleet_tables):
    features, labels, cells = fleet_tables
    table = soh_dataset(features, labels)
    nominal = cells.set_index("cell_id")["nominal_capacity_ah"].loc[table.cell_id].to_numpy()
    np.testing.assert_allclose(table.X["charge_capacity_fraction"], table.X["charge_capacity_ah"] / nominal)
    assert set(RELATIVE_COLUMNS.values()) <= set(table.feature_columns)
    assert not set(RELATIVE_COLUMNS.values()) & set(soh_dataset(features, labels, relative=False).feature_columns)


def test_columns_empty_in_the_training_cells_are_dropped(fleet_tables):
    features, labels, cells = fleet_tables
    train = list(cells["cell_id"][:6])
    blanked = features.copy()
    blanked.loc[blanked["cell_id"].isin(train), "resistance_cycler_ohm"] = np.nan
    table = soh_dataset(blanked, labels, train_cells=train)
    assert "resistance_cycler_ohm" in table.dropped_columns
    assert "resistance_cycler_ohm" in soh_dataset(blanked, labels).feature_columns  # test cells have it
    subset = table.subset(train[:2])
    assert subset.cells == sorted(train[:2]) and subset.feature_columns == table.feature_columns


def test_rul_table_rows_and_inputs(fleet_tables):
    features, labels, _ = fleet_tables
    table = rul_dataset(features, labels)
    assert not set(table.feature_columns) & set(RUL_FORBIDDEN_INPUTS)
    assert {"discharge_capacity_ah", "cycle_number", *RUL_HISTORY_COLUMNS} <= set(table.feature_columns)
    assert (table.y >= 0).all()
    # y = eol_cycle - cycle_number, and every cell ends at RUL 0 (its end-of-life cycle)
    eol = labels.groupby("cell_id")["eol_cycle"].first().astype(float)
    np.testing.assert_array_equal(table.y, eol.loc[table.cell_id].to_numpy() - table.cycle_number)
    assert table.frame().groupby("cell_id")["rul_cycles"].min().eq(0).all()


def test_rul_excludes_censored_cells(fleet_tables):
    features, labels, cells = fleet_tables
    short_cell = cells["cell_id"].iloc[0]
    truncated = features[(features["cell_id"] != short_cell) | (features["cycle_number"] <= 150)]
    relabelled = compute_labels(truncated, dict(zip(cells["cell_id"], cells["nominal_capacity_ah"])))
    assert relabelled.loc[relabelled["cell_id"] == short_cell, "censored"].all()
    table = rul_dataset(truncated, relabelled)
    assert short_cell not in table.cells and len(table.cells) == len(cells) - 1


def test_history_features_never_look_ahead(fleet_tables):
    features, labels, cells = fleet_tables
    cell = cells["cell_id"].iloc[2]
    before = rul_dataset(features, labels)
    # change everything the cell measured after cycle 200: earlier rows must not move
    changed = features.copy()
    late = (changed["cell_id"] == cell) & (changed["cycle_number"] > 200)
    changed.loc[late, "discharge_capacity_ah"] *= 0.5
    changed.loc[late, "charge_capacity_ah"] += 1.0
    relabelled = labels.copy()
    relabelled.loc[late.to_numpy(), "soh"] *= 0.5  # labels keep eol/rul: only the inputs change
    after = rul_dataset(changed, relabelled)
    early = ((before.cell_id == cell) & (before.cycle_number <= 200)).to_numpy()
    pd.testing.assert_frame_equal(before.X[early], after.X[early])
    assert not before.X[(before.cell_id == cell).to_numpy() & ~early].equals(after.X[(after.cell_id == cell).to_numpy() & ~early])


def test_trailing_slope_by_hand():
    cells = pd.Series(["a"] * 5 + ["b"] * 3)
    x = np.array([1, 2, 3, 4, 5, 1, 2, 3], dtype=float)
    y = np.array([1, 3, 5, np.nan, 9, 10, 9, 8], dtype=float)  # a: slope 2 (one gap); b: slope -1
    slope = trailing_slope(cells, x, y, window=3)
    # row 0 and row 5 have one point; row 3 (NaN y) still has rows 1-2 behind it
    np.testing.assert_allclose(slope, [np.nan, 2, 2, 2, 2, np.nan, -1, -1], equal_nan=True)
    # window 3 at row 4 (x = 5) sees x = 3, 4, 5 with y = 5, NaN, 9 -> slope 2, not from cell b
    big = trailing_slope(pd.Series(["a"] * 3), np.array([1e6, 1e6 + 1, 1e6 + 2]), np.array([0.5, 0.25, 0.0]), 3)
    np.testing.assert_allclose(big[1:], -0.25, rtol=1e-12)  # no precision loss at large cycle numbers


def test_cycle_life_table(fleet_tables):
    features, labels, cells = fleet_tables
    table = cycle_life_dataset(features, labels)
    assert table.cells == sorted(cells["cell_id"])
    truth = labels.groupby("cell_id")["eol_cycle"].first().astype(float)
    np.testing.assert_array_equal(table.y, truth.loc[table.cell_id].to_numpy())
    assert (table.cycle_number == 100).all()  # every demo cell has a dQ curve at cycle 100


def test_data_hash_is_stable_and_sensitive(fleet_tables):
    features, labels, _ = fleet_tables
    table = soh_dataset(features, labels)
    digest = table.data_hash()
    assert len(digest) == 64
    shuffled = features.sample(frac=1.0, random_state=0)  # same data, other row order
    assert soh_dataset(shuffled, labels.iloc[::-1]).data_hash() == digest
    nudged = features.copy()
    nudged.loc[5, "charge_capacity_ah"] += 1e-12
    assert soh_dataset(nudged, labels).data_hash() != digest
    assert table.subset(table.cells[:-1]).data_hash() != digest


def test_frame_hash_canonical_bytes():
    frame = pd.DataFrame({"cell_id": ["a", "b"], "cycle_number": [1, 2], "x": [0.5, np.nan]})
    # pinned: a change of the byte format changes every recorded model lineage, so it must be deliberate
    assert frame_hash(frame) == PINNED_DIGEST
    assert frame_hash(frame.set_axis([10, 11])) == PINNED_DIGEST  # the index is not data
    variants = [
        frame.assign(x=[0.5, 0.0]),  # NaN is not zero
        frame.rename(columns={"x": "y"}),
        frame.iloc[::-1],
        frame.assign(cell_id=["a", "c"]),
        frame.assign(cycle_number=[1.0, 2.0]),  # dtype is part of the data
    ]
    assert len({frame_hash(v) for v in variants} | {PINNED_DIGEST}) == len(variants) + 1
    assert frame_hash(frame.assign(x=[-0.0, np.nan])) == frame_hash(frame.assign(x=[0.0, np.float64("nan")]))
    assert frame_hash(frame, salt="soh") != PINNED_DIGEST


PINNED_DIGEST = "c8a003ba0dff6789589f348226b262d596aaec7ae9fb9feaee6b4349f48b39bf"
