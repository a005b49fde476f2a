"""NASA PCoE .mat reader against the real files in ../shared/datasets/nasa_pcoe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers.base import IMPEDANCE_COLUMNS, SAMPLE_COLUMNS
from battery_pipeline.science.readers.nasa_mat import NasaPcoeMatReader
from battery_pipeline.science.readers.panasonic_mat import Panasonic18650PFMatReader
from battery_pipeline.science.schema import CellCycleSample
from battery_pipeline_tests.conftest import dataset_file

B0005 = "nasa_pcoe/B0005.mat"
B0025 = "nasa_pcoe/B0025.mat"
PANASONIC = "panasonic_18650pf/25degC/Drive cycles/03-18-17_02.17 25degC_Cycle_1_Pan18650PF.mat"


@pytest.fixture(scope="module")
def b0005_path(datasets) -> Path:
    return dataset_file(datasets, B0005)


@pytest.fixture(scope="module")
def b0005(b0005_path):
    return NasaPcoeMatReader.read([b0005_path], "B0005")


@pytest.fixture(scope="module")
def b0005_raw_ops(b0005_path):
    return scipy.io.loadmat(b0005_path)["B0005"][0, 0]["cycle"][0]


@pytest.fixture(scope="module")
def b0025_path(datasets) -> Path:
    return dataset_file(datasets, B0025)


@pytest.fixture(scope="module")
def b0025(b0025_path):
    return NasaPcoeMatReader.read([b0025_path], "B0025")


def _discharge_capacities(samples) -> np.ndarray:
    """Final discharge capacity of every cycle that holds a real discharge (> 0.5 Ah)."""
    dis = samples[samples["step_type"] == "discharge"]
    per_cycle = dis.groupby("cycle_number")["capacity_ah"].max()
    return per_cycle[per_cycle > 0.5].to_numpy()


def test_b0005_has_168_discharges_and_the_file_capacity_of_the_first(b0005_raw_ops):
    discharges = [op for op in b0005_raw_ops if op["type"][0] == "discharge"]
    assert len(discharges) == 168
    first = float(discharges[0]["data"][0, 0]["Capacity"].ravel()[0])
    assert first == pytest.approx(1.8565, abs=1e-4)


def test_b0005_integrated_discharge_capacity_matches_the_file_within_1_percent(b0005, b0005_raw_ops):
    file_caps = np.array(
        [
            float(op["data"][0, 0]["Capacity"].ravel()[0])
            for op in b0005_raw_ops
            if op["type"][0] == "discharge"
        ]
    )
    ours = _discharge_capacities(b0005.samples)
    assert len(ours) == 168  # one cycle per discharge operation, in order
    assert ours[0] == pytest.approx(1.8565, rel=0.01)
    np.testing.assert_allclose(ours, file_caps, rtol=0.01)


def test_b0005_frame_is_canonical_and_valid(b0005):
    samples = b0005.samples
    assert list(samples.columns) == SAMPLE_COLUMNS
    assert len(samples) == 591_458
    CellCycleSample.validate(samples)
    assert (samples["source_file"] == "B0005.mat").all()
    np.testing.assert_array_equal(samples["source_row"].to_numpy(), np.arange(len(samples)))
    assert samples["internal_resistance_ohm"].isna().all()


def test_b0005_signs_discharge_negative_charge_positive(b0005):
    samples = b0005.samples
    dis = samples.loc[samples["step_type"] == "discharge", "current_a"]
    chg = samples.loc[samples["step_type"] == "charge", "current_a"]
    assert dis.median() == pytest.approx(-2.0, abs=0.05)  # 2 A CC discharge
    assert chg.quantile(0.95) == pytest.approx(1.5, abs=0.05)  # 1.5 A CC charge
    # Physics agrees with the sign: voltage falls while current is negative.
    cycle1 = samples[(samples["cycle_number"] == 1) & (samples["current_a"] < -1.5)]
    assert cycle1["voltage_v"].iloc[-1] < cycle1["voltage_v"].iloc[0] - 0.8


def test_b0005_time_and_cycles(b0005):
    samples = b0005.samples
    time_s = samples["time_s"].to_numpy()
    assert time_s[0] == 0.0  # the first operation is a charge
    assert (np.diff(time_s) >= 0).all()
    cycles = samples["cycle_number"].to_numpy()
    assert (np.diff(cycles) >= 0).all()
    # 170 charges + one discharge whose preceding charge is missing from the file
    np.testing.assert_array_equal(np.unique(cycles), np.arange(1, 172))
    assert (samples["capacity_ah"].dropna() >= 0).all()
    assert samples.loc[samples["step_type"] == "rest", "capacity_ah"].isna().all()


def test_b0005_has_no_impedance_but_the_frame_has_its_columns(b0005):
    assert b0005.impedance is not None
    assert list(b0005.impedance.columns) == IMPEDANCE_COLUMNS
    assert b0005.impedance.empty


def test_b0005_defaults_and_voltage_window(b0005):
    cell = b0005.cell
    assert cell.dataset == "NASA PCoE Battery Data Set"
    assert cell.nominal_capacity_ah == 2.0
    assert cell.licence == "US Government work (public domain)"
    assert "Saha" in cell.citation
    assert (cell.voltage_min_v, cell.voltage_max_v) == (2.7, 4.2)
    assert "2.7 V" in cell.description
    v = b0005.samples["voltage_v"]
    inside = v.between(cell.voltage_min_v - 0.2, cell.voltage_max_v + 0.1)
    assert inside.mean() >= 0.999


def test_b0025_impedance_is_a_separate_table(b0025, b0025_path):
    imp = b0025.impedance
    assert list(imp.columns) == IMPEDANCE_COLUMNS
    assert len(imp) == 21
    assert np.isfinite(imp["re_ohm"]).all() and np.isfinite(imp["rct_ohm"]).all()
    assert imp["re_ohm"].between(0.03, 0.08).all()
    assert (imp["cell_id"] == "B0025").all() and (imp["source_file"] == "B0025.mat").all()
    assert imp["time_s"].iloc[0] == 0.0  # B0025 starts with an impedance measurement
    assert imp["cycle_number"].iloc[0] == 0  # ... before the first charge
    assert (np.diff(imp["cycle_number"]) >= 0).all()
    assert imp["cycle_number"].max() <= b0025.samples["cycle_number"].max()
    # Impedance operations hold no samples: the samples are exactly the charge/discharge ones.
    ops = scipy.io.loadmat(b0025_path)["B0025"][0, 0]["cycle"][0]
    n_samples = sum(op["data"][0, 0]["Time"].size for op in ops if op["type"][0] != "impedance")
    assert len(b0025.samples) == n_samples == 104_120
    assert b0025.samples["time_s"].iloc[0] > 0
    assert (np.diff(b0025.samples["time_s"]) >= 0).all()


def test_b0025_keeps_its_two_nan_samples(b0025):
    # Reader never drops rows: the last charge has two all-NaN samples; validation judges them.
    samples = b0025.samples
    assert samples["voltage_v"].isna().sum() == 2
    CellCycleSample.validate(samples.dropna(subset=["voltage_v", "current_a"]))


def test_b0025_square_wave_discharge_is_fully_counted(b0025):
    # Sampled every ~10 s, i.e. alternately at -4 A and 0 A: the whole trapezoid must count.
    caps = _discharge_capacities(b0025.samples)
    assert len(caps) == 28
    assert caps[0] == pytest.approx(1.8985, rel=0.005)  # NASA's `Capacity` (to 2.7 V): 1.847


def test_detect_format_tells_nasa_from_panasonic(datasets, b0005_path):
    assert detect_format(b0005_path) is NasaPcoeMatReader
    head = b0005_path.read_bytes()[: 64 * 1024]
    assert not Panasonic18650PFMatReader.sniff(b0005_path, head)
    pan = dataset_file(datasets, PANASONIC)
    with pan.open("rb") as handle:
        pan_head = handle.read(64 * 1024)
    assert not NasaPcoeMatReader.sniff(pan, pan_head)
    assert detect_format(pan) is Panasonic18650PFMatReader


def test_truncated_copy_raises_naming_the_file(tmp_path, b0025_path):
    data = b0025_path.read_bytes()
    broken = tmp_path / "B0025_truncated.mat"
    broken.write_bytes(data[: len(data) // 2])
    assert detect_format(broken) is NasaPcoeMatReader  # the head is intact
    with pytest.raises(SourceFormatError) as info:
        NasaPcoeMatReader.read([broken], "B0025")
    assert "B0025_truncated.mat" in str(info.value)
    assert "truncated" in str(info.value)


def test_mat_without_the_nasa_struct_raises(tmp_path):
    other = tmp_path / "B0099.mat"
    scipy.io.savemat(other, {"results": np.arange(5.0)})
    head = other.read_bytes()[: 64 * 1024]
    assert not NasaPcoeMatReader.sniff(other, head)
    with pytest.raises(SourceFormatError, match=r"B0099\.mat: no NASA PCoE struct"):
        NasaPcoeMatReader.read([other], "B0099")


def test_not_a_mat_file_raises(tmp_path):
    text = tmp_path / "B0005.mat"
    text.write_text("Voltage,Current\n4.1,-2.0\n")
    with pytest.raises(SourceFormatError, match=r"B0005\.mat: not a MATLAB 5 MAT-file"):
        NasaPcoeMatReader.read([text], "B0005")
