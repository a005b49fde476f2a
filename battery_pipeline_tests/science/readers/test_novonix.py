"""Novonix HPC CSV reader on the cycler zoo's real file (BEEP's test_Nova_Form-CH01-01_short.csv
with its `_metadata.csv` companion).

Compared against: the file's own columns parsed independently here (rows, voltage, current,
`Run Time (h)`, cycle), the file's own `Capacity (Ah)` counter per cycle and direction, and an
independent trapezoidal integration of the current. BEEP's Novonix structurer is compared in
`benchmarks/pec_novonix_peer_check.py` (not a project dependency).
Edge cases are written into tmp_path; the source files are never modified.
"""

from __future__ import annotations

import io
import random
import shutil

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers.novonix_csv import NovonixCsvReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline.science.sources import CellSource, cell_record, discover
from battery_pipeline_tests.conftest import dataset_file
from battery_pipeline_tests.science.readers.fuzzing import Seed, mutate_case, reading_problem

NOVONIX = "cycler_zoo/novonix_csv/test_Nova_Form-CH01-01_short.csv"
METADATA = "cycler_zoo/novonix_csv/test_Nova_Form-CH01-01_short_metadata.csv"


def split_file(path) -> tuple[list[str], str, list[str]]:
    """(lines before the column row, column row, data lines) of a Novonix export."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    row = next(i for i, line in enumerate(lines) if line.strip() == "[Data]") + 1
    return lines[:row], lines[row], lines[row + 1 :]


def raw_table(path) -> pd.DataFrame:
    _, column_row, data = split_file(path)
    text = "".join(line.strip().strip('"') + "\n" for line in [column_row, *data])
    return pd.read_csv(io.StringIO(text))


def integrated(samples: pd.DataFrame, wanted: str) -> pd.Series:
    total = {}
    for (cycle, _), step in samples[samples.step_type == wanted].groupby(["cycle_number", "step_index"]):
        t, i = step.time_s.to_numpy(), np.abs(step.current_a.to_numpy())
        total[cycle] = total.get(cycle, 0.0) + float(np.sum(0.5 * (i[1:] + i[:-1]) * np.diff(t))) / 3600
    return pd.Series(total, dtype=float)


@pytest.fixture(scope="module")
def novonix(datasets):
    path = dataset_file(datasets, NOVONIX)
    dataset_file(datasets, METADATA)
    return path, NovonixCsvReader.read([path], "nova"), raw_table(path)


def test_detected_by_content_and_metadata_is_a_companion(novonix, datasets, tmp_path):
    path, result, _ = novonix
    assert detect_format(path) is NovonixCsvReader
    metadata = dataset_file(datasets, METADATA)
    assert NovonixCsvReader.is_companion(metadata) and not NovonixCsvReader.is_companion(path)
    renamed = tmp_path / "renamed.txt"
    renamed.write_bytes(path.read_bytes())
    assert detect_format(renamed) is NovonixCsvReader
    # discovery: the pair is one cell read by this reader, the metadata file no cell of its own
    shutil.copy(path, tmp_path)
    shutil.copy(metadata, tmp_path)
    catalog = discover([tmp_path / path.name, tmp_path / metadata.name])
    assert [(s.format_name, [f.name for f in s.files]) for s in catalog] == [("novonix_csv", [path.name])]


def test_rows_and_si_values_equal_the_files_columns(novonix):
    path, result, raw = novonix
    samples = result.samples
    assert list(samples.columns) == SAMPLE_COLUMNS
    CellCycleSample.validate(samples)
    assert len(samples) == len(raw) == 3942
    assert (samples.source_row.to_numpy() == np.arange(len(raw))).all() and (samples.source_file == path.name).all()
    np.testing.assert_allclose(samples.voltage_v, raw["Potential (V)"])
    np.testing.assert_allclose(samples.current_a, raw["Current (A)"])  # charge positive, kept
    np.testing.assert_allclose(samples.time_s, raw["Run Time (h)"] * 3600)
    np.testing.assert_allclose(samples.temperature_c, raw["Temperature (°C)"])
    np.testing.assert_array_equal(samples.cycle_number, raw["Cycle Number"])
    np.testing.assert_array_equal(samples.step_index, raw["Step Number"])
    assert samples.cycle_number.nunique() == 1  # the export is truncated inside cycle 1's charge


def test_step_types_from_novonix_codes_not_the_1_ma_threshold(novonix):
    _, result, raw = novonix
    kind = result.samples.step_type.astype(str).to_numpy()
    expected = raw["Step Type"].map({0: "rest", 1: "charge", 7: "charge", 8: "charge"}).to_numpy()
    np.testing.assert_array_equal(kind, expected)
    cv_hold = raw["Step Type"].to_numpy() == 8
    assert (raw["Current (A)"][cv_hold].abs() < 1e-3).sum() > 800  # the CV tail runs at 21 uA ... 1 mA


def test_capacity_per_cycle_matches_the_files_counter_and_the_current(novonix):
    _, result, raw = novonix
    samples = result.samples
    charge = samples[samples.step_type == "charge"].groupby("cycle_number")["capacity_ah"].max()
    # the file's own number: its Capacity counter on the cycle's last charge row (it never restarts here)
    files = raw[raw["Step Type"].isin([1, 7, 8])].groupby("Cycle Number")["Capacity (Ah)"].last()
    np.testing.assert_allclose(charge, files, rtol=5e-3)
    np.testing.assert_allclose(charge, integrated(samples, "charge")[charge.index], rtol=5e-3)
    assert charge[1] == pytest.approx(0.0294679161)
    assert samples[samples.step_type == "discharge"].empty
    assert samples.capacity_ah[samples.step_type == "rest"].isna().all()
    # the companion summarises the whole cycle 1 (Qc 0.0665 Ah); this truncated export holds less
    assert charge[1] < 0.0664822211


def test_metadata_only_what_the_files_state(novonix, datasets):
    path, result, _ = novonix
    cell = result.cell
    assert cell.nominal_capacity_ah == pytest.approx(0.24)
    assert cell.origin["nominal_capacity_ah"] == "file: Novonix [Summary] 'Capacity (Ah): 0.24'"
    assert cell.chemistry is None and "chemistry" not in cell.origin
    assert "Cell: Test_Form-CH01-01.csv" in cell.description
    assert "Qc 0.0664822 Ah, Qd 0.0766319 Ah" in cell.description
    record = cell_record(CellSource("cell", path.stem, "novonix_csv", (path,)))
    assert record["nominal_capacity_ah"] == pytest.approx(0.24) and record["chemistry"] is None


# --- edge cases, written into tmp_path ------------------------------------------------------


def _write(path, tmp_path, name: str, data_rows: slice, edit=None):
    header, column_row, data = split_file(path)
    body = data[data_rows]
    if edit:
        column_row, body = edit(column_row, body)
    target = tmp_path / name
    target.write_text("".join(header + [column_row] + body), encoding="utf-8")
    return target


def test_four_row_file(datasets, tmp_path):
    path = _write(dataset_file(datasets, NOVONIX), tmp_path, "four.csv", slice(117, 121))
    samples = NovonixCsvReader.read([path], "four").samples
    CellCycleSample.validate(samples)
    assert len(samples) == 4 and list(samples.step_type) == ["rest", "charge", "charge", "charge"]


def test_rest_only_file(datasets, tmp_path):
    path = _write(dataset_file(datasets, NOVONIX), tmp_path, "rest.csv", slice(0, 118))
    samples = NovonixCsvReader.read([path], "rest").samples
    assert len(samples) == 118 and (samples.step_type == "rest").all() and samples.capacity_ah.isna().all()


def test_unsigned_discharge_is_made_negative(datasets, tmp_path):
    """The zoo file holds no discharge: a CC discharge (code 2) written with positive current."""

    def as_discharge(column_row, body):
        return column_row, [line.replace(",1,1,", ",1,2,", 1) for line in body]

    path = _write(dataset_file(datasets, NOVONIX), tmp_path, "dis.csv", slice(1065, 1500), as_discharge)
    samples = NovonixCsvReader.read([path], "dis").samples
    assert (samples.step_type == "discharge").all() and (samples.current_a <= 0).all()
    # the slice starts mid-cycle with the counter at 0.669 mAh: that Ah belongs to the cycle too
    counter = raw_table(path)["Capacity (Ah)"]
    assert samples.capacity_ah.iloc[-1] == pytest.approx(counter.iloc[-1])
    moved = samples.capacity_ah.iloc[-1] - samples.capacity_ah.iloc[0]
    assert moved == pytest.approx(integrated(samples, "discharge")[1], rel=5e-3)


def test_file_without_current_column_raises_naming_file(datasets, tmp_path):
    def drop_current(column_row, body):
        cut = lambda line: ",".join(c for i, c in enumerate(line.split(",")) if i != 5)  # noqa: E731
        return cut(column_row), [cut(line) for line in body]

    path = _write(dataset_file(datasets, NOVONIX), tmp_path, "nocurrent.csv", slice(0, 50), drop_current)
    with pytest.raises(SourceFormatError, match=r"nocurrent\.csv: .*Current \(A\)"):
        NovonixCsvReader.read([path], "x")


def test_truncated_and_damaged_files(datasets, tmp_path):
    data = dataset_file(datasets, NOVONIX).read_bytes()
    before_data = tmp_path / "cut_protocol.csv"
    before_data.write_bytes(data[:2000])
    with pytest.raises(SourceFormatError, match=r"cut_protocol\.csv: no '\[Data\]' section"):
        NovonixCsvReader.read([before_data], "x")
    mid_row = tmp_path / "cut_row.csv"
    mid_row.write_bytes(data[:60_000])  # ends inside a quoted data line
    _, _, rows = split_file(mid_row)
    samples = NovonixCsvReader.read([mid_row], "x").samples
    assert len(samples) == len(rows)  # the cut row is kept
    binary = tmp_path / "binary.csv"
    binary.write_bytes(data[:3000] + b"\x00" * 200)
    with pytest.raises(SourceFormatError, match=r"binary\.csv: binary content"):
        NovonixCsvReader.read([binary], "x")
    header_only = tmp_path / "header_only.csv"
    header_only.write_bytes(data[: data.index(b"\n\"2022-04-11 10:58:07") + 1])
    with pytest.raises(SourceFormatError, match=r"header_only\.csv: no data rows"):
        NovonixCsvReader.read([header_only], "x")


def test_mutated_slices_read_or_raise_naming_the_file(datasets, tmp_path):
    (tmp_path / "seed").mkdir()
    seed_path = _write(dataset_file(datasets, NOVONIX), tmp_path / "seed", "seed_CH01.csv", slice(100, 400))
    seeds = [Seed(seed_path, "text")]
    rng = random.Random(20261)
    problems = []
    for index in range(60):
        case = mutate_case(seeds, rng, tmp_path / f"case{index}")
        problem = reading_problem(case.path)
        if problem:
            problems.append(f"{case.mutations}: {problem}")
    assert not problems, problems[:3]


def test_sniffer_claims_only_the_novonix_export_and_no_other_reader_claims_it(datasets):
    """Over every file of the shared datasets (first 64 KiB, as detect_format reads them)."""
    from battery_pipeline.science.readers import SNIFF_BYTES, readers_by_priority

    claimed, stolen = [], []
    for path in sorted(p for p in datasets.rglob("*") if p.is_file()):
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
        if NovonixCsvReader.sniff(path, head):
            claimed.append(path.relative_to(datasets).as_posix())
        if path.parent.name == "novonix_csv":
            stolen += [(path.name, r.format_name) for r in readers_by_priority()
                       if r is not NovonixCsvReader and r.sniff(path, head)]
    assert claimed == [NOVONIX]
    assert not stolen  # the metadata companion included
