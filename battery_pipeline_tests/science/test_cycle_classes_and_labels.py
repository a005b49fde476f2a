"""Cycles are classified before they are labelled, and labels state their reference (issue 13,
items 2, 3 and 7), on the real files that got confident wrong labels before."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.cycle_classes import CYCLE_CLASSES, classify_cycles
from battery_pipeline.science.features import compute_cycle_features
from battery_pipeline.science.labels import LabelConfig, check_label_consistency, labels_for_cell, trainable
from battery_pipeline.science.sources import cell_record, discover
from battery_pipeline_tests.conftest import dataset_file
from battery_pipeline_tests.fixtures import xjtu_lookalike


def _labelled(root):
    """features and labels of the one cell under root, as the assets make them."""
    (source,) = list(discover([root]))
    record = cell_record(source)
    result = source.reader.read(list(source.files), source.partition_key)
    if len(result.samples):
        features = compute_cycle_features(result.samples, record["nominal_capacity_ah"], result.impedance)
    else:
        summary = result.cycle_summary
        features = summary.join(classify_cycles(summary))
    labels, _, cycles = labels_for_cell(features, record, LabelConfig())
    assert check_label_consistency(labels, cycles) == []
    return record, features, labels


def test_the_maccor_diagnostic_file_gets_no_soh_and_no_end_of_life(datasets, tmp_path):
    path = dataset_file(datasets, "cycler_samples/PredictionDiagnostics_000109_tztest.010")
    shutil.copy(path, tmp_path / path.name)
    _, features, labels = _labelled(tmp_path)
    classes = dict(zip(features["cycle_number"], features["cycle_class"]))
    assert classes[86] == "formation"  # coulombic efficiency 1.9: the file starts part-charged
    assert classes[89] != "full"  # the truncated last cycle, at another current
    assert "full" not in classes.values()
    assert labels["soh"].isna().all() and labels["eol_cycle"].isna().all() and labels["rul_cycles"].isna().all()
    assert (labels["label_status"] == "unlabelled").all()
    assert "0 comparable full cycle(s)" in labels["label_note"].iloc[0]
    assert not trainable(labels).any()


def test_calce_partial_discharge_and_the_cycle_after_it_are_not_labelled(datasets):
    root = dataset_file(datasets, "calce_cs2/CS2_36")
    _, features, labels = _labelled(root)
    by_cycle = features.set_index("cycle_number")
    assert by_cycle.loc[97, "cycle_class"] == "partial"  # 0.10 Ah, stopped at 3.9 V
    assert "above the regular cut-off" in by_cycle.loc[97, "cycle_class_reason"]
    assert by_cycle.loc[98, "cycle_class"] == "partial"  # its charge refilled only 0.11 Ah
    soh = labels.set_index("cycle_number")["soh"]
    assert np.isnan(soh[97]) and np.isnan(soh[98])
    assert (labels.loc[labels["soh"].notna(), "cycle_class"] == "full").all()
    assert labels["label_status"].iloc[0] == "labelled" and labels["soh_reference"].iloc[0] == "nominal"
    assert 0.85 <= labels["initial_soh"].iloc[0] <= 1.10
    assert set(features["cycle_class"]) <= set(CYCLE_CLASSES)
    # the end of life, if any, is a comparable full cycle
    eol = labels["eol_cycle"].dropna().unique()
    assert all(by_cycle.loc[int(c), "cycle_class"] == "full" for c in eol)


def test_a_lookalike_summary_table_is_labelled_relative_to_its_own_start(datasets, tmp_path):
    dataset_file(datasets, "severson_qdlin/train/cell1.csv")
    xjtu_lookalike(datasets, tmp_path, "2C_battery-9.csv")
    record, _, labels = _labelled(tmp_path)
    assert record["nominal_capacity_source"] == "unknown"
    first = labels.iloc[0]
    assert first["soh_reference"] == "initial" and first["label_status"] == "labelled"
    assert first["initial_soh"] == pytest.approx(1.0)
    assert "relative to the cell's initial capacity" in first["label_note"]
    # an LFP cell at ~99 % of its start after 99 cycles: no end of life at the first cycle
    assert labels["censored"].all()
    assert labels["soh"].dropna().min() > 0.95


def test_a_wrong_rated_capacity_puts_the_cell_out_of_band_and_out_of_training(datasets, tmp_path):
    """The lookalike with XJTU's 2.0 Ah asserted by a sidecar: initial SOH ~0.54, outside
    0.85-1.10, so its labels are kept for inspection but never trained on."""
    dataset_file(datasets, "severson_qdlin/train/cell1.csv")
    path = xjtu_lookalike(datasets, tmp_path, "lab_cell_07.csv")
    (tmp_path / (path.stem + ".cell.json")).write_text(json.dumps({"nominal_capacity_ah": 2.0}))
    record, _, labels = _labelled(tmp_path)
    assert record["nominal_capacity_source"] == "sidecar: lab_cell_07.cell.json"
    first = labels.iloc[0]
    assert first["label_status"] == "out_of_band" and first["initial_soh"] < 0.6
    assert "stay out of training" in first["label_note"]
    assert not trainable(labels).any()


def test_the_demo_cells_first_cycle_is_formation_and_the_rest_full(tmp_path):
    from battery_pipeline.science.demo import ensure_demo_fleet

    cells = ensure_demo_fleet(tmp_path / "demo")
    path = sorted(cells.glob("*.parquet"))[0]
    folder = tmp_path / "one"
    folder.mkdir()
    for companion in cells.glob(path.stem + ".*"):
        shutil.copy(companion, folder / companion.name)
    _, features, labels = _labelled(folder)
    counts = features["cycle_class"].value_counts()
    assert features["cycle_class"].iloc[0] == "formation"
    assert counts.get("full", 0) >= len(features) - 3  # only the first cycle and injected faults differ
    assert labels["label_status"].iloc[0] == "labelled"


def test_rate_test_and_rest_only_cycles_are_told_apart_from_regular_cycles():
    regular = dict(charge_capacity_ah=2.0, discharge_capacity_ah=1.99, discharge_current_mean_a=2.0,
                   discharge_end_voltage_v=2.7, charge_end_voltage_v=4.2)
    rows = [dict(regular, cycle_number=n) for n in range(1, 9)]
    rows[3] = dict(regular, cycle_number=4, discharge_current_mean_a=0.1, discharge_capacity_ah=2.05, charge_capacity_ah=2.06)
    rows[5] = dict(cycle_number=6, charge_capacity_ah=np.nan, discharge_capacity_ah=np.nan,
                   discharge_current_mean_a=np.nan, discharge_end_voltage_v=np.nan, charge_end_voltage_v=np.nan)
    frame = pd.DataFrame(rows).assign(cell_id="c")
    classes = classify_cycles(frame)["cycle_class"].tolist()
    assert classes == ["full", "full", "full", "diagnostic", "full", "rest_only", "full", "full"]
