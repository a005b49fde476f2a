"""Pack telemetry simulator: determinism, exact SOC and throughput, excursions, rests, OCV at rest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.twin.ocv import ocv_table
from battery_pipeline.science.twin.pack_sim import LONG_REST_S, simulate_pack, write_pack


@pytest.fixture(scope="module")
def sim():
    return simulate_pack()  # 24 h, 12 NMC cells, 10 s


def _voltages(sim) -> np.ndarray:
    return sim.telemetry[[f"{c}_voltage_v" for c in sim.cells["cell"]]].to_numpy()


def _socs(sim) -> np.ndarray:
    return sim.truth[[f"soc_{c}" for c in sim.cells["cell"]]].to_numpy()


def test_same_seed_same_pack_other_seed_other_pack(sim):
    again = simulate_pack()
    for name in ("telemetry", "truth", "cells", "alerts", "spikes"):
        pd.testing.assert_frame_equal(getattr(sim, name), getattr(again, name))
    assert again.pack == sim.pack
    other = simulate_pack(seed=sim.pack["seed"] + 1)
    assert not np.array_equal(other.telemetry["pack_current_a"], sim.telemetry["pack_current_a"])


def test_layout_and_conventions(sim):
    telemetry = sim.telemetry
    assert list(telemetry.columns[:3]) == ["timestamp", "time_s", "pack_current_a"]
    assert [c for c in telemetry.columns if c.endswith("_voltage_v")] == [f"cell_{i:02d}_voltage_v" for i in range(1, 13)]
    assert [c for c in telemetry.columns if c.startswith("temperature_")] == ["temperature_01_c", "temperature_02_c", "temperature_03_c"]
    assert str(telemetry["timestamp"].dt.tz) == "UTC"
    assert np.all(np.diff(telemetry["time_s"]) == 10.0) and telemetry["time_s"].iloc[-1] == 24 * 3600
    current = telemetry["pack_current_a"].to_numpy()
    assert current[0] == 0.0 and current.min() < -1.0 and current.max() > 1.0  # discharge and charge
    assert set(sim.truth["phase"].unique()) == {"rest", "drive", "regen", "charge"}
    # Positive = charge: SOC rises exactly where the current is positive.
    rising = np.diff(sim.truth["soc_mean"].to_numpy()) > 0
    assert np.array_equal(rising, current[1:] > 0)


@pytest.mark.parametrize("chemistry", ["NMC", "NCA", "LFP", "LCO"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_soc_stays_in_range_for_every_chemistry(chemistry, seed):
    result = simulate_pack(chemistry=chemistry, seed=seed, duration_h=36.0)
    soc = _socs(result)
    assert 0.0 < soc.min() and soc.max() < 1.0
    assert soc.max() - soc.min() > 0.5  # the profile really cycles the pack


def test_soc_and_throughput_are_exact_sums_of_the_held_current(sim):
    dt = sim.pack["sample_period_s"]
    current = sim.telemetry["pack_current_a"].to_numpy()
    capacity = sim.cells["capacity_ah"].to_numpy()
    step = np.diff(_socs(sim), axis=0)
    assert np.allclose(step, current[1:, None] * dt / (3600.0 * capacity[None, :]), rtol=0, atol=1e-13)
    assert np.allclose(_socs(sim)[0], sim.cells["initial_soc"], rtol=0, atol=0)
    # What an eq-cycle model computes from the telemetry alone (held current x elapsed time).
    elapsed = np.diff(sim.telemetry["time_s"].to_numpy())
    discharge_ah = np.cumsum(np.maximum(-current[1:], 0.0) * elapsed) / 3600.0
    expected = np.r_[0.0, discharge_ah] / sim.pack["nominal_capacity_ah"]
    measured = sim.truth["eq_cycles_measured"].to_numpy()
    assert np.allclose(measured, expected, rtol=1e-12, atol=0)
    assert np.array_equal(measured, sim.truth["eq_cycles_true"].to_numpy())  # no current noise by default
    assert 1.0 < measured[-1] < 5.0
    # Coulombic efficiency 1: the charge put in equals the SOC gained, cell by cell.
    net_ah = sim.truth["charge_ah"].iloc[-1] - sim.truth["discharge_ah"].iloc[-1]
    assert np.allclose((_socs(sim)[-1] - _socs(sim)[0]) * capacity, net_ah, rtol=1e-12)


def test_current_noise_separates_measured_from_true_eq_cycles():
    noisy = simulate_pack(duration_h=6.0, current_noise_a=0.01)
    true, measured = noisy.truth["eq_cycles_true"].iloc[-1], noisy.truth["eq_cycles_measured"].iloc[-1]
    assert measured != true and abs(measured - true) / true < 0.02


def test_limits_are_crossed_exactly_where_alerts_and_spikes_say(sim):
    voltage, time_s = _voltages(sim), sim.telemetry["time_s"].to_numpy()
    v_min, v_max = sim.pack["voltage_min_v"], sim.pack["voltage_max_v"]
    expected = np.zeros_like(voltage, dtype=bool)
    cells = list(sim.cells["cell"])
    for table in (sim.alerts, sim.spikes):
        for row in table.itertuples():
            window = (time_s >= row.start_time_s) & (time_s <= row.end_time_s)
            assert window.sum() == row.n_samples
            column = voltage[window, cells.index(row.cell)]
            if row.kind == "over_voltage":
                assert np.all(column > v_max) and column.max() == pytest.approx(row.extreme_v, abs=1e-4)
            else:
                assert np.all(column < v_min) and column.min() == pytest.approx(row.extreme_v, abs=1e-4)
            expected[window, cells.index(row.cell)] = True
    assert np.array_equal((voltage > v_max) | (voltage < v_min), expected)
    min_duration = sim.pack["min_alert_duration_s"]
    dt = sim.pack["sample_period_s"]
    assert len(sim.alerts) == 4 and set(sim.alerts["kind"]) == {"over_voltage", "under_voltage"}
    assert np.all(sim.alerts["end_time_s"] - sim.alerts["start_time_s"] >= 2 * min_duration)
    assert len(sim.spikes) == 6 and np.all(sim.spikes["n_samples"] * dt < min_duration)


def test_no_excursions_when_disabled():
    clean = simulate_pack(excursions=False, duration_h=12.0)
    voltage = _voltages(clean)
    assert clean.alerts.empty and clean.spikes.empty
    assert voltage.max() < clean.pack["voltage_max_v"] and voltage.min() > clean.pack["voltage_min_v"]


def test_long_and_short_rests(sim):
    current = sim.telemetry["pack_current_a"].to_numpy()
    at_rest = current == 0.0
    run = np.cumsum(np.r_[True, at_rest[1:] != at_rest[:-1]])
    lengths = pd.Series(at_rest).groupby(run).agg(["first", "size"])
    rest_minutes = lengths.loc[lengths["first"], "size"] * sim.pack["sample_period_s"] / 60.0
    assert (rest_minutes >= 30).sum() >= 4
    assert ((rest_minutes > 1) & (rest_minutes < 30)).sum() >= 4
    assert sim.truth["rest_s"].max() >= LONG_REST_S


def test_voltage_is_ocv_of_true_soc_after_a_long_rest_and_not_under_load(sim):
    table = ocv_table(sim.pack["chemistry"], sim.pack["ambient_c"])
    residual = _voltages(sim) - table.ocv(_socs(sim))
    rested = sim.truth["rest_s"].to_numpy() >= LONG_REST_S
    assert rested.sum() > 100
    assert np.abs(residual[rested]).max() < 0.005
    loaded = np.abs(sim.truth["current_a"].to_numpy()) > 1.5
    assert np.median(np.abs(residual[loaded])) > 0.03  # under load the IR drop is visible


def test_load_heats_the_pack_above_ambient(sim):
    rise = sim.telemetry["temperature_01_c"] - sim.truth["ambient_c"]
    assert rise.max() > 1.0
    rested = sim.truth["rest_s"] >= 2 * LONG_REST_S
    assert rise[rested].abs().max() < 0.5


def test_one_second_sampling_and_other_sizes():
    fast = simulate_pack(n_cells=4, sample_period_s=1.0, duration_h=3.0, seed=7)
    assert len(fast.telemetry) == 3 * 3600 + 1
    assert fast.pack["min_alert_duration_s"] == 30.0
    assert np.all(fast.spikes["n_samples"] <= 5) and np.all(fast.alerts["n_samples"] >= 60)
    assert fast.telemetry.filter(like="_voltage_v").shape[1] == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="NMC"):
        simulate_pack(chemistry="LTO")
    with pytest.raises(ValueError, match="min_alert_duration_s"):
        simulate_pack(sample_period_s=10.0, min_alert_duration_s=15.0)


def test_write_pack_writes_once_and_never_overwrites(sim, tmp_path):
    path = write_pack(sim, tmp_path)
    sidecar = json.loads((tmp_path / f"{sim.pack['pack_id']}.json").read_text())
    assert path.name == sidecar["files"]["telemetry"] and sidecar["chemistry"] == "NMC"
    pd.testing.assert_frame_equal(pd.read_parquet(path), sim.telemetry)
    truth = pd.read_parquet(tmp_path / sidecar["files"]["truth"])
    assert np.array_equal(truth["eq_cycles_true"], sim.truth["eq_cycles_true"])
    alerts = pd.read_csv(tmp_path / sidecar["files"]["alerts"])
    assert alerts["cell"].tolist() == sim.alerts["cell"].tolist()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError):
        write_pack(sim, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# --- fault injection ------------------------------------------------------------------------

FAULT_PACK = dict(n_cells=6, duration_h=12.0, seed=77)


@pytest.fixture(scope="module")
def healthy():
    return simulate_pack(**FAULT_PACK)


def _faulted(kind, magnitude, cell="cell_03", onset=20000.0):
    return simulate_pack(**FAULT_PACK, faults=[{"kind": kind, "cell": cell, "onset_time_s": onset, "magnitude": magnitude}])


def test_no_faults_requested_changes_nothing(healthy):
    again = simulate_pack(**FAULT_PACK, faults=[])
    for name in ("telemetry", "truth", "cells", "alerts", "spikes"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(healthy, name))
    assert healthy.faults.empty and again.faults.empty and "faults" not in healthy.pack


def test_a_sensor_offset_shifts_only_that_reading_from_onset(healthy):
    sim = _faulted("voltage_sensor_offset", 0.025)
    after = sim.telemetry.time_s.to_numpy() >= 20000.0
    shift = _voltages(sim) - _voltages(healthy)
    excursion = np.zeros(len(shift), dtype=bool)
    for row in sim.alerts[sim.alerts.cell == "cell_03"].itertuples():  # an excursion overwrites the reading
        excursion |= (sim.telemetry.time_s >= row.start_time_s).to_numpy() & (sim.telemetry.time_s <= row.end_time_s).to_numpy()
    # Rounding to 0.1 mV: v + 25 mV rounds to round(v) + 25 mV within one step.
    assert np.allclose(shift[after & ~excursion, 2], 0.025, atol=1.01e-4) and np.all(np.delete(shift, 2, axis=1) == 0)
    assert np.all(shift[~after] == 0)
    pd.testing.assert_frame_equal(sim.truth, healthy.truth)  # the cell's true state is untouched
    row = sim.faults.iloc[0]
    assert (row.cell, row.kind, row.category, row.onset_time_s, row.magnitude_unit) == (
        "cell_03", "voltage_sensor_offset", "sensor", 20000.0, "V")


def test_a_stuck_reading_is_flat_from_onset_and_the_truth_untouched(healthy):
    sim = _faulted("voltage_sensor_stuck", None)
    after = sim.telemetry.time_s.to_numpy() >= 20000.0
    frozen = _voltages(sim)[after, 2]
    assert np.all(frozen == frozen[0]) and frozen[0] == _voltages(healthy)[after, 2][0]
    assert np.array_equal(_voltages(sim)[:, [0, 1, 3, 4, 5]], _voltages(healthy)[:, [0, 1, 3, 4, 5]])
    pd.testing.assert_frame_equal(sim.truth, healthy.truth)
    assert not ((sim.alerts.cell == "cell_03") & (sim.alerts.end_time_s >= 20000.0)).any()


def test_a_loose_connection_adds_r_times_i_to_the_reading_only(healthy):
    sim = _faulted("loose_connection", 0.02)
    after = sim.telemetry.time_s.to_numpy() >= 20000.0
    current = sim.telemetry.pack_current_a.to_numpy()
    shift = _voltages(sim)[:, 2] - _voltages(healthy)[:, 2]
    in_limits = np.abs(shift - np.where(after, 0.02 * current, 0.0)) < 1.5e-4  # rounding to 0.1 mV
    excursion = np.zeros(len(shift), dtype=bool)
    for row in pd.concat([sim.alerts, sim.spikes]).itertuples():  # an excursion overwrites the reading
        if row.cell == "cell_03":
            excursion |= (sim.telemetry.time_s >= row.start_time_s).to_numpy() & (sim.telemetry.time_s <= row.end_time_s).to_numpy()
    assert np.all(in_limits | excursion) and np.abs(shift[after]).max() > 0.02
    pd.testing.assert_frame_equal(sim.truth, healthy.truth)  # OCV and SOC unchanged


def test_an_internal_short_drains_its_cell_by_the_integral_of_the_leak(healthy):
    sim = _faulted("internal_short", 100.0)
    dt = sim.pack["sample_period_s"]
    current = sim.telemetry.pack_current_a.to_numpy()
    leak = sim.truth["leak_current_a_cell_03"].to_numpy()
    after = sim.telemetry.time_s.to_numpy() >= 20000.0
    assert np.all(leak[~after] == 0) and np.all((leak[after] > 0.03) & (leak[after] < 0.045))  # ~3.7 V / 100 ohm
    capacity = sim.cells.capacity_ah.to_numpy()
    soc = _socs(sim)
    expected = sim.cells.initial_soc[2] + np.cumsum(current - leak) * dt / (3600.0 * capacity[2])
    assert np.allclose(soc[:, 2], expected, rtol=0, atol=1e-12)
    others = [0, 1, 3, 4, 5]
    assert np.allclose(soc[:, others], sim.cells.initial_soc.to_numpy()[others]
                       + np.cumsum(current)[:, None] * dt / (3600.0 * capacity[others]), rtol=0, atol=1e-12)
    # Before the onset the load profile and the truth are the healthy pack's (after it the profile
    # reacts to the drained cell, so the later random draws, noise included, differ).
    k = int(np.argmax(after))
    pd.testing.assert_frame_equal(sim.truth.iloc[:k].drop(columns="leak_current_a_cell_03"), healthy.truth.iloc[:k])
    assert "R_short 100.0 ohm" in sim.faults.description.iloc[0]


def test_write_pack_writes_the_faults_table_named_in_the_sidecar(tmp_path):
    sim = _faulted("voltage_sensor_offset", 0.01)
    write_pack(sim, tmp_path)
    sidecar = json.loads((tmp_path / "pack_01.json").read_text())
    faults = pd.read_csv(tmp_path / sidecar["files"]["faults"])
    assert faults[["cell", "kind", "category"]].values.tolist() == [["cell_03", "voltage_sensor_offset", "sensor"]]


def test_bad_fault_specs():
    with pytest.raises(ValueError, match="unknown fault kind"):
        simulate_pack(**FAULT_PACK, faults=[{"kind": "thermal_runaway"}])
    with pytest.raises(ValueError, match="unknown cell"):
        simulate_pack(**FAULT_PACK, faults=[{"kind": "internal_short", "cell": "cell_99"}])
