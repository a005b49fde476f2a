"""Arbin readers (CSV and xlsx) on the real files: BEEP fixtures and the CALCE CS2 cells."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers.arbin_csv import ArbinCsvReader, _clean_table
from battery_pipeline.science.readers.arbin_xlsx import ArbinXlsxReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline_tests.conftest import dataset_file

FAST_CHARGE = "cycler_samples/FastCharge_000025_CH8.csv"
CH33 = "cycler_samples/2017-05-09_test-TC-contact_CH33.csv"
CS2_35 = "calce_cs2/CS2_35"
DUPLICATE = "CS2_35_2_10_11.xlsx"  # a re-export of the test in CS2_35_2_4_11.xlsx
ORIGINAL = "CS2_35_2_4_11.xlsx"


# ------------------------------------------------------------------------------------------
# Arbin CSV
# ------------------------------------------------------------------------------------------


def test_fast_charge_csv_detected_and_metadata_is_a_companion(datasets):
    data = dataset_file(datasets, FAST_CHARGE)
    meta = data.with_name("FastCharge_000025_CH8_Metadata.csv")
    assert ArbinCsvReader.is_companion(meta)
    assert not ArbinCsvReader.is_companion(data)
    assert not ArbinCsvReader.sniff(meta, meta.read_bytes()[:65536])
    assert detect_format(data) is ArbinCsvReader


def test_fast_charge_csv_reads_with_arbin_conventions(datasets):
    path = dataset_file(datasets, FAST_CHARGE)
    result = ArbinCsvReader.read([path], "FastCharge_000025_CH8")
    frame = result.samples
    CellCycleSample.validate(frame)
    raw = pd.read_csv(path)
    assert list(frame.columns) == SAMPLE_COLUMNS
    assert len(frame) == len(raw) == 248
    # The fixture is the first 30 min of the test: the initial rest at 30 degC, I = 0 exactly.
    assert (frame["current_a"] == 0).all() and (frame["step_type"] == "rest").all()
    np.testing.assert_array_equal(frame["time_s"], raw["Test_Time"])  # seconds, as logged
    np.testing.assert_array_equal(frame["current_a"], raw["Current"])  # Arbin sign kept
    np.testing.assert_array_equal(frame["temperature_c"], raw["Temperature"])
    assert (frame["cycle_number"] == 0).all()  # Arbin's own Cycle_Index 0
    assert frame["internal_resistance_ohm"].isna().all()  # Arbin 0.0 = not measured
    assert frame["capacity_ah"].isna().all()  # rest rows have no direction
    assert frame["source_file"].eq(path.name).all()
    assert frame["source_row"].tolist() == list(range(len(raw)))
    cell = result.cell
    assert cell.chemistry == "LFP" and cell.nominal_capacity_ah == 1.1
    assert (cell.voltage_min_v, cell.voltage_max_v) == (2.0, 3.6)
    assert cell.licence == "Apache-2.0" and "Severson" in cell.citation
    assert "4_4C-80PER_4_4C" in cell.description  # schedule from the _Metadata companion


def test_ch33_with_empty_cycle_and_step_columns_reads(datasets):
    path = dataset_file(datasets, CH33)
    raw = pd.read_csv(path)
    assert raw["Cycle_Index"].isna().all() and raw["Step_Index"].isna().all()
    result = ArbinCsvReader.read([path], "CH33")
    frame = result.samples
    CellCycleSample.validate(frame)
    assert len(frame) == len(raw)
    # One charge from the start (6.6 A, then 1.1 A): cycle 1 from the first charge on.
    assert (frame["cycle_number"] == 1).all()
    # Steps derived from step-type changes: 6C charge, the one ~0 A transition sample, 1C charge.
    assert frame["step_index"].tolist() == [0] * 47 + [1] + [2] * (len(raw) - 48)
    charge = frame["step_type"] == "charge"
    # Arbin: charge is positive, and Charge_Capacity grows while it is.
    assert (frame.loc[charge, "current_a"] > 0).all()
    np.testing.assert_allclose(frame.loc[charge, "capacity_ah"], raw.loc[charge, "Charge_Capacity"])
    assert frame.loc[charge, "capacity_ah"].is_monotonic_increasing
    # Unknown cell: limits come from a sidecar later, the schedule is kept as description.
    assert result.cell.chemistry is None and result.cell.nominal_capacity_ah is None
    assert "20170509-6C_1C_36CV.sdu" in result.cell.description
    assert "Cycle_Index empty" in result.cell.description


BATTDAT_EXAMPLE = "cycler_zoo/arbin_csv/arbin_example.csv"
PYPROBE_SAMPLE = "cycler_zoo/arbin_csv/sample_data_arbin.csv"


def _ours_per_cycle(frame: pd.DataFrame, kind: str) -> pd.Series:
    return frame[frame["step_type"] == kind].groupby("cycle_number")["capacity_ah"].max()


def _integrated_per_cycle(raw: pd.DataFrame, sign: int) -> pd.Series:
    """Ah moved per Cycle_Index in the direction of `sign` (+1 charge, -1 discharge), positive:
    trapezoid of the logged current over Test_Time."""
    out = {}
    for cycle, rows in raw.groupby("Cycle_Index"):
        i, t = rows["Current"].to_numpy(), rows["Test_Time"].to_numpy()
        dq = 0.5 * (i[1:] + i[:-1]) * np.diff(t) / 3600
        out[cycle] = float(np.sum(dq[sign * dq > 0])) * sign
    return pd.Series(out)


def test_battdat_example_rows_cycles_and_capacity_match_the_files_counters(datasets):
    """battdat's Arbin example, checked against its own columns (battdat itself, in
    benchmarks/csv_exports_peer_check.py, integrates a 1 s clock and misreads cycle 1)."""
    path = dataset_file(datasets, BATTDAT_EXAMPLE)
    raw = pd.read_csv(path)
    frame = ArbinCsvReader.read([path], "arbin_example").samples
    CellCycleSample.validate(frame)
    assert len(frame) == len(raw) == 2142  # every logged row; Arbin's repeated records kept
    assert frame["cycle_number"].nunique() == raw["Cycle_Index"].nunique() == 2
    counters = raw.groupby("Cycle_Index")[["Charge_Capacity", "Discharge_Capacity"]].max()
    # The trap: the file starts within cycle 1 with 0.88 Ah already on the charge counter
    # (the cycle's first charge steps 7-8 precede the export; cycle 2 repeats them: 0 -> 0.88
    # Ah). Arbin counts that charge in cycle 1, and so do we: the cycle's capacity is the
    # counter's maximum, not what moved within the file.
    assert raw["Charge_Capacity"].iloc[0] == pytest.approx(0.8800053)
    for kind, column in (("charge", "Charge_Capacity"), ("discharge", "Discharge_Capacity")):
        ours = _ours_per_cycle(frame, kind)
        assert list(ours.index) == [1, 2]
        np.testing.assert_allclose(ours, counters.loc[ours.index, column], rtol=5e-3)
    # The counters themselves against the logged current: what each counter gained within the
    # file equals the integral of the current in its direction (0.35 % at worst, cycle 1 charge).
    gained = raw.groupby("Cycle_Index")[["Charge_Capacity", "Discharge_Capacity"]].agg(lambda q: q.max() - q.iloc[0])
    np.testing.assert_allclose(_integrated_per_cycle(raw, +1), gained["Charge_Capacity"], rtol=5e-3)
    np.testing.assert_allclose(_integrated_per_cycle(raw, -1), gained["Discharge_Capacity"], rtol=5e-3)


def test_pyprobe_sample_rows_cycle_and_capacity_match_the_files_counters(datasets):
    """PyProBE's 13-row Arbin sample: rest, a 0.7 s step 2, then a 2.65 A charge."""
    path = dataset_file(datasets, PYPROBE_SAMPLE)
    raw = pd.read_csv(path, encoding="utf-8-sig")
    frame = ArbinCsvReader.read([path], "sample_data_arbin").samples
    CellCycleSample.validate(frame)
    assert len(frame) == len(raw) == 13
    assert frame["cycle_number"].nunique() == raw["Cycle Index"].nunique() == 1
    charge = frame["step_type"] == "charge"
    assert charge.sum() == (raw["Current (A)"] > 0).sum() == 2  # step 3's two rows
    # Both counters gained ~2e-5 Ah between the last step-2 row and the first charge row: the
    # unlogged pulse of step 2, in and out. The cycle's charge capacity is the counter's maximum
    # (PyProBE's max - min over the charge rows leaves those 2e-5 Ah out, 5 %). Discharge has
    # no row to carry it, so the cycle has no discharge capacity.
    np.testing.assert_allclose(_ours_per_cycle(frame, "charge"), [raw["Charge Capacity (Ah)"].max()], rtol=5e-3)
    assert _ours_per_cycle(frame, "discharge").empty
    # what the counter gained between the two charge rows is the current's integral there
    q, i, t = (raw.loc[charge.to_numpy(), c].to_numpy() for c in ("Charge Capacity (Ah)", "Current (A)", "Test Time (s)"))
    np.testing.assert_allclose(q[1] - q[0], 0.5 * (i[0] + i[1]) * (t[1] - t[0]) / 3600, rtol=5e-3)
    np.testing.assert_allclose(frame.loc[charge, "capacity_ah"], q)


def test_arbin_dates_read_in_one_format_equal_per_row_parsing():
    """The one-format date fast paths (few rows: strptime; many: pandas) give dateutil's
    per-row result, and a column that breaks the format still parses row by row."""
    from battery_pipeline.science.readers.arbin_csv import datetime_seconds

    texts = ["\t09/20/2024 08:32:34.558", "\t09/20/2024 08:33:04.559", None, "\t09/20/2024 08:37:05.772"]
    per_row = pd.to_datetime(pd.Series(texts), format="mixed").to_numpy("datetime64[ns]")
    expected = per_row.astype("int64").astype("float64") / 1e9
    expected[np.isnat(per_row)] = np.nan
    for values in (texts, texts * 100):  # below and above the strptime row limit
        np.testing.assert_array_equal(datetime_seconds(np.array(values, dtype=object)), np.tile(expected, len(values) // 4))
    mixed = np.array(["09/20/2024 08:32:34.558", "2024-09-20 08:33:04"], dtype=object)
    np.testing.assert_allclose(np.diff(datetime_seconds(mixed)), [29.442], atol=1e-6)


ARBIN_UNITS_HEADER = (
    "Data_Point,Test_Time(s),DateTime,Step_Index,Cycle_Index,Current(mA),Voltage(V),"
    "Charge_Capacity(mAh),Discharge_Capacity(mAh),Internal_Resistance(Ohm),Aux_Temperature_1(C)"
)


def _synthetic_rows():
    # cycle 1: rest, charge +550 mA, discharge -1100 mA; cycle 2: rest, charge (counters reset)
    return [
        (1, 0.0, 1e9, 1, 1, 0.0, 3.50, 0.0, 0.0, 0.0, 25.0),
        (2, 10.0, 1e9 + 10, 2, 1, 550.0, 3.70, 1.5, 0.0, 0.0, 25.1),
        (3, 20.0, 1e9 + 20, 2, 1, 550.0, 3.90, 3.0, 0.0, 0.0, 25.2),
        (4, 30.0, 1e9 + 30, 3, 1, -1100.0, 3.60, 3.0, 3.0, 0.08, 25.3),
        (5, 40.0, 1e9 + 40, 3, 1, -1100.0, 3.40, 3.0, 6.0, 0.08, 25.4),
        (6, 50.0, 1e9 + 50, 1, 2, 0.0, 3.45, 0.0, 0.0, 0.08, 25.5),
        (7, 60.0, 1e9 + 60, 2, 2, 550.0, 3.70, 1.5, 0.0, 0.08, 25.6),
    ]


def _write_csv(path: Path, header: str, rows) -> Path:
    lines = [header] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_header_with_units_signs_and_capacity(tmp_path):
    path = _write_csv(tmp_path / "my_cell.csv", ARBIN_UNITS_HEADER, _synthetic_rows())
    assert detect_format(path) is ArbinCsvReader
    frame = ArbinCsvReader.read([path], "my_cell").samples
    CellCycleSample.validate(frame)
    assert frame["step_type"].tolist() == ["rest", "charge", "charge", "discharge", "discharge", "rest", "charge"]
    np.testing.assert_allclose(frame["current_a"], [0, 0.55, 0.55, -1.1, -1.1, 0, 0.55])  # mA -> A
    np.testing.assert_allclose(
        frame["capacity_ah"], [np.nan, 0.0015, 0.003, 0.003, 0.006, np.nan, 0.0015]
    )  # mAh -> Ah, by direction, counters reset by Arbin at cycle 2
    # Held IR: kept where it first appears, repeats are null.
    assert frame["internal_resistance_ohm"].notna().tolist() == [False, False, False, True, False, False, False]
    np.testing.assert_allclose(frame["temperature_c"], [25.0, 25.1, 25.2, 25.3, 25.4, 25.5, 25.6])


def test_csv_line_endings_and_a_ragged_row_read_the_same(tmp_path):
    # The clean table goes through pyarrow, anything else through pandas: both give one frame.
    # (Found by the reader fuzzing: a header ending in a bare CR broke the header split.)
    clean = _write_csv(tmp_path / "clean.csv", ARBIN_UNITS_HEADER, _synthetic_rows())
    expected = ArbinCsvReader.read([clean], "c").samples.drop(columns=["source_file"])
    text = clean.read_text()
    carriage = tmp_path / "carriage.csv"
    carriage.write_bytes(text.replace("\n", "\r").encode())
    ragged = tmp_path / "ragged.csv"
    lines = text.splitlines()
    lines[3] += ",7"  # one field too many in a data row: pyarrow refuses the table, pandas reads it
    ragged.write_text("\n".join(lines) + "\n")
    assert _clean_table(ragged.read_bytes()) is None and _clean_table(carriage.read_bytes()) is not None
    for path in (carriage, ragged):
        try:
            frame = ArbinCsvReader.read([path], "c").samples.drop(columns=["source_file"])
        except SourceFormatError as exc:
            assert path.name in str(exc)
            continue
        pd.testing.assert_frame_equal(frame, expected)


def test_csv_missing_required_column_names_file_and_column(tmp_path):
    header = ARBIN_UNITS_HEADER.replace("Voltage(V),", "")
    rows = [row[:6] + row[7:] for row in _synthetic_rows()]
    path = _write_csv(tmp_path / "broken_arbin.csv", header, rows)
    with pytest.raises(SourceFormatError) as info:
        ArbinCsvReader.read([path], "broken")
    message = str(info.value)
    assert "broken_arbin.csv" in message and "Voltage" in message


def test_csv_unknown_unit_is_an_error_not_a_silent_factor(tmp_path):
    header = ARBIN_UNITS_HEADER.replace("Current(mA)", "Current(uA)")
    path = _write_csv(tmp_path / "odd_units.csv", header, _synthetic_rows())
    with pytest.raises(SourceFormatError, match=r"odd_units\.csv.*Current\(uA\)"):
        ArbinCsvReader.read([path], "odd")


def test_csv_sniff_rejects_beep_structured_frame(datasets):
    # Lower-case `test_time,current,...` is BEEP's processed Maccor frame, not an Arbin export.
    path = dataset_file(datasets, "cycler_samples/BEEPDatapath_maccor_parameterized_memloaded.csv")
    assert not ArbinCsvReader.sniff(path, path.read_bytes()[:65536])


# ------------------------------------------------------------------------------------------
# Arbin xlsx: CALCE CS2_35, all files stitched
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cs2_35_files(datasets) -> list[Path]:
    folder = dataset_file(datasets, CS2_35)
    return sorted(folder.glob("*.xlsx"), key=ArbinXlsxReader.file_order)


@pytest.fixture(scope="module")
def cs2_35(cs2_35_files):
    return ArbinXlsxReader.read(cs2_35_files, "CS2_35")


@pytest.fixture(scope="module")
def cs2_35_raw(cs2_35_files) -> pd.DataFrame:
    """Arbin's own Cycle_Index and Discharge_Capacity per (file, row), read independently."""
    import fastexcel

    parts = []
    for path in cs2_35_files:
        workbook = fastexcel.read_excel(str(path))
        sheet = next(s for s in workbook.sheet_names if s.startswith("Channel_"))
        raw = workbook.load_sheet(
            sheet, use_columns=["Cycle_Index", "Discharge_Capacity(Ah)"], eager=True
        ).to_pandas()
        raw["source_file"] = path.name
        raw["source_row"] = np.arange(len(raw))
        parts.append(raw)
    return pd.concat(parts, ignore_index=True)


def test_calce_grouping_keys_and_order(cs2_35_files):
    assert {ArbinXlsxReader.cell_key(p) for p in cs2_35_files} == {"CS2_35"}
    names = [p.name for p in cs2_35_files]
    assert names[:4] == [
        "CS2_35_8_17_10.xlsx",
        "CS2_35_8_18_10.xlsx",
        "CS2_35_8_19_10.xlsx",
        "CS2_35_8_30_10.xlsx",
    ]
    assert names.index("CS2_35_9_30_10.xlsx") < names.index("CS2_35_10_15_10.xlsx")
    assert names.index("CS2_35_12_23_10.xlsx") < names.index("CS2_35_1_10_11.xlsx")
    assert names[-2:] == [ORIGINAL, DUPLICATE]
    assert ArbinXlsxReader.cell_key(Path("some_arbin_test.xlsx")) == "some_arbin_test"


def test_detect_format_picks_arbin_xlsx(cs2_35_files):
    assert detect_format(cs2_35_files[0]) is ArbinXlsxReader
    assert detect_format(cs2_35_files[-1]) is ArbinXlsxReader


def test_calce_stitched_frame_validates(cs2_35, cs2_35_files):
    frame = cs2_35.samples
    CellCycleSample.validate(frame)
    assert set(frame["source_file"]) == {p.name for p in cs2_35_files}
    assert len(frame) == 266_914
    cell = cs2_35.cell
    assert (cell.dataset, cell.chemistry, cell.nominal_capacity_ah) == ("CALCE CS2", "LCO", 1.1)
    assert (cell.voltage_min_v, cell.voltage_max_v) == (2.7, 4.2)
    assert cell.licence == "free for research with citation" and "10314" in cell.citation
    assert DUPLICATE in cell.description  # the re-export is reported


def test_calce_cycles_continuous_across_files(cs2_35):
    frame = cs2_35.samples
    original = frame[frame["source_file"] != DUPLICATE]
    cycles = original["cycle_number"].to_numpy()
    assert cycles[0] == 1
    assert set(np.unique(np.diff(cycles))) == {0, 1}  # no gaps, no restarts
    assert np.array_equal(np.unique(cycles), np.arange(1, cycles.max() + 1))
    # The three one-cycle files at the start are cycles 1, 2, 3.
    firsts = original.groupby("source_file", sort=False, observed=True)["cycle_number"].agg(["min", "max"])
    assert firsts.loc["CS2_35_8_17_10.xlsx"].tolist() == [1, 1]
    assert firsts.loc["CS2_35_8_19_10.xlsx"].tolist() == [3, 3]
    # The duplicate file repeats its original's cycle numbers instead of adding 50 cycles.
    dup = frame[frame["source_file"] == DUPLICATE]
    orig = frame[frame["source_file"] == ORIGINAL]
    assert frame["cycle_number"].max() == cycles.max()
    np.testing.assert_array_equal(dup["cycle_number"], orig["cycle_number"])


def test_calce_time_continuous_across_files(cs2_35):
    frame = cs2_35.samples
    time_s = frame["time_s"].to_numpy()
    files = frame["source_file"].to_numpy()
    steps_back = np.flatnonzero(np.diff(time_s) < 0)
    # Only where the duplicated file starts over does time go back...
    assert [files[i + 1] for i in steps_back] == [DUPLICATE]
    assert (files[steps_back[0]], files[steps_back[0] + 1]) == (ORIGINAL, DUPLICATE)
    # ...and there it repeats exactly the original's times.
    np.testing.assert_array_equal(
        frame.loc[files == DUPLICATE, "time_s"], frame.loc[files == ORIGINAL, "time_s"]
    )
    # Test_Time restarts in each file; time_s spans the whole test (~5.5 months).
    assert time_s[0] == pytest.approx(10.0, abs=0.01)
    assert 160 * 86400 < time_s.max() < 175 * 86400


def test_calce_discharge_capacity_per_cycle_matches_arbin(cs2_35, cs2_35_raw):
    frame = cs2_35.samples
    joined = frame.merge(cs2_35_raw, on=["source_file", "source_row"], how="left", validate="1:1")
    assert joined["Cycle_Index"].notna().all()
    raw_q = joined["Discharge_Capacity(Ah)"].to_numpy()
    # Trap: CALCE's Arbin counters accumulate over the whole file (tens of Ah), not per cycle.
    assert cs2_35_raw["Discharge_Capacity(Ah)"].max() > 50
    # Arbin's per-cycle discharge capacity = the counter's rise within the cycle: its per-cycle
    # max minus what it held before the cycle (0 for each file's first cycle).
    before = (
        joined.assign(q=raw_q)
        .groupby("source_file", sort=False, observed=True)["q"]
        .transform(lambda q: q.cummax().shift(1).fillna(0.0))
    )
    joined["before"] = before
    per_cycle = joined.groupby("cycle_number").agg(
        arbin_max=("Discharge_Capacity(Ah)", "max"), arbin_before=("before", "min")
    )
    expected = per_cycle["arbin_max"] - per_cycle["arbin_before"]
    discharge = frame[frame["step_type"] == "discharge"]
    ours = discharge.groupby("cycle_number")["capacity_ah"].max()
    # Equal to 1 uAh: the counter still creeps by <0.2 uAh during the IR pulse of the rest
    # step after the discharge, which is (rightly) not a discharge row.
    np.testing.assert_allclose(ours, expected.loc[ours.index], rtol=0, atol=1e-6)
    # First cycle of each file: literally the Arbin column's per-cycle max.
    first = joined.groupby("source_file", observed=True)["cycle_number"].min()
    first_max = (
        joined[joined["cycle_number"].isin(first)]
        .groupby("cycle_number")["Discharge_Capacity(Ah)"]
        .max()
    )
    np.testing.assert_allclose(ours.loc[first_max.index], first_max, rtol=0, atol=1e-6)
    # Physically: fresh cell ~1.14 Ah at 1C, fading to ~0.3 Ah; within 2 % of coulomb counting.
    assert ours.iloc[0] == pytest.approx(1.138, abs=0.002)
    assert 0.2 < ours.min() and ours.max() < 1.2
    some = discharge[discharge["cycle_number"].isin([1, 100, 500])]
    for cycle, rows in some.groupby("cycle_number"):
        t, i = rows["time_s"].to_numpy(), rows["current_a"].to_numpy()
        counted = -np.sum(0.5 * (i[1:] + i[:-1]) * np.diff(t)) / 3600
        assert counted == pytest.approx(ours.loc[cycle], rel=0.02)


def test_calce_signs_ir_and_step_types(cs2_35):
    frame = cs2_35.samples
    charge = frame["step_type"] == "charge"
    discharge = frame["step_type"] == "discharge"
    assert (frame.loc[charge, "current_a"] > 0).all()
    assert (frame.loc[discharge, "current_a"] < 0).all()
    assert frame.loc[discharge, "current_a"].median() == pytest.approx(-1.1, abs=0.01)
    assert (frame["capacity_ah"].dropna() >= 0).all()
    # IR is measured in steps 6 and 9 only (after charge and after discharge) and kept once.
    ir = frame.dropna(subset=["internal_resistance_ohm"])
    assert set(ir["step_index"]) == {6, 9}
    assert ir["internal_resistance_ohm"].between(0.05, 0.2).all()
    # The IR steps' few-mA pulses do not make them charge/discharge steps.
    assert (frame.loc[frame["step_index"].isin([6, 9]), "step_type"] == "rest").all()
    assert frame["temperature_c"].isna().all()  # CALCE CS2 logs no temperature


# ------------------------------------------------------------------------------------------
# Arbin xlsx: broken and non-CALCE workbooks
# ------------------------------------------------------------------------------------------


def test_truncated_xlsx_raises_source_format_error(cs2_35_files, tmp_path):
    source = next(p for p in cs2_35_files if p.name == "CS2_35_9_7_10.xlsx")
    truncated = tmp_path / source.name
    with source.open("rb") as src, truncated.open("wb") as dst:
        dst.write(src.read(source.stat().st_size // 2))
    assert detect_format(truncated) is ArbinXlsxReader  # the head still says Arbin
    with pytest.raises(SourceFormatError) as info:
        ArbinXlsxReader.read([truncated], "CS2_35")
    assert source.name in str(info.value) and "truncated" in str(info.value)


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _write_xlsx(path: Path, sheet_name: str, header: list[str], rows: list[tuple]) -> Path:
    """A minimal valid xlsx (shared-string header, numeric cells) without any Excel library."""
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    pkg = "http://schemas.openxmlformats.org/package/2006/relationships"
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    cells = "".join(
        f'<c r="{_column_letter(j)}1" t="s"><v>{j}</v></c>' for j in range(len(header))
    )
    sheet_rows = [f'<row r="1">{cells}</row>']
    for i, row in enumerate(rows, start=2):
        cells = "".join(f'<c r="{_column_letter(j)}{i}"><v>{v}</v></c>' for j, v in enumerate(row))
        sheet_rows.append(f'<row r="{i}">{cells}</row>')
    strings = "".join(f"<si><t>{h}</t></si>" for h in header)
    files = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{ct}.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{ct}.worksheet+xml"/>'
            f'<Override PartName="/xl/sharedStrings.xml" ContentType="{ct}.sharedStrings+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            f'<Relationships xmlns="{pkg}"><Relationship Id="rId1" '
            f'Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
            f'<sheet name="{sheet_name}" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{pkg}">'
            f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{rel}/sharedStrings" Target="sharedStrings.xml"/>'
            "</Relationships>"
        ),
        "xl/sharedStrings.xml": f'<sst xmlns="{main}">{strings}</sst>',
        "xl/worksheets/sheet1.xml": (
            f'<worksheet xmlns="{main}"><sheetData>{"".join(sheet_rows)}</sheetData></worksheet>'
        ),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_non_calce_arbin_xlsx_is_one_cell_per_file(tmp_path):
    header = [
        "Data_Point", "Test_Time(s)", "Date_Time", "Step_Index", "Cycle_Index", "Current(A)",
        "Voltage(V)", "Charge_Capacity(Ah)", "Discharge_Capacity(Ah)", "Internal_Resistance(Ohm)",
    ]
    excel_day = 40400.5  # Excel serial date: 2010-08-08 12:00
    rows = [
        (1, 0.0, excel_day, 1, 1, 0.0, 3.5, 0.0, 0.0, 0.0),
        (2, 60.0, excel_day + 60 / 86400, 2, 1, 1.0, 3.8, 0.0167, 0.0, 0.0),
        (3, 120.0, excel_day + 120 / 86400, 3, 1, -2.0, 3.6, 0.0167, 0.0333, 0.05),
    ]
    path = _write_xlsx(tmp_path / "lab_cell_A.xlsx", "Data", header, rows)
    assert detect_format(path) is ArbinXlsxReader  # via the header in sharedStrings
    assert ArbinXlsxReader.cell_key(path) == "lab_cell_A"
    result = ArbinXlsxReader.read([path], "lab_cell_A")
    frame = result.samples
    CellCycleSample.validate(frame)
    assert frame["step_type"].tolist() == ["rest", "charge", "discharge"]
    np.testing.assert_allclose(frame["current_a"], [0.0, 1.0, -2.0])
    np.testing.assert_allclose(frame["time_s"], [0.0, 60.0, 120.0])
    np.testing.assert_allclose(frame["capacity_ah"], [np.nan, 0.0167, 0.0333])
    assert result.cell.chemistry is None and result.cell.nominal_capacity_ah is None


def test_xlsx_without_arbin_columns_names_the_problem(tmp_path):
    path = _write_xlsx(
        tmp_path / "not_arbin.xlsx", "Channel_1-001", ["Time", "Volts"], [(0.0, 3.5), (1.0, 3.6)]
    )
    with pytest.raises(SourceFormatError) as info:
        ArbinXlsxReader.read([path], "x")
    assert "not_arbin.xlsx" in str(info.value) and "Test_Time" in str(info.value)


def test_duplicate_file_detected_by_content_not_name(cs2_35_files, tmp_path):
    # Same test exported under any name is recognised by its start time, not by its file name.
    original = next(p for p in cs2_35_files if p.name == "CS2_35_9_8_10.xlsx")
    copy = tmp_path / "CS2_35_9_9_10.xlsx"
    shutil.copyfile(original, copy)
    result = ArbinXlsxReader.read([original, copy], "CS2_35")
    frame = result.samples
    first = frame[frame["source_file"] == original.name]
    second = frame[frame["source_file"] == copy.name]
    np.testing.assert_array_equal(first["cycle_number"], second["cycle_number"])
    assert "identical copy" in result.cell.description
