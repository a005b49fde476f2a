"""Severson early-life features from per-cycle rows, and the elastic-net cycle-life model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.ml.severson import (
    SEVERSON_FEATURE_COLUMNS,
    SEVERSON_FEATURE_SETS,
    SeversonCycleLife,
    severson_features,
)


def _complete_cell() -> pd.DataFrame:
    """120 cycles with simple closed-form values; cycles after 100 are wild and must be ignored."""
    c = np.arange(1, 121, dtype=float)
    late = c > 100
    return pd.DataFrame(
        {
            "cell_id": "A",
            "cycle_number": c.astype(int),
            "discharge_capacity_ah": np.where(late, 5.0, 2.0 - 0.001 * c),
            "delta_q_variance_ah2": np.where(late, 1.0, 1e-6 * c),
            "delta_q_min_ah": -1e-4 * c,
            "delta_q_skewness": -0.5,
            "delta_q_kurtosis": 7.0,  # excess; Pearson 10
            "cc_charge_time_s": 3000.0 + c,
            "cv_charge_time_s": 600.0,
            "temperature_mean_c": np.where(late, 90.0, 30.0),
            "cycle_duration_s": 10_000.0,
            "resistance_cycler_ohm": 0.02 + 1e-5 * c,
            "resistance_dcir_ohm": 0.5,
        }
    )


def _gappy_cell() -> pd.DataFrame:
    """80 cycles only; no dQ curve after cycle 74, no capacity at cycle 2, no temperatures or
    cycler resistance (DCIR only), no CV phase recorded."""
    c = np.arange(1, 81, dtype=float)
    return pd.DataFrame(
        {
            "cell_id": "B",
            "cycle_number": c.astype(int),
            "discharge_capacity_ah": np.where(c == 2, np.nan, 1.1 - 0.0005 * c),
            "delta_q_variance_ah2": np.where(c >= 75, np.nan, 1e-5),
            "delta_q_min_ah": -0.001,
            "delta_q_skewness": 2.0,
            "delta_q_kurtosis": -2.0,  # Pearson 1
            "cc_charge_time_s": 1000.0,
            "cv_charge_time_s": np.nan,
            "temperature_mean_c": np.nan,
            "cycle_duration_s": 5000.0,
            "resistance_cycler_ohm": np.nan,
            "resistance_dcir_ohm": np.where(c < 10, np.nan, 0.03),
        }
    )


def test_features_of_a_complete_cell():
    out = severson_features(pd.concat([_gappy_cell(), _complete_cell()], ignore_index=True))
    assert list(out.index) == ["A", "B"]
    a = out.loc["A"]
    assert a["delta_q_cycle"] == 100 and a["n_cycles"] == 100
    assert a["log10_var_delta_q"] == pytest.approx(-4.0)  # var 1e-4 at cycle 100
    assert a["log10_abs_min_delta_q"] == pytest.approx(-2.0)
    assert a["log10_abs_skew_delta_q"] == pytest.approx(math.log10(0.5))
    assert a["log10_kurtosis_delta_q"] == pytest.approx(1.0)
    assert a["capacity_cycle2_ah"] == pytest.approx(1.998)
    assert a["capacity_max_minus_cycle2_ah"] == pytest.approx(0.0, abs=1e-12)  # cycle 101's 5 Ah is ignored
    assert a["capacity_fade_slope_ah_per_cycle"] == pytest.approx(-0.001)
    assert a["capacity_fade_intercept_ah"] == pytest.approx(2.0)
    assert a["charge_time_mean_s"] == pytest.approx(3604.0)  # cycles 2..6: 3000 + 4 + 600
    assert a["temperature_integral_c_s"] == pytest.approx(99 * 30.0 * 10_000)  # cycles 2..100
    assert a["resistance_source"] == "resistance_cycler_ohm"
    assert a["resistance_min_ohm"] == pytest.approx(0.02002)
    assert a["resistance_change_ohm"] == pytest.approx(98 * 1e-5)


def test_features_degrade_gracefully():
    b = severson_features(pd.concat([_complete_cell(), _gappy_cell()]), late_cycle=100).loc["B"]
    assert b["delta_q_cycle"] == 74  # the latest cycle with a dQ curve
    assert b["log10_var_delta_q"] == pytest.approx(-5.0)
    assert b["log10_kurtosis_delta_q"] == pytest.approx(0.0)
    assert b["capacity_cycle2_ah"] == pytest.approx(1.1 - 0.0015)  # first capacity after cycle 2
    assert b["charge_time_mean_s"] == pytest.approx(1000.0)  # a missing CV phase counts as 0 s
    assert math.isnan(b["temperature_integral_c_s"])
    assert b["resistance_source"] == "resistance_dcir_ohm"
    assert b["resistance_change_ohm"] == 0.0
    # a table without the optional columns at all still gives a row, of NaNs
    bare = severson_features(_complete_cell()[["cell_id", "cycle_number", "discharge_capacity_ah"]])
    assert bare.loc["A", "capacity_cycle2_ah"] == pytest.approx(1.998)
    assert bare.loc["A", SEVERSON_FEATURE_SETS["variance"]].isna().all()
    assert list(bare.columns[: len(SEVERSON_FEATURE_COLUMNS)]) == SEVERSON_FEATURE_COLUMNS


def _cells(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-cell features where log10(life) = 1.2 - 0.4 x log10 var dQ (+ 2 % noise), as in the
    paper's single-feature fit; the other features are noise or missing."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(SEVERSON_FEATURE_COLUMNS))), columns=SEVERSON_FEATURE_COLUMNS)
    frame["log10_var_delta_q"] = rng.uniform(-5.0, -3.0, n)
    frame["temperature_integral_c_s"] = np.nan  # a dataset without temperatures
    life = 10 ** (1.2 - 0.4 * frame["log10_var_delta_q"] + rng.normal(0.0, 0.01, n))
    return frame, life.to_numpy()


@pytest.mark.parametrize("feature_set", sorted(SEVERSON_FEATURE_SETS))
def test_cycle_life_model_recovers_the_variance_law(feature_set):
    X, life = _cells(40, seed=1)
    model = SeversonCycleLife(feature_set=feature_set).fit(X[:30], life[:30])
    assert list(model.feature_names_in_) == SEVERSON_FEATURE_SETS[feature_set]
    predicted = model.predict(X[30:])
    assert (predicted > 0).all()
    relative = np.abs(predicted / life[30:] - 1)
    assert relative.mean() < 0.06, relative.mean()  # noise alone is ~2 %; lives span 240-1600


def test_cycle_life_model_input_rules():
    X, life = _cells(10, seed=2)
    model = SeversonCycleLife().fit(X[["log10_var_delta_q"]].to_numpy(), life)
    assert model.predict(X[["log10_var_delta_q"]].to_numpy()).shape == (10,)
    with pytest.raises(ValueError, match="exactly"):
        SeversonCycleLife().fit(X.to_numpy(), life)
    with pytest.raises(ValueError, match="lacks"):
        SeversonCycleLife(feature_set="full").fit(X[["log10_var_delta_q"]], life)
    with pytest.raises(ValueError, match="> 0"):
        SeversonCycleLife().fit(X, np.r_[life[:-1], 0.0])
    with pytest.raises(ValueError, match="feature_set"):
        SeversonCycleLife(feature_set="voltage").fit(X, life)
