"""Plots for asset metadata, embedded in markdown and rendered by the Dagster UI: PNG figures
(matplotlib) for the per-run reports, SVG charts (svg_charts) for the per-cell ones."""

from __future__ import annotations

import base64
import io

import dagster as dg
import pandas as pd

from battery_pipeline.assets.svg_charts import Series, line_chart, viridis


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
    """Discharge capacity per cycle (SVG: drawn for every cell, see svg_charts)."""
    series = [Series(features["cycle_number"].to_numpy(float), features["discharge_capacity_ah"].to_numpy(float), dots=True)]
    hline = (0.8 * nominal_capacity_ah, "80 % of nominal") if nominal_capacity_ah else None
    title = f"Capacity fade: {features['cell_id'].iloc[0]}"
    return line_chart(series, title, "cycle", "discharge capacity [Ah]", hline=hline)


def curves_plot(curves: pd.DataFrame, curve: str, ylabel: str, title: str) -> dg.MetadataValue:
    """One line per selected cycle, coloured from early (dark) to late (light) (SVG)."""
    selected = curves[curves["curve"] == curve]
    cycles = sorted(selected["cycle_number"].unique())
    series = [
        Series(group["voltage_v"].to_numpy(float), group["value"].to_numpy(float), viridis(i / max(len(cycles) - 1, 1)), str(cycle))
        for i, (cycle, group) in enumerate(selected.groupby("cycle_number", sort=True))
    ]
    # a legend of dozens of cycles would cover the curves: a colour scale instead
    scale = (cycles[0], cycles[-1], "cycle") if len(cycles) > 8 else None
    return line_chart(series, title, "voltage [V]", ylabel, colour_scale=scale)


def predicted_vs_true_plot(predictions: pd.DataFrame, title: str, unit: str) -> dg.MetadataValue:
    """One panel per model: test-cell predictions against the truth, the diagonal for reference.
    `predictions`: model_name, truth, prediction (test rows only)."""
    plt = _figure()
    names = sorted(predictions["model_name"].unique())
    columns = min(4, max(len(names), 1))
    rows = -(-len(names) // columns) or 1
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.8 * rows), squeeze=False)
    low, high = predictions[["truth", "prediction"]].min().min(), predictions[["truth", "prediction"]].max().max()
    for ax, name in zip(axes.flat, names):
        part = predictions[predictions["model_name"] == name]
        ax.plot(part["truth"], part["prediction"], ".", markersize=2, alpha=0.6)
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.supxlabel(f"true {unit}", fontsize=9)
    fig.supylabel(f"predicted {unit}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return figure_markdown(fig, title)


def error_by_cycle_plot(predictions: pd.DataFrame, title: str, unit: str) -> dg.MetadataValue:
    """Prediction error against cycle number, one line per test cell (rows of one model)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for cell, part in predictions.groupby("cell_id", sort=True):
        ax.plot(part["cycle_number"], part["prediction"] - part["truth"], linewidth=1, label=str(cell))
    ax.axhline(0, color="grey", linewidth=0.8)
    if predictions["cell_id"].nunique() <= 8:
        ax.legend(fontsize=6, title="cell", title_fontsize=7)
    ax.set_xlabel("cycle")
    ax.set_ylabel(f"predicted - true [{unit}]")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return figure_markdown(fig, title)


def rul_trajectories_plot(predictions: pd.DataFrame, title: str) -> dg.MetadataValue:
    """Predicted RUL with its interval against cycle, and the true RUL, per test cell."""
    plt = _figure()
    cells = sorted(predictions["cell_id"].unique())
    fig, axes = plt.subplots(1, max(len(cells), 1), figsize=(3.2 * max(len(cells), 1), 3), squeeze=False)
    for ax, cell in zip(axes.flat, cells):
        part = predictions[predictions["cell_id"] == cell].sort_values("cycle_number")
        ax.fill_between(part["cycle_number"], part["lower"], part["upper"], alpha=0.25, label="interval")
        ax.plot(part["cycle_number"], part["prediction"], linewidth=1, label="predicted")
        ax.plot(part["cycle_number"], part["truth"], color="black", linewidth=1, linestyle="--", label="true")
        ax.set_title(str(cell), fontsize=8)
        ax.set_xlabel("cycle", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("RUL [cycles]", fontsize=8)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    return figure_markdown(fig, title)
