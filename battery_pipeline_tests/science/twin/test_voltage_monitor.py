"""voltage_monitor: debounce, exact alert records, hysteresis, temperature shift, severity."""

from __future__ import annotations

import numpy as np

from battery_pipeline_tests.science.twin.twin_data import logical_frame, model

N = 600  # 1 Hz, 10 min; NMC limits 2.5-4.2 V


def flat(value=3.9):
    return np.full(N, value)


def alerts_for(cells, temperature=None, **params):
    frame = logical_frame(np.arange(N, dtype=float), cells=cells,
                          temperatures=None if temperature is None else {"t1": temperature})
    out = model("voltage_monitor", chemistry="NMC", **params).process(frame)
    return out["alerts"], out["alert_active"]


def test_a_spike_shorter_than_min_duration_raises_nothing():
    v = flat()
    v[100:103] = 4.45  # 3 s, 250 mV over
    alerts, active = alerts_for({"c1": v}, min_duration_s=30.0)
    assert alerts.empty and not active.any()


def test_a_longer_excursion_raises_exactly_one_alert_with_its_start_end_and_extreme():
    v = flat()
    v[200:260] = 4.25
    v[231] = 4.28
    v[100:102] = 4.4  # a spike elsewhere changes nothing
    alerts, active = alerts_for({"c1": v, "c2": flat()}, min_duration_s=30.0)
    assert len(alerts) == 1
    alert = alerts.iloc[0]
    assert (alert.cell, alert.kind, alert.severity) == ("c1", "over_voltage", "warning")
    assert (alert.start_time_s, alert.end_time_s, alert.cleared_time_s) == (200.0, 259.0, 260.0)
    assert alert.duration_s == 59.0
    assert alert.extreme_v == 4.28 and alert.limit_v == 4.2
    assert not alert.active_at_end
    assert np.flatnonzero(active.to_numpy()).tolist() == list(range(200, 260))


def test_the_excursion_exactly_at_min_duration_counts():
    # Sample and hold: 30 samples beyond at 1 Hz last 30 s (first sample to the first back inside).
    v = flat()
    v[300:330] = 4.3
    assert len(alerts_for({"c1": v}, min_duration_s=30.0)[0]) == 1
    v[329] = 4.0
    assert alerts_for({"c1": v}, min_duration_s=30.0)[0].empty


def test_hysteresis_keeps_a_voltage_hovering_at_the_limit_to_one_alert():
    v = flat()
    for start in (100, 150, 200):  # 40 s at 4.21 V, then 10 s at 4.19 V (inside, but within 20 mV)
        v[start:start + 40] = 4.21
        v[start + 40:start + 50] = 4.19
    with_band, _ = alerts_for({"c1": v}, min_duration_s=30.0, hysteresis_v=0.02)
    assert len(with_band) == 1
    assert (with_band.start_time_s.iloc[0], with_band.end_time_s.iloc[0]) == (100.0, 249.0)
    chatter, _ = alerts_for({"c1": v}, min_duration_s=30.0, hysteresis_v=0.0)
    assert chatter.start_time_s.tolist() == [100.0, 150.0, 200.0]


def test_short_excursions_inside_an_active_alert_extend_it_but_alone_raise_nothing():
    v = flat()
    v[100:140] = 4.25  # raises
    v[140:150] = 4.19  # within the band: still active
    v[150:155] = 4.3  # short, but inside the active alert: it belongs to it
    alerts, _ = alerts_for({"c1": v}, min_duration_s=30.0)
    assert len(alerts) == 1 and alerts.end_time_s.iloc[0] == 154.0 and alerts.extreme_v.iloc[0] == 4.3


def test_under_voltage_critical_and_still_active_at_the_end():
    v = flat(3.0)
    v[500:] = 2.35  # 150 mV under 2.5 V: critical, never recovers
    alerts, _ = alerts_for({"c1": v}, min_duration_s=30.0, critical_margin_v=0.1)
    alert = alerts.iloc[0]
    assert (alert.kind, alert.severity, alert.start_time_s, alert.end_time_s) == ("under_voltage", "critical", 500.0, 599.0)
    assert alert.active_at_end and np.isnan(alert.cleared_time_s)
    assert alert.extreme_v == 2.35 and alert.limit_v == 2.5


def test_temperature_compensation_shifts_the_limit_linearly():
    v = flat(4.17)
    # 35 degC with -5 mV/degC: the upper limit is 4.2 - 0.05 = 4.15 V, so 4.17 V is over it.
    hot, _ = alerts_for({"c1": v}, temperature=35.0, high_v_per_c=-0.005, min_duration_s=30.0)
    assert len(hot) == 1 and hot.limit_v.iloc[0] == 4.15
    at_reference, _ = alerts_for({"c1": v}, temperature=25.0, high_v_per_c=-0.005, min_duration_s=30.0)
    assert at_reference.empty


def test_explicit_limits_override_the_chemistry_window():
    v = flat(4.0)
    alerts, _ = alerts_for({"c1": v}, high_v=3.95, min_duration_s=30.0)
    assert len(alerts) == 1 and alerts.limit_v.iloc[0] == 3.95
