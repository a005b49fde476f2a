"""Per-cell over/under-voltage alerts with temperature compensation, hysteresis and debounce."""

from __future__ import annotations

import numpy as np
import pandas as pd

from battery_pipeline.science.chemistry import VOLTAGE_WINDOWS_V
from battery_pipeline.science.twin.base import TwinModel, input_columns, mean_temperature, register_model
from battery_pipeline.science.twin.rests import true_runs

ALERT_COLUMNS = [
    "cell", "kind", "severity", "start_time_s", "end_time_s", "cleared_time_s", "duration_s",
    "extreme_v", "limit_v", "active_at_end",
]
# Types of an alert table with no rows, so that it is typed like one with rows (a warehouse
# table created from an untyped empty frame would store times as text).
_ALERT_DTYPES = {c: "float64" for c in ALERT_COLUMNS} | {"cell": object, "kind": object, "severity": object,
                                                        "active_at_end": bool}


def excursion_alarm(x: np.ndarray, limit: np.ndarray, time_s: np.ndarray, hysteresis: float,
                    min_duration_s: float) -> np.ndarray:
    """Alarm state per sample for "x above limit" (under-voltage is passed negated).

    An excursion (run of samples with x > limit) raises the alarm if it lasts at least
    `min_duration_s`, counted from its first sample to the first sample back inside (sample and
    hold; an excursion still going at the end counts to the last sample). The alarm holds until
    a sample with x <= limit - hysteresis. Vectorised: set and clear events, forward-filled.
    """
    n = len(x)
    beyond = x > limit  # NaN compares False: a missing reading is no excursion
    starts, ends = true_runs(beyond)
    until = time_s[np.minimum(ends + 1, n - 1)]
    keep = (until - time_s[starts]) >= min_duration_s
    # Mark every sample of a qualifying excursion: +1 at its start, -1 after its end, cumsum.
    marks = np.zeros(n + 1)
    np.add.at(marks, starts[keep], 1)
    np.add.at(marks, ends[keep] + 1, -1)
    raised = np.cumsum(marks[:-1]) > 0
    events = np.full(n, np.nan)
    events[x <= limit - hysteresis] = 0.0
    events[raised] = 1.0
    # Between events (inside the hysteresis band, short excursions, missing readings) the
    # state carries on; before any event there is no alarm.
    return pd.Series(events).ffill().fillna(0.0).to_numpy() > 0


@register_model("voltage_monitor")
class VoltageMonitor(TwinModel):
    def limits(self, temperature_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) limit per sample after the linear temperature shift."""
        p = self.params
        low0, high0 = VOLTAGE_WINDOWS_V[p["chemistry"]]
        low0 = p["low_v"] if p["low_v"] is not None else low0
        high0 = p["high_v"] if p["high_v"] is not None else high0
        delta = temperature_c - p["reference_temperature_c"]
        return low0 + p["low_v_per_c"] * delta, high0 + p["high_v_per_c"] * delta

    def process(self, data, state=None):
        p = self.params
        time_s = data["time"].to_numpy(dtype="float64")
        low, high = self.limits(mean_temperature(data, p["default_temperature_c"]))
        alarm_any = np.zeros(len(data), dtype=bool)
        rows = []
        for cell, volts in input_columns(data, "cell_voltages").items():
            v = volts.to_numpy(dtype="float64")
            # Under-voltage is over-voltage of the negated signal against the negated limit.
            for kind, sign, limit in (("over_voltage", 1.0, high), ("under_voltage", -1.0, low)):
                x, lim = sign * v, sign * limit
                alarm = excursion_alarm(x, lim, time_s, p["hysteresis_v"], p["min_duration_s"])
                alarm_any |= alarm
                first, last = true_runs(alarm)
                if not len(first):
                    continue
                # Extreme of each alert (a loop over alerts, not samples; NaN readings ignored).
                filled = np.where(np.isnan(x), -np.inf, x)
                peak_pos = np.array([f + int(np.argmax(filled[f:l + 1])) for f, l in zip(first, last)])
                extreme = sign * x[peak_pos]
                limit_at = sign * lim[peak_pos]
                beyond_by = sign * (extreme - limit_at)
                open_ = last == len(data) - 1
                cleared = np.where(open_, np.nan, time_s[np.minimum(last + 1, len(data) - 1)])
                rows.append(pd.DataFrame({
                    "cell": cell,
                    "kind": kind,
                    "severity": np.where(beyond_by >= p["critical_margin_v"], "critical", "warning"),
                    "start_time_s": time_s[first],
                    "end_time_s": time_s[last],
                    "cleared_time_s": cleared,
                    "duration_s": time_s[last] - time_s[first],
                    "extreme_v": extreme,
                    "limit_v": limit_at,
                    "active_at_end": open_,
                }))
        alerts = (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=ALERT_COLUMNS).astype(_ALERT_DTYPES))
        alerts = alerts.sort_values(["start_time_s", "cell", "kind"], ignore_index=True)[ALERT_COLUMNS]
        return {"alerts": alerts, "alert_active": pd.Series(alarm_any, index=data.index, name="alert_active")}
