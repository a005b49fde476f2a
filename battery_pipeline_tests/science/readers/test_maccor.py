"""Maccor raw text reader on TRI's BEEP fixtures and battery-data-toolkit's example, the MacTest
reader on cellpy's KIT exports (real files), and both on small synthetic exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers.canonical import CanonicalCsvReader
from battery_pipeline.science.readers.digatron import DigatronCsvReader
from battery_pipeline.science.readers.maccor import MaccorTextReader
from battery_pipeline.science.readers.maccor_mactest import MaccorMacTestReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline_tests.conftest import dataset_file

PREDIAG = "cycler_samples/PreDiag_000229_000229_truncated.034"
DIAG = "cycler_samples/PredictionDiagnostics_000109_tztest.010"
BEEP_CSV = "cycler_samples/BEEPDatapath_maccor_parameterized_memloaded.csv"


@pytest.fixture(scope="module")
def prediag(datasets):
    path = dataset_file(datasets, PREDIAG)
    return path, MaccorTextReader.read([path], "prediag").samples


@pytest.fixture(scope="module")
def diag(datasets):
    path = dataset_file(datasets, DIAG)
    return path, MaccorTextReader.read([path], "diag").samples


@pytest.mark.parametrize("relative", [PREDIAG, DIAG])
def test_detected_by_content_not_extension(datasets, relative):
    path = dataset_file(datasets, relative)
    assert detect_format(path) is MaccorTextReader
    assert path.suffix not in MaccorTextReader.extensions  # .034/.010 are channel numbers


def test_beep_processed_csv_is_not_claimed(datasets):
    path = dataset_file(datasets, BEEP_CSV)
    head = path.read_bytes()[: 64 * 1024]
    for reader in (MaccorTextReader, DigatronCsvReader, CanonicalCsvReader):
        assert not reader.sniff(path, head), reader.format_name


def test_canonical_frame_validates(prediag, diag):
    for _, samples in (prediag, diag):
        assert list(samples.columns) == SAMPLE_COLUMNS
        CellCycleSample.validate(samples)


def test_current_sign_follows_state(datasets, prediag, diag):
    for relative, (_, samples) in ((PREDIAG, prediag), (DIAG, diag)):
        raw = pd.read_csv(datasets / relative, sep="\t", skiprows=1, usecols=["State", "Amps"])
        assert len(raw) == len(samples)
        state = raw["State"].to_numpy()
        current = samples["current_a"].to_numpy()
        assert (current[state == "D"] < 0).all()
        assert (current[state == "C"] > 0).all()
        assert (current[state == "R"] == 0).all()
        np.testing.assert_allclose(np.abs(current), np.abs(raw["Amps"].to_numpy()))
        step_type = samples["step_type"].astype(str).to_numpy()
        assert (step_type[state == "D"] == "discharge").all()
        assert (step_type[state == "C"] == "charge").all()
        assert (step_type[state == "R"] == "rest").all()


def test_other_state_record_is_rest(diag):
    _, samples = diag
    last = samples.iloc[-1]  # the `O` record ending the .010 slice: 0 A, Amp-hr repeated
    assert last["step_type"] == "rest"
    assert last["current_a"] == 0
    assert np.isnan(last["capacity_ah"])


def test_time_cycle_step_as_the_file_states(prediag, diag):
    _, a = prediag
    assert a["time_s"].iloc[0] == 0.0
    assert (np.diff(a["time_s"].to_numpy()) > 0).all()
    assert (np.diff(a["cycle_number"].to_numpy()) >= 0).all()
    assert sorted(a["cycle_number"].unique()) == [0, 1]
    assert set(a["step_index"].unique()) == {1, 2, 3, 5, 6}

    _, b = diag
    # A slice of a long test keeps its time since the test start.
    assert b["time_s"].iloc[0] == pytest.approx(1804441.3)
    assert (np.diff(b["time_s"].to_numpy()) >= 0).all()
    assert (np.diff(b["cycle_number"].to_numpy()) >= 0).all()
    assert sorted(b["cycle_number"].unique()) == [86, 87, 88, 89]
    assert b["source_row"].tolist() == list(range(len(b)))
    assert set(b["source_file"].unique()) == {"PredictionDiagnostics_000109_tztest.010"}


def test_capacity_accumulates_over_steps_within_cycle(prediag, diag):
    _, a = prediag
    per = a.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max()
    assert per[(0, "discharge")] == pytest.approx(4.7626, abs=1e-3)
    # Steps 2 (pulse) and 5 of cycle 0 are both charge: 5's Amp-hr restarts, the canonical adds.
    assert per[(0, "charge")] == pytest.approx(0.001344 + 3.851557, abs=1e-5)
    assert a.loc[a["step_type"] == "rest", "capacity_ah"].isna().all()

    _, b = diag
    per = b.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max()
    # Cycle 87 charges in steps 61 (fast), 62 (one record), 63 (CV): 1.451990 + 0 + 1.131308.
    assert per[(87, "charge")] == pytest.approx(1.451990 + 1.131308, abs=1e-5)
    for (cycle, kind), group in b[b["step_type"] != "rest"].groupby(["cycle_number", "step_type"], observed=True):
        assert (np.diff(group["capacity_ah"].to_numpy()) >= -1e-12).all(), (cycle, kind)
        assert (group["capacity_ah"] >= 0).all()


def test_capacity_matches_beep_processing(datasets, diag):
    """BEEP's own processed copy of the .010 file agrees with our per-cycle capacity."""
    beep = pd.read_csv(dataset_file(datasets, BEEP_CSV), usecols=["charge_capacity", "discharge_capacity"])
    _, samples = diag
    kind = samples["step_type"].astype(str).to_numpy()
    ours = samples["capacity_ah"].to_numpy()
    np.testing.assert_allclose(ours[kind == "charge"], beep["charge_capacity"].to_numpy()[kind == "charge"], atol=1e-9)
    np.testing.assert_allclose(
        ours[kind == "discharge"], beep["discharge_capacity"].to_numpy()[kind == "discharge"], atol=1e-9
    )


def test_resistance_zero_means_not_measured(prediag):
    _, samples = prediag
    assert samples["internal_resistance_ohm"].isna().all()
    assert samples["temperature_c"].isna().all()


def test_describe_and_cell_key(datasets):
    path = dataset_file(datasets, DIAG)
    cell = MaccorTextReader.describe([path])
    assert cell.licence == "Apache-2.0"
    assert "BEEP" in cell.citation
    assert (cell.voltage_min_v, cell.voltage_max_v) == (2.7, 4.4)
    assert cell.nominal_capacity_ah is None and cell.chemistry is None
    assert "PredictionDiagnostics_000109.000" in cell.description
    assert MaccorTextReader.cell_key(path) == path.name  # channel extension kept


HEADER = "Today's Date 01/02/2020  Date of Test:\t01/01/2020\t Filename:\tC:\\x\\Test.001 Procedure: P.000\tComment/Barcode: X"
COLUMNS = "Rec#\tCyc#\tStep\tTest (Sec)\tStep (Sec)\tAmp-hr\tWatt-hr\tAmps\tVolts\tState\tES\tDPt Time\tACImp/Ohms\tDCIR/Ohms"


def _maccor(tmp_path, rows, name="Test.001"):
    lines = [HEADER, COLUMNS] + ["\t".join(str(v) for v in row) for row in rows]
    path = tmp_path / name
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def test_unsigned_export_gets_sign_from_state(tmp_path):
    rows = [
        (1, 0, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 3.5, "R", 0, "01/01/2020 00:00:00", 0, 0),
        (2, 0, 2, 10.0, 10.0, 0.01, 0.04, 1.0, 3.6, "C", 5, "01/01/2020 00:00:10", 0, 0.021),
        (3, 0, 2, 20.0, 20.0, 0.02, 0.08, 1.0, 3.7, "C", 5, "01/01/2020 00:00:20", 0.05, 0),
        (4, 0, 3, 30.0, 10.0, 0.01, 0.04, 2.0, 3.6, "D", 5, "01/01/2020 00:00:30", 0, 0),
        (5, 1, 4, 40.0, 0.0, 0.01, 0.04, 0.0, 3.6, "S", 193, "01/01/2020 00:00:40", 0, 0),
    ]
    path = _maccor(tmp_path, rows)
    assert detect_format(path) is MaccorTextReader
    samples = MaccorTextReader.read([path], "t").samples
    CellCycleSample.validate(samples)
    assert samples["current_a"].tolist() == [0.0, 1.0, 1.0, -2.0, 0.0]
    assert samples["step_type"].astype(str).tolist() == ["rest", "charge", "charge", "discharge", "rest"]
    assert samples["capacity_ah"].tolist()[1:4] == [0.01, 0.02, 0.01]
    # DCIR preferred, AC impedance where only it was measured, 0 = not measured.
    r = samples["internal_resistance_ohm"].tolist()
    assert r[1] == 0.021 and r[2] == 0.05 and np.isnan(r[0]) and np.isnan(r[3])


def test_file_without_data_rows(tmp_path):
    path = _maccor(tmp_path, [])
    with pytest.raises(SourceFormatError, match="no data rows"):
        MaccorTextReader.read([path], "t")


# --- zoo files: battery-data-toolkit's raw export (minutes) and cellpy's MacTest exports -----------

RAW_001 = "cycler_zoo/maccor_raw/maccor_example.001"
MACTEST_TWO = "cycler_zoo/maccor_txt/maccor_two.txt"  # decimal comma, all rest, last line cut
MACTEST_002 = "cycler_zoo/maccor_txt/maccor_002.txt"  # 0xFF padding in the header, 2 cycles
# (file, reader, line index of its column line, cycle / state / step / Ah / time columns, decimal)
ZOO_FILES = [
    (RAW_001, MaccorTextReader, 1, ("Cyc#", "State", "Step", "Amp-hr", "Test (Min)"), "."),
    (MACTEST_TWO, MaccorMacTestReader, 13, ("Cycle C", "Md", "Step", "Cap. [Ah]", "TestTime"), ","),
    (MACTEST_002, MaccorMacTestReader, 13, ("Cycle C", "Md", "Step", "Cap. [Ah]", "TestTime"), "."),
]


def _file_columns(path, column_line, columns, decimal):
    """The export's own columns, parsed here without the reader (data lines may end in a tab)."""
    return pd.read_csv(path, sep="\t", skiprows=column_line, usecols=list(columns), encoding="latin-1",
                       decimal=decimal, dtype={c: str for c in columns if c in ("State", "Md")}, index_col=False)


def _file_cycle_capacity(raw, columns):
    """{(cycle, 'C'|'D'): Ah}: each step's last counter value, summed over the cycle's steps."""
    cycle, state, step, ah, _ = columns
    raw = raw.dropna(subset=[cycle, step, state])
    keys = raw[[cycle, step, state]]
    run = (keys != keys.shift()).any(axis=1).cumsum()
    per_step = raw.groupby(run).agg(cycle=(cycle, "first"), state=(state, "first"), ah=(ah, "last"))
    per_step = per_step[per_step["state"].isin(["C", "D"])]
    return per_step.groupby(["cycle", "state"])["ah"].sum().to_dict()


@pytest.mark.parametrize("relative, reader, column_line, columns, decimal", ZOO_FILES)
def test_zoo_file_matches_its_own_columns(datasets, relative, reader, column_line, columns, decimal):
    """Rows, cycles and per-cycle charge/discharge Ah against the file's own columns (0.5 %).

    The peers cannot be the reference here (benchmarks/maccor_peer_check.py): battery-data-toolkit
    outputs no capacity, and cellpy 1.0.3 gives 0 A and 0 Ah for every row of maccor_002.txt.
    """
    path = dataset_file(datasets, relative)
    assert detect_format(path) is reader
    samples = reader.read([path], "zoo").samples
    CellCycleSample.validate(samples.dropna(subset=["voltage_v"]))  # the cut last line of maccor_two
    raw = _file_columns(path, column_line, columns, decimal)
    cycle, state, _, _, time = columns
    assert len(samples) == len(raw)
    assert samples["cycle_number"].nunique() == raw[cycle].nunique()
    assert samples["cycle_number"].tolist() == raw[cycle].astype("int64").tolist()
    # the time unit is minutes in all three files: s = 60 x the column
    np.testing.assert_allclose(samples["time_s"].to_numpy(), 60.0 * raw[time].to_numpy(dtype="float64"))

    expected = _file_cycle_capacity(raw, columns)
    kind = {"charge": "C", "discharge": "D"}
    ours = samples[samples["step_type"] != "rest"].groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max()
    assert {(c, kind[k]) for c, k in ours.index} == set(expected)
    for (c, k), value in ours.items():
        assert value == pytest.approx(expected[(c, kind[k])], rel=5e-3), (c, k)


def test_mactest_two_cycles_sign_from_state(datasets):
    path = dataset_file(datasets, MACTEST_002)
    samples = MaccorMacTestReader.read([path], "zoo").samples
    raw = _file_columns(path, 13, ("Md", "Current [A]", "Cycle C", "Step", "TestTime"), ".")
    state = raw["Md"].to_numpy()
    current = samples["current_a"].to_numpy()
    assert (raw.loc[state == "D", "Current [A]"] > 0).all()  # the export is unsigned
    assert (current[state == "D"] < 0).all() and (current[state == "C"] > 0).all()
    np.testing.assert_allclose(np.abs(current), raw["Current [A]"].to_numpy())
    per = samples.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max()
    # read off the file: the last Cap. [Ah] of each step (0 at every step start)
    assert per[(1, "charge")] == pytest.approx(0.00244213, abs=1e-9)
    assert per[(2, "discharge")] == pytest.approx(0.00225395, abs=1e-9)
    # DPT Time spans 5/11/2021 3:40:24 PM -> 5/14/2021 7:10:13 AM (whole seconds; the test clock
    # runs 1.5 s ahead of it over the 63 h): minutes x 60, not seconds (3809.8) nor hours
    assert samples["time_s"].iloc[-1] == pytest.approx((2 * 86400 + 15 * 3600 + 29 * 60 + 49), abs=3.0)


def test_mactest_truncated_last_line_is_kept_for_validation(datasets):
    path = dataset_file(datasets, MACTEST_TWO)
    samples = MaccorMacTestReader.read([path], "zoo").samples
    assert path.read_bytes().rstrip(b"\r\n").endswith(b"0,00000")  # the file ends mid-number
    last = samples.iloc[-1]
    assert np.isnan(last["voltage_v"]) and last["source_row"] == len(samples) - 1
    assert samples["voltage_v"].iloc[:-1].notna().all()
    assert samples["voltage_v"].iloc[0] == pytest.approx(0.1377)  # decimal comma read


def test_mactest_describe_keeps_scap_out_of_nominal_capacity(datasets):
    """SCap has no unit in the file and is ~7x what the cell delivers: description only."""
    for relative in (MACTEST_TWO, MACTEST_002):
        cell = MaccorMacTestReader.describe([dataset_file(datasets, relative)])
        assert cell.nominal_capacity_ah is None and cell.chemistry is None
        assert "SCap: 0" in cell.description and "Channel:" in cell.description
        assert "\xff" not in cell.description


def test_zoo_files_detected_by_content_under_another_name(datasets, tmp_path):
    for relative, reader in ((RAW_001, MaccorTextReader), (MACTEST_TWO, MaccorMacTestReader)):
        renamed = tmp_path / (Path(relative).name + ".dat")  # a scratch copy: the extension is no hint
        renamed.write_bytes(dataset_file(datasets, relative).read_bytes())
        assert detect_format(renamed) is reader


MACTEST_HEADER = (
    "Name:\tT-1.001\nChannel:\t1\nTester\tMaccor #1\nProcedure\tP.000\nDescription\tx\n"
    "Started\t06/05/2021 11:00:00\nSCap\t0,017\nC Rate\t0,003\n\n"
)
MACTEST_COLUMNS = "Rec\tCycle P\tCycle C\tStep\tTestTime\tStepTime\tCap. [Ah]\tEner. [Wh]\tCurrent [A]\tVoltage [V]\tMd\tES\tDPT Time"


def _mactest(tmp_path, rows, columns=MACTEST_COLUMNS, name="T.txt"):
    path = tmp_path / name
    path.write_text(MACTEST_HEADER + columns + "\n\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows), encoding="latin-1")
    return path


FOUR_ROWS = [
    (1, 0, 1, 1, "0,0", "0,0", "0,0", "0,0", "0,0", "3,0", "R", 0, "06/05/2021 11:00:00"),
    (2, 1, 1, 2, "1,0", "0,0", "0,001", "0,0", "0,06", "3,5", "C", 5, "06/05/2021 11:01:00"),
    (3, 1, 1, 3, "2,0", "0,0", "0,0005", "0,0", "0,03", "3,4", "D", 5, "06/05/2021 11:02:00"),
    (4, 1, 2, 2, "3,0", "0,0", "0,0002", "0,0", "0,06", "3,5", "C", 5, "06/05/2021 11:03:00"),
]


def test_mactest_four_row_file(tmp_path):
    path = _mactest(tmp_path, FOUR_ROWS)
    assert detect_format(path) is MaccorMacTestReader
    samples = MaccorMacTestReader.read([path], "t").samples
    CellCycleSample.validate(samples)
    assert samples["time_s"].tolist() == [0.0, 60.0, 120.0, 180.0]
    assert samples["current_a"].tolist() == [0.0, 0.06, -0.03, 0.06]
    assert samples["cycle_number"].tolist() == [1, 1, 1, 2]
    assert samples["capacity_ah"].tolist()[1:] == [0.001, 0.0005, 0.0002]


def test_mactest_time_unit_from_the_wall_clock(tmp_path):
    """A TestTime in seconds (DPT Time 60 s apart per 60.0) is not multiplied by 60."""
    rows = [list(r) for r in FOUR_ROWS]
    for r, t in zip(rows, ("0,0", "60,0", "120,0", "180,0")):
        r[4] = t
    samples = MaccorMacTestReader.read([_mactest(tmp_path, rows)], "t").samples
    assert samples["time_s"].tolist() == [0.0, 60.0, 120.0, 180.0]


def test_mactest_time_unit_says_whether_it_was_measured_or_assumed(tmp_path):
    measured = MaccorMacTestReader.read([_mactest(tmp_path, FOUR_ROWS)], "t").cell.description
    assert "T.txt: TestTime in minutes (measured from the DPT Time span)" in measured
    undated = [list(r[:-1]) for r in FOUR_ROWS]  # no DPT Time column: nothing to measure with
    path = _mactest(tmp_path, undated, columns=MACTEST_COLUMNS.replace("\tDPT Time", ""), name="undated.txt")
    result = MaccorMacTestReader.read([path], "t")
    assert "undated.txt: TestTime unit not measurable from DPT Time: minutes assumed" in result.cell.description
    assert result.samples["time_s"].tolist() == [0.0, 60.0, 120.0, 180.0]


def test_mactest_without_current_column_names_the_file(tmp_path):
    columns = MACTEST_COLUMNS.replace("Current [A]", "Power [W]")
    path = _mactest(tmp_path, FOUR_ROWS, columns=columns, name="nocurrent.txt")
    with pytest.raises(SourceFormatError, match="nocurrent.txt"):
        MaccorMacTestReader.read([path], "t")


def test_mactest_cut_in_the_header_names_the_file(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_text(MACTEST_HEADER[:40])
    with pytest.raises(SourceFormatError, match="cut.txt"):
        MaccorMacTestReader.read([path], "t")


def test_mactest_without_data_rows(tmp_path):
    with pytest.raises(SourceFormatError, match="empty.txt: no data rows"):
        MaccorMacTestReader.read([_mactest(tmp_path, [], name="empty.txt")], "t")


def test_raw_export_time_unit_and_capacity_spelling(tmp_path):
    """`Test (Hr)` is hours; `Amp-Hr` is the same counter as `Amp-hr`."""
    columns = COLUMNS.replace("Test (Sec)", "Test (Hr)").replace("Amp-hr", "Amp-Hr")
    rows = [
        (1, 0, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 3.5, "R", 0, "x", 0, 0),
        (2, 0, 2, 0.5, 0.0, 0.25, 0.0, 0.5, 3.6, "C", 5, "x", 0, 0),
        (3, 0, 3, 1.0, 0.0, 0.125, 0.0, 0.25, 3.5, "D", 5, "x", 0, 0),
    ]
    path = tmp_path / "Hr.001"
    path.write_text("\r\n".join([HEADER, columns] + ["\t".join(map(str, r)) for r in rows]) + "\r\n")
    samples = MaccorTextReader.read([path], "t").samples
    assert samples["time_s"].tolist() == [0.0, 1800.0, 3600.0]
    assert samples["capacity_ah"].tolist()[1:] == [0.25, 0.125]
    assert samples["current_a"].tolist() == [0.0, 0.5, -0.25]


def test_raw_export_without_time_column_names_the_file(tmp_path):
    path = tmp_path / "notime.001"
    columns = COLUMNS.replace("Test (Sec)", "Test (Fortnights)")
    path.write_text("\r\n".join([HEADER, columns, "1\t0\t1\t0\t0\t0\t0\t0\t3.5\tR\t0\tx\t0\t0"]) + "\r\n")
    with pytest.raises(SourceFormatError, match=r"notime.001: missing Maccor columns \['Test \(Sec\) or"):
        MaccorTextReader.read([path], "t")
