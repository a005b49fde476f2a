"""Digatron CSV reader on the LG 18650HG2 set (real files) and on small synthetic exports."""

from __future__ import annotations


import numpy as np
import pytest

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers.canonical import CanonicalCsvReader
from battery_pipeline.science.readers.digatron import DigatronCsvReader
from battery_pipeline.science.readers.maccor import MaccorTextReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline_tests.conftest import dataset_file

C20 = "lg_hg2/25degC/549_C20DisCh.csv"
CHARGES = "lg_hg2/25degC/549_Charge.csv"


@pytest.fixture(scope="module")
def c20(datasets):
    path = dataset_file(datasets, C20)
    return path, DigatronCsvReader.read([path], "lg_c20").samples


def test_detected_and_keyed(datasets):
    path = dataset_file(datasets, C20)
    assert detect_format(path) is DigatronCsvReader
    assert DigatronCsvReader.cell_key(path) == "lg_hg2_25degC_549_C20DisCh"
    negative = dataset_file(datasets, "lg_hg2/n10degC/593_C20DisCh.csv")
    assert DigatronCsvReader.cell_key(negative) == "lg_hg2_n10degC_593_C20DisCh"


@pytest.mark.parametrize("name", ["LICENSE", "Readme file - Description of Experimental Tests.txt"])
def test_non_sample_files_are_not_claimed(datasets, name):
    path = dataset_file(datasets, f"lg_hg2/{name}")
    head = path.read_bytes()[: 64 * 1024]
    for reader in (DigatronCsvReader, MaccorTextReader, CanonicalCsvReader):
        assert not reader.sniff(path, head), reader.format_name
    with pytest.raises(SourceFormatError, match="unknown format"):
        detect_format(path)


def test_c20_discharge(c20):
    _, samples = c20
    assert list(samples.columns) == SAMPLE_COLUMNS
    CellCycleSample.validate(samples)
    discharge = samples[samples["step_type"] == "discharge"]
    assert len(discharge) > 1000
    # C/20 of a 3 Ah cell, negative = discharge.
    assert discharge["current_a"].median() == pytest.approx(-0.15, abs=0.01)
    assert (discharge["current_a"] < 0).all()
    # ~3 Ah discharged (2.78 Ah to the 2.8 V cut-off at 25 degC), by the cycler's Ah counter.
    assert discharge["capacity_ah"].max() == pytest.approx(2.78, abs=0.02)
    assert 2.6 < discharge["capacity_ah"].max() < 3.1
    # Voltage from ~4.2 V (4.18 V at the first logged minute) down to the cut-off (2.80 V here).
    assert discharge["voltage_v"].iloc[0] > 4.15
    assert 2.5 <= discharge["voltage_v"].min() <= 2.85
    assert samples["temperature_c"].between(20, 30).all()


def test_c20_time_cycles_and_capacity(c20):
    _, samples = c20
    time_s = samples["time_s"].to_numpy()
    assert time_s[0] == 0.0  # Prog Time 29:20:19.688 -> relative to the file start
    assert (np.diff(time_s) >= 0).all()
    assert time_s[-1] == pytest.approx(250736.678 - 105619.688, abs=1e-3)  # hours > 24 parsed
    # Discharge is cycle 0; the charge that follows starts cycle 1 (Arbin convention).
    per = samples.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max()
    assert per[(1, "charge")] == pytest.approx(2.97, abs=0.02)
    assert set(samples.loc[samples["step_type"] == "discharge", "cycle_number"]) == {0}
    assert set(samples.loc[samples["step_type"] == "charge", "cycle_number"]) == {1}
    assert samples.loc[samples["step_type"] == "rest", "capacity_ah"].isna().all()
    assert (samples["capacity_ah"].dropna() >= 0).all()
    # The file's last row is an exact duplicate: kept (validation decides), not dropped.
    assert samples.iloc[-1][["time_s", "voltage_v"]].tolist() == samples.iloc[-2][["time_s", "voltage_v"]].tolist()
    assert samples["source_row"].tolist() == list(range(len(samples)))


def test_several_charges_in_one_file_are_separate_cycles(datasets):
    path = dataset_file(datasets, CHARGES)
    samples = DigatronCsvReader.read([path], "x").samples
    charges = samples[samples["step_type"] == "charge"].groupby("cycle_number")["capacity_ah"].max()
    assert list(charges.index) == [0, 1, 2, 3]
    assert charges.between(2.6, 2.9).all()


def test_describe_from_metadata(datasets):
    cell = DigatronCsvReader.describe([dataset_file(datasets, C20)])
    assert cell.chemistry == "NMC"
    assert cell.nominal_capacity_ah == 3.0
    assert (cell.voltage_min_v, cell.voltage_max_v) == (2.5, 4.2)
    assert cell.licence == "CC BY 4.0"
    assert "10.17632/cp3473x7xv.3" in cell.citation
    assert "549" in cell.description


def test_mg1_metadata_is_not_called_hg2(datasets):
    cell = DigatronCsvReader.describe([dataset_file(datasets, "lg_hg2/10degC/575_C20DisCh.csv")])
    assert cell.chemistry is None
    assert cell.nominal_capacity_ah == 2.9
    assert "MG1" in cell.description


def test_largest_files_read_completely(datasets):
    folder = datasets / "lg_hg2"
    if not folder.is_dir():
        pytest.skip("lg_hg2 not present")
    largest = sorted(folder.glob("*/*.csv"), key=lambda p: p.stat().st_size)[-3:]
    for path in largest:
        samples = DigatronCsvReader.read([path], "x").samples
        assert len(samples) > 20_000
        assert samples["time_s"].is_monotonic_increasing or samples["time_s"].diff().min() >= 0


def _digatron(tmp_path, units, rows, name="t.csv", preamble=("Measurement ID,1", "Nominal Capacity, 2")):
    lines = ["", *preamble, "\x00", "Time Stamp,Step,Status,Prog Time,Step Time,Cycle,Cycle Level,Procedure,Voltage,Current,Temperature,Capacity,WhAccu,Cnt,"]
    if units is not None:
        lines.append(",,,,,,,,[%s],[%s],[C],[%s],[Wh],[Cnt]," % units)
    lines += rows
    path = tmp_path / name
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))
    return path


ROWS = [
    "1/1/2020 1:00:00 AM,2,DCH,25:00:10.000,00:00:10.000,0,0,P,3700.0,-1000.0,25.0,-2.7778,-0.01,1.0,",
    "1/1/2020 1:00:10 AM,2,DCH,25:00:20.000,00:00:20.000,0,0,P,3690.0,-1000.0,25.0,-5.5556,-0.02,1.0,",
    "1/1/2020 1:00:20 AM,3,PAU,25:00:30.000,00:00:10.000,0,0,P,3695.0,0.0,25.0,-5.5556,-0.02,1.0,",
    "1/1/2020 1:00:30 AM,4,CHA,25:00:40.000,00:00:10.000,0,0,P,3710.0,500.0,25.0,-4.1667,-0.01,1.0,",
]


def test_milli_units_are_converted(tmp_path):
    path = _digatron(tmp_path, ("mV", "mA", "mAh"), ROWS)
    assert detect_format(path) is DigatronCsvReader
    samples = DigatronCsvReader.read([path], "t").samples
    CellCycleSample.validate(samples)
    assert samples["voltage_v"].tolist() == pytest.approx([3.7, 3.69, 3.695, 3.71])
    assert samples["current_a"].tolist() == pytest.approx([-1.0, -1.0, 0.0, 0.5])
    assert samples["time_s"].tolist() == pytest.approx([0, 10, 20, 30])
    assert samples["step_type"].astype(str).tolist() == ["discharge", "discharge", "rest", "charge"]
    assert samples["cycle_number"].tolist() == [0, 0, 0, 1]
    # First sample: 1 A for 10 s since the step began; then the counter's increments.
    assert samples["capacity_ah"].tolist()[:2] == pytest.approx([10 / 3600, 20 / 3600], abs=1e-6)
    assert samples["capacity_ah"].iloc[3] == pytest.approx(5.5556e-3 - 4.1667e-3, abs=1e-6)


def test_unknown_unit_is_an_error(tmp_path):
    path = _digatron(tmp_path, ("kV", "A", "Ah"), ROWS)
    with pytest.raises(SourceFormatError, match=r"unsupported unit \[kV\]"):
        DigatronCsvReader.read([path], "t")


def test_header_found_by_content_and_truncated_last_row(tmp_path):
    rows = [r.replace("3700.0", "3.7").replace("-1000.0", "-1.0") for r in ROWS[:2]]
    rows.append("1/1/2020 1:00:20 AM,3,PAU,25:00:")  # cut mid-row
    path = _digatron(tmp_path, ("V", "A", "Ah"), rows, preamble=("a,b",) * 7)
    samples = DigatronCsvReader.read([path], "t").samples
    assert len(samples) == 3
    assert np.isnan(samples["voltage_v"].iloc[2]) and np.isnan(samples["time_s"].iloc[2])


def test_no_data_rows(tmp_path):
    path = _digatron(tmp_path, ("V", "A", "Ah"), [])
    with pytest.raises(SourceFormatError, match="no data rows"):
        DigatronCsvReader.read([path], "t")
