"""Arbin MITS Pro .res (Access database) through mdbtools: the zoo file against its own tables.

The peer tools (cellpy, galvani's res2sqlite) read .res through the same mdb-export; the
side-by-side with cellpy is `benchmarks/arbin_res_peer_check.py`. Here the canonical frame is
checked against the file's own Channel_Normal_Table, read independently of the reader's code.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

import numpy as np
import pytest

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers.arbin_res import ArbinResReader
from battery_pipeline_tests.conftest import dataset_file

RES = "cycler_zoo/arbin_res/20160805_test001_45_cc_01.res"

needs_mdbtools = pytest.mark.skipif(shutil.which("mdb-export") is None, reason="mdbtools not installed (apt-get install mdbtools)")


def _table(path, name):
    out = subprocess.run(["mdb-export", str(path), name], capture_output=True, check=True).stdout.decode()
    rows = list(csv.DictReader(io.StringIO(out)))
    return rows


@needs_mdbtools
def test_res_matches_its_own_channel_table_per_cycle(datasets):
    path = dataset_file(datasets, RES)
    assert detect_format(path) is ArbinResReader
    result = ArbinResReader.read([path], "sic_half_cell")
    samples = result.samples
    rows = _table(path, "Channel_Normal_Table")
    assert len(samples) == len(rows) == 10261
    assert samples["source_row"].tolist() == list(range(len(rows)))
    cycle = np.array([int(r["Cycle_Index"]) for r in rows])
    np.testing.assert_array_equal(samples["cycle_number"], cycle)
    np.testing.assert_allclose(samples["current_a"], [float(r["Current"]) for r in rows])
    np.testing.assert_allclose(samples["voltage_v"], [float(r["Voltage"]) for r in rows])
    # per cycle: this schedule resets both counters at each cycle, so the file's own capacity of
    # a cycle is the counter's maximum within it (cellpy's summary takes the same)
    charge = np.array([float(r["Charge_Capacity"]) for r in rows])
    discharge = np.array([float(r["Discharge_Capacity"]) for r in rows])
    assert samples["cycle_number"].nunique() == 18
    for number in np.unique(cycle):
        ours = samples[samples["cycle_number"] == number]
        for kind, counter in (("charge", charge), ("discharge", discharge)):
            theirs = counter[cycle == number].max()
            mine = ours.loc[ours["step_type"] == kind, "capacity_ah"].max()
            if theirs == 0:
                assert np.isnan(mine) or mine == 0, (number, kind)
                continue
            assert abs(mine - theirs) <= 0.005 * theirs, (number, kind, mine, theirs)


@needs_mdbtools
def test_small_currents_of_a_half_cell_are_not_rest(datasets):
    # 0.15-0.3 mA: below the project's 1 mA rest threshold, which is scaled down to the file's currents
    samples = ArbinResReader.read([dataset_file(datasets, RES)], "c").samples
    active = samples[samples["step_type"] != "rest"]
    assert len(active) > 0.8 * len(samples)
    assert (np.sign(active["current_a"]) == np.where(active["step_type"] == "charge", 1, -1)).mean() > 0.99


@needs_mdbtools
def test_nothing_is_invented_from_the_user_fields(datasets):
    record = ArbinResReader.describe([dataset_file(datasets, RES)])
    assert record.nominal_capacity_ah is None and record.chemistry is None
    assert "MASS (unit not stated) 0.00085283798" in record.description
    assert "schedule SiNODE" in record.description and "started 2016-08-05" in record.description


@needs_mdbtools
@pytest.mark.parametrize("damage", ["truncate", "flip", "magic_only"])
def test_damaged_res_is_a_clear_error_or_reads(datasets, tmp_path, damage):
    data = dataset_file(datasets, RES).read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "flip":
        data = data[:4096] + bytes(b ^ 0xFF for b in data[4096:8192]) + data[8192:]
    else:
        data = data[:64]
    path = tmp_path / "damaged.res"
    path.write_bytes(data)
    assert detect_format(path) is ArbinResReader
    try:
        samples = ArbinResReader.read([path], "c").samples
    except SourceFormatError as exc:
        assert "damaged.res" in str(exc)
    else:
        assert len(samples) > 0


def test_without_mdbtools_the_error_says_what_to_install(datasets, tmp_path, monkeypatch):
    path = dataset_file(datasets, RES)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SourceFormatError, match=r"20160805_test001_45_cc_01.res: .*install mdbtools"):
        ArbinResReader.read([path], "c")


def test_an_access_database_that_is_not_arbin_is_refused(tmp_path):
    # the Jet signature alone makes it a candidate; the missing Channel_Normal_Table refuses it
    if shutil.which("mdb-export") is None:
        pytest.skip("mdbtools not installed")
    path = tmp_path / "other.mdb"
    path.write_bytes(b"\x00\x01\x00\x00Standard Jet DB\x00" + b"\x00" * 4096)
    with pytest.raises(SourceFormatError, match="other.mdb"):
        ArbinResReader.read([path], "c")
