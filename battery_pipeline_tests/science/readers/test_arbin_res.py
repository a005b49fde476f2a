"""Arbin MITS Pro .res (Access database) through mdbtools: the zoo file against its own tables.

The peer tools (cellpy, galvani's res2sqlite) read .res through the same mdb-export; the
side-by-side with cellpy is `benchmarks/arbin_res_peer_check.py` (cellpy 1.0.3 on the zoo file:
10 261 rows and 18 cycles on both sides, per-cycle charge/discharge capacity within 2e-9 Ah,
1e-4 %, of cellpy's raw counters' per-cycle max). cellpy is not installed in CI, so here the
canonical frame is checked against the file's own Channel_Normal_Table, read independently of
the reader's code: the same rows, cycles and per-cycle capacities cellpy's frame is built from.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

import numpy as np
import pytest

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers.arbin_res import ArbinResReader, aux_temperature, parse_mdb_csv
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
    assert samples["cycle_number"].nunique() == len(np.unique(cycle)) == 18
    # max, not max - min: a cycle's first logged point already holds real charge (up to 2e-9 Ah,
    # passed between the unlogged cycle start and that point), and no counter drops within a cycle
    for number in np.unique(cycle):
        for counter in (charge, discharge):
            within = counter[cycle == number]
            assert within[0] <= 1e-8 and np.all(np.diff(within) >= 0), number
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


@needs_mdbtools
def test_an_empty_auxiliary_table_gives_no_temperature_and_no_note(datasets):
    path = dataset_file(datasets, RES)
    # the file itself says it logged no aux data: the flag is off and the table holds no rows
    assert _table(path, "Global_Table")[0]["Log_Aux_Data_Flag"] == "0"
    assert _table(path, "Auxiliary_Table") == []
    result = ArbinResReader.read([path], "c")
    assert result.samples["temperature_c"].isna().all()
    assert "auxiliary" not in result.cell.description.lower()


# Auxiliary_Table and Aux_Global_Data_Table as mdb-export writes them (no Access writer exists to
# build a .res holding aux rows): readings out of order, two thermocouples, one aux voltage.
AUX_CSV = b"""Test_ID,Data_Point,Auxiliary_Index,Data_Type,X,dX_dt
1,2,0,1,25.2,0
1,1,0,1,25.1,0
1,1,1,1,30.5,0
1,1,0,0,3.0976174,0
1,2,1,1,30.6,0
1,4,0,1,2.54e+01,0
1,4,0,0,3.1000805,-6.1607359e-05
"""
AUX_CHANNELS_CSV = b"""Channel_Index,Auxiliary_Index,Data_Type,Nickname,Unit
3,0,1,"T1","C"
3,1,1,"T2","C"
3,0,0,"V1","V"
"""


def test_aux_temperature_takes_the_first_temperature_channel_by_data_point():
    aux = parse_mdb_csv(AUX_CSV).to_pandas()
    channels = parse_mdb_csv(AUX_CHANNELS_CSV).to_pandas()
    temperature, notes = aux_temperature(np.array([1, 2, 3, 4, 5]), aux, channels, test_id=1)
    # point 3 has no reading and point 5 none at all: null, not carried over
    np.testing.assert_allclose(temperature, [25.1, 25.2, np.nan, 25.4, np.nan])
    text = "; ".join(notes)
    assert "temperature_c from auxiliary temperature channel Auxiliary_Index 0 'T1', unit C" in text
    assert "3 of 5 samples have a reading" in text
    assert "Auxiliary_Index 1 'T2'" in text and "lowest Auxiliary_Index" in text
    assert "auxiliary voltage channel(s) Auxiliary_Index 0 'V1', unit V present and not read" in text


def test_aux_temperature_converts_a_stated_unit_and_refuses_an_unknown_one():
    aux = parse_mdb_csv(b"Test_ID,Data_Point,Auxiliary_Index,Data_Type,X\n1,1,2,1,298.15\n").to_pandas()
    kelvin = parse_mdb_csv(b'Channel_Index,Auxiliary_Index,Data_Type,Nickname,Unit\n1,2,1,"cell","K"\n').to_pandas()
    temperature, _ = aux_temperature(np.array([1]), aux, kelvin)
    np.testing.assert_allclose(temperature, [25.0])
    volts = kelvin.assign(Unit="V")
    temperature, notes = aux_temperature(np.array([1]), aux, volts)
    assert temperature is None and "unit 'V' not understood" in notes[0]
    # without Aux_Global_Data_Table the kind's default unit (degC) is taken
    temperature, notes = aux_temperature(np.array([1]), aux, None)
    np.testing.assert_allclose(temperature, [298.15])
    assert "Auxiliary_Index 2," in notes[0]


def test_aux_voltage_only_gives_no_temperature_but_says_so():
    aux = parse_mdb_csv(b"Test_ID,Data_Point,Auxiliary_Index,Data_Type,X\n1,1,0,0,3.1\n1,1,0,2,101.3\n").to_pandas()
    temperature, notes = aux_temperature(np.array([1]), aux)
    assert temperature is None
    assert notes == [
        "auxiliary voltage channel(s) Auxiliary_Index 0 present and not read (no canonical column)",
        "auxiliary channel(s) of Data_Type 2 (Auxiliary_Index 0) present and not read",
    ]
