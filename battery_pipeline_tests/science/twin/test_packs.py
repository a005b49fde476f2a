"""Pack discovery, reading and the long telemetry layout (no Dagster)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.twin.pack_sim import simulate_pack, write_pack
from battery_pipeline.science.twin.packs import (
    DEMO_PACKS,
    PackFormatError,
    discover_packs,
    ensure_demo_packs,
    pack_parameters,
    read_pack_file,
    source_layout,
    telemetry_long,
    telemetry_wide,
)
from battery_pipeline.science.twin.settings import DEFAULT_SETTINGS_FILE, load_settings


@pytest.fixture(scope="module")
def settings():
    return load_settings(DEFAULT_SETTINGS_FILE, with_local=False)


@pytest.fixture(scope="module")
def sim():
    return simulate_pack(n_cells=3, chemistry="LFP", duration_h=2.0, seed=4, pack_id="lfp_3s")


def test_discovery_finds_sidecar_packs_plain_files_and_cells_and_flags_the_rest(tmp_path, sim):
    write_pack(sim, tmp_path)
    (tmp_path / "site_b").mkdir()
    sim.telemetry.to_csv(tmp_path / "site_b" / "rack 7.csv", index=False)
    (tmp_path / "notes.xlsx").write_bytes(b"PK")
    catalog = discover_packs([tmp_path], cell_packs=["B0005"])
    assert catalog.keys() == ["B0005", "lfp_3s", "notes", "rack_7"]  # truth/cells/alerts/spikes: companions
    assert catalog["lfp_3s"].sidecar == tmp_path / "lfp_3s.json" and catalog["lfp_3s"].source_kind == "pack_telemetry"
    assert catalog["rack_7"].sidecar is None
    assert catalog["B0005"].kind == "cell" and catalog["B0005"].source_kind == "single_cell"
    assert "not a pack file format" in catalog["notes"].problem
    with pytest.raises(PackFormatError, match="notes.xlsx: not a pack file format"):
        read_pack_file(catalog["notes"])
    frame, sidecar = read_pack_file(catalog["lfp_3s"])
    assert len(frame) == len(sim.telemetry)
    assert pack_parameters(sidecar) == {"chemistry": "LFP", "nominal_capacity_ah": 2.5}


def test_same_name_in_two_folders_gives_two_partitions(tmp_path, sim):
    for site in ("a", "b"):
        (tmp_path / site).mkdir()
        sim.telemetry.to_parquet(tmp_path / site / "pack.parquet")
    keys = discover_packs([tmp_path]).keys()
    assert len(keys) == 2 and keys[0] == "pack" and keys[1].startswith("pack-")


def test_long_layout_keeps_every_value_and_gives_the_file_back(sim, settings):
    frame = sim.telemetry.assign(bms_state_code=np.arange(len(sim.telemetry)) % 3, note="ok")
    layout = source_layout(settings, "pack_telemetry")
    long, facts = telemetry_long(frame, layout, "lfp_3s", "lfp_3s.parquet")
    assert facts["cells"] == ["cell_01", "cell_02", "cell_03"] and len(facts["temperature_sensors"]) == 3
    assert facts["unmapped_channels"] == ["bms_state_code"] and facts["ignored_columns"] == ["note"]
    assert len(long) == len(frame) * facts["channels"] == len(frame) * 7
    assert set(long["quantity"]) == {"cell_voltages", "temperatures", "unmapped"}
    wide = telemetry_wide(long, layout)
    expected = frame.drop(columns=["note"])
    pd.testing.assert_frame_equal(wide.reset_index(drop=True)[expected.columns], expected, check_dtype=False)


@pytest.mark.parametrize("change, problem", [
    (lambda f: f.drop(columns=["pack_current_a"]), "no current column 'pack_current_a'"),
    (lambda f: f.drop(columns=[c for c in f.columns if c.startswith("cell_")]), "no cell voltage column matches"),
    (lambda f: f.drop(columns=["time_s", "timestamp"]), "no time column 'time_s'"),
    (lambda f: f.iloc[[0, 2, 1, 3]], "time goes backwards at data row 2"),
    (lambda f: f.astype({"cell_02_voltage_v": object}).assign(cell_02_voltage_v=lambda g: g.cell_02_voltage_v.where(g.index != 5, "n/a")),
     "column 'cell_02_voltage_v' is not numeric (data row 5: 'n/a')"),
])
def test_unusable_telemetry_names_the_file_and_the_problem(sim, settings, change, problem):
    layout = source_layout(settings, "pack_telemetry")
    with pytest.raises(PackFormatError) as raised:
        telemetry_long(change(sim.telemetry), layout, "p", "site/p.csv")
    assert str(raised.value).startswith(f"site/p.csv: {problem}"), str(raised.value)


def test_time_from_timestamps_when_there_is_no_time_column(sim, settings):
    layout = source_layout(settings, "pack_telemetry")
    frame = sim.telemetry.drop(columns=["time_s"]).assign(timestamp=lambda f: f.timestamp.astype(str))
    long, facts = telemetry_long(frame, layout, "p", "p.csv")
    assert facts["time_s_range"] == [0.0, sim.telemetry["time_s"].iloc[-1]]


def test_a_cell_is_a_one_cell_pack_through_the_single_cell_mapping(settings):
    samples = pd.DataFrame({"cell_id": "c", "time_s": [0.0, 1.0, 2.0], "current_a": [0.0, -1.0, -1.0],
                            "voltage_v": [4.1, 4.0, 3.99], "temperature_c": [25.0, 25.1, 25.2], "cycle_number": 1})
    long, facts = telemetry_long(samples, source_layout(settings, "single_cell"), "c", "cell c", keep_unmapped=False)
    assert facts["cells"] == ["cell"] and facts["unmapped_channels"] == [] and len(long) == 6


def test_demo_packs_are_small_seeded_and_discovered(tmp_path):
    folder = ensure_demo_packs(tmp_path / "demo_packs")
    catalog = discover_packs([folder])
    assert catalog.keys() == sorted(p["pack_id"] for p in DEMO_PACKS)
    chemistries = {k: pack_parameters(read_pack_file(catalog[k])[1])["chemistry"] for k in catalog.keys()}
    assert sorted(chemistries.values()) == ["LFP", "NMC"]
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total < 5_000_000, total
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert ensure_demo_packs(folder) == folder and {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
