"""Per-cycle anomaly scores: injected anomalies are found with the right signal and reference;
clean cells stay quiet; what cannot be compared says why."""

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.anomalies import ANOMALY_COLUMNS, AnomalyConfig, score_cycles

NOMINAL_AH = 2.0


def fleet(seed: int, n_cells: int = 8, n_cycles: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A fleet of clean cells: slow capacity fade and resistance growth, Gaussian cycler noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_cells):
        cycle = np.arange(1, n_cycles + 1)
        fade = 1.0 - rng.uniform(0.8, 1.2) * 1e-3 * cycle
        rows.append(pd.DataFrame({
            "cell_id": f"cell_{c}",
            "cycle_number": cycle,
            "discharge_capacity_ah": NOMINAL_AH * 0.98 * fade + rng.normal(0, 0.003, n_cycles),
            "discharge_current_mean_a": -1.0 + rng.normal(0, 0.002, n_cycles),
            "resistance_dcir_ohm": 0.05 * (1 + 5e-4 * cycle) + rng.normal(0, 0.0005, n_cycles),
            "temperature_rise_c": 6.0 + rng.normal(0, 0.2, n_cycles),
            "coulombic_efficiency": 0.998 + rng.normal(0, 4e-4, n_cycles),
            "cycle_class": "full",
        }))
    cells = pd.DataFrame({"cell_id": [f"cell_{c}" for c in range(n_cells)], "dataset": "test lab",
                          "chemistry": "NMC", "nominal_capacity_ah": NOMINAL_AH})
    return pd.concat(rows, ignore_index=True), cells


def row(scores: pd.DataFrame, cell: str, cycle: int) -> pd.Series:
    return scores.loc[(scores["cell_id"] == cell) & (scores["cycle_number"] == cycle)].iloc[0]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_clean_fleet_raises_nothing(seed):
    features, cells = fleet(seed)
    scores = score_cycles(features, cells)
    assert list(scores.columns) == ANOMALY_COLUMNS
    assert len(scores) == len(features)
    assert (scores["severity"] == "none").all(), scores.loc[scores["severity"] != "none", "reason"].head().tolist()
    # both references were evaluated on all but each cell's first cycles (3 for a trend, then 8
    # residuals for a spread: 12 of 200)
    assert scores["z_capacity_own"].notna().mean() == pytest.approx(1 - 12 / 200, abs=0.005)
    assert scores["z_capacity_fleet"].notna().mean() > 0.95


def test_each_injected_anomaly_found_with_its_signal():
    features, cells = fleet(21)
    at = lambda cell, cycle: (features["cell_id"] == cell) & (features["cycle_number"] == cycle)  # noqa: E731
    features.loc[at("cell_1", 120), "discharge_capacity_ah"] -= 0.06  # 3 % capacity drop, one cycle
    features.loc[at("cell_2", 80), "resistance_dcir_ohm"] *= 1.15  # resistance spike
    features.loc[at("cell_3", 150), "temperature_rise_c"] += 4.0  # temperature excursion
    features.loc[at("cell_4", 60), "coulombic_efficiency"] = 0.985  # abnormal efficiency
    scores = score_cycles(features, cells)
    for cell, cycle, signal in [("cell_1", 120, "capacity"), ("cell_2", 80, "resistance"),
                                ("cell_3", 150, "temperature"), ("cell_4", 60, "efficiency")]:
        hit = row(scores, cell, cycle)
        assert hit["severity"] != "none" and hit["signal"] == signal, hit["reason"]
        assert hit["reason"].startswith({"efficiency": "coulombic efficiency"}.get(signal, signal)), hit["reason"]
    flagged = scores.loc[scores["severity"] != "none", ["cell_id", "cycle_number"]]
    # one outlier moves the trailing median by nothing, so the next cycles stay quiet
    assert len(flagged) <= 6, flagged


def test_a_capacity_step_is_flagged_where_it_happens_then_followed():
    features, cells = fleet(22)
    later = (features["cell_id"] == "cell_5") & (features["cycle_number"] >= 100)
    features.loc[later, "discharge_capacity_ah"] -= 0.08  # a lost parallel path: -4 % for good
    scores = score_cycles(features, cells)
    cell = scores.loc[scores["cell_id"] == "cell_5"].set_index("cycle_number")
    assert cell.loc[100, "severity"] == "critical" and cell.loc[100, "signal"] == "capacity"
    assert "below the cell's trend" in cell.loc[100, "reason"]
    # the own trend follows the step within its window; the fleet keeps seeing the cell apart
    assert (cell.loc[110:, "z_capacity_own"].abs() < 5).all()
    assert (cell.loc[100:130, "z_capacity_fleet"] < -1.5).all()


def test_a_cell_ageing_apart_from_its_fleet_is_flagged_by_the_fleet_only():
    features, cells = fleet(23, n_cells=16)
    cell6 = features["cell_id"] == "cell_6"
    extra = np.clip(features.loc[cell6, "cycle_number"].to_numpy() - 50, 0, None) * 2e-3 * NOMINAL_AH
    features.loc[cell6, "discharge_capacity_ah"] -= extra  # fades 3x faster after cycle 50
    scores = score_cycles(features, cells)  # rows ordered by cell, then cycle
    mine = (scores["cell_id"] == "cell_6").to_numpy()
    own_flags = scores.loc[mine & (scores["z_capacity_own"].abs() >= 5)]
    fleet_flags = scores.loc[mine & (scores["reference"] == "fleet") & (scores["severity"] != "none")]
    assert own_flags.empty  # smooth: nothing against its own trend
    assert fleet_flags["cycle_number"].min() < 150
    assert "against the fleet's" in fleet_flags["reason"].iloc[0]
    others = scores.loc[~mine]
    assert (others["severity"] == "none").all()


def test_partial_cycles_are_kept_unscored_and_do_not_move_the_trend():
    features, cells = fleet(24, n_cells=1)
    partial = features["cycle_number"].isin([50, 51])
    features.loc[partial, "discharge_capacity_ah"] = 0.3
    features.loc[partial, "cycle_class"] = "partial"
    scores = score_cycles(features, cells)
    assert not scores.loc[partial.to_numpy(), "scored"].any()
    assert scores.loc[partial.to_numpy(), "anomaly_score"].isna().all()
    assert scores.loc[partial.to_numpy(), "reason"].str.contains("partial cycle is not comparable").all()
    assert (scores["severity"] == "none").all()


def test_no_fleet_without_stated_metadata_or_current():
    features, cells = fleet(25, n_cells=6)
    cells.loc[cells["cell_id"] == "cell_0", "nominal_capacity_ah"] = np.nan
    features.loc[features["cell_id"] == "cell_1", "discharge_current_mean_a"] = np.nan
    scores = score_cycles(features, cells)
    c0 = scores.loc[scores["cell_id"] == "cell_0"]
    c1 = scores.loc[scores["cell_id"] == "cell_1"]
    assert c0["z_capacity_fleet"].isna().all() and c0["fleet"].str.contains("states no rated capacity").all()
    assert c1["z_capacity_fleet"].isna().all() and c1["fleet"].str.contains("protocol is unknown").all()
    assert c0["z_capacity_own"].notna().sum() > 150  # its own trend still compared
    # the four cells left are below min_fleet_cells + 1: not compared, and the reason says so
    assert scores.loc[scores["cell_id"] == "cell_2", "z_capacity_fleet"].isna().all()
    assert "fewer than 4 other cells" in row(scores, "cell_2", 100)["reason"]


def test_another_protocol_is_another_fleet():
    features, cells = fleet(26, n_cells=10)
    fast = features["cell_id"].isin([f"cell_{c}" for c in range(5)])
    features.loc[fast, "discharge_current_mean_a"] *= 2.0  # a 1C fleet beside a 0.5C fleet
    features.loc[fast, "discharge_capacity_ah"] -= 0.002 * features.loc[fast, "cycle_number"]  # ages 2x faster
    scores = score_cycles(features, cells)
    assert scores["fleet"].nunique() == 2
    assert (scores["severity"] == "none").all(), scores.loc[scores["severity"] != "none", "reason"].head(3).tolist()


def test_first_cycles_have_no_history_and_say_so():
    features, cells = fleet(27, n_cells=1, n_cycles=20)
    scores = score_cycles(features, cells, AnomalyConfig())
    first = row(scores, "cell_0", 1)
    assert np.isnan(first["anomaly_score"]) and first["reason"].startswith("not scored: own trend not compared: fewer than 12")
    # the 12th cycle (index 11) is the last without a spread; the 13th is compared
    assert np.isnan(row(scores, "cell_0", 12)["z_capacity_own"]) and np.isfinite(row(scores, "cell_0", 13)["z_capacity_own"])
    assert "fleet not compared: fewer than 4 other cells" in first["reason"]


def test_injection_test_finds_the_injected_and_beats_the_blind_baseline_on_a_fading_fleet():
    from battery_pipeline.science.anomalies import injection_test

    features, cells = fleet(28)
    result = injection_test(features, cells, seed=1, rounds=2)
    everything = result["all"]
    assert everything["injected"] == 8 * 4 * 2  # one per signal per cell per round
    assert everything["recall"] > 0.8 and everything["precision"] > 0.9
    assert everything["f1"] > everything["baseline_f1"]
    # the fade widens the blind detector's spread, so a 3 % jump hides in it; not in the trend's
    assert result["capacity"]["baseline_recall"] < 0.5 < result["capacity"]["recall"]
    assert result["capacity"]["clean_flags"] == 0


def test_the_causality_probe_finds_no_leak_and_would_find_one():
    import battery_pipeline.science.anomalies as anomalies

    features, cells = fleet(29)
    probe = anomalies.causality_probe(features, cells)
    assert len(probe["probed"]) == 3 and probe["moved"] == []
    # a trend that peeks one cycle ahead (a centred median) is caught
    original = anomalies._own_scores

    def peeking(values, signal, config):
        z, trend, spread = original(values, signal, config)
        ahead = pd.Series(values).shift(-1).to_numpy()
        return (values - np.where(np.isfinite(ahead), ahead, trend)) / spread, trend, spread

    anomalies._own_scores = peeking
    try:
        leaked = anomalies.causality_probe(features, cells)
    finally:
        anomalies._own_scores = original
    assert leaked["moved"] and all(m["cycles_moved"] >= 1 for m in leaked["moved"])
