"""Basytec text export reader on the zoo's PyProBE sample (a real file) and on small edge cases.

Reference values come from the file's own columns, parsed here independently with pandas
(`~Time[s]`, `U[V]`, `I[A]`, `Cyc-Count`, `Command`, and Basytec's per-cycle counters
`Ah-Cyc-Charge-0` / `Ah-Cyc-Discharge-0`). The peer check against PyProBE's Basytec reader is
`benchmarks/basytec_peer_check.py` (a scratch venv, so outside the test suite).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.readers import SNIFF_BYTES, SourceFormatError, detect_format
from battery_pipeline.science.readers.basytec import BasytecTxtReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline_tests.conftest import dataset_file

SAMPLE = "cycler_zoo/basytec_txt/sample_data_basytec.txt"


def file_columns(path: Path) -> pd.DataFrame:
    """The data table as pandas reads it: the column row is the last '~' line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    skip = max(i for i, line in enumerate(lines) if line.startswith("~"))
    return pd.read_csv(path, sep="\t", skiprows=skip, encoding="utf-8")


@pytest.fixture(scope="module")
def sample(datasets):
    path = dataset_file(datasets, SAMPLE)
    return path, file_columns(path), BasytecTxtReader.read([path], "basytec").samples


def test_detected_by_content(datasets, tmp_path):
    path = dataset_file(datasets, SAMPLE)
    assert detect_format(path) is BasytecTxtReader
    renamed = tmp_path / "export.csv"  # the content alone decides, also against the CSV readers
    renamed.write_bytes(path.read_bytes())
    assert detect_format(renamed) is BasytecTxtReader


def test_no_other_dataset_file_is_claimed(datasets):
    claimed = []
    for path in sorted(datasets.rglob("*")):
        if path.is_file() and path.parent.name != "basytec_txt":
            with path.open("rb") as handle:
                if BasytecTxtReader.sniff(path, handle.read(SNIFF_BYTES)):
                    claimed.append(path.name)
    assert claimed == []


def test_rows_and_si_values_equal_the_file(sample):
    path, raw, samples = sample
    assert list(samples.columns) == SAMPLE_COLUMNS
    CellCycleSample.validate(samples)
    assert len(samples) == len(raw) == 74
    assert (samples["source_file"] == path.name).all()
    np.testing.assert_array_equal(samples["source_row"], np.arange(len(raw)))
    np.testing.assert_allclose(samples["time_s"], raw["~Time[s]"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(samples["voltage_v"], raw["U[V]"])
    np.testing.assert_allclose(samples["current_a"], raw["I[A]"])
    np.testing.assert_allclose(samples["temperature_c"], raw[[c for c in raw if c.startswith("T1[")][0]])
    np.testing.assert_array_equal(samples["cycle_number"], raw["Cyc-Count"])


def test_command_sets_the_step_type_and_charge_raises_the_voltage(sample):
    _, raw, samples = sample
    step_type = samples["step_type"].astype(str).to_numpy()
    expected = raw["Command"].map({"Pause": "rest", "Charge": "charge"}).to_numpy()
    np.testing.assert_array_equal(step_type, expected)
    charge = raw[raw["Command"] == "Charge"]
    assert (charge["I[A]"] > 0).all()
    assert charge["U[V]"].iloc[-1] > charge["U[V]"].iloc[0]
    # the first Charge row logs 1.95 mA while the current ramps up: still charge, not rest
    assert step_type[62] == "charge" and 0 < samples["current_a"].iloc[62] < 0.002


def test_cycles_and_capacity_match_the_files_own_counters(sample):
    _, raw, samples = sample
    expected = {}
    for cycle, group in raw.groupby("Cyc-Count"):
        for direction, column in (("charge", "Ah-Cyc-Charge-0"), ("discharge", "Ah-Cyc-Discharge-0")):
            value = group[column].abs().max()
            if value > 0:
                expected[(int(cycle), direction)] = value
    moving = samples[samples["step_type"] != "rest"]
    ours = moving.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max().to_dict()
    assert samples["cycle_number"].nunique() == raw["Cyc-Count"].nunique() == 2
    assert set(ours) == set(expected) == {(1, "charge")}
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=0.005), key
    # row by row as well: the counter is already "since the cycle began, in this direction"
    charging = (samples["step_type"] == "charge").to_numpy()
    np.testing.assert_allclose(samples["capacity_ah"][charging], raw["Ah-Cyc-Charge-0"][charging], rtol=1e-9)
    assert samples.loc[samples["step_type"] == "rest", "capacity_ah"].isna().all()


def test_file_states_no_chemistry_or_capacity(datasets):
    cell = BasytecTxtReader.describe([dataset_file(datasets, SAMPLE)])
    assert cell.chemistry is None and cell.nominal_capacity_ah is None and cell.origin == {}
    assert "Testchannel: 1814 CH14 XCTS_40" in cell.description


# --- edge cases written into tmp_path -------------------------------------------------------

HEADER = [
    "~Resultfile from Basytec Battery Test System",
    "~",
    "~Name of Test: edge",
    "~Battery: coin",
    "~Start of Test: 19.06.2023 17:56:53",
    "~",
]
COLUMNS = ["~Time[h]", "DataSet", "Line", "Command", "U[V]", "I[A]", "Ah[Ah]",
           "Ah-Cyc-Charge-0", "Ah-Cyc-Discharge-0", "Ah-Step", "T1[°C]", "Cyc-Count", "State"]
# a 0.5 mA coin cell: charge, then a discharge; the discharge counter is written signed
FOUR_ROWS = [
    [0.0, 1, 3, "Pause", 3.40, 0.0, 0.0, 0.0, 0.0, 0.0, 25.0, 1, 1],
    [1.0, 2, 4, "Charge", 3.60, 0.0005, 0.0005, 0.0005, 0.0, 0.0005, 25.0, 1, 1],
    [2.0, 3, 4, "Charge", 4.10, 0.0005, 0.0010, 0.0010, 0.0, 0.0010, 25.0, 1, 2],
    [3.0, 4, 5, "Discharge", 3.90, -0.0004, 0.0006, 0.0010, -0.0004, -0.0004, 25.0, 1, 1],
]


def write_basytec(directory: Path, name: str, rows, columns=COLUMNS, header=HEADER, encoding="latin-1") -> Path:
    body = ["\t".join(columns)] + ["\t".join(str(v) for v in row) for row in rows]
    path = directory / name
    path.write_bytes(("\r\n".join([*header, *body]) + "\r\n").encode(encoding))
    return path


def test_four_row_file_small_cell_in_hours_latin1(tmp_path):
    path = write_basytec(tmp_path, "four.txt", FOUR_ROWS)
    assert detect_format(path) is BasytecTxtReader
    samples = BasytecTxtReader.read([path], "four").samples
    CellCycleSample.validate(samples)
    assert samples["step_type"].astype(str).tolist() == ["rest", "charge", "charge", "discharge"]
    np.testing.assert_allclose(samples["time_s"], [0, 3600, 7200, 10800])
    np.testing.assert_allclose(samples["current_a"], [0, 5e-4, 5e-4, -4e-4])
    np.testing.assert_allclose(samples["capacity_ah"], [np.nan, 5e-4, 1e-3, 4e-4])
    np.testing.assert_allclose(samples["temperature_c"], 25.0)  # '°C' as latin-1 0xB0
    assert samples["step_index"].tolist() == [0, 1, 1, 2]


def test_rest_only_file(tmp_path):
    rows = [[i / 60, i + 1, 3, "Pause", 3.3, 0.0, 0.0, 0.0, 0.0, 0.0, 25.0, 0, 1] for i in range(6)]
    samples = BasytecTxtReader.read([write_basytec(tmp_path, "rest.txt", rows)], "rest").samples
    CellCycleSample.validate(samples)
    assert len(samples) == 6
    assert (samples["step_type"] == "rest").all()
    assert samples["capacity_ah"].isna().all()


def test_file_without_current_column_is_refused(tmp_path):
    keep = [i for i, c in enumerate(COLUMNS) if c != "I[A]"]
    path = write_basytec(tmp_path, "nocurrent.txt", [[r[i] for i in keep] for r in FOUR_ROWS],
                         columns=[COLUMNS[i] for i in keep])
    assert detect_format(path) is BasytecTxtReader  # the title line still says Basytec
    with pytest.raises(SourceFormatError, match=r"nocurrent\.txt: no current column"):
        BasytecTxtReader.read([path], "nocurrent")


def test_truncated_header_is_refused(tmp_path):
    path = write_basytec(tmp_path, "cut.txt", [], columns=[], header=HEADER[:4])
    path.write_bytes(path.read_bytes().rstrip())  # cut inside the header, no column row
    assert detect_format(path) is BasytecTxtReader
    with pytest.raises(SourceFormatError, match=r"cut\.txt: damaged header: the file ends inside"):
        BasytecTxtReader.read([path], "cut")


def test_damaged_header_line_is_refused(tmp_path):
    # a header line lost its '~': the block ends before any column row
    header = [*HEADER[:3], "Battery: coin", *HEADER[4:]]
    path = write_basytec(tmp_path, "damaged.txt", FOUR_ROWS, header=header)
    with pytest.raises(SourceFormatError, match=r"damaged\.txt: damaged header: line 4"):
        BasytecTxtReader.read([path], "damaged")


def test_header_only_file_is_refused(tmp_path):
    path = write_basytec(tmp_path, "empty.txt", [])
    with pytest.raises(SourceFormatError, match=r"empty\.txt: no data rows"):
        BasytecTxtReader.read([path], "empty")


def test_unknown_time_unit_is_refused(tmp_path):
    path = write_basytec(tmp_path, "days.txt", FOUR_ROWS, columns=["~Time[d]", *COLUMNS[1:]])
    with pytest.raises(SourceFormatError, match=r"days\.txt: column '~Time\[d\]': unit 'd'"):
        BasytecTxtReader.read([path], "days")


def test_two_files_continue_time_and_cycles(tmp_path):
    first = write_basytec(tmp_path, "a.txt", FOUR_ROWS)
    later = [*HEADER[:4], "~Start of Test: 20.06.2023 17:56:53", "~"]
    second = write_basytec(tmp_path, "b.txt", FOUR_ROWS, header=later)
    samples = BasytecTxtReader.read([second, first], "two").samples
    CellCycleSample.validate(samples)
    assert samples["source_file"].astype(str).tolist() == ["a.txt"] * 4 + ["b.txt"] * 4
    np.testing.assert_allclose(samples["time_s"].iloc[4:], 86400 + np.array([0, 3600, 7200, 10800]))
    assert samples["cycle_number"].tolist() == [1] * 4 + [2] * 4
    np.testing.assert_allclose(samples["capacity_ah"].iloc[4:], [np.nan, 5e-4, 1e-3, 4e-4])


def test_exponent_beyond_float_range_overflows_not_a_crash(tmp_path):
    # pandas 2.3 wraps such exponents (3E4294967300 -> 30000.0) or segfaults (3.E255631284671,
    # a flipped byte in the zoo sample found by fuzzing); the value overflows (inf from pyarrow's
    # parser, NaN from pandas' on the lenient path), the row stays for validation to quarantine
    rows = [list(r) for r in FOUR_ROWS]
    rows[1][4] = "3.E255631284671"
    rows[2][5] = "4E4294967300"
    samples = BasytecTxtReader.read([write_basytec(tmp_path, "overflow.txt", rows)], "overflow").samples
    assert len(samples) == 4
    assert not np.isfinite(samples["voltage_v"].iloc[1]) and not np.isfinite(samples["current_a"].iloc[2])
    np.testing.assert_allclose(samples["voltage_v"].iloc[[0, 2, 3]], [3.40, 4.10, 3.90])
