"""Small SVG charts for per-cell asset metadata, written directly as text.

Why not matplotlib here: a matplotlib figure costs 0.1-0.3 s to draw and encode, three per cell,
which was as much as computing the cell's features; a batch of 1,000 cells would spend minutes on
plots. These charts (lines or dots, axes with round ticks, a title, a legend or colour scale)
take 2-8 ms and are embedded in markdown as an SVG data URI, as the PNGs were.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from html import escape

import dagster as dg
import numpy as np

WIDTH, HEIGHT = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 62, 16, 34, 42
MAX_POINTS = 400  # per series: enough for a smooth line at this width, keeps the SVG small
VIRIDIS = ["#440154", "#482878", "#3e4a89", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"]


@dataclass
class Series:
    x: np.ndarray
    y: np.ndarray
    colour: str = "#1f77b4"
    label: str | None = None
    dots: bool = False


def viridis(fraction: float) -> str:
    """A colour from dark (0) to light (1) on the viridis scale."""
    return VIRIDIS[min(int(round(fraction * (len(VIRIDIS) - 1))), len(VIRIDIS) - 1)]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps) from just below `low` to just above `high`."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        high = low + (abs(low) or 1.0) * 0.1
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _label(value: float) -> str:
    return f"{value:.4g}"


def line_chart(series: list[Series], title: str, xlabel: str, ylabel: str, hline: tuple[float, str] | None = None,
               colour_scale: tuple[float, float, str] | None = None) -> dg.MetadataValue:
    """An SVG chart of the series as markdown metadata. `hline` = (y, label) draws a dashed
    reference line; `colour_scale` = (low, high, label) notes what the colours mean instead of a
    legend (many series)."""
    xs = np.concatenate([np.asarray(s.x, float) for s in series]) if series else np.zeros(0)
    ys = np.concatenate([np.asarray(s.y, float) for s in series]) if series else np.zeros(0)
    if hline is not None:
        ys = np.append(ys, hline[0])
    finite = np.isfinite(xs) & np.isfinite(ys[: len(xs)]) if len(xs) else np.zeros(0, bool)
    x_low, x_high = (float(xs[finite].min()), float(xs[finite].max())) if finite.any() else (0.0, 1.0)
    y_all = ys[np.isfinite(ys)]
    y_low, y_high = (float(y_all.min()), float(y_all.max())) if len(y_all) else (0.0, 1.0)
    x_ticks, y_ticks = nice_ticks(x_low, x_high), nice_ticks(y_low, y_high)
    if x_ticks:
        x_low, x_high = min(x_low, x_ticks[0]), max(x_high, x_ticks[-1])
    if y_ticks:
        y_low, y_high = min(y_low, y_ticks[0]), max(y_high, y_ticks[-1])
    x_span, y_span = (x_high - x_low) or 1.0, (y_high - y_low) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x):
        return LEFT + (np.asarray(x, float) - x_low) / x_span * plot_w

    def py(y):
        return TOP + plot_h - (np.asarray(y, float) - y_low) / y_span * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="16" font-size="12">{escape(title)}</text>',
    ]
    for tick in x_ticks:
        x = float(px(tick))
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">{_label(tick)}</text>')
    for tick in y_ticks:
        y = float(py(tick))
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_label(tick)}</text>')
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">{escape(xlabel)}</text>')
    parts.append(
        f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" transform="rotate(-90 14 {TOP + plot_h / 2})">{escape(ylabel)}</text>'
    )
    for s in series:
        x, y = np.asarray(s.x, float), np.asarray(s.y, float)
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        if len(x) > MAX_POINTS:
            index = np.linspace(0, len(x) - 1, MAX_POINTS).astype(int)
            x, y = x[index], y[index]
        if not len(x):
            continue
        points_x, points_y = px(x), py(y)
        if s.dots:
            parts.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="1.6" fill="{s.colour}"/>' for a, b in zip(points_x, points_y))
        else:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(points_x, points_y))
            parts.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="1.2"/>')
    if hline is not None:
        y = float(py(hline[0]))
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="grey" stroke-dasharray="5,3"/>')
        parts.append(f'<text x="{LEFT + 6}" y="{y - 4:.1f}" fill="grey">{escape(hline[1])}</text>')
    labelled = [s for s in series if s.label]
    if colour_scale is not None:  # a gradient bar above the plot, right-aligned
        low, high, label = colour_scale
        bar_x, bar_w = LEFT + plot_w - 110, 70
        parts.append(
            '<defs><linearGradient id="scale">'
            + "".join(f'<stop offset="{i / (len(VIRIDIS) - 1):.2f}" stop-color="{c}"/>' for i, c in enumerate(VIRIDIS))
            + "</linearGradient></defs>"
        )
        parts.append(f'<text x="{bar_x - 4}" y="{TOP - 6}" text-anchor="end">{escape(label)} {_label(low)}</text>')
        parts.append(f'<rect x="{bar_x}" y="{TOP - 14}" width="{bar_w}" height="9" fill="url(#scale)"/>')
        parts.append(f'<text x="{bar_x + bar_w + 4}" y="{TOP - 6}">{_label(high)}</text>')
    elif labelled:
        for i, s in enumerate(labelled[:10]):
            y = TOP + 14 + 13 * i
            parts.append(f'<line x1="{LEFT + plot_w - 60}" y1="{y - 4}" x2="{LEFT + plot_w - 44}" y2="{y - 4}" stroke="{s.colour}" stroke-width="2"/>')
            parts.append(f'<text x="{LEFT + plot_w - 40}" y="{y}">{escape(s.label)}</text>')
    parts.append("</svg>")
    encoded = base64.b64encode("".join(parts).encode()).decode()
    return dg.MetadataValue.md(f"![{escape(title)}](data:image/svg+xml;base64,{encoded})")
