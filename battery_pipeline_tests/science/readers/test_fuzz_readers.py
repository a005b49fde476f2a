"""Fuzzing: every reader, fed mutated copies of real files, either reads them or says clearly why not.

The property (see `fuzzing.reading_problem`): detecting the format, building the `cells` record,
reading, the frame-shape check and validation either all work - the damaged rows then end up
quarantined, never lost - or a `SourceFormatError` naming the file stops the partition. Any other
exception (IndexError, KeyError, UnicodeDecodeError, zlib/scipy/pandas internals, a crash) is a
reader bug. Seeds are small real files or slices of them (`fuzzing.build_seeds`), mutated by
`fuzzing.mutate_case` under a hypothesis-controlled `random.Random`, so failures shrink and
`derandomize=True` makes every run try the same inputs. `benchmarks/fuzz_readers.py` runs the
same property over many more inputs.

Below the property: one regression test per crash the fuzzer found, built from the found example.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers._matfile import load_mat, mat5_structure_problem
from battery_pipeline_tests.conftest import dataset_file
from battery_pipeline_tests.science.readers import fuzzing

# A few seconds per format in the regular suite; the benchmark tries thousands.
EXAMPLES_PER_FORMAT = 25


@pytest.fixture(scope="module")
def seeds(datasets, tmp_path_factory) -> dict[str, list[fuzzing.Seed]]:
    try:
        return fuzzing.build_seeds(datasets, tmp_path_factory.mktemp("fuzz_seeds"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_every_seed_reads_cleanly(seeds):
    # Otherwise a mutation's failure could be the seed's own.
    for format_name, format_seeds in seeds.items():
        for seed in format_seeds:
            assert detect_format(seed.path).format_name == format_name, seed.path
            assert fuzzing.reading_problem(seed.path) is None, seed.path


@pytest.mark.parametrize("format_name", fuzzing.FORMATS)
def test_mutated_real_files_read_or_fail_clearly(format_name, seeds, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"fuzz_{format_name}")
    counter = iter(range(10**6))

    # A fixed database-less, derandomized run: CI tries the same inputs every time.
    @settings(
        max_examples=EXAMPLES_PER_FORMAT,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(rng=st.randoms(use_true_random=False))
    def reads_or_fails_clearly(rng):
        case = fuzzing.mutate_case(seeds[format_name], rng, folder / str(next(counter)))
        problem = fuzzing.reading_problem(case.path)
        assert problem is None, f"{fuzzing.describe_case(case)}\n{problem}"

    reads_or_fails_clearly()


def test_the_property_accepts_only_errors_that_name_the_file(tmp_path):
    # A canonical CSV holding two cells fails with a SourceFormatError naming the file: accepted.
    # The same error naming another file would not be.
    path = tmp_path / "two_cells.csv"
    path.write_text("cell_id,time_s,voltage_v,current_a,cycle_number\na,0,3.7,1,0\nb,1,3.7,1,0\n")
    assert fuzzing.reading_problem(path) is None
    error = SourceFormatError(tmp_path / "other.csv", "holds 2 cells")
    assert "does not name the file" in fuzzing._clear_error(error, path)


# ------------------------------------------------------------------------------------------
# Regressions: crashes the fuzzer found, each from its found example
# ------------------------------------------------------------------------------------------


def _mat_with_data_type(mdtype: int, compressed: bool) -> bytes:
    """A one-variable MAT-file whose numeric data element has type number `mdtype`."""
    import scipy.io as sio

    buffer = io.BytesIO()
    sio.savemat(buffer, {"x": np.arange(3.0)}, do_compression=False)
    data = bytearray(buffer.getvalue())
    # header 128 B, matrix tag 8 B, flags 16 B, dims 16 B, name 8 B (small element), then data
    struct.pack_into("<I", data, 176, mdtype)
    if not compressed:
        return bytes(data)
    body = zlib.compress(bytes(data[128:]))
    return bytes(data[:128]) + struct.pack("<II", 15, len(body)) + body


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("mdtype", [0, 8, 11, 19, 255])
def test_mat_element_of_unknown_type_is_refused_before_scipy_crashes(tmp_path, mdtype, compressed):
    # Found on the NASA slice: 'zero 302 at 1022' zeroed the tag of Battery_impedance's
    # imaginary part (type 0). scipy.io.loadmat then dies with a segmentation fault, taking
    # the whole step process (or, in-process, the run) with it. Should this regress, this test
    # crashes the test process: pytest's faulthandler then names it.
    path = tmp_path / "B0025.mat"
    path.write_bytes(_mat_with_data_type(mdtype, compressed))
    assert f"data type {mdtype}" in mat5_structure_problem(path.read_bytes())
    with pytest.raises(SourceFormatError, match=rf"B0025\.mat: corrupt MAT-file: .*data type {mdtype}"):
        load_mat(path)


def test_mat_structure_walk_accepts_every_real_mat_file(datasets):
    # The walk must not refuse what scipy reads fine (small elements, padding, cell arrays of
    # strings, compressed and uncompressed variables).
    files = sorted((datasets / "nasa_pcoe").glob("B00*.mat"))[:2] + sorted(
        (datasets / "panasonic_18650pf").rglob("*Charge1.mat")
    )[:2]
    if not files:
        pytest.skip("no NASA or Panasonic .mat files in the datasets")
    for path in files:
        assert mat5_structure_problem(path.read_bytes()) is None, path


def test_nasa_impedance_value_that_is_not_a_number_is_a_clear_error(datasets, tmp_path):
    # Found: 'field cycle/data/Re: cell' (and ': text') -> TypeError / ValueError from
    # as_float_vector, outside the reader's error handling.
    import scipy.io as sio

    source = dataset_file(datasets, "nasa_pcoe/B0025.mat")
    path = fuzzing._nasa_slice(source, tmp_path / "B0025.mat", n_operations=2)
    mat = sio.loadmat(path)
    impedance = mat["B0025"][0, 0]["cycle"][0, 0]["data"][0, 0]
    assert str(mat["B0025"][0, 0]["cycle"][0, 0]["type"][0]) == "impedance"
    impedance["Re"] = np.array(["charge"])
    sio.savemat(path, {"B0025": mat["B0025"]})
    with pytest.raises(SourceFormatError, match=r"B0025\.mat: operation 1 \(impedance\): field 'Re' is not a number"):
        detect_format(path).read([path], "B0025")


def test_xlsx_with_a_damaged_deflate_stream_is_a_clear_error(datasets, tmp_path):
    # Found: 'flip bytes', 'zero 772 at 54264' -> zlib.error ("invalid distance too far back")
    # escaped from zipfile's testzip while the reader explained why fastexcel failed.
    import zipfile

    source = dataset_file(datasets, "calce_cs2/CS2_35/CS2_35_8_18_10.xlsx")
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        sheet = max(archive.infolist(), key=lambda info: info.compress_size)
    name_length, extra_length = struct.unpack_from("<HH", data, sheet.header_offset + 26)
    data[sheet.header_offset + 30 + name_length + extra_length] = 0xFF  # invalid deflate block type
    path = tmp_path / source.name
    path.write_bytes(bytes(data))
    with pytest.raises(SourceFormatError, match=r"CS2_35_8_18_10\.xlsx: .*cannot be decompressed"):
        detect_format(path).read([path], "CS2_35")


def _digatron_copy(datasets, tmp_path) -> tuple[Path, bytes]:
    source = dataset_file(datasets, "lg_hg2/25degC/549_Dis_2C.csv")
    folder = tmp_path / "25degC"
    folder.mkdir()
    return folder / source.name, source.read_bytes()


def test_digatron_unclosed_quote_is_a_clear_error(datasets, tmp_path):
    # Found: 'garbage_cell' put a lone '"' in a data row -> pandas ParserError ("EOF inside
    # string") from the lenient fallback parser.
    path, data = _digatron_copy(datasets, tmp_path)
    path.write_bytes(data.replace(b",DCH,", b',"DCH,', 1))
    with pytest.raises(SourceFormatError, match=r"549_Dis_2C\.csv: data rows cannot be parsed as CSV"):
        detect_format(path).read([path], "lg")


def test_digatron_column_named_twice_still_reads(datasets, tmp_path):
    # Found: a damaged column line naming a column twice, in a file with a damaged number (so
    # the lenient pandas parser runs) -> ValueError "Duplicate names are not allowed". The
    # first column of a name is read, the copy is ignored, the damaged value becomes NaN.
    path, data = _digatron_copy(datasets, tmp_path)
    path.write_bytes(data)
    intact = detect_format(path).read([path], "lg").samples
    damaged = data.replace(b",Cycle Level,", b",Cycle,", 1).replace(b",3.92674,", b",3.9x674,", 1)
    path.write_bytes(damaged)
    samples = detect_format(path).read([path], "lg").samples
    assert len(samples) == len(intact) and np.isnan(samples["voltage_v"].iloc[0])
    assert samples["current_a"].equals(intact["current_a"])
    assert fuzzing.reading_problem(path) is None


def test_digatron_file_cut_in_its_first_data_row_reads_that_row(datasets, tmp_path):
    # Found: 'truncate at 752' (inside the first data row) -> pandas ParserError "Too many
    # columns specified: expected 15 and found 7". Like a cut last row of a longer file, the
    # row is kept with its missing fields empty, for validation to quarantine.
    path, data = _digatron_copy(datasets, tmp_path)
    path.write_bytes(data[:752])
    samples = detect_format(path).read([path], "lg").samples
    assert len(samples) == 1 and np.isnan(samples["voltage_v"].iloc[0])
    assert fuzzing.reading_problem(path) is None


def test_xlsx_date_cell_the_excel_library_panics_on_is_a_clear_error(datasets, tmp_path):
    # Found: 'xlsx delete_cell', 'xlsx value' put -1e309 (-inf) in a Date_Time cell ->
    # fastexcel's Rust code panicked ("TimeDelta::milliseconds out of bounds"), raised as
    # pyo3's PanicException, a BaseException that no `except Exception` catches.
    import re
    import zipfile

    source = dataset_file(datasets, "calce_cs2/CS2_35/CS2_35_8_18_10.xlsx")
    with zipfile.ZipFile(source) as archive:
        members = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    sheet = "xl/worksheets/sheet2.xml"  # Channel_1-008; column C is Date_Time
    xml = members[sheet].decode("utf-8")
    members[sheet] = re.sub(r'(<c r="C2"[^>]*><v>)[^<]*(</v>)', r"\g<1>-1e309\g<2>", xml, count=1).encode("utf-8")
    path = tmp_path / source.name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(SourceFormatError, match=r"CS2_35_8_18_10\.xlsx: sheet 'Channel_1-008': a cell cannot be converted"):
        detect_format(path).read([path], "CS2_35")


def test_xjtu_lone_quote_is_reported_as_a_garbled_value(datasets, tmp_path):
    # Found by the benchmark (inputs 100014, 100392, ...: 'garbage_cell' put a lone '"' in a
    # row) -> pandas ParserError "EOF inside string". The tables hold plain numbers, so the
    # quote is a garbled value like any other text.
    source = dataset_file(datasets, "xjtu_features/2C_battery-1.csv")
    lines = source.read_text().splitlines()[:30]
    cells = lines[5].split(",")
    cells[3] = '"'
    lines[5] = ",".join(cells)
    path = tmp_path / source.name
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceFormatError, match=r"""2C_battery-1\.csv: column 'voltage skewness' holds 1 non-numeric value\(s\) \(row 4 '"'\)"""):
        detect_format(path).read([path], "xjtu_2C_battery-1")
