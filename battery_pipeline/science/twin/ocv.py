"""Open-circuit voltage versus state of charge, per chemistry (and temperature where measured).

The tables live in `ocv_tables.json` beside this module, written by `build_ocv_tables.py` (see
its docstring for the method, the files and the error figures); this module only reads that file,
so it works without the datasets.

  - NMC: LG 18650HG2 C/20 pseudo-OCV at six temperatures (-20..40 degC chamber).
  - NCA: Panasonic NCR18650PF C/20 pseudo-OCV at 25 degC.
  - LFP, LCO: literature-shaped curves (no slow-rate data in the shared datasets).

Pseudo-OCV = mean of the C/20 charge and discharge curves at equal SOC. The true (relaxed) OCV
lies between the two branches, so the table's uncertainty is their half gap: median 17-19 mV at
25-40 degC (up to 75 mV at -20 degC), larger below 15 % SOC; SOC 0 is the C/20 cut-off at the
table's temperature, SOC 1 full charge.

Interpolation: linear in SOC between the grid points (201 points, 0.005 apart), so `ocv` and
`soc_from_ocv` are exact inverses of each other; linear in temperature between measured tables,
clamped to the measured range. `slope` is a central difference over +-SLOPE_HALF_WIDTH_SOC, so
it is smooth enough to weigh SOC estimates by (a flat LFP plateau gives a small slope, i.e. a
voltage that says little about SOC).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

CHEMISTRIES = ("LFP", "NMC", "NCA", "LCO")
TABLE_FILE = Path(__file__).with_name("ocv_tables.json")
REFERENCE_TEMPERATURE_C = 25.0  # temperature_c=None picks the measured table nearest to this
SLOPE_HALF_WIDTH_SOC = 0.01  # smoothing span of `slope` (the C/20 data carry ~0.1 mV noise)


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare to a single bool
class OcvTable:
    chemistry: str
    soc: np.ndarray  # increasing, 0..1
    ocv_v: np.ndarray  # strictly increasing
    temperature_c: float
    source: str

    def __post_init__(self):
        soc = np.array(self.soc, dtype="float64")
        ocv_v = np.array(self.ocv_v, dtype="float64")
        if soc.ndim != 1 or soc.shape != ocv_v.shape or len(soc) < 2:
            raise ValueError(f"{self.chemistry}: soc and ocv_v must be 1-D arrays of equal length >= 2")
        if soc[0] != 0.0 or soc[-1] != 1.0 or np.any(np.diff(soc) <= 0):
            raise ValueError(f"{self.chemistry}: soc must increase from 0 to 1")
        if not np.all(np.isfinite(ocv_v)) or np.any(np.diff(ocv_v) <= 0):
            raise ValueError(f"{self.chemistry}: ocv_v must be finite and strictly increasing")
        soc.flags.writeable = False
        ocv_v.flags.writeable = False
        object.__setattr__(self, "soc", soc)
        object.__setattr__(self, "ocv_v", ocv_v)

    def ocv(self, soc) -> np.ndarray:
        """OCV (V) at `soc`, clipped to [0, 1]; NaN stays NaN."""
        return np.interp(np.clip(np.asarray(soc, dtype="float64"), 0.0, 1.0), self.soc, self.ocv_v)

    def soc_from_ocv(self, ocv_v) -> np.ndarray:
        """SOC (0..1) whose OCV is `ocv_v`; voltages beyond the table give 0 or 1."""
        return np.interp(np.asarray(ocv_v, dtype="float64"), self.ocv_v, self.soc)

    def slope(self, soc) -> np.ndarray:
        """dOCV/dSOC (V per unit SOC, > 0), central difference over +-SLOPE_HALF_WIDTH_SOC."""
        lo = np.clip(self.soc - SLOPE_HALF_WIDTH_SOC, 0.0, 1.0)
        hi = np.clip(self.soc + SLOPE_HALF_WIDTH_SOC, 0.0, 1.0)
        on_grid = (self.ocv(hi) - self.ocv(lo)) / (hi - lo)
        return np.interp(np.clip(np.asarray(soc, dtype="float64"), 0.0, 1.0), self.soc, on_grid)


@lru_cache(maxsize=1)
def _stored() -> tuple[np.ndarray, tuple[OcvTable, ...]]:
    payload = json.loads(TABLE_FILE.read_text())
    grid_spec = payload["soc_grid"]
    grid = np.linspace(grid_spec["start"], grid_spec["stop"], grid_spec["points"])
    tables = tuple(
        OcvTable(
            chemistry=t["chemistry"],
            soc=grid,
            ocv_v=np.asarray(t["ocv_v"], dtype="float64"),
            temperature_c=float(t["temperature_c"]),
            source=t["source"],
        )
        for t in payload["tables"]
    )
    return grid, tables


def _tables_of(chemistry: str) -> list[OcvTable]:
    key = str(chemistry).strip().upper()
    if key not in CHEMISTRIES:
        raise ValueError(f"unknown chemistry {chemistry!r}; known: {', '.join(CHEMISTRIES)}")
    found = sorted((t for t in _stored()[1] if t.chemistry == key), key=lambda t: t.temperature_c)
    if not found:
        raise ValueError(f"no OCV table for {key} in {TABLE_FILE.name}")
    return found


def ocv_table(chemistry: str, temperature_c: float | None = None) -> OcvTable:
    """The OCV table of `chemistry` at `temperature_c` (degC).

    None: the measured table nearest to 25 degC. Otherwise linear interpolation in temperature
    between the two measured tables around it, clamped to the measured range (a single table is
    returned as it is). Unknown chemistry: ValueError naming the known ones.
    """
    tables = _tables_of(chemistry)
    if temperature_c is None:
        return min(tables, key=lambda t: abs(t.temperature_c - REFERENCE_TEMPERATURE_C))
    temperature_c = float(temperature_c)
    if not np.isfinite(temperature_c):
        raise ValueError(f"temperature_c must be finite, got {temperature_c}")
    if temperature_c <= tables[0].temperature_c:
        return tables[0]
    if temperature_c >= tables[-1].temperature_c:
        return tables[-1]
    upper = next(i for i, t in enumerate(tables) if t.temperature_c >= temperature_c)
    low, high = tables[upper - 1], tables[upper]
    if high.temperature_c == temperature_c:
        return high
    weight = (temperature_c - low.temperature_c) / (high.temperature_c - low.temperature_c)
    # A convex combination of two strictly increasing curves on one grid is strictly increasing.
    return OcvTable(
        chemistry=low.chemistry,
        soc=low.soc,
        ocv_v=(1.0 - weight) * low.ocv_v + weight * high.ocv_v,
        temperature_c=temperature_c,
        source=(
            f"interpolated linearly at {temperature_c:g} degC between the {low.temperature_c:g} degC "
            f"table ({low.source}) and the {high.temperature_c:g} degC table ({high.source})"
        ),
    )


def available_tables() -> list[tuple[str, float, str]]:
    """(chemistry, temperature degC, source) of every stored table."""
    order = {name: i for i, name in enumerate(CHEMISTRIES)}
    tables = sorted(_stored()[1], key=lambda t: (order.get(t.chemistry, len(order)), t.temperature_c))
    return [(t.chemistry, t.temperature_c, t.source) for t in tables]
