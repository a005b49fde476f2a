"""pack_fault_diagnosis against pack_sim's injected faults: the right cell, kind and category on
seeds the thresholds were never looked at with; silence on fault-free packs; a one-cell pack
says what it cannot evaluate. Conventions: current positive = charge, backward hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.twin.manifest import read_json_object
from battery_pipeline.science.twin.pack_sim import simulate_pack
from battery_pipeline.science.twin.runner import run_model
from battery_pipeline.science.twin.settings import DEFAULT_SETTINGS_FILE, TwinSettingsError, parse_settings
from battery_pipeline.science.twin.tables import outputs_to_tables, tables_to_outputs

MODEL = "pack_fault_diagnosis"
CATEGORY = {"internal_short": "cell", "voltage_sensor_offset": "sensor", "voltage_sensor_stuck": "sensor",
            "loose_connection": "connection"}
# (chemistry, sample period s, cells, seed): seeds away from those the design looked at (101-103)
# and from the benchmark's (9000+).
PACKS = [("NMC", 10.0, 12, 501), ("NCA", 1.0, 6, 502), ("NMC", 10.0, 8, 503)]
MAGNITUDE = {"internal_short": 150.0, "voltage_sensor_offset": -0.02, "voltage_sensor_stuck": None,
             "loose_connection": 0.015}


@pytest.fixture(scope="module")
def settings():
    raw = read_json_object(DEFAULT_SETTINGS_FILE, TwinSettingsError, "settings file not found")
    return parse_settings([(DEFAULT_SETTINGS_FILE, raw), (Path("<test>"), {"models": {MODEL: {"enabled": True}}})])


def diagnose(sim, settings, source_kind="pack_telemetry", telemetry=None):
    outputs, _ = run_model(MODEL, sim.telemetry if telemetry is None else telemetry, settings, source_kind,
                           parameters={"chemistry": sim.pack["chemistry"],
                                       "nominal_capacity_ah": sim.pack["nominal_capacity_ah"]})
    return outputs


@pytest.mark.parametrize("kind", list(CATEGORY))
@pytest.mark.parametrize("pack", PACKS)
def test_each_fault_is_found_on_its_cell_with_its_kind_and_category(settings, kind, pack):
    chemistry, dt, n_cells, seed = pack
    sim = simulate_pack(n_cells=n_cells, chemistry=chemistry, sample_period_s=dt, duration_h=36.0, seed=seed,
                        faults=[{"kind": kind, "magnitude": MAGNITUDE[kind]}])
    fault = sim.faults.iloc[0]
    alerts = diagnose(sim, settings)["fault_alerts"]
    assert len(alerts) == 1, alerts[["cell", "kind", "evidence"]].to_string()
    alert = alerts.iloc[0]
    assert (alert.cell, alert.kind, alert.category) == (fault.cell, kind, CATEGORY[kind])
    assert fault.onset_time_s <= alert.detected_time_s
    assert alert.first_evidence_time_s <= alert.detected_time_s
    assert alert.severity in ("warning", "critical") and alert.active_at_end
    if kind == "voltage_sensor_offset":  # the estimate is the injected offset, within noise
        assert alert.magnitude == pytest.approx(fault.magnitude, abs=0.003)
    if kind == "loose_connection":
        assert alert.magnitude == pytest.approx(fault.magnitude, rel=0.2)
    if kind == "internal_short":  # SOC loss rate vs the simulated leak (V/R over capacity)
        capacity = sim.cells.set_index("cell").capacity_ah[fault.cell]
        leak = sim.truth[f"leak_current_a_{fault.cell}"].to_numpy()
        rate_per_h = leak[leak > 0].mean() / capacity
        assert alert.magnitude == pytest.approx(rate_per_h, rel=0.25)


@pytest.mark.parametrize("chemistry, dt, n_cells, seed", [("NMC", 10.0, 12, 601), ("NCA", 10.0, 4, 602),
                                                          ("LFP", 10.0, 16, 603), ("NMC", 1.0, 8, 604),
                                                          ("LCO", 10.0, 12, 605)])
def test_fault_free_packs_with_spreads_excursions_and_spikes_raise_nothing(settings, chemistry, dt, n_cells, seed):
    sim = simulate_pack(n_cells=n_cells, chemistry=chemistry, sample_period_s=dt, duration_h=36.0, seed=seed)
    assert len(sim.alerts) and len(sim.spikes)  # voltage_monitor's events are there
    out = diagnose(sim, settings)
    assert out["fault_alerts"].empty, out["fault_alerts"][["cell", "kind", "evidence"]].to_string()
    assert out["evaluability"].evaluable.all()


def test_a_one_cell_pack_states_what_it_cannot_evaluate(settings):
    sim = simulate_pack(n_cells=1, n_temperature_sensors=1, duration_h=24.0, seed=606)
    out = diagnose(sim, settings)
    evaluation = out["evaluability"].set_index("kind")
    assert set(evaluation.index) == set(CATEGORY)
    assert evaluation.evaluable.to_dict() == {"internal_short": False, "voltage_sensor_offset": False,
                                              "voltage_sensor_stuck": True, "loose_connection": False}
    assert evaluation.loc[["internal_short", "voltage_sensor_offset", "loose_connection"], "reason"].str.contains(
        "needs >= 3 cells").all()
    assert out["fault_alerts"].empty and out["cell_resistance"].empty and out["rest_deviation"].empty


def test_a_stuck_sensor_on_a_single_cell_is_found_from_its_own_step_response(settings):
    sim = simulate_pack(n_cells=1, n_temperature_sensors=1, duration_h=24.0, seed=607, faults=[{"kind": "voltage_sensor_stuck"}])
    alerts = diagnose(sim, settings)["fault_alerts"]
    assert alerts.kind.tolist() == ["voltage_sensor_stuck"] and alerts.cell.tolist() == ["cell_01"]
    assert alerts.first_evidence_time_s.iloc[0] == sim.faults.onset_time_s.iloc[0]


def test_a_noisier_pack_than_the_default_estimates_its_noise_and_stays_quiet(settings):
    sim = simulate_pack(n_cells=8, duration_h=36.0, seed=608, excursions=False)
    volts = sim.telemetry.filter(like="_voltage_v")
    rng = np.random.default_rng(0)
    noisy = sim.telemetry.copy()
    noisy[volts.columns] = np.round(volts + rng.normal(0, 0.004, volts.shape), 3)  # 4 mV noise, 1 mV steps
    out = diagnose(sim, settings, telemetry=noisy)
    assert out["fault_alerts"].empty
    assert "voltage noise 4." in out["evaluability"].reason.iloc[0] or "voltage noise 3." in out["evaluability"].reason.iloc[0]


def test_outputs_survive_the_round_trip_through_their_tables(settings):
    for n_cells in (5, 1):
        sim = simulate_pack(n_cells=n_cells, n_temperature_sensors=min(n_cells, 3), duration_h=12.0, seed=609, faults=[{"kind": "voltage_sensor_stuck"}])
        outputs = diagnose(sim, settings)
        manifest = settings.model_classes()[MODEL].manifest
        frames = outputs_to_tables(manifest, outputs, "p", sim.telemetry["time_s"])
        assert set(frames) == {"fault_alerts", "fault_evaluability", "fault_cell_resistance", "fault_rest_deviation"}
        back = tables_to_outputs(manifest, frames, sim.telemetry.index)
        for name, value in outputs.items():
            pd.testing.assert_frame_equal(back[name], value, check_column_type=False)
