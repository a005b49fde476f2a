"""The twin models against pack_sim's ground truth (72 h packs of 12 cells, 10 s sampling).

Conventions shared with the simulator: current positive = charge, held backward (the current at
sample k flowed during (t[k-1], t[k]]), equivalent cycles = discharged Ah / nominal capacity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.twin.models.available_energy.model import ocv_energy_curve
from battery_pipeline.science.twin.pack_sim import simulate_pack
from battery_pipeline.science.twin.rests import true_runs
from battery_pipeline.science.twin.runner import run_models
from battery_pipeline.science.twin.settings import DEFAULT_SETTINGS_FILE, load_settings

PACKS = [("NMC", 1), ("NMC", 2), ("NCA", 3), ("LFP", 4), ("LCO", 5)]
SOC_TOLERANCE = 0.03  # issue 5: SOC error at most 3 % after rests of 30 min or more, every chemistry


def run_pack(sim, settings=None, state=None, telemetry=None):
    settings = settings or load_settings(DEFAULT_SETTINGS_FILE, with_local=False)
    parameters = {"chemistry": sim.pack["chemistry"], "nominal_capacity_ah": sim.pack["nominal_capacity_ah"],
                  "min_duration_s": sim.pack["min_alert_duration_s"]}
    return run_models(sim.telemetry if telemetry is None else telemetry, settings, "pack_telemetry",
                      state=state, parameters=parameters)


@pytest.fixture(scope="module")
def packs():
    result = {}
    for chemistry, seed in PACKS:
        sim = simulate_pack(chemistry=chemistry, seed=seed, duration_h=72.0)
        result[(chemistry, seed)] = (sim, run_pack(sim))
    return result


def true_soc(sim, columns) -> np.ndarray:
    return sim.truth[[f"soc_{c}" for c in columns]].to_numpy()


@pytest.mark.parametrize("pack", PACKS)
def test_eq_cycles_equal_the_simulated_throughput(packs, pack):
    sim, out = packs[pack]
    eq = out["eq_cycles"]["eq_cycles"].to_numpy()
    truth = sim.truth["eq_cycles_measured"].to_numpy()
    assert truth[-1] > 5  # a meaningful amount of use
    assert np.max(np.abs(eq - truth)) <= 1e-9 * truth[-1]


def test_eq_cycles_follow_a_noisy_current_and_batches_add_up_exactly():
    sim = simulate_pack(chemistry="NMC", seed=11, duration_h=48.0, current_noise_a=0.01)
    full = run_pack(sim)
    truth = sim.truth["eq_cycles_measured"].to_numpy()
    eq = full["eq_cycles"]["eq_cycles"].to_numpy()
    assert np.max(np.abs(eq - truth)) <= 1e-9 * truth[-1]
    # Three batches, each continuing from the state the previous one left.
    pieces, state = [], None
    for rows in np.array_split(np.arange(len(sim.telemetry)), 3):
        part = run_pack(sim, state=state, telemetry=sim.telemetry.iloc[rows])
        pieces.append(part["eq_cycles"]["eq_cycles"])
        state = part.state
    np.testing.assert_array_equal(pd.concat(pieces).to_numpy(), eq)


@pytest.mark.parametrize("pack", PACKS)
def test_soc_anchors_are_exactly_the_long_rests(packs, pack):
    sim, out = packs[pack]
    _, last = true_runs(sim.truth["in_long_rest"].to_numpy())
    assert np.flatnonzero(out["soc_ocv_estimation"]["rest_anchor"].to_numpy()).tolist() == last.tolist()


@pytest.mark.parametrize("pack", PACKS)
def test_soc_after_long_rests_within_3_percent(packs, pack):
    # The model's SOC output at the last sample of every simulated rest of >= 30 min, every cell;
    # LFP included (its plateau anchors are averaged and weighed against the count).
    sim, out = packs[pack]
    soc = out["soc_ocv_estimation"]["soc_cells"]
    _, rest_ends = true_runs(sim.truth["in_long_rest"].to_numpy())
    assert len(rest_ends) >= 20
    error = np.abs(soc.to_numpy() - true_soc(sim, soc.columns))[rest_ends]
    assert error.max() <= SOC_TOLERANCE


@pytest.mark.parametrize("pack", PACKS)
def test_soc_uncertainty_is_stated_honestly_and_lfp_anchors_weigh_less(packs, pack):
    # Errors at the anchors within 3x the stated soc_sigma (the defaults assume 2 mV of rest-voltage
    # error; the simulator's averaged noise is smaller, so the statement is conservative here).
    sim, out = packs[pack]
    soc_out = out["soc_ocv_estimation"]
    anchors = soc_out["rest_anchor"].to_numpy()
    soc, sigma = soc_out["soc_cells"], soc_out["soc_sigma"]
    error = np.abs(soc.to_numpy() - true_soc(sim, soc.columns))[anchors]
    assert np.all(error <= 3.0 * sigma.to_numpy()[anchors])
    table = soc_out["anchors"]
    assert len(table) == anchors.sum() * soc.shape[1]
    assert table.weight.between(0.0, 1.0).all()
    first = table[table.end_time_s == table.end_time_s.min()]
    assert (first.weight == 1.0).all() and first.counted_soc.isna().all()  # no start SOC given
    later = table[table.end_time_s > table.end_time_s.min()]
    if pack[0] == "LFP":
        # The plateau: the anchors are trusted only partly and the stated uncertainty stays ~2 %.
        assert later.weight.median() < 0.8 and np.median(sigma.to_numpy()[anchors]) > 0.01
    else:
        assert later.weight.median() > 0.9 and np.median(sigma.to_numpy()[anchors]) < 0.01


@pytest.mark.parametrize("pack", PACKS)
def test_rest_soc_errors_stay_within_three_sigma_of_the_stated_confidence(packs, pack):
    # confidence = 1 / (1 + (sigma/resolution)^2), so sigma = resolution * sqrt(1/c - 1). On the
    # LFP plateau sigma is several % and so are the errors; the confidence says so.
    sim, out = packs[pack]
    cells = out["imbalance_analysis"]["cell_soc"]
    truth = sim.truth.set_index("time_s")
    expected = np.array([truth.at[t, f"soc_{c}"] for t, c in zip(cells.end_time_s, cells.cell)])
    sigma = 0.01 * np.sqrt(1.0 / cells.confidence.to_numpy() - 1.0)
    assert np.all(np.abs(cells.soc.to_numpy() - expected) <= 3.0 * sigma)


@pytest.mark.parametrize("pack", [p for p in PACKS if p[0] == "NMC"])
def test_nmc_soc_offsets_recovered_within_2_percent(packs, pack):
    sim, out = packs[pack]
    cells = out["imbalance_analysis"]["cell_soc"]
    truth = sim.truth.set_index("time_s")
    true_offset = np.array([truth.at[t, f"soc_{c}"] - truth.at[t, "soc_mean"]
                            for t, c in zip(cells.end_time_s, cells.cell)])
    assert np.abs(cells.soc_offset.to_numpy() - true_offset).max() <= 0.02
    # The first rest is the pack's initial state: the offsets the simulator drew.
    first = cells[cells.end_time_s == cells.end_time_s.min()].set_index("cell").soc_offset
    drawn = sim.cells.set_index("cell").soc_offset
    assert np.abs(first - drawn.loc[first.index]).max() <= 0.02
    summary = out["imbalance_analysis"]["summary"].iloc[0]
    assert summary.n_confident_rests == summary.n_rests


@pytest.mark.parametrize("pack", PACKS)
def test_voltage_alerts_match_the_injected_excursions_and_ignore_the_spikes(packs, pack):
    sim, out = packs[pack]
    alerts = out["voltage_monitor"]["alerts"]
    key = ["cell", "kind", "start_time_s", "end_time_s"]
    found = alerts[key].sort_values(key, ignore_index=True)
    injected = sim.alerts[key].sort_values(key, ignore_index=True)
    assert len(sim.spikes) > 0 and len(injected) > 0
    pd.testing.assert_frame_equal(found, injected, check_dtype=False)
    merged = alerts.merge(sim.alerts, on=key, suffixes=("", "_injected"))
    # The telemetry is rounded to 0.1 mV; the injected extreme is the value before rounding.
    assert np.abs(merged.extreme_v - merged.extreme_v_injected).max() <= 5e-5
    assert not alerts.active_at_end.any()


@pytest.mark.parametrize("pack", PACKS)
def test_available_energy_close_to_the_true_stored_energy(packs, pack):
    # Truth: each cell's own capacity over the OCV integral at its true SOC. The model uses the
    # nominal capacity, so the cells' 2 % capacity spread is the expected difference.
    sim, out = packs[pack]
    energy = out["available_energy"]["energy_pack_wh"].to_numpy()
    anchors = out["soc_ocv_estimation"]["rest_anchor"].to_numpy()
    grid, integral = ocv_energy_curve(sim.pack["chemistry"], 25.0)
    cells = sim.cells.set_index("cell")
    names = out["available_energy"]["energy_cells_wh"].columns
    true_energy = (np.interp(true_soc(sim, names), grid, integral) * cells.loc[names, "capacity_ah"].to_numpy()).sum(axis=1)
    relative = np.abs(energy - true_energy)[anchors] / true_energy[anchors]
    assert relative.max() <= 0.03
