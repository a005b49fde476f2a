"""Severson et al.'s Q(V) arrays (summary-level source) on the 41 real training cells and damaged copies."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from battery_pipeline.science.features import (
    FeatureConfig,
    compute_curves,
    compute_cycle_features,
    grid_curve_features,
    reference_cycle_number,
)
from battery_pipeline.science.readers import SourceFormatError, detect_format, readers_by_priority
from battery_pipeline.science.readers.severson_qdlin import (
    FIRST_CYCLE,
    SUMMARY_COLUMNS,
    UNKNOWN_ARRAY_DATASET,
    SeversonQdlinReader,
    grid,
)
from battery_pipeline.science.sources import cell_record, discover
from battery_pipeline.science.synth import generate_fleet
from battery_pipeline_tests.conftest import dataset_file

FOLDER = "severson_qdlin"


@pytest.fixture(scope="module")
def train(datasets):
    folder = dataset_file(datasets, f"{FOLDER}/train")
    files = sorted(folder.glob("cell*.csv"), key=lambda p: int(p.stem[4:]))
    assert len(files) == 41
    return files


def _array(path):
    return np.loadtxt(path, delimiter=",")


def _write(path, q):
    np.savetxt(path, q, delimiter=",", fmt="%.6g")
    return path


def test_all_41_detected_and_claimed_by_no_other_reader(train):
    for path in train:
        assert detect_format(path) is SeversonQdlinReader, path.name
        head = path.read_bytes()[: 64 * 1024]
        others = [r.format_name for r in readers_by_priority() if r is not SeversonQdlinReader and r.sniff(path, head)]
        assert others == [], (path.name, others)


def test_discovered_one_cell_per_file_the_cycle_lives_file_is_no_cell(datasets, train):
    catalog = discover([dataset_file(datasets, FOLDER)])
    assert len(catalog) == 41, sorted(catalog.keys())
    assert all(s.format_name == "severson_qdlin" and s.problem is None for s in catalog)
    assert "severson_train_cell1" in catalog.keys() and "severson_train_cell41" in catalog.keys()


def test_summary_one_row_per_cycle_values_from_the_array(train):
    path = train[0]
    q = _array(path)
    summary = SeversonQdlinReader.read([path], "severson_train_cell1").cycle_summary
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert summary["cycle_number"].tolist() == list(range(FIRST_CYCLE, FIRST_CYCLE + 99))
    np.testing.assert_allclose(summary["discharge_capacity_ah"], q[-1])  # Q at 2.0 V
    # the paper's delta-Q: Q_100(V) - Q_10(V) over the 1000 grid points, population variance
    dq = q[:, 98] - q[:, 8]
    row = summary.set_index("cycle_number").loc[100]
    assert row["delta_q_variance_ah2"] == pytest.approx(np.var(dq), rel=1e-9)
    assert row["delta_q_min_ah"] == pytest.approx(dq.min(), rel=1e-12)
    assert row["delta_q_mean_ah"] == pytest.approx(dq.mean(), rel=1e-9)
    z = (dq - dq.mean()) / dq.std()
    assert row["delta_q_skewness"] == pytest.approx(np.mean(z**3), rel=1e-6)
    assert row["delta_q_kurtosis"] == pytest.approx(np.mean(z**4) - 3.0, rel=1e-6)  # excess, as cycle_features
    assert summary.set_index("cycle_number").loc[10, "delta_q_variance_ah2"] == 0.0  # the reference itself
    # LFP's plateau: -dQ/dV peaks between 3.0 and 3.3 V at 4C
    assert summary["dqdv_peak_voltage_v"].between(3.0, 3.3).all()
    assert (summary["source_file"] == "cell1.csv").all() and summary["source_row"].tolist() == list(range(99))


def test_curve_statistics_equal_those_the_samples_path_computes():
    # a simulated cell: its Q(V) curves (compute_curves, every cycle) handed to the summary path's
    # function give the delta-Q and dQ/dV statistics compute_cycle_features gives
    fleet = generate_fleet(n_cells=1, seed=3, cycles=40)
    samples = next(iter(fleet.samples.values()))
    features = compute_cycle_features(samples).set_index("cycle_number")
    curves = compute_curves(samples, cycles=features.index.tolist())
    q = curves[curves["curve"] == "q_of_v"].pivot(index="cycle_number", columns="voltage_v", values="value")
    q = q.reindex(index=features.index)
    reference = int(np.flatnonzero(q.index == reference_cycle_number(samples))[0])
    again = grid_curve_features(q.columns.to_numpy(float), q.to_numpy(float), reference, FeatureConfig())
    assert np.isfinite(again["delta_q_variance_ah2"]).sum() >= 30
    for column, values in again.items():
        np.testing.assert_allclose(values, features[column].to_numpy(float), rtol=1e-9, atol=1e-15, equal_nan=True, err_msg=column)


def test_metadata_is_the_dataset_rule_and_the_cycle_life_names_its_line(datasets, train):
    catalog = discover([dataset_file(datasets, FOLDER)])
    record = cell_record(catalog["severson_train_cell7"])
    assert record["chemistry"] == "LFP" and record["nominal_capacity_ah"] == 1.1
    assert record["chemistry_source"].startswith("dataset rule: Severson et al. 2019")
    lives = (train[0].parent.parent / "train_cycle_lives.csv").read_text().split()
    assert record["stated_cycle_life"] == int(lives[6])
    assert record["stated_cycle_life_source"].startswith("file: train_cycle_lives.csv line 7")
    assert "3.6-2.0 V" in record["description"] and "not in the file" in record["description"]


def test_corrupt_cycles_kept_as_nan_and_named(train):
    # cell2's cycle 12 is a Q(V) rising to 45 Ah (a known glitch of the arrays): its row stays, its values NaN
    path = next(p for p in train if p.stem == "cell2")
    summary = SeversonQdlinReader.read([path], "c").cycle_summary.set_index("cycle_number")
    assert np.isnan(summary.loc[12, "discharge_capacity_ah"]) and np.isnan(summary.loc[12, "delta_q_variance_ah2"])
    assert summary.drop(index=12)["discharge_capacity_ah"].between(0.9, 1.2).all()
    assert len(summary) == 99
    description = SeversonQdlinReader.describe([path]).description
    assert "1 cycle(s) whose Q(V) is not a discharge curve" in description and "cycle 12 (column 10)" in description


def test_without_a_cycle_life_file_the_life_is_unknown_and_says_why(train, tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    copy = shutil.copy(train[0], folder / "cell1.csv")
    record = cell_record(discover([tmp_path])["severson_train_cell1"])
    assert record["stated_cycle_life"] is None
    assert record["stated_cycle_life_source"].startswith("unknown: no train_cycle_lives.csv")
    # a lives file with fewer lines than the folder has cells pairs nothing
    (tmp_path / "train_cycle_lives.csv").write_text("")
    shutil.copy(copy, folder / "cell2.csv")
    (tmp_path / "train_cycle_lives.csv").write_text("1000\n")
    record = cell_record(discover([tmp_path])["severson_train_cell1"])
    assert record["stated_cycle_life"] is None and "1 line(s) for 2 cell file(s)" in record["stated_cycle_life_source"]


def test_a_lookalike_matrix_gets_no_severson_metadata(train, tmp_path):
    # another lab's 1000-point Q(V) arrays of a 3 Ah cell: the layout fits, the values do not
    q = _array(train[0]) * 3.0 / 1.1
    path = _write(tmp_path / "other_lab_cell.csv", q)
    assert detect_format(path) is SeversonQdlinReader
    record = cell_record(discover([path])["other_lab_cell"])
    assert record["dataset"] == UNKNOWN_ARRAY_DATASET
    assert record["chemistry"] is None and record["nominal_capacity_ah"] is None
    assert "not that of a new 1.1 Ah cell" in record["description"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda q: q[:900], "900 rows, not the 1000 points"),
        (lambda q: q * 1000.0, "Q(V) starts at 0 Ah (values in mAh"),
        (lambda q: -q, "columns are not discharge curves"),
    ],
)
def test_damaged_arrays_fail_naming_the_file(train, tmp_path, damage, message):
    path = _write(tmp_path / "cell1.csv", damage(_array(train[0])))
    with pytest.raises(SourceFormatError, match=re.escape(message)) as raised:
        SeversonQdlinReader.read([path], "c")
    assert "cell1.csv" in str(raised.value)


def test_garbled_rows_fail_naming_the_row(train, tmp_path):
    lines = train[0].read_text().splitlines()
    lines[500] = lines[500].replace(",", ",x", 1)
    (tmp_path / "cell1.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceFormatError, match="row 500 holds text"):
        SeversonQdlinReader.read([tmp_path / "cell1.csv"], "c")
    lines = train[0].read_text().splitlines()
    lines[700] = lines[700].rsplit(",", 1)[0]
    (tmp_path / "cell1.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceFormatError, match="row 700 has 98 values, row 0 has 99"):
        SeversonQdlinReader.read([tmp_path / "cell1.csv"], "c")


def test_grid_is_the_producers_3_6_to_2_0_volts():
    g = grid()
    assert g[0] == 3.6 and g[-1] == 2.0 and len(g) == 1000
