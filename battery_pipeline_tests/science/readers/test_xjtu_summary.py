"""XJTU per-cycle feature tables (summary-level source) on the 55 real files and damaged copies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.readers import SourceFormatError, detect_format, readers_by_priority
from battery_pipeline.science.readers.canonical import CanonicalCsvReader
from battery_pipeline.science.readers.xjtu_summary import (
    COLUMN_MAP,
    SUMMARY_COLUMNS,
    XJTU_COLUMNS,
    XjtuCycleSummaryReader,
)
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline.science.sources import cell_record, discover
from battery_pipeline_tests.conftest import dataset_file

FOLDER = "xjtu_features"
ONE = f"{FOLDER}/2C_battery-1.csv"


@pytest.fixture(scope="module")
def xjtu_files(datasets):
    files = sorted(dataset_file(datasets, FOLDER).glob("*.csv"))
    assert len(files) == 55
    return files


@pytest.fixture(scope="module")
def one(datasets):
    path = dataset_file(datasets, ONE)
    return path, XjtuCycleSummaryReader.read([path], "xjtu_2C_battery-1")


def test_all_55_detected_and_claimed_by_no_other_reader(xjtu_files):
    for path in xjtu_files:
        assert detect_format(path) is XjtuCycleSummaryReader, path.name
        head = path.read_bytes()[: 64 * 1024]
        others = [r.format_name for r in readers_by_priority() if r is not XjtuCycleSummaryReader and r.sniff(path, head)]
        assert others == [], (path.name, others)


def test_discovered_as_one_cell_per_file(datasets, xjtu_files):
    catalog = discover([dataset_file(datasets, FOLDER)])
    assert len(catalog) == 55
    assert all(s.format_name == "xjtu_cycle_summary" and s.problem is None for s in catalog)
    assert "xjtu_2C_battery-1" in catalog.keys() and "xjtu_Sim_satellite_battery-8" in catalog.keys()
    record = cell_record(catalog["xjtu_R2.5_battery-3"])
    assert record["chemistry"] == "NMC" and record["nominal_capacity_ah"] == 2.0
    assert (record["voltage_min_v"], record["voltage_max_v"]) == (2.5, 4.2)
    assert record["licence"] == "CC BY 4.0" and "10963339" in record["citation"]
    assert "protocol 'R2.5'" in record["description"]


def test_not_confused_with_canonical_csv(tmp_path, xjtu_files):
    for path in xjtu_files[:5]:
        assert not CanonicalCsvReader.sniff(path, path.read_bytes()[: 64 * 1024])
    canonical = tmp_path / "cell.csv"
    canonical.write_text("time_s,voltage_v,current_a,cycle_number\n0,3.7,1.0,1\n1,3.71,1.0,1\n")
    assert not XjtuCycleSummaryReader.sniff(canonical, canonical.read_bytes())
    assert detect_format(canonical) is CanonicalCsvReader
    # The XJTU header plus a canonical column is neither: the XJTU sniffer wants the exact header.
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(",".join(XJTU_COLUMNS) + ",time_s\n" + ",".join(["1"] * 18) + "\n")
    assert not XjtuCycleSummaryReader.sniff(mixed, mixed.read_bytes())


def test_one_file_read(one):
    path, result = one
    summary, samples = result.cycle_summary, result.samples
    # No samples: an empty canonical frame, with the dtypes every reader produces.
    assert len(samples) == 0 and list(samples.columns) == SAMPLE_COLUMNS
    assert all(isinstance(samples[c].dtype, pd.CategoricalDtype) for c in ("cell_id", "step_type", "source_file"))
    CellCycleSample.validate(samples)
    # One row per cycle, renamed columns, provenance.
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert not set(XJTU_COLUMNS) & set(summary.columns)
    assert len(summary) == 375
    assert summary["cycle_number"].tolist() == list(range(1, 376))
    assert summary["source_row"].tolist() == list(range(375))
    assert (summary["source_file"] == path.name).all() and (summary["cell_id"] == "xjtu_2C_battery-1").all()
    raw = pd.read_csv(path)
    for xjtu, ours in COLUMN_MAP.items():
        expected = raw[xjtu].replace([np.inf, -np.inf], np.nan).to_numpy()
        np.testing.assert_array_equal(summary[ours].to_numpy(), expected, err_msg=xjtu)
    # Capacity ~2 Ah, fading overall (1.900 -> max 1.971 -> 1.592 Ah at the last cycle).
    capacity = summary["discharge_capacity_ah"]
    assert capacity.iloc[0] == pytest.approx(1.900) and capacity.max() == pytest.approx(1.971)
    assert capacity.iloc[-1] == pytest.approx(1.592)
    assert capacity.between(1.5, 2.05).all()
    assert capacity.tail(20).mean() < capacity.head(20).mean() - 0.2
    # Units: CC window charge / duration = the 2C charge current of a 2 Ah cell (so seconds).
    implied_cc_a = summary["cc_charge_capacity_ah"] * 3600 / summary["cc_charge_time_s"]
    assert implied_cc_a.median() == pytest.approx(4.0, abs=0.01)
    implied_cv_a = summary["cv_charge_capacity_ah"] * 3600 / summary["cv_charge_time_s"]
    assert implied_cv_a.median() == pytest.approx(summary["charge_current_mean_a"].median(), rel=0.02)
    # Voltage statistics are over the 4.0-4.2 V window: slope x duration = 0.2 V.
    window_v = summary["charge_voltage_slope_v_per_s"] * summary["cc_charge_time_s"]
    assert window_v.median() == pytest.approx(0.2, abs=0.005)
    assert summary["charge_voltage_mean_v"].between(4.09, 4.10).all()
    # Trap: the file's -inf voltage entropies (13 rows here) become NaN; nothing else is missing.
    assert np.isneginf(raw["voltage entropy"]).sum() == 13
    assert summary["charge_voltage_entropy"].isna().sum() == 13
    assert summary.drop(columns="charge_voltage_entropy").notna().all().all()
    assert result.cell.chemistry == "NMC" and result.cell.nominal_capacity_ah == 2.0


def test_charge_current_of_the_3c_protocol_and_interpolated_capacities(datasets):
    path = dataset_file(datasets, f"{FOLDER}/3C_battery-1.csv")
    summary = XjtuCycleSummaryReader.read([path], "x").cycle_summary
    implied = summary["cc_charge_capacity_ah"] * 3600 / summary["cc_charge_time_s"]
    assert implied.median() == pytest.approx(6.0, abs=0.01)
    # Measured capacities are logged to 1 mAh; R3/RW/Sim_satellite ones are interpolated curves.
    mah = summary["discharge_capacity_ah"] * 1000
    assert np.allclose(mah, mah.round(), atol=1e-6)
    r3 = XjtuCycleSummaryReader.read([dataset_file(datasets, f"{FOLDER}/R3_battery-1.csv")], "y").cycle_summary
    r3_mah = r3["discharge_capacity_ah"] * 1000
    assert (np.abs(r3_mah - r3_mah.round()) > 1e-6).mean() > 0.9


def _copy(tmp_path, name, content: bytes):
    target = tmp_path / name
    target.write_bytes(content)
    return target


def test_truncated_copy_names_the_file(tmp_path, datasets):
    raw = dataset_file(datasets, ONE).read_bytes()
    lines = raw.split(b"\r\n")
    cut = len(b"\r\n".join(lines[:101])) + 2 + len(lines[101]) // 2  # mid-way through data row 100
    path = _copy(tmp_path, "2C_battery-1.csv", raw[:cut])
    assert detect_format(path) is XjtuCycleSummaryReader  # the header is intact
    with pytest.raises(SourceFormatError, match=r"2C_battery-1\.csv: .*truncated or garbled") as info:
        XjtuCycleSummaryReader.read([path], "x")
    assert info.value.path == path
    header_only = _copy(tmp_path, "header_only.csv", lines[0] + b"\r\n")
    with pytest.raises(SourceFormatError, match=r"header_only\.csv: no data rows"):
        XjtuCycleSummaryReader.read([header_only], "x")


def test_garbled_copies_name_the_file(tmp_path, datasets):
    raw = dataset_file(datasets, ONE).read_bytes()
    lines = raw.split(b"\r\n")
    fields = lines[50].split(b",")
    fields[16] = b"#VALUE!"
    text_in_number = _copy(tmp_path, "text.csv", b"\r\n".join(lines[:50] + [b",".join(fields)] + lines[51:]))
    with pytest.raises(SourceFormatError, match=r"text\.csv: column 'capacity' .*row 49 '#VALUE!'"):
        XjtuCycleSummaryReader.read([text_in_number], "x")

    noise = bytes(np.random.default_rng(0).integers(128, 256, 400, dtype=np.uint8))
    binary = _copy(tmp_path, "binary.csv", raw[:5000] + noise + raw[5000:])
    with pytest.raises(SourceFormatError, match=r"binary\.csv: "):
        XjtuCycleSummaryReader.read([binary], "x")

    bad_header = _copy(tmp_path, "bad_header.csv", raw.replace(b"CC Q", b"CC_Q", 1))
    assert not XjtuCycleSummaryReader.sniff(bad_header, bad_header.read_bytes())
    with pytest.raises(SourceFormatError, match=r"bad_header\.csv: unknown format"):
        detect_format(bad_header)
    with pytest.raises(SourceFormatError, match=r"bad_header\.csv: header .*missing \['CC Q'\]"):
        XjtuCycleSummaryReader.read([bad_header], "x")

    in_mah = raw.decode().splitlines()
    in_mah = [in_mah[0]] + [",".join(l.split(",")[:-1] + [str(float(l.split(",")[-1]) * 1000)]) for l in in_mah[1:]]
    mah = _copy(tmp_path, "mah.csv", "\n".join(in_mah).encode())
    with pytest.raises(SourceFormatError, match=r"mah\.csv: column 'capacity' looks like mAh"):
        XjtuCycleSummaryReader.read([mah], "x")
