"""PEC LifeTest CSV reader on the cycler zoo's real files (pec.csv, Test25205.csv).

Compared against: the file's own columns parsed independently here with pandas (rows, voltage,
current, time, cycle), the file's own per-cycle `Charge Capacity` / `Discharge Capacity` counters,
and an independent trapezoidal integration of the current. cellpy's PEC loader is compared in
`benchmarks/pec_novonix_peer_check.py` (not a project dependency).
Edge cases are written into tmp_path; the source files are never modified.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers.pec_csv import PecCsvReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline.science.sources import CellSource, cell_record
from battery_pipeline_tests.conftest import dataset_file
from battery_pipeline_tests.science.readers.fuzzing import Seed, mutate_case, reading_problem

# file -> number of cycles in PEC's own `Cycle` column
FILES = {"cycler_zoo/pec_csv/pec.csv": 3, "cycler_zoo/pec_csv/Test25205.csv": 1}
PEC = "cycler_zoo/pec_csv/pec.csv"


def column_row_index(path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines) if line.startswith("Test,Cell,"))


def raw_table(path) -> pd.DataFrame:
    """The file's data rows, parsed independently of the reader."""
    return pd.read_csv(path, skiprows=column_row_index(path), encoding="utf-8")


def seconds(values: pd.Series) -> np.ndarray:
    if values.dtype.kind in "if":
        return values.to_numpy(dtype=float)
    hms = values.str.split(":", expand=True).astype(float)
    return (hms[0] * 3600 + hms[1] * 60 + hms[2]).to_numpy()


def si(raw: pd.DataFrame, base: str) -> np.ndarray:
    """A column in SI from its unit in the name (mV/mA/mAh -> /1000)."""
    name = next(c for c in raw.columns if c.startswith(base + " ("))
    factor = 1e-3 if "(m" in name else 1.0
    return raw[name].to_numpy(dtype=float) * factor


def integrated(samples: pd.DataFrame, wanted: str) -> pd.Series:
    """Independent check: trapezoid of |I| dt over each step of that kind, summed per cycle."""
    total = {}
    for (cycle, _), step in samples[samples.step_type == wanted].groupby(["cycle_number", "step_index"]):
        t, i = step.time_s.to_numpy(), np.abs(step.current_a.to_numpy())
        total[cycle] = total.get(cycle, 0.0) + float(np.sum(0.5 * (i[1:] + i[:-1]) * np.diff(t))) / 3600
    return pd.Series(total, dtype=float)


@pytest.fixture(scope="module", params=list(FILES))
def pec_file(request, datasets):
    path = dataset_file(datasets, request.param)
    return path, PecCsvReader.read([path], "pec").samples, raw_table(path), FILES[request.param]


def test_detected_by_content_not_name(pec_file, tmp_path):
    path, samples, *_ = pec_file
    assert detect_format(path) is PecCsvReader
    renamed = tmp_path / "renamed.txt"
    renamed.write_bytes(path.read_bytes())
    assert detect_format(renamed) is PecCsvReader
    assert len(PecCsvReader.read([renamed], "renamed").samples) == len(samples)


def test_rows_and_si_values_equal_the_files_columns(pec_file):
    path, samples, raw, cycles = pec_file
    assert list(samples.columns) == SAMPLE_COLUMNS
    CellCycleSample.validate(samples)
    assert len(samples) == len(raw)  # pec.csv 16 255, Test25205.csv 489 data rows
    assert (samples.source_row.to_numpy() == np.arange(len(raw))).all()
    assert (samples.source_file == path.name).all()
    np.testing.assert_allclose(samples.voltage_v, si(raw, "Voltage"))
    np.testing.assert_allclose(samples.current_a, si(raw, "Current"))
    np.testing.assert_allclose(samples.time_s, seconds(raw[next(c for c in raw if c.startswith("Total Time"))]))
    assert (np.diff(samples.time_s) >= 0).all()
    np.testing.assert_array_equal(samples.cycle_number, raw["Cycle"])
    np.testing.assert_array_equal(samples.step_index, raw["Step"])
    assert samples.cycle_number.nunique() == cycles


def test_sign_and_capacity_per_cycle_match_the_files_counters(datasets):
    path = dataset_file(datasets, PEC)
    samples, raw = PecCsvReader.read([path], "pec").samples, raw_table(path)
    kind = samples.step_type.astype(str).to_numpy()
    # PEC writes discharge negative: charge steps I > 0 while Charge Capacity grows, and vice versa
    assert (samples.current_a[kind == "charge"] > 0).all() and (samples.current_a[kind == "discharge"] < 0).all()
    assert samples.capacity_ah[kind == "rest"].isna().all()
    assert set(kind) == {"charge", "discharge", "rest"}
    for wanted, column in (("charge", "Charge Capacity (mAh)"), ("discharge", "Discharge Capacity (mAh)")):
        ours = samples[kind == wanted].groupby("cycle_number")["capacity_ah"].max()
        files = raw[kind == wanted].groupby("Cycle")[column].max() / 1000
        assert list(ours.index) == list(files.index)
        np.testing.assert_allclose(ours, files, rtol=5e-3)
        np.testing.assert_allclose(ours, integrated(samples, wanted)[ours.index], rtol=5e-3)
    # the SAFT VL43E-Fe cell: ~44.4 Ah at C/25 (cycle 1), the initial discharge 11.6 Ah
    charge = samples[kind == "charge"].groupby("cycle_number")["capacity_ah"].max()
    assert charge[1] == pytest.approx(44.424915)


def test_idle_file_is_rest_and_no_capacity_is_invented(datasets):
    path = dataset_file(datasets, "cycler_zoo/pec_csv/Test25205.csv")
    result = PecCsvReader.read([path], "idle")
    raw = raw_table(path)
    # every row is an `Idle` instruction at |I| <= 1 uA; the counters' 0.012/0.021 mAh are noise
    assert (result.samples.step_type == "rest").all() and result.samples.capacity_ah.isna().all()
    assert raw["Charge Capacity (mAh)"].max() < 0.05 and raw["Discharge Capacity (mAh)"].max() < 0.05
    assert result.cell.chemistry == "Li-ion LG NMC"
    assert result.cell.origin["chemistry"].startswith("file: PEC header 'Chemistry:")
    # regime cell size 1500 mAh vs the test's C-Rate parameter 64000 mAh: the file does not say which
    assert result.cell.nominal_capacity_ah is None and "nominal_capacity_ah" not in result.cell.origin
    assert "1500 mAh" in result.cell.description and "64000" in result.cell.description


def test_pec_csv_states_no_chemistry_or_capacity(datasets):
    path = dataset_file(datasets, PEC)
    record = cell_record(CellSource("cell", path.stem, "pec_csv", (path,)))
    assert record["chemistry"] is None and record["nominal_capacity_ah"] is None
    assert record["chemistry_source"] == record["nominal_capacity_source"] == "unknown"


# --- edge cases, written into tmp_path ------------------------------------------------------


def _slice(path, tmp_path, name: str, data_rows: slice, edit=None):
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    row = column_row_index(path)
    body = lines[row + 1 :][data_rows]
    header, column_row = lines[:row], lines[row]
    if edit:
        column_row, body = edit(column_row, body)
    target = tmp_path / name
    target.write_text("".join(header + [column_row] + body), encoding="utf-8")
    return target


def test_four_row_file(datasets, tmp_path):
    path = _slice(dataset_file(datasets, PEC), tmp_path, "four.csv", slice(4, 8))  # rest -> discharge
    assert detect_format(path) is PecCsvReader
    samples = PecCsvReader.read([path], "four").samples
    CellCycleSample.validate(samples)
    assert len(samples) == 4 and list(samples.source_row) == [0, 1, 2, 3]
    assert list(samples.step_type) == ["rest", "discharge", "discharge", "discharge"]
    assert samples.capacity_ah.iloc[-1] == pytest.approx(9.565e-3)


def test_rest_only_file(datasets, tmp_path):
    path = _slice(dataset_file(datasets, PEC), tmp_path, "rest.csv", slice(0, 5))
    samples = PecCsvReader.read([path], "rest").samples
    assert len(samples) == 5 and (samples.step_type == "rest").all() and samples.capacity_ah.isna().all()


def test_cell_below_one_milliamp_is_not_called_rest(datasets, tmp_path):
    """A coin cell at 0.16 mA: steps come from PEC's capacity counters, not the 1 mA threshold."""

    def shrink(column_row, body):
        out = []
        for line in body:
            cells = line.rstrip("\n").split(",")
            cells[16] = str(float(cells[16]) * 1e-4)  # Current (mA)
            cells[17], cells[18] = (str(float(c) * 1e-4) for c in cells[17:19])  # capacities (mAh)
            out.append(",".join(cells) + "\n")
        return column_row, out

    path = _slice(dataset_file(datasets, PEC), tmp_path, "coin.csv", slice(0, 7000), shrink)
    samples = PecCsvReader.read([path], "coin").samples
    full = PecCsvReader.read([dataset_file(datasets, PEC)], "pec").samples.iloc[:7000]
    np.testing.assert_array_equal(samples.step_type.astype(str), full.step_type.astype(str))
    assert (np.abs(samples.current_a[samples.step_type != "rest"]) < 2e-4).all()
    np.testing.assert_allclose(samples.capacity_ah, full.capacity_ah * 1e-4, rtol=1e-9)


def test_file_without_current_column_raises_naming_file(datasets, tmp_path):
    def drop_current(column_row, body):
        cut = lambda line: ",".join(c for i, c in enumerate(line.split(",")) if i != 16)  # noqa: E731
        return cut(column_row), [cut(line) for line in body]

    path = _slice(dataset_file(datasets, PEC), tmp_path, "nocurrent.csv", slice(0, 50), drop_current)
    with pytest.raises(SourceFormatError, match=r"nocurrent\.csv: .*Current"):
        PecCsvReader.read([path], "x")


def test_truncated_header_raises_and_truncated_row_is_kept(datasets, tmp_path):
    source = dataset_file(datasets, PEC)
    data = source.read_bytes()
    in_header = tmp_path / "cut_header.csv"
    in_header.write_bytes(data[:900])
    with pytest.raises(SourceFormatError, match=r"cut_header\.csv: no PEC column row"):
        PecCsvReader.read([in_header], "x")
    mid_row = tmp_path / "cut_row.csv"
    mid_row.write_bytes(data[:20000] + b"\n")
    lines = mid_row.read_text(encoding="utf-8").splitlines()
    samples = PecCsvReader.read([mid_row], "x").samples
    assert len(samples) == len(lines) - column_row_index(source) - 1  # the cut row is kept, not dropped


def test_damaged_files_raise_naming_the_file(datasets, tmp_path):
    data = dataset_file(datasets, PEC).read_bytes()
    binary = tmp_path / "binary.csv"
    binary.write_bytes(data[:3000] + b"\x00\x01\x02" * 100)
    with pytest.raises(SourceFormatError, match=r"binary\.csv: binary content"):
        PecCsvReader.read([binary], "x")
    header_only = tmp_path / "header_only.csv"
    header_only.write_bytes(data[: data.index(b"\n187,1,SBT0550") + 1])
    with pytest.raises(SourceFormatError, match=r"header_only\.csv: no data rows"):
        PecCsvReader.read([header_only], "x")


def test_mutated_slices_read_or_raise_naming_the_file(datasets, tmp_path):
    """The project's mutation fuzzer on a 400-row slice: every damaged copy reads into a frame the
    pipeline accepts, or raises SourceFormatError naming the file."""
    (tmp_path / "seed").mkdir()
    seed_path = _slice(dataset_file(datasets, PEC), tmp_path / "seed", "seed.csv", slice(1200, 1600))
    seeds = [Seed(seed_path, "text")]
    rng = random.Random(20260)
    problems = []
    for index in range(60):
        case = mutate_case(seeds, rng, tmp_path / f"case{index}")
        problem = reading_problem(case.path)
        if problem:
            problems.append(f"{case.mutations}: {problem}")
    assert not problems, problems[:3]


def test_sniffer_claims_only_pec_files_and_no_other_reader_claims_them(datasets):
    """Over every file of the shared datasets (first 64 KiB, as detect_format reads them)."""
    from battery_pipeline.science.readers import SNIFF_BYTES, readers_by_priority

    claimed, stolen = [], []
    for path in sorted(p for p in datasets.rglob("*") if p.is_file()):
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
        if PecCsvReader.sniff(path, head):
            claimed.append(path.relative_to(datasets).as_posix())
        if path.parent.name == "pec_csv":
            stolen += [(path.name, r.format_name) for r in readers_by_priority()
                       if r is not PecCsvReader and r.sniff(path, head)]
    assert claimed == ["cycler_zoo/pec_csv/Test25205.csv", "cycler_zoo/pec_csv/pec.csv"]
    assert not stolen
