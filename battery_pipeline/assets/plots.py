"""Plots for asset metadata: PNG figures embedded in markdown, rendered by the Dagster UI."""

from __future__ import annotations

import base64
import io

import dagster as dg
import pandas as pd


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # headless: step processes have no display
    import matplotlib.pyplot as plt

    return plt


def figure_markdown(fig, caption: str) -> dg.MetadataValue:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _figure().close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![{caption}](data:image/png;base64,{encoded})")


def capacity_fade_plot(features: pd.DataFrame, nominal_capacity_ah: float | None) -> dg.MetadataValue:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(features["cycle_number"], features["discharge_capacity_ah"], ".", markersize=3)
    if nominal_capacity_ah:
        ax.axhline(0.8 * nominal_capacity_ah, color="grey", linestyle="--", linewidth=0.8, label="80 % of nominal")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlabel("cycle")
    ax.set_ylabel("discharge capacity [Ah]")
    ax.set_title(f"Capacity fade: {features['cell_id'].iloc[0]}", fontsize=10)
    ax.grid(alpha=0.3)
    return figure_markdown(fig, "capacity fade")


def curves_plot(curves: pd.DataFrame, curve: str, ylabel: str, title: str) -> dg.MetadataValue:
    """One line per selected cycle, coloured from early (dark) to late (light)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    selected = curves[curves["curve"] == curve]
    cycles = sorted(selected["cycle_number"].unique())
    colours = plt.cm.viridis([i / max(len(cycles) - 1, 1) for i in range(len(cycles))])
    for colour, (cycle, group) in zip(colours, selected.groupby("cycle_number", sort=True)):
        ax.plot(group["voltage_v"], group["value"], color=colour, linewidth=1, label=str(cycle))
    if 0 < len(cycles) <= 8:
        ax.legend(title="cycle", fontsize=6, title_fontsize=7, loc="best")
    elif cycles:  # a legend of dozens of cycles would cover the curves: a colour bar instead
        norm = plt.Normalize(vmin=cycles[0], vmax=cycles[-1])
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="cycle")
    ax.set_xlabel("voltage [V]")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return figure_markdown(fig, title)
