"""BioLogic EC-Lab .mpr reader (galvani, optional extra `biologic-mpr`) on the two zoo .mpr files.

What is compared, per file:
  - gcpl.pr_182.1.mpr against its own text export gcpl.pr_182.1.mpt, both as our .mpt reader makes
    it (the whole canonical frame) and as the .mpt's own columns parsed here with pandas (`<I>/mA`,
    `cycle number`), and against galvani's own columns of the .mpr: the signed per-half-cycle
    `Q charge/discharge/mA.h` summed per cycle (charge = largest positive value of a half cycle,
    discharge = magnitude of the most negative), grouped by the .mpt's exported `cycle number`.
  - GCPL-0.mpr (4 rows, all rest) against galvani's record count, `half cycle` and mode flags.
The yadg side-by-side (rows/s, capacities) is `benchmarks/biologic_mpr_peer_check.py`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers.biologic_mpr import BiologicMprReader
from battery_pipeline.science.readers.biologic_mpt import BiologicMptReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline_tests.conftest import dataset_file
from battery_pipeline_tests.science.readers.test_biologic_mpt import capacities_per_cycle
from battery_pipeline_tests.science.readers.test_biologic_mpt import file_columns as mpt_columns

try:
    from galvani.BioLogic import MPRfile
except ImportError:
    MPRfile = None

needs_galvani = pytest.mark.skipif(
    MPRfile is None, reason='galvani not installed (pip install "battery-pipeline[biologic-mpr]")'
)

GCPL_MPR = "cycler_zoo/biologic_mpr/gcpl.pr_182.1.mpr"
GCPL_MPT = "cycler_zoo/biologic_mpt/gcpl.pr_182.1.mpt"
GCPL0_MPR = "cycler_zoo/biologic_mpr/GCPL-0.mpr"


def our_capacities(samples: pd.DataFrame) -> dict:
    moving = samples[samples["step_type"] != "rest"]
    return moving.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max().to_dict()


@pytest.fixture(scope="module")
def gcpl(datasets):
    if MPRfile is None:
        pytest.skip("galvani not installed")
    mpr_path, mpt_path = dataset_file(datasets, GCPL_MPR), dataset_file(datasets, GCPL_MPT)
    with mpr_path.open("rb") as handle:
        galvani_data = MPRfile(handle).data
    return (
        BiologicMprReader.read([mpr_path], "gcpl").samples,
        BiologicMptReader.read([mpt_path], "gcpl").samples,
        mpt_columns(mpt_path),
        galvani_data,
    )


@needs_galvani
def test_mpr_gives_the_same_canonical_frame_as_its_mpt_export(gcpl):
    from_mpr, from_mpt, _, _ = gcpl
    assert list(from_mpr.columns) == SAMPLE_COLUMNS
    CellCycleSample.validate(from_mpr)
    assert len(from_mpr) == len(from_mpt) == 2533
    for column in ("cycle_number", "step_index", "source_row"):
        np.testing.assert_array_equal(from_mpr[column], from_mpt[column], err_msg=column)
    np.testing.assert_array_equal(from_mpr["step_type"].astype(str), from_mpt["step_type"].astype(str))
    # The .mpt prints float32 Ewe with 7 digits and time with 10: that rounding is the only difference.
    np.testing.assert_allclose(from_mpr["time_s"], from_mpt["time_s"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(from_mpr["voltage_v"], from_mpt["voltage_v"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(from_mpr["current_a"], from_mpt["current_a"], rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(from_mpr["capacity_ah"].isna(), from_mpt["capacity_ah"].isna())
    np.testing.assert_allclose(from_mpr["capacity_ah"], from_mpt["capacity_ah"], rtol=1e-9, atol=1e-15)
    mpr_caps, mpt_caps = our_capacities(from_mpr), our_capacities(from_mpt)
    assert set(mpr_caps) == set(mpt_caps) and len(mpr_caps) == 8
    for key, value in mpt_caps.items():
        assert mpr_caps[key] == pytest.approx(value, rel=1e-9), key


@needs_galvani
def test_mpr_matches_the_files_own_columns(gcpl):
    from_mpr, _, mpt_raw, galvani_data = gcpl
    assert len(from_mpr) == len(galvani_data)
    # Cycles: the .mpt export's own `cycle number` (the .mpr stores only `half cycle`).
    np.testing.assert_array_equal(from_mpr["cycle_number"], mpt_raw["cycle number"].astype(int))
    assert from_mpr["cycle_number"].nunique() == 5
    # Current: the .mpr stores dq only; the export's <I>/mA is what we derive.
    assert "I/mA" not in galvani_data.dtype.names and "<I>/mA" not in galvani_data.dtype.names
    np.testing.assert_allclose(from_mpr["current_a"], mpt_raw["<I>/mA"] / 1000, rtol=1e-9, atol=1e-15)
    expected = capacities_per_cycle(
        mpt_raw["cycle number"].to_numpy(), galvani_data["Q charge/discharge/mA.h"], galvani_data["half cycle"]
    )
    ours = our_capacities(from_mpr)
    assert set(ours) == set(expected) and len(expected) == 8
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=0.005), key
        assert ours[key] == pytest.approx(value, rel=1e-9), key  # same counter: equal, not just close
    # Positive current is charge and raises Ewe (BioLogic's anodic direction; see biologic_mpt).
    step_type = from_mpr["step_type"].astype(str).to_numpy()
    for half in np.unique(galvani_data["half cycle"]):
        rows = (galvani_data["half cycle"] == half) & ((galvani_data["flags"] & 3) != 3)
        if rows.sum() < 2:
            continue
        voltage = galvani_data["Ewe/V"][rows]
        expected_type = "charge" if voltage[-1] > voltage[0] else "discharge"
        assert (step_type[rows] == expected_type).all(), half


@needs_galvani
def test_four_row_rest_file_reads(datasets):
    path = dataset_file(datasets, GCPL0_MPR)
    with path.open("rb") as handle:
        galvani_file = MPRfile(handle)
    result = BiologicMprReader.read([path], "gcpl0")
    samples = result.samples
    CellCycleSample.validate(samples)
    assert len(samples) == len(galvani_file.data) == 4
    np.testing.assert_array_equal(samples["cycle_number"], galvani_file.data["half cycle"] // 2)
    assert ((galvani_file.data["flags"] & 3) == 3).all()  # mode 3 = OCV on every row
    assert (samples["step_type"].astype(str) == "rest").all()
    np.testing.assert_array_equal(samples["current_a"], np.zeros(4))  # dq is 0 on every row
    np.testing.assert_allclose(samples["voltage_v"], galvani_file.data["Ewe/V"].astype(float))
    assert samples["capacity_ah"].isna().all()
    # Nothing the file does not state: no chemistry, no capacity; the start time it does state.
    cell = result.cell
    assert cell.chemistry is None and cell.nominal_capacity_ah is None and cell.origin == {}
    assert "2024-09-02 13:49:32" in cell.description


def test_detected_by_content(datasets, tmp_path):
    for relative in (GCPL_MPR, GCPL0_MPR):
        path = dataset_file(datasets, relative)
        assert detect_format(path) is BiologicMprReader, relative
        renamed = tmp_path / "export.bin"  # the content alone decides
        renamed.write_bytes(path.read_bytes())
        assert detect_format(renamed) is BiologicMprReader
    assert detect_format(dataset_file(datasets, GCPL_MPT)) is BiologicMptReader


def test_no_other_zoo_file_is_claimed(datasets):
    zoo = dataset_file(datasets, "cycler_zoo")
    claimed = []
    for path in sorted(zoo.rglob("*")):
        if path.is_file() and path.parent.name != "biologic_mpr":
            with path.open("rb") as handle:
                if BiologicMprReader.sniff(path, handle.read(64 * 1024)):
                    claimed.append(path.name)
    assert claimed == []


def _data_module_offset(raw: bytes) -> int:
    """Byte offset of the `VMP data` module's header in an .mpr."""
    return raw.index(b"VMP data  ")


def _read_outcome(path: Path):
    """'read' with the frame, or the SourceFormatError; any other exception propagates and fails."""
    try:
        samples = BiologicMprReader.read([path], "damaged").samples
    except SourceFormatError as exc:
        assert path.name in str(exc)
        return "error", exc
    assert list(samples.columns) == SAMPLE_COLUMNS
    return "read", samples


@needs_galvani
def test_damaged_files_fail_with_a_clear_error_or_read(datasets, tmp_path):
    raw = dataset_file(datasets, GCPL_MPR).read_bytes()
    truncated = tmp_path / "truncated.mpr"
    truncated.write_bytes(raw[: int(len(raw) * 0.6)])
    kind, error = _read_outcome(truncated)
    assert kind == "error" and "Unexpected end of file" in str(error)

    magic_only = tmp_path / "magic_only.mpr"
    magic_only.write_bytes(b"BIO-LOGIC MODULAR FILE")
    assert detect_format(magic_only) is BiologicMprReader
    kind, error = _read_outcome(magic_only)
    assert kind == "error" and "cannot decode as EC-Lab .mpr" in str(error)

    # Garbage in the sample records: fixed-size records, so every row is still there.
    records_start = _data_module_offset(raw) + 2000
    garbage = bytes(range(256)) * 40
    corrupted = tmp_path / "corrupted_records.mpr"
    corrupted.write_bytes(raw[:records_start] + garbage + raw[records_start + len(garbage):])
    kind, samples = _read_outcome(corrupted)
    assert kind == "read" and len(samples) == 2533

    # An unknown column id in the data module's column table (version 3: n records u4, n columns u1,
    # then one u2 id per column): galvani cannot know the record layout.
    with dataset_file(datasets, GCPL_MPR).open("rb") as handle:
        data_module = next(m for m in MPRfile(handle).modules if m["shortname"] == b"VMP data  ")
    assert data_module["version"] == 3
    second_id = data_module["offset"] + 5 + 2
    unknown_column = tmp_path / "unknown_column.mpr"
    unknown_column.write_bytes(raw[:second_id] + b"\xfe\xfe" + raw[second_id + 2:])
    kind, error = _read_outcome(unknown_column)
    assert kind == "error" and "Column ID 65278" in str(error) and "is unknown" in str(error)

    four_rows = dataset_file(datasets, GCPL0_MPR).read_bytes()
    cut = tmp_path / "gcpl0_cut.mpr"
    cut.write_bytes(four_rows[:-100])
    assert _read_outcome(cut)[0] == "error"


@needs_galvani
def test_file_without_current_or_dq_is_refused(datasets, tmp_path):
    # GCPL-0 (data module version 0: one id per u2, low byte first) with its `dq/mA.h` id (7)
    # renamed to `cycle number` (24, also <f8): the same records, but no way to know the current.
    raw = dataset_file(datasets, GCPL0_MPR).read_bytes()
    with dataset_file(datasets, GCPL0_MPR).open("rb") as handle:
        galvani_file = MPRfile(handle)
    data_module = next(m for m in galvani_file.modules if m["shortname"] == b"VMP data  ")
    assert data_module["version"] == 0
    dq_id_at = data_module["offset"] + 6 + 2 * list(galvani_file.cols).index(7)
    assert raw[dq_id_at] == 7
    no_current = tmp_path / "no_current.mpr"
    no_current.write_bytes(raw[:dq_id_at] + bytes([24]) + raw[dq_id_at + 1:])
    with no_current.open("rb") as handle:
        assert "dq/mA.h" not in MPRfile(handle).data.dtype.names
    with pytest.raises(SourceFormatError, match=r"no_current.mpr: no measured current"):
        BiologicMprReader.read([no_current], "no_current")


def test_without_galvani_the_error_names_the_file_and_the_extra(datasets):
    path = dataset_file(datasets, GCPL_MPR)
    child = textwrap.dedent(
        f"""
        import sys
        sys.modules["galvani"] = None  # as if the optional extra were not installed
        from battery_pipeline.science.readers import SourceFormatError, detect_format
        path = {str(path)!r}
        assert detect_format(path).format_name == "biologic_mpr"  # detection needs no galvani
        try:
            detect_format(path).read([path], "no_galvani")
        except SourceFormatError as exc:
            print("SourceFormatError:", exc)
        """
    )
    completed = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    message = completed.stdout.strip()
    assert message.startswith("SourceFormatError: gcpl.pr_182.1.mpr:"), message
    assert 'pip install "battery-pipeline[biologic-mpr]"' in message
    assert "GPL-3.0" in message and ".mpt" in message
