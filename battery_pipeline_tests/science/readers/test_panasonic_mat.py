"""Panasonic 18650PF .mat reader against the real files in ../shared/datasets/panasonic_18650pf."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers.base import SAMPLE_COLUMNS
from battery_pipeline.science.readers.nasa_mat import NasaPcoeMatReader
from battery_pipeline.science.readers.panasonic_mat import Panasonic18650PFMatReader as Reader
from battery_pipeline.science.schema import CellCycleSample
from battery_pipeline_tests.conftest import dataset_file

ROOT = "panasonic_18650pf/25degC/"
CYCLE_1 = ROOT + "Drive cycles/03-18-17_02.17 25degC_Cycle_1_Pan18650PF.mat"
DIS1C = ROOT + "1C discharge tests_end_of_tests/07-22-17_22.44 4020_Dis1C_1.mat"
DIS1C_RP = ROOT + "1C discharge tests_end_of_tests/07-23-17_01.42 4020_Dis1C_Rp.mat"
CHARGE = ROOT + "C20 OCV and 1C discharge tests_start_of_tests/03-09-17_19.03 3349_Charge2.mat"
SMALL = [
    ROOT + "1C discharge tests_end_of_tests/07-22-17_22.08 4020_TS003628.mat",
    ROOT + "1C discharge tests_end_of_tests/07-22-17_22.44 4020_Pause_1.mat",
    ROOT + "Charges and Pauses/04-27-17_08.52 3541_Charge1a.mat",
    ROOT + "Charges and Pauses/03-19-17_02.26 3406_Pause2.mat",  # all-zero columns are uint8
]


def _raw(path: Path):
    return scipy.io.loadmat(path)["meas"][0, 0]


@pytest.fixture(scope="module")
def cycle1_path(datasets) -> Path:
    return dataset_file(datasets, CYCLE_1)


@pytest.fixture(scope="module")
def cycle1(cycle1_path):
    return Reader.read([cycle1_path], "25degC_Cycle_1")


def test_drive_cycle_is_valid_canonical_10hz(cycle1, cycle1_path):
    samples = cycle1.samples
    assert list(samples.columns) == SAMPLE_COLUMNS
    CellCycleSample.validate(samples)
    assert len(samples) == 109_641
    assert np.median(np.diff(samples["time_s"])) == pytest.approx(0.1, abs=0.005)
    assert (np.diff(samples["time_s"]) >= 0).all()
    assert (samples["cycle_number"] == 0).all()  # one drive cycle, Ah counter never reset
    assert (samples["source_file"] == cycle1_path.name).all()
    np.testing.assert_array_equal(samples["source_row"].to_numpy(), np.arange(len(samples)))


def test_drive_cycle_signs_and_capacity(cycle1, cycle1_path):
    samples = cycle1.samples
    current = samples["current_a"]
    assert current.min() < -15 and current.max() > 5  # discharge peaks and regen pulses
    assert samples.loc[samples["step_type"] == "discharge", "current_a"].lt(0).all()
    # Discharge throughput minus regen equals the file's own (net, signed) Ah counter.
    dis = samples.loc[samples["step_type"] == "discharge", "capacity_ah"].max()
    chg = samples.loc[samples["step_type"] == "charge", "capacity_ah"].max()
    raw_ah = _raw(cycle1_path)["Ah"].ravel()
    assert raw_ah[-1] < -2.5  # the test discharges the cell: net negative
    assert chg - dis == pytest.approx(raw_ah[-1] - raw_ah[0], abs=0.01)
    assert dis == pytest.approx(3.55, abs=0.02) and chg == pytest.approx(0.855, abs=0.02)
    # ... and agrees with integrating the logged 10 Hz current.
    i = current.to_numpy()
    i_mid = 0.5 * (i[1:] + i[:-1])
    dq = i_mid * np.diff(_raw(cycle1_path)["Time"].ravel()) / 3600
    assert dis == pytest.approx(-dq[dq < 0].sum(), rel=0.002)
    assert samples["capacity_ah"].dropna().ge(0).all()


def test_drive_cycle_time_includes_the_unlogged_pauses(cycle1, cycle1_path):
    raw_time = _raw(cycle1_path)["Time"].ravel()
    time_s = cycle1.samples["time_s"].to_numpy()
    assert raw_time[-1] / 3600 == pytest.approx(3.05, abs=0.01)  # tester time
    assert time_s[-1] / 3600 == pytest.approx(22.52, abs=0.01)  # wall clock (TimeStamp)
    gaps = np.sort(np.diff(time_s))[-2:]
    np.testing.assert_allclose(gaps, [10994, 59111], atol=2)  # 3.05 h and 16.4 h pauses at 0 A


def test_drive_cycle_defaults_and_voltage_window(cycle1):
    cell = cycle1.cell
    assert cell.chemistry == "NCA" and cell.nominal_capacity_ah == 2.9
    assert cell.licence == "CC BY 4.0" and "wykht8y7tg" in cell.citation
    assert "Cycle_1" in cell.description
    v = cycle1.samples["voltage_v"]
    assert v.between(cell.voltage_min_v - 0.2, cell.voltage_max_v + 0.1).mean() >= 0.999


def test_1c_discharge_capacity_equals_the_counter(datasets):
    path = dataset_file(datasets, DIS1C)
    samples = Reader.read([path], "dis1c").samples
    CellCycleSample.validate(samples)
    dis = samples[samples["step_type"] == "discharge"]
    assert dis["current_a"].median() == pytest.approx(-2.9, abs=0.05)  # 1C of 2.9 Ah
    raw_ah = _raw(path)["Ah"].ravel()
    assert dis["capacity_ah"].max() == pytest.approx(raw_ah[0] - raw_ah.min(), abs=1e-3)
    assert dis["capacity_ah"].max() == pytest.approx(2.434, abs=0.002)
    assert samples["step_type"].isin(["discharge", "rest"]).all()


def test_charge_capacity_uses_the_counter_not_coarse_trapezoids(datasets):
    path = dataset_file(datasets, CHARGE)
    samples = Reader.read([path], "charge2").samples
    chg = samples.loc[samples["step_type"] == "charge", "capacity_ah"].max()
    assert chg == pytest.approx(2.784, abs=0.001)  # the counter's final value
    assert samples.loc[samples["step_type"] == "charge", "current_a"].max() == pytest.approx(2.9, abs=0.05)


def test_repeated_discharges_are_separate_cycles(datasets):
    # The charges between the ten 1C discharges are in another file; the Ah counter jumps.
    path = dataset_file(datasets, DIS1C_RP)
    samples = Reader.read([path], "dis1c_rp").samples
    CellCycleSample.validate(samples)
    np.testing.assert_array_equal(np.unique(samples["cycle_number"]), np.arange(10))
    caps = samples[samples["step_type"] == "discharge"].groupby("cycle_number")["capacity_ah"].max()
    assert caps.between(2.25, 2.35).all()
    assert (np.diff(samples["time_s"]) >= 0).all()


@pytest.mark.parametrize("relative", SMALL)
def test_small_files_read(datasets, relative):
    path = dataset_file(datasets, relative)
    assert detect_format(path) is Reader
    samples = Reader.read([path], "small").samples
    CellCycleSample.validate(samples)
    assert 1 <= len(samples) <= 61
    assert samples["current_a"].dtype == np.float64
    assert samples["time_s"].iloc[0] == 0.0


def test_detect_format_does_not_confuse_the_mat_kinds(datasets, cycle1_path):
    assert detect_format(cycle1_path) is Reader
    nasa = dataset_file(datasets, "nasa_pcoe/B0025.mat")
    assert detect_format(nasa) is NasaPcoeMatReader
    with nasa.open("rb") as handle:
        assert not Reader.sniff(nasa, handle.read(64 * 1024))


def test_file_order_follows_the_date_in_the_name():
    names = [
        "03-19-17_03.25 25degC_Cycle_2_Pan18650PF.mat",
        "03-18-17_02.17 25degC_Cycle_1_Pan18650PF.mat",
        "03-18-17_00.05 3406_Charge1.mat",
    ]
    ordered = sorted((Path(n) for n in names), key=Reader.file_order)
    assert [p.name for p in ordered] == [names[2], names[1], names[0]]


def test_truncated_copy_raises_naming_the_file(tmp_path, datasets):
    source = dataset_file(datasets, DIS1C_RP)
    data = source.read_bytes()
    broken = tmp_path / "4020_Dis1C_Rp_cut.mat"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(SourceFormatError) as info:
        Reader.read([broken], "cut")
    assert "4020_Dis1C_Rp_cut.mat" in str(info.value)


def test_struct_without_panasonic_fields_raises(tmp_path):
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"meas": {"Voltage": np.ones(3), "Current": np.zeros(3)}})
    assert not Reader.sniff(other, other.read_bytes())
    with pytest.raises(SourceFormatError, match=r"other\.mat: no Panasonic 'meas' struct"):
        Reader.read([other], "other")


def test_mat_v73_is_refused_clearly(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle.create_dataset("x", data=np.arange(3.0))
    with path.open("r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116))
    assert not Reader.sniff(path, path.read_bytes()[: 64 * 1024])
    with pytest.raises(SourceFormatError, match=r"v73\.mat: MATLAB v7\.3"):
        Reader.read([path], "v73")
