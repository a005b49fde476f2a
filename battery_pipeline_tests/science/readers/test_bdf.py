"""BDF readers (`bdf_csv`, `bdf_parquet`) and the BDF export, on the cycler zoo's BDF files.

Compared against: the files' own columns (values, row counts, capacity counters), an
independent trapezoid integration of the file's current where a file has no capacity column,
and (in benchmarks/bdf_peer_check.py, not here: it needs a scratch venv) the `batterydf` reader.
"""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from battery_pipeline.science.bdf_export import write_bdf
from battery_pipeline.science.readers import SNIFF_BYTES, SourceFormatError, detect_format
from battery_pipeline.science.readers.bdf import BdfCsvReader, BdfParquetReader
from battery_pipeline.science.readers.canonical import CanonicalCsvReader, CanonicalParquetReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline_tests.conftest import dataset_file

DLR = "cycler_zoo/bdf_csv/DLR__LiLNMOHydra0b__20221125__POCV__25degC__Basytec.bdf.csv"
SINTEF = "cycler_zoo/bdf_csv/SINTEF__SLPBA842124HV__2024-10-23__Rate_25degC__Neware__Time_Bug.bdf.csv"
BATMO = "cycler_zoo/bdf_csv/batmo_bdf.csv"
LEGACY = "cycler_zoo/bdf_parquet/legacy.bdf.parquet"
ZOO = {DLR: BdfCsvReader, SINTEF: BdfCsvReader, BATMO: BdfCsvReader, LEGACY: BdfParquetReader}

# The SI columns of each file as the file names them, with the factor to SI.
SI_COLUMNS = {
    DLR: {"time_s": ("test_time_second", 1.0), "voltage_v": ("voltage_volt", 1.0),
          "current_a": ("current_ampere", 1.0), "temperature_c": ("ambient_temperature_celsius", 1.0)},
    SINTEF: {"time_s": ("test_time_second", 1.0), "voltage_v": ("voltage_volt", 1.0),
             "current_a": ("current_ampere", 1.0), "temperature_c": ("temperature_t1_celsius", 1.0)},
    # BatMo: hours, and positive current = discharge (its step types and counters say so).
    BATMO: {"time_s": ("Test Time / h", 3600.0), "voltage_v": ("Voltage / V", 1.0),
            "current_a": ("Current / A", -1.0)},
    LEGACY: {"time_s": ("test_time_millisecond", 1e-3), "voltage_v": ("voltage_volt", 1.0),
             "current_a": ("current_ampere", 1.0), "temperature_c": ("ambient_temperature_celsius", 1.0)},
}
CYCLE_COLUMN = {SINTEF: "cycle_count", BATMO: "Cycle Count / 1", LEGACY: "cycle_dimensionless"}
CAPACITY_TOLERANCE = 0.005  # 0.5 %


def raw_table(path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas() if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.fixture(scope="module")
def zoo(datasets):
    out = {}
    for relative, reader in ZOO.items():
        path = dataset_file(datasets, relative)
        out[relative] = (path, raw_table(path), reader.read([path], "zoo_cell"))
    return out


@pytest.mark.parametrize("relative", list(ZOO))
def test_detected_by_content(datasets, relative):
    path = dataset_file(datasets, relative)
    assert detect_format(path) is ZOO[relative]
    head = path.read_bytes()[:SNIFF_BYTES]
    # The canonical CSV sniffer must not claim a BDF header; canonical_parquet claims every
    # Parquet file, which is why the BDF readers run first (lower priority number).
    assert not CanonicalCsvReader.sniff(path, head)
    assert ZOO[relative].priority < CanonicalParquetReader.priority


def test_detection_ignores_extension(datasets, tmp_path):
    disguised = tmp_path / "export.txt"
    disguised.write_bytes(dataset_file(datasets, SINTEF).read_bytes())
    assert detect_format(disguised) is BdfCsvReader
    compressed = tmp_path / "SINTEF__cell__20241023_001.bdf.gz"
    compressed.write_bytes(gzip.compress(dataset_file(datasets, SINTEF).read_bytes()))
    assert detect_format(compressed) is BdfCsvReader
    assert len(BdfCsvReader.read([compressed], "c").samples) == 13086


def test_canonical_files_are_not_claimed(tmp_path):
    canonical = tmp_path / "cell.csv"
    pd.DataFrame({"time_s": [0.0, 1.0], "voltage_v": [3.7, 3.8], "current_a": [1.0, 1.0],
                  "cycle_number": [0, 0]}).to_csv(canonical, index=False)
    assert detect_format(canonical) is CanonicalCsvReader
    canonical_parquet = tmp_path / "cell.parquet"
    pd.read_csv(canonical).to_parquet(canonical_parquet)
    assert detect_format(canonical_parquet) is CanonicalParquetReader


@pytest.mark.parametrize("relative", list(ZOO))
def test_rows_and_si_values_equal_the_file(zoo, relative):
    path, raw, result = zoo[relative]
    samples = result.samples
    assert list(samples.columns) == SAMPLE_COLUMNS
    assert len(samples) == len(raw)  # no row dropped
    assert (samples["source_file"] == path.name).all()
    np.testing.assert_array_equal(samples["source_row"].to_numpy(), np.arange(len(raw)))
    for canonical, (column, factor) in SI_COLUMNS[relative].items():
        expected = raw[column].to_numpy(dtype="float64") * factor
        np.testing.assert_allclose(samples[canonical].to_numpy(), expected, rtol=1e-12, atol=0,
                                   err_msg=f"{canonical} vs {column}")
    if relative in CYCLE_COLUMN:  # cycles as the file numbers them, never renumbered
        np.testing.assert_array_equal(samples["cycle_number"].to_numpy(), raw[CYCLE_COLUMN[relative]].to_numpy())


@pytest.mark.parametrize("relative", list(ZOO))
def test_canonical_frame_validates_schema(zoo, relative):
    _, _, result = zoo[relative]
    samples = result.samples
    if relative == SINTEF:
        # Time_Bug: test time 0 on every step's first row, kept as reported (validation's job),
        # and the frame is otherwise schema-valid.
        assert (np.diff(samples["time_s"].to_numpy()) < 0).sum() == 19
    CellCycleSample.validate(samples)


def test_no_chemistry_or_capacity_invented(zoo):
    for _, _, result in zoo.values():
        assert result.cell.chemistry is None
        assert result.cell.nominal_capacity_ah is None
        assert not result.cell.origin


def test_describe_reads_the_naming_convention(zoo):
    description = zoo[SINTEF][2].cell.description
    assert "institution SINTEF" in description and "cell SLPBA842124HV" in description
    assert "jumps back 19 times" in description


def test_batmo_sign_follows_its_own_step_types(zoo):
    _, raw, result = zoo[BATMO]
    samples = result.samples
    assert "current negated" in result.cell.description
    kind = raw["Step Type / 1"].to_numpy()
    current = samples["current_a"].to_numpy()
    assert (current[kind == "charge"] < 0).sum() == 0
    assert (current[kind == "discharge"] > 0).sum() == 0
    np.testing.assert_array_equal(samples["step_type"].astype(str).to_numpy(), kind)


def _per_cycle_max(samples: pd.DataFrame, kind: str) -> pd.Series:
    rows = samples[samples["step_type"] == kind]
    return rows.groupby("cycle_number", observed=True)["capacity_ah"].max()


def test_batmo_capacity_matches_its_counters(zoo):
    """BatMo's `Charge/Discharge Capacity / Ah` reset at every step (not the spec's cumulative
    counters), so the file's per-cycle capacity is the sum over the cycle's steps of each step's
    final counter value."""
    _, raw, result = zoo[BATMO]
    segment = (raw["Step Index / 1"].diff().fillna(1) != 0).cumsum()
    for kind, column in (("charge", "Charge Capacity / Ah"), ("discharge", "Discharge Capacity / Ah")):
        per_step = raw.groupby(segment).agg(cycle=("Cycle Count / 1", "first"), q=(column, "max"))
        expected = per_step.groupby("cycle")["q"].sum()
        expected = expected[expected > 0]
        ours = _per_cycle_max(result.samples, kind)
        assert len(expected) == 109 and list(ours.index) == list(expected.index)
        np.testing.assert_allclose(ours.to_numpy(), expected.to_numpy(), rtol=CAPACITY_TOLERANCE)
    assert result.samples["cycle_number"].nunique() == raw["Cycle Count / 1"].nunique() == 109


def _independent_capacity(time_s, current, cycle, kind_mask):
    """Trapezoid Ah per cycle over intervals both of whose samples are of the kind; a time step
    back (Time_Bug) bridges to the sample before the glitch."""
    t = time_s.copy()
    glitch = np.flatnonzero(np.diff(t) < 0) + 1
    t[glitch] = t[glitch - 1]  # the glitch sample sits at the previous time: zero width
    dq = np.abs(0.5 * (current[1:] + current[:-1]) * np.diff(t)) / 3600.0
    same = kind_mask[1:] & kind_mask[:-1] & (cycle[1:] == cycle[:-1])
    return pd.Series(np.where(same, dq, 0.0)).groupby(cycle[1:]).sum()


@pytest.mark.parametrize("relative", [DLR, SINTEF, LEGACY])
def test_integrated_capacity_matches_the_files_current(zoo, relative):
    """Files without capacity columns: capacity is integrated from the file's current; compare
    per cycle with an independent integration of the raw columns."""
    _, raw, result = zoo[relative]
    samples = result.samples
    time_col, time_factor = SI_COLUMNS[relative]["time_s"]
    time_s = raw[time_col].to_numpy(dtype="float64") * time_factor
    current = raw[SI_COLUMNS[relative]["current_a"][0]].to_numpy(dtype="float64")
    cycle = samples["cycle_number"].to_numpy()
    kinds = samples["step_type"].astype(str).to_numpy()
    for kind in ("charge", "discharge"):
        expected = _independent_capacity(time_s, current, cycle, kinds == kind)
        ours = _per_cycle_max(samples, kind)
        big = expected[expected > 0.01 * expected.max()]
        assert len(big) > 0
        np.testing.assert_allclose(ours.reindex(big.index).to_numpy(), big.to_numpy(), rtol=CAPACITY_TOLERANCE)


def test_sintef_time_bug_books_no_fake_charge(zoo):
    samples = zoo[SINTEF][2].samples
    # 5 charges at 0.65-2.2 A on a ~6.6 Ah pouch (discharges at 0.1C ... 9C): a few tens of Ah
    # per direction; a time jump of 7200-125000 s booked as charge would add hundreds.
    assert 30 < _per_cycle_max(samples, "charge").iloc[0] < 40
    assert samples["cycle_number"].nunique() == 1


# ------------------------------------------------------------------------------------------
# Round trip through the export
# ------------------------------------------------------------------------------------------


def assert_same_canonical(original: pd.DataFrame, back: pd.DataFrame) -> None:
    assert list(back.columns) == SAMPLE_COLUMNS and len(back) == len(original)
    for column in SAMPLE_COLUMNS:
        if column in ("source_file", "source_row"):
            continue
        left, right = original[column], back[column]
        if left.dtype.kind == "f":
            np.testing.assert_array_equal(left.to_numpy(), right.to_numpy(), err_msg=column)
        else:
            np.testing.assert_array_equal(left.astype(str).to_numpy(), right.astype(str).to_numpy(), err_msg=column)


@pytest.mark.parametrize("relative", list(ZOO))
def test_round_trip_through_write_bdf(zoo, relative, tmp_path):
    original = zoo[relative][2].samples
    written = write_bdf(original, tmp_path, "zoo_cell", csv=True)
    assert [p.name.split(".", 1)[1] for p in written] == ["bdf.parquet", "bdf.csv"]
    for path in written:
        assert path.name.startswith("unknown__zoo_cell__") and path.stem.split(".")[0][-4:] == "_001"
        reader = detect_format(path)
        assert reader is (BdfParquetReader if path.suffix == ".parquet" else BdfCsvReader)
        back = reader.read([path], "zoo_cell").samples
        assert_same_canonical(original, back)
        assert (back["source_file"] == path.name).all()
        np.testing.assert_array_equal(back["source_row"].to_numpy(), np.arange(len(back)))


def test_export_uses_spec_labels(zoo, tmp_path):
    (parquet,) = write_bdf(zoo[BATMO][2].samples, tmp_path, "batmo")
    names = pq.read_schema(parquet).names
    assert names[:3] == ["Test Time / s", "Voltage / V", "Current / A"]
    assert {"Cycle Count / 1", "Step ID", "Step Type", "Cycle Charging Capacity / Ah",
            "Cycle Discharging Capacity / Ah"} <= set(names)
    table = pq.read_table(parquet).to_pandas()
    # spec: cycle capacities are non-negative and reset when the cycle count increments
    assert (table["Cycle Charging Capacity / Ah"] >= 0).all()
    first_rows = table.groupby("Cycle Count / 1").head(1)
    assert (first_rows["Cycle Discharging Capacity / Ah"] == 0).all()


# ------------------------------------------------------------------------------------------
# Edge cases (small files written into tmp_path)
# ------------------------------------------------------------------------------------------

HEADER = "Test Time / s,Voltage / V,Current / A,Cycle Count / 1\n"


def test_four_row_file(tmp_path):
    path = tmp_path / "X__tiny__20240101_001.bdf.csv"
    path.write_text(HEADER + "0,3.70,0,0\n10,3.71,1.5,0\n20,3.75,1.5,0\n30,3.74,-1.5,0\n")
    assert detect_format(path) is BdfCsvReader
    samples = BdfCsvReader.read([path], "tiny").samples
    assert len(samples) == 4
    assert samples["step_type"].astype(str).tolist() == ["rest", "charge", "charge", "discharge"]
    # trapezoid (base.capacity_from_current): the 0 -> 1.5 A interval counts at its mean 0.75 A
    assert samples["capacity_ah"].iloc[2] == pytest.approx((0.75 * 10 + 1.5 * 10) / 3600)
    CellCycleSample.validate(samples)


def test_bytes_that_are_not_utf8_in_a_number_become_nan_in_their_row(tmp_path):
    # found by the reader fuzzing: the fast parser handed such cells on as Python bytes
    path = tmp_path / "X__damaged__20240101_001.bdf.csv"
    path.write_bytes((HEADER + "0,3.70,0,0\n10,3.71,1.5,0\n").encode() + b"20,3.7\xc2\x99,1.5,0\n30,3.74,-1.5,0\n")
    samples = BdfCsvReader.read([path], "damaged").samples
    assert len(samples) == 4
    assert np.isnan(samples["voltage_v"].iloc[2]) and samples["voltage_v"].iloc[3] == pytest.approx(3.74)


def test_units_in_labels_are_converted(tmp_path):
    path = tmp_path / "units.bdf.csv"
    path.write_text("Test Time / min,Voltage / mV,Current / mA,Ambient Temperature / K\n0,3700,500,298.15\n1,3710,500,298.15\n")
    samples = BdfCsvReader.read([path], "units").samples
    assert samples["time_s"].tolist() == [0.0, 60.0]
    assert samples["voltage_v"].tolist() == pytest.approx([3.7, 3.71])
    assert samples["current_a"].tolist() == pytest.approx([0.5, 0.5])
    assert samples["temperature_c"].tolist() == pytest.approx([25.0, 25.0])


def test_unknown_unit_is_an_error_naming_the_column(tmp_path):
    path = tmp_path / "furlong.bdf.csv"
    path.write_text("Test Time / fortnight,Voltage / V,Current / A\n0,3.7,0\n")
    with pytest.raises(SourceFormatError, match=r"furlong\.bdf\.csv: .*Test Time / fortnight.*fortnight"):
        BdfCsvReader.read([path], "x")


def test_a_label_twice_is_an_error_naming_it(tmp_path):
    # Which copy holds the current cannot be known; it used to crash with pandas' ValueError.
    path = tmp_path / "twice.bdf.csv"
    path.write_text("Test Time / s,Voltage / V,Current / A,Current / A\n0,3.5,1,1\n1,3.6,1,-1\n")
    with pytest.raises(SourceFormatError, match=r"twice\.bdf\.csv: column label\(s\) \['Current / A'\] appear more than once"):
        BdfCsvReader.read([path], "x")


def test_file_without_current_column(tmp_path):
    path = tmp_path / "nocurrent.bdf.csv"
    path.write_text("Test Time / s,Voltage / V\n0,3.7\n1,3.7\n")
    assert detect_format(path) is BdfCsvReader  # a BDF header, just incomplete
    with pytest.raises(SourceFormatError, match=r"nocurrent\.bdf\.csv: missing required BDF column\(s\) \['Current / A'\]"):
        BdfCsvReader.read([path], "x")


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.bdf.csv"
    empty.write_bytes(b"")
    with pytest.raises(SourceFormatError, match=r"empty\.bdf\.csv: file is empty"):
        detect_format(empty)
    with pytest.raises(SourceFormatError, match=r"empty\.bdf\.csv: file is empty"):
        BdfCsvReader.read([empty], "x")
    header_only = tmp_path / "header.bdf.csv"
    header_only.write_text(HEADER)
    with pytest.raises(SourceFormatError, match=r"header\.bdf\.csv: no data rows"):
        BdfCsvReader.read([header_only], "x")


def test_damaged_csv(tmp_path):
    truncated = tmp_path / "cut.bdf.csv"
    truncated.write_text(HEADER + "0,3.70,0,0\n10,3.71,1.5,0\n20,3.7")  # cut mid-row
    samples = BdfCsvReader.read([truncated], "cut").samples
    assert len(samples) == 3 and np.isnan(samples["current_a"].iloc[2])  # kept, for validation
    ragged = tmp_path / "ragged.bdf.csv"
    ragged.write_text(HEADER + "0,3.70,0,0\n10,3.71,1.5,0,7,8\n")
    with pytest.raises(SourceFormatError, match=r"ragged\.bdf\.csv: not a rectangular BDF table"):
        BdfCsvReader.read([ragged], "x")
    texty = tmp_path / "texty.bdf.csv"
    texty.write_text(HEADER + "0,high,0,0\n1,err,0,0\n2,3.7,0,0\n")
    with pytest.raises(SourceFormatError, match=r"texty\.bdf\.csv: column 'Voltage / V' is mostly text"):
        BdfCsvReader.read([texty], "x")


def test_damaged_parquet(datasets, tmp_path):
    broken = tmp_path / "broken.bdf.parquet"
    broken.write_bytes(dataset_file(datasets, LEGACY).read_bytes()[:50_000])
    assert detect_format(broken) is BdfParquetReader  # footer gone: the name is the hint left
    with pytest.raises(SourceFormatError, match=r"broken\.bdf\.parquet: truncated or corrupt Parquet"):
        BdfParquetReader.read([broken], "x")
    gz = tmp_path / "broken.bdf.gz"
    gz.write_bytes(gzip.compress((HEADER + "0,3.7,0,0\n").encode())[:-12])
    with pytest.raises(SourceFormatError, match=r"broken\.bdf\.gz: damaged gzip stream"):
        BdfCsvReader.read([gz], "x")


def test_parquet_without_current(tmp_path):
    path = tmp_path / "nocurrent.bdf.parquet"
    pq.write_table(pa.table({"Test Time / s": [0.0, 1.0], "Voltage / V": [3.7, 3.7]}), path)
    assert detect_format(path) is BdfParquetReader
    with pytest.raises(SourceFormatError, match=r"nocurrent\.bdf\.parquet: missing required BDF column"):
        BdfParquetReader.read([path], "x")


def test_parts_of_one_test_continue(tmp_path):
    first = tmp_path / "LAB__cellA__20240101_001.bdf.csv"
    second = tmp_path / "LAB__cellA__20240101_002.bdf.csv"
    first.write_text(HEADER + "0,3.7,1,1\n10,3.8,1,1\n20,3.7,-1,1\n")
    second.write_text(HEADER + "0,3.7,1,1\n10,3.8,1,1\n")  # restarts time and cycles
    assert BdfCsvReader.cell_key(first) == BdfCsvReader.cell_key(second) == "LAB__cellA__20240101"
    samples = BdfCsvReader.read([second, first], "cellA").samples  # order restored by part
    assert samples["time_s"].tolist() == [0, 10, 20, 20, 30]
    assert samples["cycle_number"].tolist() == [1, 1, 1, 2, 2]
    assert samples["source_file"].astype(str).tolist()[-1] == second.name
