"""What kind of cycle each cycle is, from the cell's own data, before anything is labelled.

Only *comparable full cycles* measure a cell's capacity the same way from one cycle to the next:
the cell's regular discharge current, down to its regular cut-off voltage, after a charge that
balanced the discharge before it. Everything else would put a number into the SOH tables that
means something else (a partial discharge of 0.1 Ah read as SOH 0.09, a C/20 check-up read as a
capacity jump, a truncated last cycle read as end of life). `classify_cycles` gives every cycle
one class and a reason in words:

  rest_only   neither a charge nor a discharge moved charge (more than 1 % of the cell's median
              discharge capacity)
  formation   the test's first active cycle, when it is not a balanced full cycle: formation
              losses, or a cell that started part-charged (coulombic efficiency outside
              `first_cycle_ce_band`), or a lone charge or discharge
  partial     aborted or truncated: a charge or a discharge is missing, the discharge stopped
              above the regular cut-off (by more than `cutoff_tolerance_v`, or 4 robust standard
              deviations of the cell's own end-of-discharge voltages if wider), the charge did not
              refill what the previous discharge took (coulombic efficiency above
              `ce_band[1]`: the cycle started part-charged), or, where the source has no
              voltages (summary tables), the discharge moved less than `depth_fraction` of
              the capacity of the cell's neighbouring regular cycles
  diagnostic  a different test than the regular cycles: another discharge current (by more
              than `rate_tolerance`: rate tests, C/20 check-ups), a deeper discharge (below the
              regular cut-off) or another top-of-charge voltage, or charge and discharge that do
              not balance (coulombic efficiency below `ce_band[0]`); also every active cycle of
              a cell with no regular protocol (no discharge current shared by
              `min_regular_cycles` cycles)
  full        everything else: a comparable full cycle

The regular protocol is the discharge current shared by the most cycles (within
`rate_tolerance`); its cut-off and top voltages are the medians over those cycles. All of it is
per cell and from the cell's own per-cycle table (`features.CYCLE_FEATURE_COLUMNS`); a column the
source lacks (summary tables have no voltages) leaves its rule out, and the reason says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CYCLE_CLASSES = ("full", "partial", "diagnostic", "formation", "rest_only")
CLASS_COLUMNS = ["cycle_class", "cycle_class_reason"]
# The per-cycle columns the rules read (a table may lack some; see `_classify_cell`).
CLASS_INPUT_COLUMNS = (
    "discharge_capacity_ah", "charge_capacity_ah", "discharge_current_mean_a",
    "discharge_end_voltage_v", "charge_end_voltage_v",
)


@dataclass(frozen=True)
class CycleClassConfig:
    """Thresholds of the cycle classes (module docstring)."""

    # Regular discharge current +-15 %: a protocol's CC setpoint repeats to well under 1 %; a
    # rate test or check-up differs by a factor (C/20, C/2, 2C), a drive cycle's mean by its load.
    rate_tolerance: float = 0.15
    min_regular_cycles: int = 3
    # A discharge ending more than 0.1 V above the regular cut-off stopped early (time or
    # capacity limit, an abort): cut-offs repeat to a few mV, and the sloped end of every
    # chemistry's discharge curve covers 0.1 V within a few % of its capacity.
    cutoff_tolerance_v: float = 0.1
    # A deeper discharge (a check-up to a lower cut-off) only beyond 0.3 V: the last logged point
    # of a steep end of discharge lands up to ~0.3 V under the cut-off at 10-20 s logging
    # (NASA PCoE), while protocol cut-offs differ by 0.3 V or more (2.0 / 2.5 / 2.7 V).
    deeper_tolerance_v: float = 0.3
    # Another top-of-charge voltage (a 4.4 V diagnostic charge of a 4.2 V cell) by more than this.
    top_voltage_tolerance_v: float = 0.05
    # Balanced cycles: coulombic efficiency in this band. Above 1.02 the discharge took out more
    # than the charge put in (the cycle began part-charged); below 0.90 the two do not describe
    # one state-of-charge swing (regular cycling sits at 0.99-1.00).
    ce_band: tuple[float, float] = (0.90, 1.02)
    first_cycle_ce_band: tuple[float, float] = (0.95, 1.02)
    # Summary sources without voltages: partial below 85 % of the neighbouring regular cycles'
    # capacity (their 75th percentile over 11 cycles, robust to a minority of partial cycles);
    # cycle-to-cycle noise of real cells is a few % (XJTU R2.5: +-3 %).
    depth_fraction: float = 0.85
    envelope_window: int = 11
    envelope_quantile: float = 0.75
    # A direction moved charge when it moved more than this fraction of the cell's median
    # discharge capacity.
    activity_fraction: float = 0.01


def _column(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    if name not in frame.columns:
        return None
    column = frame[name]
    if column.dtype == np.float64:
        values = column.to_numpy()
    else:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return values if np.isfinite(values).any() else None


def _regular_current(current: np.ndarray, candidates: np.ndarray, config: CycleClassConfig):
    """The discharge current shared by the most candidate cycles, and how many share it."""
    values = np.abs(current[candidates & np.isfinite(current) & (current != 0)])
    if values.size == 0:
        return np.nan, 0
    logs = np.sort(np.log(values))
    width = np.log1p(config.rate_tolerance)
    counts = np.searchsorted(logs, logs + width, side="right") - np.searchsorted(logs, logs - width, side="left")
    mode = logs[int(np.argmax(counts))]
    shared = logs[np.abs(logs - mode) <= width]
    return float(np.exp(np.median(shared))), int(counts.max())


def _envelope(cycle: np.ndarray, capacity: np.ndarray, reference: np.ndarray, config: CycleClassConfig) -> np.ndarray:
    """Capacity of the neighbouring reference cycles at every cycle (rolling upper quantile)."""
    if not reference.any():
        return np.full(len(cycle), np.nan)
    rolling = (
        pd.Series(capacity[reference])
        .rolling(config.envelope_window, center=True, min_periods=1)
        .quantile(config.envelope_quantile)
        .to_numpy()
    )
    return np.interp(cycle, cycle[reference], rolling)


def _classify_cell(cell: pd.DataFrame, config: CycleClassConfig) -> tuple[np.ndarray, np.ndarray]:
    n = len(cell)
    cycle = cell["cycle_number"].to_numpy(dtype="float64")
    q_d = _column(cell, "discharge_capacity_ah")
    q_c = _column(cell, "charge_capacity_ah")
    current = _column(cell, "discharge_current_mean_a")
    v_end = _column(cell, "discharge_end_voltage_v")
    v_top = _column(cell, "charge_end_voltage_v")
    klass = np.full(n, "", dtype=object)
    reason = np.full(n, "", dtype=object)

    def assign(mask: np.ndarray, name: str, text) -> None:
        """Give `name` to the cycles in mask that have no class yet (earlier rules win)."""
        free = mask & (klass == "")
        klass[free] = name
        reason[free] = text(free) if callable(text) else text

    if q_d is None:
        q_d = np.full(n, np.nan)
    scale = np.nanmedian(q_d[q_d > 0]) if (q_d > 0).any() else np.nan
    floor = config.activity_fraction * scale if np.isfinite(scale) else 0.0
    with np.errstate(invalid="ignore"):
        has_d = q_d > floor
        has_c = q_c > floor if q_c is not None else np.zeros(n, dtype=bool)
    charge_known = q_c is not None
    assign(~has_d & ~has_c, "rest_only", "no charge or discharge moved charge")

    ce = np.full(n, np.nan)
    if charge_known:
        both = has_d & has_c
        ce[both] = q_d[both] / q_c[both]
    active = klass == ""
    first = np.zeros(n, dtype=bool)
    if active.any():
        first[np.flatnonzero(active)[0]] = True

    # --- the regular protocol ------------------------------------------------------------------
    if current is not None:
        regular_current, sharing = _regular_current(current, has_d, config)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate_ok = np.abs(np.abs(current) / regular_current - 1.0) <= config.rate_tolerance
    else:  # summary tables: no current, every discharge counts as the regular protocol
        regular_current, sharing = np.nan, int(has_d.sum())
        rate_ok = has_d.copy()
    regular = has_d & rate_ok
    cutoff = np.nanmedian(v_end[regular]) if v_end is not None and np.isfinite(v_end[regular]).any() else np.nan
    cutoff_tolerance = config.cutoff_tolerance_v
    if np.isfinite(cutoff):
        # where the last logged point of the steep end of discharge scatters (NASA: 2.45-2.7 V
        # at 10-20 s logging), widen to 4 robust standard deviations of the cell's own end voltages
        spread = 1.4826 * np.nanmedian(np.abs(v_end[regular] - cutoff))
        cutoff_tolerance = max(cutoff_tolerance, 4.0 * spread)
    top = np.nanmedian(v_top[regular & has_c]) if v_top is not None and np.isfinite(v_top[regular & has_c]).any() else np.nan

    # --- the first active cycle ----------------------------------------------------------------
    low1, high1 = config.first_cycle_ce_band
    unbalanced_first = first & (~has_d | (charge_known & ~has_c) | (np.isfinite(ce) & ((ce < low1) | (ce > high1))))
    assign(
        unbalanced_first,
        "formation",
        lambda m: np.array([
            "first cycle of the test: " + (
                "no discharge" if not d else "no charge" if (charge_known and not c)
                else f"coulombic efficiency {e:.3g} outside {low1}-{high1} (formation, or a cell that started part-charged)"
            )
            for d, c, e in zip(has_d[m], has_c[m], ce[m])
        ], dtype=object),
    )

    # --- partial / aborted ---------------------------------------------------------------------
    assign(charge_known & has_c & ~has_d, "partial", "charge without a discharge (test stopped or aborted)")
    assign(charge_known & has_d & ~has_c, "partial", "discharge without a charge")
    if v_end is not None and np.isfinite(cutoff):
        with np.errstate(invalid="ignore"):
            stopped_early = has_d & (v_end > cutoff + cutoff_tolerance)
        assign(stopped_early, "partial",
               lambda m: np.array([f"discharge stopped at {v:.3g} V, above the regular cut-off {cutoff:.3g} V"
                                   for v in v_end[m]], dtype=object))
    else:
        depth_ref = regular & (klass == "")
        envelope = _envelope(cycle, q_d, depth_ref, config)
        with np.errstate(invalid="ignore"):
            shallow = has_d & (q_d < config.depth_fraction * envelope)
        assign(shallow, "partial",
               lambda m: np.array([f"discharge {q:.3g} Ah, under {config.depth_fraction:.0%} of the neighbouring "
                                   f"cycles' {e:.3g} Ah (no voltages in the source to see the cut-off)"
                                   for q, e in zip(q_d[m], envelope[m])], dtype=object))
    low, high = config.ce_band
    with np.errstate(invalid="ignore"):
        assign(np.isfinite(ce) & (ce > high), "partial",
               lambda m: np.array([f"coulombic efficiency {e:.3g}: the charge did not refill the previous discharge "
                                   "(cycle started part-charged)" for e in ce[m]], dtype=object))

    # --- diagnostic / rate test ----------------------------------------------------------------
    if sharing < config.min_regular_cycles:
        assign(klass == "", "diagnostic",
               f"no regular protocol: no discharge current is shared by {config.min_regular_cycles} cycles")
    if current is not None and np.isfinite(regular_current):
        assign(has_d & ~rate_ok, "diagnostic",
               lambda m: np.array([f"discharge current {abs(i):.3g} A, not the regular {regular_current:.3g} A (rate test or check-up)"
                                   for i in current[m]], dtype=object))
    if v_end is not None and np.isfinite(cutoff):
        with np.errstate(invalid="ignore"):
            deeper = has_d & (v_end < cutoff - max(config.deeper_tolerance_v, cutoff_tolerance))
        assign(deeper, "diagnostic",
               lambda m: np.array([f"discharge to {v:.3g} V, below the regular cut-off {cutoff:.3g} V" for v in v_end[m]], dtype=object))
    if v_top is not None and np.isfinite(top):
        with np.errstate(invalid="ignore"):
            other_top = has_c & (np.abs(v_top - top) > config.top_voltage_tolerance_v)
        assign(other_top, "diagnostic",
               lambda m: np.array([f"charge to {v:.3g} V, not the regular {top:.3g} V" for v in v_top[m]], dtype=object))
    with np.errstate(invalid="ignore"):
        assign(np.isfinite(ce) & (ce < low), "diagnostic",
               lambda m: np.array([f"coulombic efficiency {e:.3g} below {low}: charge and discharge do not balance"
                                   for e in ce[m]], dtype=object))

    basis = [] if current is not None else ["no current in the source"]
    if v_end is None:
        basis.append("no voltages in the source")
    assign(klass == "", "full", "comparable full cycle" + (f" ({', '.join(basis)})" if basis else ""))
    return klass, reason


def classify_cycles(cycles: pd.DataFrame, config: CycleClassConfig = CycleClassConfig()) -> pd.DataFrame:
    """`cycle_class` and `cycle_class_reason` for every row of a per-cycle table (one cell or
    many; same index and order as the input)."""
    if "cell_id" not in cycles.columns or "cycle_number" not in cycles.columns:
        raise ValueError(f"cycles needs cell_id and cycle_number (has {list(cycles.columns)})")
    cell_ids = cycles["cell_id"].astype(str).to_numpy()
    if len(cycles) and (cell_ids == cell_ids[0]).all():  # one cell (features, per partition): no groupby
        cycle = cycles["cycle_number"].to_numpy()
        ordered = cycles if (cycle[1:] >= cycle[:-1]).all() else cycles.sort_values("cycle_number", kind="stable")
        klass, reason = _classify_cell(ordered, config)
        out = pd.DataFrame({"cycle_class": klass, "cycle_class_reason": reason}, index=ordered.index)
        return out if ordered is cycles else out.loc[cycles.index]
    out = pd.DataFrame({"cycle_class": pd.Series(dtype=object), "cycle_class_reason": pd.Series(dtype=object)},
                       index=cycles.index)
    for _, cell in cycles.groupby(cycles["cell_id"].astype(str), sort=False):
        ordered = cell.sort_values("cycle_number", kind="stable")
        klass, reason = _classify_cell(ordered, config)
        out.loc[ordered.index, "cycle_class"] = klass
        out.loc[ordered.index, "cycle_class_reason"] = reason
    return out


def class_counts(classes: pd.Series) -> dict[str, int]:
    """Cycles per class, every class listed (0 where none), in `CYCLE_CLASSES` order."""
    counts = classes.value_counts()
    return {name: int(counts.get(name, 0)) for name in CYCLE_CLASSES}
