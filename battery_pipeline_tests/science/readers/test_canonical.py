"""Canonical CSV / Parquet readers on small dirty fixtures written into tmp_path."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from battery_pipeline.science.readers import SourceFormatError, detect_format, readers_by_priority
from battery_pipeline.science.readers.canonical import CanonicalCsvReader, CanonicalParquetReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample

CLEAN = (
    "time_s,voltage_v,current_a,cycle_number,step_type,temperature_c,capacity_ah\n"
    "0,3.70,1.0,0,charge,25.0,0.0\n"
    "1,3.71,1.0,0,charge,25.0,0.0003\n"
    "2,3.72,0.0,0,rest,25.1,\n"
    "3,3.60,-1.0,1,discharge,25.2,0.0003\n"
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def read(path, cell_id="c1"):
    reader = detect_format(path)
    return reader, reader.read([path], cell_id).samples


def test_clean_csv_validates(tmp_path):
    reader, samples = read(write(tmp_path, "clean.csv", CLEAN))
    assert reader is CanonicalCsvReader
    assert list(samples.columns) == SAMPLE_COLUMNS
    CellCycleSample.validate(samples)
    assert samples["voltage_v"].tolist() == [3.70, 3.71, 3.72, 3.60]
    assert samples["step_type"].astype(str).tolist() == ["charge", "charge", "rest", "discharge"]
    assert samples["step_index"].tolist() == [0, 0, 1, 2]  # derived from step_type changes
    assert samples["capacity_ah"].isna().tolist() == [False, False, True, False]
    assert samples["internal_resistance_ohm"].isna().all()
    assert set(samples["cell_id"]) == {"c1"}
    assert set(samples["source_file"]) == {"clean.csv"}
    assert samples["source_row"].tolist() == [0, 1, 2, 3]


def test_clean_parquet_round_trip_validates(tmp_path):
    frame = pd.read_csv(pd.io.common.StringIO(CLEAN))
    frame.insert(0, "cell_id", "A1")
    frame["source_file"] = "ignored.csv"  # set by the reader, never taken from the file
    frame["source_row"] = 99
    path = tmp_path / "clean.parquet"
    frame.to_parquet(path)
    reader, samples = read(path, "A1")
    assert reader is CanonicalParquetReader
    assert reader.cell_key(path) == "A1"
    CellCycleSample.validate(samples)
    assert samples["time_s"].tolist() == [0, 1, 2, 3]
    assert samples["cycle_number"].dtype == np.int64
    assert set(samples["source_file"]) == {"clean.parquet"}
    assert samples["source_row"].tolist() == [0, 1, 2, 3]
    # Writable arrays (not views of Arrow buffers): downstream may assign in place.
    samples.loc[0, "voltage_v"] = 3.0


def test_cell_id_column(tmp_path):
    one = write(tmp_path, "one.csv", "cell_id,time_s,voltage_v,current_a,cycle_number\nB7,0,3.7,1,0\nB7,1,3.7,1,0\n")
    assert CanonicalCsvReader.cell_key(one) == "B7"
    assert CanonicalCsvReader.cell_key(write(tmp_path, "nocell.csv", CLEAN)) == "nocell"
    two = write(tmp_path, "two.csv", "cell_id,time_s,voltage_v,current_a,cycle_number\na,0,3.7,1,0\nb,0,3.7,1,0\nc,0,3.7,1,0\n")
    with pytest.raises(SourceFormatError, match=r"two.csv: holds 3 cells \(a, b, c\)"):
        CanonicalCsvReader.read([two], "x")


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.csv", "")
    with pytest.raises(SourceFormatError, match=r"empty.csv: file is empty"):
        detect_format(path)
    with pytest.raises(SourceFormatError, match="file is empty"):
        CanonicalCsvReader.read([path], "x")
    blank = write(tmp_path, "blank.csv", "\n\n  \n")
    with pytest.raises(SourceFormatError, match="file is empty"):
        CanonicalCsvReader.read([blank], "x")


def test_header_only(tmp_path):
    path = write(tmp_path, "header.csv", "time_s,voltage_v,current_a,cycle_number\n")
    assert detect_format(path) is CanonicalCsvReader
    with pytest.raises(SourceFormatError, match=r"header.csv: no data rows"):
        CanonicalCsvReader.read([path], "x")


def test_missing_required_columns_are_listed(tmp_path):
    path = write(tmp_path, "missing.csv", "time_s,voltage_v,step_type\n0,3.7,rest\n")
    with pytest.raises(SourceFormatError, match=r"missing required columns \['current_a', 'cycle_number'\]"):
        read(path)


def test_text_in_numeric_column_becomes_nan(tmp_path):
    path = write(tmp_path, "text.csv", CLEAN.replace("3.71", "abc").replace("-1.0,1,discharge", "-1.0,one,discharge"))
    _, samples = read(path)
    assert np.isnan(samples["voltage_v"].iloc[1])
    assert samples["voltage_v"].iloc[0] == 3.70
    # An unreadable cycle number becomes -1 so the schema quarantines that row (never dropped).
    assert samples["cycle_number"].tolist() == [0, 0, 0, -1]
    assert len(samples) == 4


def test_mostly_text_required_column_is_an_error(tmp_path):
    path = write(tmp_path, "mostly.csv", "time_s,voltage_v,current_a,cycle_number\n0,x,1,0\n1,y,1,0\n2,3.7,1,0\n")
    with pytest.raises(SourceFormatError, match=r"'voltage_v' \(voltage_v\) is mostly text: 2 of 3"):
        read(path)


def test_unit_suffixed_columns_are_converted(tmp_path):
    path = write(tmp_path, "milli.csv", "time_s,voltage_mv,current_ma,cycle_number,capacity_mah\n0,3700,1500,0,0\n1,3710,-1500,0,400\n")
    _, samples = read(path)
    CellCycleSample.validate(samples)
    assert samples["voltage_v"].tolist() == pytest.approx([3.7, 3.71])
    assert samples["current_a"].tolist() == pytest.approx([1.5, -1.5])
    assert samples["capacity_ah"].tolist() == pytest.approx([0.0, 0.4])


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("mv_as_v.csv", "time_s,voltage_v,current_a,cycle_number\n0,3700,1.5,0\n1,3710,1.5,0\n", "'voltage_v' looks like millivolts"),
        ("v_as_mv.csv", "time_s,voltage_mv,current_a,cycle_number\n0,3.7,1.5,0\n1,3.71,1.5,0\n", "'voltage_mv' looks like volts"),
        ("ma_as_a.csv", "time_s,voltage_v,current_a,cycle_number\n0,3.7,1500,0\n1,3.71,3000,0\n", "'current_a' looks like milliamps"),
        ("mah_as_ah.csv", "time_s,voltage_v,current_a,cycle_number,capacity_ah\n0,3.7,1.5,0,2500\n1,3.7,1.5,0,2600\n", "'capacity_ah' looks like mAh"),
    ],
)
def test_plain_unit_mistakes_are_errors(tmp_path, name, text, message):
    with pytest.raises(SourceFormatError, match=f"{name}: column {message}"):
        read(write(tmp_path, name, text))


def test_truncated_csv_reads_with_nans(tmp_path):
    path = write(tmp_path, "cut.csv", CLEAN + "4,3.5")  # last line cut mid-row, no newline
    _, samples = read(path)
    assert len(samples) == 5
    last = samples.iloc[-1]
    assert last["time_s"] == 4 and last["voltage_v"] == 3.5
    assert np.isnan(last["current_a"]) and last["cycle_number"] == -1
    assert samples["voltage_v"].iloc[:4].tolist() == [3.70, 3.71, 3.72, 3.60]


def test_semicolon_and_bom_and_case(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(("\ufeff" + CLEAN.replace(",", ";").replace("time_s", "Time_S")).encode("utf-8"))
    _, samples = read(path)
    assert samples["time_s"].tolist() == [0, 1, 2, 3]


def test_corrupt_and_truncated_parquet(tmp_path):
    path = tmp_path / "ok.parquet"
    pd.read_csv(pd.io.common.StringIO(CLEAN)).to_parquet(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceFormatError, match=r"cut.parquet: not a readable Parquet file"):
        read(cut)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1" + os.urandom(300) + b"PAR1")
    with pytest.raises(SourceFormatError, match=r"garbage.parquet: not a readable Parquet file"):
        read(garbage)


def test_parquet_without_canonical_columns(tmp_path):
    path = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1.0], "b": [2.0]}).to_parquet(path)
    with pytest.raises(SourceFormatError, match=r"other.parquet: missing required columns"):
        read(path)


def test_parquet_nulls_and_types(tmp_path):
    table = pa.table(
        {
            "time_s": pa.array([0.0, 1.0, None]),
            "voltage_v": pa.array([3.7, 3.7, 3.7], pa.float32()),
            "current_a": pa.array([1, 0, -1], pa.int32()),
            "cycle_number": pa.array([0, None, 1], pa.int64()),
            "step_type": pa.array(["Charge", None, " discharge"]),
            "temperature_c": pa.array([None, None, None], pa.float64()),
        }
    )
    path = tmp_path / "types.parquet"
    pq.write_table(table, path)
    _, samples = read(path)
    assert np.isnan(samples["time_s"].iloc[2])
    assert samples["cycle_number"].tolist() == [0, -1, 1]
    assert samples["current_a"].dtype == np.float64
    assert samples["step_type"].astype(str).tolist() == ["charge", "rest", "discharge"]
    assert samples["temperature_c"].isna().all()


@pytest.mark.parametrize("content", [os.urandom(4096), b"This is prose about batteries.\nNo table here.\n"])
def test_unknown_format_names_the_file(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(SourceFormatError, match=r"^notes.txt: unknown format"):
        detect_format(path)


def test_canonical_readers_run_after_cycler_formats():
    order = [r.format_name for r in readers_by_priority()]
    canonical = {"canonical_csv", "canonical_parquet"}
    assert set(order[-2:]) == canonical, order


def test_parquet_read_is_vectorized(tmp_path):
    """A smoke check against per-row Python (the 20 M-row benchmark is in the report)."""
    n = 1_000_000
    codes = (np.arange(n) // 1000 % 3).astype(np.int8)
    frame = pd.DataFrame(
        {
            "cell_id": pd.Categorical.from_codes(np.zeros(n, np.int8), ["big"]),
            "cycle_number": np.arange(n) // 3000,
            "step_type": pd.Categorical.from_codes(codes, ["charge", "discharge", "rest"]),
            "time_s": np.arange(n, dtype=float),
            "voltage_v": np.full(n, 3.7),
            "current_a": np.where(codes == 0, 1.0, np.where(codes == 1, -1.0, 0.0)),
            "capacity_ah": np.where(codes == 2, np.nan, 0.5),
        }
    )
    path = tmp_path / "big.parquet"
    frame.to_parquet(path)
    samples = CanonicalParquetReader.read([path], "big").samples
    assert len(samples) == n
    assert samples["step_index"].iloc[-1] == (n - 1) // 1000


def test_parquet_numbers_stored_as_text(tmp_path):
    base = {"time_s": [0.0, 1.0, 2.0], "current_a": [1.0, 1.0, 1.0], "cycle_number": [0, 0, 0]}
    some = tmp_path / "some_text.parquet"
    pq.write_table(pa.table({**base, "voltage_v": ["3.7", "n/a", "3.8"]}), some)
    _, samples = read(some)
    assert samples["voltage_v"].isna().tolist() == [False, True, False]
    mostly = tmp_path / "mostly_text.parquet"
    pq.write_table(pa.table({**base, "voltage_v": ["x", "y", "3.8"]}), mostly)
    with pytest.raises(SourceFormatError, match=r"mostly_text.parquet: column 'voltage_v' \(voltage_v\) is mostly text"):
        read(mostly)


def test_two_files_of_one_cell(tmp_path):
    first = write(tmp_path, "part1.csv", CLEAN)
    second = write(tmp_path, "part2.csv", CLEAN.replace("\n0,", "\n10,").replace("\n1,", "\n11,").replace("\n2,", "\n12,").replace("\n3,", "\n13,"))
    samples = CanonicalCsvReader.read([first, second], "c").samples
    CellCycleSample.validate(samples)
    assert samples["time_s"].tolist() == [0, 1, 2, 3, 10, 11, 12, 13]  # canonical: taken as is
    assert samples["source_file"].astype(str).tolist() == ["part1.csv"] * 4 + ["part2.csv"] * 4
    assert samples["source_row"].tolist() == [0, 1, 2, 3] * 2
