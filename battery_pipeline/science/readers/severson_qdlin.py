"""Discharge-capacity arrays Q_d(V) of the Severson et al. (2019) cells (`severson_qdlin`).

Source: Attia P.M. et al., "Statistical learning for accurate and interpretable battery lifetime
prediction", J. Electrochem. Soc. 168, 090547 (2021) (github petermattia/revisit-severson-et-al,
`generate_voltage_arrays.m`), made from the raw data of Severson K.A., Attia P.M. et al.,
"Data-driven prediction of battery cycle life before capacity degradation", Nat. Energy 4, 383
(2019) (data.matr.io/1). 124 commercial LFP/graphite cells (A123 APR18650M1A, 1.1 Ah, 2.0-3.6 V),
fast-charged by multi-step policies and discharged at 4C. Licence: data CC BY 4.0, code MIT.

Layout: one headerless CSV per cell (`cell<i>.csv` in a `train`, `test1` or `test2` folder), a
1000-row matrix of numbers. Row k is the k-th point of the voltage grid, column j the cycle j + 2,
each value the discharge capacity (Ah) that cycle had delivered when its voltage fell to the grid
point (the cell's `Qdlin`, interpolated by Severson et al.'s processing). Cycle life per cell, in
file order, in `<folder>_cycle_lives.csv` beside the folder (one integer per line: cycles until
the discharge capacity first fell below 0.88 Ah, i.e. 80 % of nominal).

What the file cannot say, and where the reader takes it from (each says so in the data):
  - the voltage grid: 1000 points from 3.6 V down to 2.0 V, the `Vdlin = linspace(3.6, 2.0,
    1000)` of the arrays' producers (Attia et al.'s notebook). The dataset's README in
    `../shared` says 3.5 V; the statistics of delta-Q below do not depend on the grid's labels,
    only dQ/dV's peak voltage does. `GRID_V` is the reader's assumption, stated in the cell
    description.
  - the cycle numbers: column j is cycle j + 2 (`generate_voltage_arrays.m` skips cycle 1).
  - the cycle life: only from the `*_cycle_lives.csv` beside the folder, matched by the cell's
    number, and only when that file has one positive integer per line and at least as many
    lines as the folder has cells (`stated_cycle_life_source` names the file and line).

`cycle_summary`, one row per column (cycle): discharge_capacity_ah = Q at the grid's lowest
voltage (2.0 V, the 4C discharge's cut-off: the cycle's discharge capacity); the Severson
delta-Q statistics against cycle 10 (`REFERENCE_CYCLE`, the paper's Q_10) over the grid and the
dQ/dV peak, computed by `features.grid_curve_features`, the same function the samples path uses
(delta_q_kurtosis is the *excess* kurtosis, as in `cycle_features`); source_row = the column.
Other features of `cycle_features` (charge time, temperature, resistance) are not in the arrays:
NaN, so the paper's "full" model cannot be fitted on them.

Data traps seen in the 41 training cells: the top of the grid holds small negative capacities
(-0.5 mAh: the interpolation extrapolated above the discharge's first voltage), kept as they are;
each column rises with falling voltage except for about 0.2 % of steps of at most a few
0.1 mAh (interpolation noise), so monotonicity is checked with a tolerance
(`MAX_BACKSTEP_AH`).

Metadata: the layout alone never makes a file a Severson cell. `describe` gives LFP / 1.1 Ah /
2.0-3.6 V only when the values match the set (`severson_evidence`: capacities at 2.0 V of a 1.1 Ah
cell, cycle 2 in 0.9-1.2 Ah); any other matrix in this layout is "unknown source, Q(V) array
layout", with no chemistry or capacity, and the description says which evidence failed.

Malformed files raise SourceFormatError naming the file: not 1000 rows, rows of different
lengths, text or empty fields, non-finite values, a column that falls with falling voltage by
more than the tolerance, capacities in mAh.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.features import DELTA_Q_COLUMNS, DQDV_COLUMNS, FeatureConfig, grid_curve_features
from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    finalize_samples,
    from_dataset_rule,
)
from battery_pipeline.science.schema import empty_samples

N_GRID_POINTS = 1000
GRID_V = (3.6, 2.0)  # row 0 -> row 999 (see the module docstring)
FIRST_CYCLE = 2  # column 0
REFERENCE_CYCLE = 10  # Severson's Q_10
MAX_BACKSTEP_AH = 0.02  # interpolation noise allowed against Q rising as V falls (seen: 0.0104 Ah, 0.0133 Ah in all)
MAX_TOP_ABS_AH = 0.05  # Q at the top of the grid: nothing discharged yet

DATASET = "Severson et al. 2019 (A123 APR18650M1A), Qdlin arrays of Attia et al. 2021"
NOMINAL_CAPACITY_AH = 1.1
VOLTAGE_MIN_V = 2.0
VOLTAGE_MAX_V = 3.6
EOL_CAPACITY_AH = 0.88
LICENCE = "CC BY 4.0 (data); MIT (arrays' code)"
CITATION = (
    "Severson K.A., Attia P.M. et al., 'Data-driven prediction of battery cycle life before capacity "
    "degradation', Nat. Energy 4, 383-391 (2019), doi:10.1038/s41560-019-0356-8; arrays: Attia P.M. et al., "
    "J. Electrochem. Soc. 168, 090547 (2021), doi:10.5281/zenodo.5332872"
)
KEY_PREFIX = "severson_"
TRAINING_KEY_PREFIX = f"{KEY_PREFIX}train_"  # the cells of the paper's training split (cell_key)
UNKNOWN_ARRAY_DATASET = "unknown source, Q(V) array layout (Severson Qdlin arrays)"
# Evidence that an array is a Severson cell: the capacity at 2.0 V of a 1.1 Ah cell (cycle 2:
# 1.03-1.08 Ah in the 41 training cells; a new 1.1 Ah A123 cell at 4C), never above nominal + 10 %.
SEVERSON_CYCLE2_RANGE_AH = (0.9, 1.2)
CELL_NAME = re.compile(r"^cell(\d+)$")
SPLIT_FOLDERS = ("train", "test1", "test2")

SUMMARY_COLUMNS = ["cell_id", "cycle_number", "discharge_capacity_ah", *DELTA_Q_COLUMNS, *DQDV_COLUMNS, "source_file", "source_row"]
_NUMBER = re.compile(rb"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def grid() -> np.ndarray:
    """The grid's voltages, row order (falling)."""
    return np.linspace(GRID_V[0], GRID_V[1], N_GRID_POINTS)


def _numeric_line(line: bytes) -> int | None:
    """Number of fields of a line of plain numbers, else None."""
    fields = line.split(b",")
    return len(fields) if all(_NUMBER.match(f) for f in fields) else None


def _parse(path: Path) -> np.ndarray:
    """The file's matrix (grid rows x cycle columns), float64, checked."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    lines = [line for line in raw.replace(b"\r", b"").split(b"\n") if line.strip()]
    if not lines:
        raise SourceFormatError(path, "file is empty")
    if len(lines) != N_GRID_POINTS:
        raise SourceFormatError(
            path, f"{len(lines)} rows, not the {N_GRID_POINTS} points of the Q(V) voltage grid: truncated, or not a Qdlin array"
        )
    widths = [line.count(b",") + 1 for line in lines]
    if len(set(widths)) != 1:
        short = next(k for k, w in enumerate(widths) if w != widths[0])
        raise SourceFormatError(path, f"row {short} has {widths[short]} values, row 0 has {widths[0]}: file truncated or garbled")
    try:
        q = np.array(b",".join(lines).split(b","), dtype=np.float64).reshape(len(lines), widths[0])
        parsed = True
    except ValueError:
        parsed = False
    if not parsed:  # find the culprit only when there is one
        bad = [k for k, line in enumerate(lines) if _numeric_line(line) is None]
        raise SourceFormatError(path, f"row {bad[0]} holds text or an empty field ({len(bad)} such row(s)): file garbled")
    if not np.isfinite(q).all():
        row, col = np.argwhere(~np.isfinite(q))[0]
        raise SourceFormatError(path, f"non-finite value at row {row}, column {col}")
    top = np.median(np.abs(q[0]))
    if top > MAX_TOP_ABS_AH:
        raise SourceFormatError(
            path, f"capacity at the top of the grid is {top:.4g} (median over cycles): Q(V) starts at 0 Ah (values in mAh, or not a Qdlin array)"
        )
    bad = corrupt_cycles(q)
    if bad.sum() * 2 > q.shape[1]:
        raise SourceFormatError(path, f"{bad.sum()} of {q.shape[1]} columns are not discharge curves Q(V) ({curve_problem(q[:, np.argmax(bad)])}): not a Qdlin array")
    return q


def curve_problem(column: np.ndarray) -> str | None:
    """Why one column is not a discharge curve Q(V) (None: it is one)."""
    steps = np.diff(column)
    falls = steps[steps < 0]
    # one fall beyond the noise, or many small ones adding up (a curve that runs backwards)
    if falls.size and (falls.min() < -MAX_BACKSTEP_AH or falls.sum() < -2 * MAX_BACKSTEP_AH):
        return f"falls {falls.size} time(s) as the voltage falls, by up to {-falls.min():.3g} Ah ({-falls.sum():.3g} Ah in all)"
    if abs(column[0]) > MAX_TOP_ABS_AH:
        return f"starts at {column[0]:.3g} Ah at the top of the grid, not 0"
    return None


def corrupt_cycles(q: np.ndarray) -> np.ndarray:
    """Columns that are not discharge curves (seen in 3 of the 41 training cells: cycles whose
    interpolated Q(V) jumps to 30-45 Ah or back and forth by 0.7 Ah; the arrays' producers kept them)."""
    return np.array([curve_problem(q[:, j]) is not None for j in range(q.shape[1])], dtype=bool)


def severson_evidence(q: np.ndarray) -> list[str]:
    """Why an array in this layout is *not* a Severson cell (empty: the values match the set)."""
    low, high = SEVERSON_CYCLE2_RANGE_AH
    capacity = q[-1, ~corrupt_cycles(q)]  # corrupt columns say nothing about the cell
    first = float(capacity[0])
    reasons = []
    if not low <= first <= high:
        reasons.append(f"first capacity at the grid's end {first:.3f} Ah is not that of a new 1.1 Ah cell ({low}-{high} Ah)")
    if capacity.max() > NOMINAL_CAPACITY_AH * 1.1:
        reasons.append(f"a capacity of {capacity.max():.3f} Ah exceeds 1.1 Ah nominal + 10 %")
    return reasons


def cell_number(path: Path) -> int | None:
    match = CELL_NAME.match(Path(path).stem)
    return int(match.group(1)) if match else None


def cycle_lives_file(path: Path) -> Path:
    """Where the folder's cycle lives are: `<folder>_cycle_lives.csv` beside the folder."""
    folder = Path(path).parent
    return folder.parent / f"{folder.name}_cycle_lives.csv"


def stated_cycle_life(path: Path) -> tuple[int | None, str]:
    """(cycle life, where it came from) of the cell in `path`, or (None, why not)."""
    number = cell_number(path)
    lives = cycle_lives_file(path)
    if number is None:
        return None, f"unknown: {Path(path).name} is not named cell<i>, so no line of a cycle-life file is its"
    if not lives.is_file():
        return None, f"unknown: no {lives.name} beside the folder {Path(path).parent.name}"
    text = [line.strip() for line in lives.read_text(errors="replace").splitlines() if line.strip()]
    if not all(t.isdigit() and int(t) > 0 for t in text):
        return None, f"unknown: {lives.name} is not one positive integer per line"
    cells = [p for p in Path(path).parent.glob("cell*.csv") if cell_number(p) is not None]
    if len(text) < len(cells) or number > len(text):
        return None, f"unknown: {lives.name} has {len(text)} line(s) for {len(cells)} cell file(s) (cell {number})"
    return int(text[number - 1]), f"file: {lives.name} line {number} (cycles to 0.88 Ah, Severson et al.'s definition)"


def summary_from_array(q: np.ndarray, cell_id: str, source_file: str) -> pd.DataFrame:
    """The per-cycle summary of a Q(V) array (rows falling voltage, columns cycles from FIRST_CYCLE).

    A column that is not a discharge curve keeps its row with NaN values (its capacity too, as
    the curve's end is then not a capacity either): `corrupt_report` says which and why."""
    n = q.shape[1]
    cycles = np.arange(FIRST_CYCLE, FIRST_CYCLE + n, dtype="int64")
    q = q.astype(np.float64, copy=True)
    q[:, corrupt_cycles(q)] = np.nan
    reference = int(np.flatnonzero(cycles == REFERENCE_CYCLE)[0]) if REFERENCE_CYCLE < FIRST_CYCLE + n else -1
    # the grid ascending, as the samples path holds it
    features = grid_curve_features(grid()[::-1], q[::-1].T, reference, FeatureConfig())
    frame = pd.DataFrame({"cell_id": cell_id, "cycle_number": cycles, "discharge_capacity_ah": q[-1], **features})
    frame["source_file"] = source_file
    frame["source_row"] = np.arange(n, dtype="int64")
    return frame[SUMMARY_COLUMNS]


def corrupt_report(q: np.ndarray) -> str:
    """The corrupt columns as text for the cell's description ('' when none)."""
    bad = np.flatnonzero(corrupt_cycles(q))
    if not bad.size:
        return ""
    shown = "; ".join(f"cycle {j + FIRST_CYCLE} (column {j}): {curve_problem(q[:, j])}" for j in bad[:5])
    return (f" {bad.size} cycle(s) whose Q(V) is not a discharge curve, kept with NaN capacity and features: {shown}"
            + ("; ..." if bad.size > 5 else "") + ".")


class SeversonQdlinReader(CyclerReader):
    format_name = "severson_qdlin"
    extensions = (".csv",)
    priority = 40  # headerless numbers only: no other reader claims such a file

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if b"\x00" in head[:4096]:
            return False
        lines = [line for line in head.replace(b"\r", b"").split(b"\n")[:-1] if line.strip()]  # last may be cut
        if len(lines) < 2:
            return False
        widths = {_numeric_line(line) for line in lines[:50]}
        if len(widths) != 1 or None in widths or widths == {1}:
            return False
        first = np.array(lines[0].split(b","), dtype=np.float64)
        return bool(np.median(np.abs(first)) <= MAX_TOP_ABS_AH)  # a corrupt cycle may not start at 0

    @classmethod
    def is_companion(cls, path: Path) -> bool:
        """`<folder>_cycle_lives.csv` beside a folder of that name: the folder's labels, not a cell."""
        path = Path(path)
        match = re.match(r"^(.+)_cycle_lives\.csv$", path.name)
        return bool(match) and (path.parent / match.group(1)).is_dir()

    @classmethod
    def cell_key(cls, path: Path) -> str:
        path = Path(path)
        if cell_number(path) is not None and path.parent.name in SPLIT_FOLDERS:
            return f"{KEY_PREFIX}{path.parent.name}_{path.stem}"  # the splits each number from 1
        return path.stem

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        path = Path(paths[0])
        try:
            q = _parse(path)
        except SourceFormatError as exc:
            return cls._defaults(path, None, [exc.problem])
        return cls._defaults(path, q, severson_evidence(q))

    @classmethod
    def _defaults(cls, path: Path, q: np.ndarray | None, against: list[str]) -> CellDefaults:
        """The cell's metadata from its parsed array (None: unreadable) and the evidence against it."""
        corrupt = corrupt_report(q) if q is not None else ""
        life, life_source = stated_cycle_life(path)
        grid_text = f"grid {N_GRID_POINTS} points {GRID_V[0]}-{GRID_V[1]} V and column j = cycle j+{FIRST_CYCLE} (the arrays' producer's convention, not in the file)"
        if against:
            return CellDefaults(
                dataset=UNKNOWN_ARRAY_DATASET,
                description=(
                    f"Q(V) array {path.name} in the layout of the Severson Qdlin arrays ({grid_text}), but not a "
                    "Severson cell: " + "; ".join(against) + ". No chemistry or capacity is assumed; a sidecar can state them."
                ),
                stated_cycle_life=life,
                origin={"stated_cycle_life": life_source},
            )
        evidence = f"{N_GRID_POINTS}-point Q(V) layout and a cycle-2 capacity of a 1.1 Ah cell"
        rule = from_dataset_rule("Severson et al. 2019 (A123 APR18650M1A: LFP, 1.1 Ah, 2.0-3.6 V)", evidence)
        return CellDefaults(
            dataset=DATASET,
            chemistry="LFP",
            nominal_capacity_ah=NOMINAL_CAPACITY_AH,
            voltage_min_v=VOLTAGE_MIN_V,
            voltage_max_v=VOLTAGE_MAX_V,
            licence=LICENCE,
            citation=CITATION,
            description=(
                f"Severson et al. cell {path.parent.name}/{path.stem}: A123 APR18650M1A LFP, 1.1 Ah, 4C discharge to 2.0 V. "
                f"Summary-level source: discharge capacity Q(V) per cycle ({grid_text}); "
                + (f"stated cycle life {life} ({life_source})." if life is not None else f"cycle life {life_source}.")
                + " No raw samples." + corrupt
            ),
            stated_cycle_life=life,
            origin={"chemistry": rule, "nominal_capacity_ah": rule, "voltage_window": rule, "stated_cycle_life": life_source},
        )

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        if len(paths) != 1:
            raise SourceFormatError(paths[0], f"a Severson cell is one array file, got {len(paths)}")
        path = Path(paths[0])
        q = _parse(path)  # once: the metadata and the summary come from the same parse
        summary = summary_from_array(q, cell_id, path.name)
        samples = finalize_samples(empty_samples(), cell_id)
        return ReadResult(samples=samples, cell=cls._defaults(path, q, severson_evidence(q)), cycle_summary=summary)
