"""Plots of pack telemetry and twin outputs for asset metadata (PNG in markdown, see plots.py).

`PLOTS_BY_MODEL` says which figures a model's asset shows; a model without an entry shows none.
Long series are thinned to at most MAX_POINTS per line: a figure 600 px wide cannot show more,
and drawing 100 000 points per cell would cost seconds per materialization.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import dagster as dg
import numpy as np
import pandas as pd

from battery_pipeline.assets.plots import _figure, figure_markdown

MAX_POINTS = 2000


def _thin(n: int) -> np.ndarray:
    return np.arange(0, n, max(1, int(np.ceil(n / MAX_POINTS))))


def _hours(time_s) -> np.ndarray:
    return np.asarray(time_s, dtype="float64") / 3600.0


def voltage_spread_plot(time_s: pd.Series, cell_voltages: pd.DataFrame, title: str) -> dg.MetadataValue:
    """Lowest, mean and highest cell voltage over time, and their spread (right axis)."""
    plt = _figure()
    keep = _thin(len(time_s))
    volts = cell_voltages.to_numpy(dtype="float64")[keep]
    hours = _hours(time_s.to_numpy()[keep])
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    low, high = np.nanmin(volts, axis=1), np.nanmax(volts, axis=1)
    ax.fill_between(hours, low, high, color="tab:blue", alpha=0.25, linewidth=0, label="min-max cell")
    ax.plot(hours, np.nanmean(volts, axis=1), color="tab:blue", linewidth=0.8, label="mean cell")
    ax.set_xlabel("time [h]")
    ax.set_ylabel("cell voltage [V]")
    spread_ax = ax.twinx()
    spread_ax.plot(hours, (high - low) * 1000.0, color="tab:red", linewidth=0.6, label="spread")
    spread_ax.set_ylabel("spread [mV]", color="tab:red")
    ax.legend(loc="lower left", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return figure_markdown(fig, title)


def soc_trace_plot(time_s: pd.Series, soc_cells: pd.DataFrame, soc_pack: pd.Series, anchors: pd.Series,
                   title: str) -> dg.MetadataValue:
    """Pack SOC (mean of cells) with the cells' range, and the rest anchors marked."""
    plt = _figure()
    keep = _thin(len(time_s))
    hours = _hours(time_s.to_numpy())
    cells = soc_cells.to_numpy(dtype="float64")
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.fill_between(hours[keep], np.nanmin(cells[keep], axis=1), np.nanmax(cells[keep], axis=1),
                    color="tab:green", alpha=0.25, linewidth=0, label="cells min-max")
    ax.plot(hours[keep], soc_pack.to_numpy()[keep], color="tab:green", linewidth=0.9, label="pack (mean)")
    anchor = anchors.to_numpy(dtype=bool)
    ax.plot(hours[anchor], soc_pack.to_numpy()[anchor], "o", color="black", markersize=4,
            label=f"rest anchors ({int(anchor.sum())})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time [h]")
    ax.set_ylabel("SOC")
    ax.legend(loc="best", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return figure_markdown(fig, title)


def alert_timeline_plot(alerts: pd.DataFrame, cells: list[str], time_range_s: tuple[float, float],
                        title: str) -> dg.MetadataValue:
    """One row per cell; each alert a bar from start to end, coloured by kind, hatched if critical."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, max(2.0, 0.22 * len(cells) + 1.0)))
    rows = {cell: i for i, cell in enumerate(cells)}
    colours = {"over_voltage": "tab:red", "under_voltage": "tab:blue"}
    for alert in alerts.itertuples(index=False):
        start, end = alert.start_time_s / 3600.0, alert.end_time_s / 3600.0
        width = max(end - start, (time_range_s[1] - time_range_s[0]) / 3600.0 / 400)  # visible when short
        ax.barh(rows.get(alert.cell, -1), width, left=start, height=0.6, color=colours.get(alert.kind, "grey"),
                hatch="///" if alert.severity == "critical" else None, edgecolor="black", linewidth=0.4)
    for kind, colour in colours.items():
        ax.barh(-10, 0, color=colour, label=kind)  # legend entries only
    ax.set_ylim(-0.8, len(cells) - 0.2)
    ax.set_yticks(range(len(cells)), cells, fontsize=6)
    ax.set_xlim(time_range_s[0] / 3600.0, time_range_s[1] / 3600.0)
    ax.set_xlabel("time [h]")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(f"{title}: {len(alerts)} alert(s), hatched = critical", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return figure_markdown(fig, title)


def _soc_plots(outputs: Mapping[str, Any], data: pd.DataFrame, time_s: pd.Series, pack_id: str) -> dict:
    return {"soc_trace": soc_trace_plot(time_s, outputs["soc_cells"], outputs["soc_pack"], outputs["rest_anchor"],
                                        f"SOC with rest anchors: {pack_id}")}


def _alert_plots(outputs: Mapping[str, Any], data: pd.DataFrame, time_s: pd.Series, pack_id: str) -> dict:
    cells = [c.split(":", 1)[1] for c in data.columns if isinstance(c, str) and c.startswith("cell_voltages:")]
    span = (float(time_s.iloc[0]), float(time_s.iloc[-1])) if len(time_s) else (0.0, 1.0)
    return {"alert_timeline": alert_timeline_plot(outputs["alerts"], cells, span, f"Voltage alerts: {pack_id}")}


# model -> figures(outputs, the model's resolved inputs, time_s, pack id) -> {metadata key: value}
PLOTS_BY_MODEL: dict[str, Callable[..., dict[str, dg.MetadataValue]]] = {
    "soc_ocv_estimation": _soc_plots,
    "voltage_monitor": _alert_plots,
}
