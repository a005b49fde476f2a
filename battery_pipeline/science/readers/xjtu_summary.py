"""XJTU battery set as per-cycle feature tables (`xjtu_cycle_summary`): one CSV per cell, one row per cycle.

Source: the XJTU battery data set (55 NCM cells, nominal 2.0 Ah, zenodo 10963339) as processed
by Wang F. et al., Nat. Commun. 15, 4332 (2024) (the `data/XJTU data/*.csv` of their PINN4SOH
code). Licence of the underlying set: CC BY 4.0. These files hold *no samples*: 16 features of
each cycle's charge curve plus the cycle's discharge `capacity`. So `read` returns an empty
canonical `samples` frame and the table as `ReadResult.cycle_summary`.

Detection: by content only, the exact 17-column header (comma-separated, in this order, a UTF-8
BOM and CR/LF tolerated):
    voltage mean, voltage std, voltage kurtosis, voltage skewness, CC Q, CC charge time,
    voltage slope, voltage entropy, current mean, current std, current kurtosis,
    current skewness, CV Q, CV charge time, current slope, current entropy, capacity
No canonical column name occurs in it, so `canonical_csv` (priority 90) never claims these
files, and this sniffer (priority 40) claims nothing but this header.

Cell key: `xjtu_<file stem>`, e.g. `xjtu_2C_battery-1` (already partition-safe), for the set's own
file names; other names keep their stem. The prefix makes the set visible in the partition list
and keeps `battery-1`-style names apart from other sets'.

Metadata: the layout alone never makes a table an XJTU cell. `describe` gives the set's NCM /
2.0 Ah / 2.5-4.2 V only when the name, the layout and the values match (`xjtu_evidence`); any
other table in this layout (another lab's summaries) is "unknown source, summary layout" with no
chemistry or capacity, and the description says which evidence failed.
The file-name prefix before `_battery-` is the test protocol (2C, 3C, R2.5, R3, RW,
Sim_satellite); `describe` puts it in the cell description.

`cycle_summary` columns (`SUMMARY_COLUMNS`): cell_id, cycle_number, the 17 value columns renamed
as in `science/features.py` (`COLUMN_MAP`), source_file, source_row.
  - cycle_number = 1-based row order (continuing across files if a cell ever had several).
    The tables carry no cycle index of their own, so this equals the XJTU test's cycle index
    only if the processing kept every cycle; that cannot be checked from the file.
  - source_row = 0-based data row in the file (the n-th non-blank line after the header).
What the columns mean, as far as the numbers show it (checked on all 55 files):
  - `capacity` -> discharge_capacity_ah: Ah, 1.55..2.03 (nominal 2.0). See the traps below:
    it is not a measurement of that cycle for every protocol.
  - The voltage statistics (mean, std, skewness, kurtosis, slope, entropy) are taken over the
    part of the CC charge between 4.0 and 4.2 V only, NOT over the whole charge: voltage mean
    ~4.096 V, std ~0.0566 V and kurtosis ~-1.21 are those of a near-linear ramp over 4.0-4.2 V
    (uniform: 4.1 V, 0.0577 V, -1.2), and voltage slope x CC charge time = 0.200 V in every
    row. Kurtosis is the *excess* (Fisher) kurtosis.
  - `CC Q` / `CC charge time` -> cc_charge_capacity_ah (Ah) / cc_charge_time_s (s): the charge
    and duration of that 4.0-4.2 V window (~0.33 Ah, ~300 s), not of the whole CC phase.
    Units checked: the per-file median of CC Q x 3600 / CC charge time is 4.000 A (2C, R2.5,
    R3, Sim_satellite) or 6.000 A (3C, RW) in every file, i.e. exactly the 2C / 3C charge current of a 2 Ah cell, so
    the time is in seconds (it moves in steps of 0.06 s = 0.001 min: converted from minutes).
  - voltage slope -> charge_voltage_slope_v_per_s: V/s, = 0.2 V / window duration (chord).
  - The current statistics (mean, std, skewness, kurtosis, slope, entropy), `CV Q` and
    `CV charge time` are over a window of the CV phase in which the current decays from about
    0.5 A to about 0.1 A: current mean ~0.23 A = CV Q x 3600 / CV charge time in every file
    (so CV Q is Ah and CV charge time is s), std ~0.11 A.
  - current slope -> charge_current_slope_a_per_s: A/s by its magnitude, but NOT the chord or
    least-squares slope of the window: slope x CV charge time ~ -0.93 A while the current only
    falls by ~0.4 A in the window (probably the mean of the sample-to-sample dI/dt of unevenly
    sampled data). Do not compare it with a slope computed another way.
  - voltage / current entropy: dimensionless (natural-log units, ~5.5 and ~6.4); their values
    track log(number of samples in the window), so they depend on the logger's sampling.
  Hence the renamed columns follow `features.py`'s names but are window-restricted XJTU
  definitions; they match features computed from samples only if those use the same windows.
  features.py columns the tables lack (charge_capacity_ah, ...) are simply absent.

Data traps (the reader keeps values as they are, except +-inf -> NaN):
  - `voltage entropy` is -inf in 151 rows of the 8 `2C_*` files (13-22 per file, all between
    64 % and 90 % of the cell's rows): an artefact of the entropy computation, not a value;
    it becomes NaN (the file still holds the original, see source_row). No other NaN or inf.
  - `capacity` of R3, RW and Sim_satellite cells is not rounded to 1 mAh like the measured
    2C/3C/R2.5 values but carries 15 digits and is piecewise cubic: it is the Wang et al.
    interpolation between periodic capacity-test cycles (their preprocessing library
    interpolates "test capacity" cycles because most cycles there are not full discharges).
    RW_battery-1's first 10 cycles are an extrapolation (1.652 rising to 1.776 Ah, then a jump
    to 1.880 Ah at cycle 11): its "initial capacity" from the first cycles is an artefact.
  - R2.5 capacities oscillate with a 5-cycle period by ~0.06 Ah (~3 % of nominal; lag-5
    autocorrelation of the differences ~0.9): the discharge conditions repeat every 5 cycles.
    A single-cycle threshold crossing is therefore noise; labels use a run rule (labels.py).
  - Capacity rises over the first tens of cycles in most cells (2C_battery-1: 1.900 -> 1.971
    Ah), so "initial capacity" from the first cycles is below the cell's maximum.
  - Every test was stopped near 80 % of nominal (last capacities 1.566..1.726 Ah; most
    1.59-1.65), often just *above* 1.6 Ah: with an 80 %-of-nominal EOL many cells are censored
    by a few mAh, and with 80 % of the initial capacity (~1.52 Ah) all of them are.
Malformed files raise SourceFormatError naming the file: wrong header, no data rows, a line with
a field count other than 17 (truncated or garbled), text in a numeric column (row and value
named; empty fields are allowed and read as NaN), capacity in mAh (median > 100), charge times
not in seconds (implied CC current median > 100 A).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    finalize_samples,
    from_dataset_rule,
    tame_overflowing_exponents,
)
from battery_pipeline.science.schema import empty_samples

XJTU_COLUMNS: tuple[str, ...] = (
    "voltage mean",
    "voltage std",
    "voltage kurtosis",
    "voltage skewness",
    "CC Q",
    "CC charge time",
    "voltage slope",
    "voltage entropy",
    "current mean",
    "current std",
    "current kurtosis",
    "current skewness",
    "CV Q",
    "CV charge time",
    "current slope",
    "current entropy",
    "capacity",
)

# XJTU column -> features.py column, in features.py order (see the module docstring for the
# windows these XJTU statistics are taken over).
COLUMN_MAP: dict[str, str] = {
    "capacity": "discharge_capacity_ah",
    "CC charge time": "cc_charge_time_s",
    "CV charge time": "cv_charge_time_s",
    "CC Q": "cc_charge_capacity_ah",
    "CV Q": "cv_charge_capacity_ah",
    "voltage mean": "charge_voltage_mean_v",
    "voltage std": "charge_voltage_std_v",
    "voltage skewness": "charge_voltage_skewness",
    "voltage kurtosis": "charge_voltage_kurtosis",
    "voltage slope": "charge_voltage_slope_v_per_s",
    "voltage entropy": "charge_voltage_entropy",
    "current mean": "charge_current_mean_a",
    "current std": "charge_current_std_a",
    "current skewness": "charge_current_skewness",
    "current kurtosis": "charge_current_kurtosis",
    "current slope": "charge_current_slope_a_per_s",
    "current entropy": "charge_current_entropy",
}
assert set(COLUMN_MAP) == set(XJTU_COLUMNS)

SUMMARY_COLUMNS: list[str] = ["cell_id", "cycle_number", *COLUMN_MAP.values(), "source_file", "source_row"]

# Where each XJTU statistic is taken (inferred from the numbers, see the module docstring).
FEATURE_WINDOWS: dict[str, str] = {
    **{COLUMN_MAP[c]: "CC charge, 4.0-4.2 V" for c in XJTU_COLUMNS if c.startswith(("voltage", "CC"))},
    **{COLUMN_MAP[c]: "CV charge, ~0.5 -> ~0.1 A" for c in XJTU_COLUMNS if c.startswith(("current", "CV"))},
    "discharge_capacity_ah": "whole discharge (interpolated between capacity tests for R3, RW, Sim_satellite)",
}

DATASET = "XJTU battery set (Wang et al. 2024 feature tables)"
NOMINAL_CAPACITY_AH = 2.0
VOLTAGE_MIN_V = 2.5
VOLTAGE_MAX_V = 4.2
LICENCE = "CC BY 4.0"
CITATION = (
    "XJTU battery dataset (zenodo 10963339) as processed by Wang F., Zhai Z., Zhao Z., Di Y., "
    "Chen X., 'Physics-informed neural network for lithium-ion battery degradation stable "
    "modeling and prognosis', Nat. Commun. 15, 4332 (2024), doi:10.1038/s41467-024-48779-z"
)
KEY_PREFIX = "xjtu_"

# Charge current as implied by CC Q / CC charge time in every file of the protocol.
_PROTOCOLS: dict[str, str] = {
    "2C": "protocol '2C' (charge 2C = 4 A)",
    "3C": "protocol '3C' (charge 3C = 6 A)",
    "R2.5": "protocol 'R2.5' (charge 2C = 4 A; discharge capacity repeats a 5-cycle pattern)",
    "R3": "protocol 'R3' (charge 2C = 4 A; capacity interpolated between capacity tests)",
    "RW": (
        "protocol 'RW' (random-walk load, as the name says; charge 3C = 6 A; "
        "capacity interpolated between capacity tests)"
    ),
    "Sim_satellite": (
        "protocol 'Sim_satellite' (simulated satellite duty, as the name says; charge 2C = 4 A; "
        "capacity interpolated between capacity tests)"
    ),
}

# Evidence that a table in this layout is an XJTU cell (all three must hold, `xjtu_evidence`):
# the set's file names, and values only a 2.0 Ah XJTU cell gives: capacities of a 2 Ah cell
# between end of test (~1.55 Ah) and new (~2.05 Ah), and the 2C / 3C charge current of the
# protocols (4.0 / 6.0 A, from CC Q / CC charge time, exact to 0.1 % in every file).
XJTU_NAME = re.compile(r"^(2C|3C|R2\.5|R3|RW|Sim_satellite)_battery-\d+$")
XJTU_CAPACITY_RANGE_AH = (1.4, 2.2)
XJTU_CHARGE_CURRENTS_A = (4.0, 6.0)
XJTU_CURRENT_TOLERANCE = 0.02
UNKNOWN_SUMMARY_DATASET = "unknown source, summary layout (XJTU feature-table columns)"

_INF_TEXT = {"inf", "-inf", "+inf", "infinity", "-infinity", "nan"}
_MAX_EXAMPLES = 3


def _header_names(head: bytes) -> list[str] | None:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    for line in text.splitlines():
        if line.strip():
            return [name.strip() for name in line.split(",")]
    return None


def protocol_of(path: Path) -> str:
    """The test protocol from the file name: the part before `_battery` (`2C_battery-1` -> `2C`)."""
    stem = Path(path).stem
    return stem.split("_battery")[0] if "_battery" in stem else stem


def _parse(path: Path) -> pd.DataFrame:
    """The file's table with the XJTU column names, float64, +-inf -> NaN."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    if not raw.strip():
        raise SourceFormatError(path, "file is empty")
    try:
        text = tame_overflowing_exponents(raw).decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise SourceFormatError(path, f"not UTF-8 text (byte {exc.start}): garbled file?") from exc
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    names = [n.strip() for n in lines[0][1].split(",")]
    if names != list(XJTU_COLUMNS):
        missing = [c for c in XJTU_COLUMNS if c not in names]
        unexpected = [n for n in names if n not in XJTU_COLUMNS]
        raise SourceFormatError(
            path,
            "header is not the XJTU feature table's 17 columns"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {unexpected[:5]}" if unexpected else "")
            + ("; same names in another order" if not missing and not unexpected else ""),
        )
    body = lines[1:]
    if not body:
        raise SourceFormatError(path, "no data rows (header only)")
    n_fields = np.array([line.count(",") + 1 for _, line in body])
    ragged = np.flatnonzero(n_fields != len(XJTU_COLUMNS))
    if len(ragged):
        shown = ", ".join(f"line {body[i][0]} has {n_fields[i]}" for i in ragged[:_MAX_EXAMPLES])
        raise SourceFormatError(
            path,
            f"{len(ragged)} data line(s) do not have {len(XJTU_COLUMNS)} fields ({shown}): "
            "file truncated or garbled",
        )
    table = pd.read_csv(
        io.StringIO("\n".join(line for _, line in body)),
        header=None,
        names=list(XJTU_COLUMNS),
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=False,
        # The tables hold plain numbers; a stray '"' is a garbled value, reported below as
        # non-numeric, not the start of a quoted field running to the end of the file.
        quoting=csv.QUOTE_NONE,
    )
    out = {}
    for column in XJTU_COLUMNS:
        text_values = table[column].str.strip()
        numbers = pd.to_numeric(text_values, errors="coerce")
        bad = (text_values != "") & numbers.isna() & ~text_values.str.lower().isin(_INF_TEXT)
        if bad.any():
            rows = np.flatnonzero(bad.to_numpy())
            shown = ", ".join(f"row {r} {text_values.iloc[r]!r}" for r in rows[:_MAX_EXAMPLES])
            raise SourceFormatError(
                path,
                f"column {column!r} holds {len(rows)} non-numeric value(s) ({shown}): file garbled",
            )
        values = numbers.to_numpy(dtype="float64", na_value=np.nan)
        values[np.isinf(values)] = np.nan  # an entropy of -inf is a computation artefact
        out[column] = values
    frame = pd.DataFrame(out)
    _check_units(path, frame)
    return frame


def _check_units(path: Path, frame: pd.DataFrame) -> None:
    capacity = frame["capacity"].median()
    if np.isfinite(capacity) and capacity > 100:
        raise SourceFormatError(
            path, f"column 'capacity' looks like mAh (median {capacity:.4g}; the cells hold 2 Ah)"
        )
    implied_a = (frame["CC Q"] * 3600.0 / frame["CC charge time"]).replace([np.inf, -np.inf], np.nan).median()
    if np.isfinite(implied_a) and abs(implied_a) > 100:
        raise SourceFormatError(
            path,
            f"'CC charge time' is not in seconds: CC Q / CC charge time implies {implied_a:.4g} A "
            "(the cells are charged at 4-6 A)",
        )


def xjtu_evidence(path: Path, frame: pd.DataFrame) -> list[str]:
    """Why a table in the XJTU layout is *not* an XJTU cell (empty list: name, layout and values
    all match the set). The layout alone never assigns the set's metadata."""
    reasons = []
    if not XJTU_NAME.match(Path(path).stem):
        reasons.append(f"file name {Path(path).stem!r} is not an XJTU cell name (e.g. 2C_battery-1)")
    capacity = frame["capacity"].dropna()
    low, high = XJTU_CAPACITY_RANGE_AH
    if capacity.empty or capacity.min() < low or capacity.max() > high:
        shown = f"{capacity.min():.3f}-{capacity.max():.3f} Ah" if len(capacity) else "none"
        reasons.append(f"capacities {shown} are not those of a 2.0 Ah XJTU cell ({low}-{high} Ah)")
    implied = (frame["CC Q"] * 3600.0 / frame["CC charge time"]).replace([np.inf, -np.inf], np.nan).median()
    if not any(np.isfinite(implied) and abs(implied - a) <= XJTU_CURRENT_TOLERANCE * a for a in XJTU_CHARGE_CURRENTS_A):
        reasons.append(f"CC Q / CC charge time implies {implied:.3g} A, not the XJTU charge current of 4 or 6 A")
    return reasons


class XjtuCycleSummaryReader(CyclerReader):
    format_name = "xjtu_cycle_summary"
    extensions = (".csv",)
    priority = 40  # an exact header: ask before the generic canonical CSV reader (90)

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if b"\x00" in head[:4096]:
            return False
        return _header_names(head) == list(XJTU_COLUMNS)

    @classmethod
    def cell_key(cls, path: Path) -> str:
        stem = Path(path).stem
        return KEY_PREFIX + stem if XJTU_NAME.match(stem) else stem

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        path = Path(paths[0])
        try:
            against = xjtu_evidence(path, _parse(path))
        except SourceFormatError as exc:
            against = [exc.problem]
        if against:
            return CellDefaults(
                dataset=UNKNOWN_SUMMARY_DATASET,
                description=(
                    f"Per-cycle summary table {path.name} in the 17-column layout of the XJTU feature tables, "
                    "but not an XJTU cell: " + "; ".join(against) + ". No chemistry or capacity is assumed; "
                    "a sidecar can state them."
                ),
            )
        protocol = protocol_of(path)
        protocol_text = _PROTOCOLS.get(protocol, f"protocol {protocol!r} (file-name prefix)")
        evidence = "name, 17-column layout, capacities 1.4-2.2 Ah and the 4 / 6 A charge current all match"
        rule = from_dataset_rule("XJTU battery set (NCM, 2.0 Ah, 2.5-4.2 V)", evidence)
        return CellDefaults(
            dataset=DATASET,
            chemistry="NMC",
            nominal_capacity_ah=NOMINAL_CAPACITY_AH,
            voltage_min_v=VOLTAGE_MIN_V,
            voltage_max_v=VOLTAGE_MAX_V,
            max_abs_current_a=None,
            licence=LICENCE,
            citation=CITATION,
            description=(
                f"XJTU cell {path.stem}: NCM, nominal 2.0 Ah, 2.5-4.2 V; {protocol_text}. "
                "Summary-level source: one row per cycle with 16 charge-curve features (voltage "
                "statistics over the 4.0-4.2 V part of the CC charge, current statistics over "
                "the ~0.5-0.1 A part of the CV charge) and the discharge capacity; no raw samples."
            ),
            origin={"chemistry": rule, "nominal_capacity_ah": rule, "voltage_window": rule},
        )

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        paths = sorted((Path(p) for p in paths), key=cls.file_order)
        parts = []
        first_cycle = 1
        for path in paths:
            table = _parse(path).rename(columns=COLUMN_MAP)
            n = len(table)
            table["cell_id"] = cell_id
            table["cycle_number"] = np.arange(first_cycle, first_cycle + n, dtype="int64")
            table["source_file"] = path.name
            table["source_row"] = np.arange(n, dtype="int64")
            parts.append(table[SUMMARY_COLUMNS])
            first_cycle += n
        summary = pd.concat(parts, ignore_index=True)
        samples = finalize_samples(empty_samples(), cell_id)
        return ReadResult(samples=samples, cell=cls.describe(paths), cycle_summary=summary)
