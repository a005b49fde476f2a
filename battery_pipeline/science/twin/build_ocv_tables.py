"""Regenerates `ocv_tables.json`, the OCV(SOC) tables that `ocv.py` reads.

    python -m battery_pipeline.science.twin.build_ocv_tables [--datasets DIR] [--check]

`--datasets` defaults to $BATTERY_DATASETS or ../shared/datasets from the repository root;
`--check` rebuilds in memory and exits 1 if the committed file differs (nothing is written).

Measured tables (pseudo-OCV from slow-rate tests):
  - NMC: LG 18650HG2 (Kollmeyer et al. 2020), every `lg_hg2/<temperature>/*_C20DisCh.csv`: a C/20
    (0.15 A) discharge from full (after a 1C CC-CV charge to 4.2 V / 50 mA) to 2.8 V, 1 h rest,
    then a C/20 charge to 4.2 V with a short CV to ~50 mA. Six temperatures, -20..40 degC.
  - NCA: Panasonic NCR18650PF (Kollmeyer 2018), every `panasonic_18650pf/<temperature>/*/*C20 OCV
    Test*.mat`: C/20 (0.145 A) discharge to 2.5 V, 1 h rest, C/20 CC charge to 4.2 V (no CV).
    Only the 25 degC folder is in the shared datasets; other temperature folders, if added,
    are picked up by the same glob.
Method, per test: the longest discharge step and the longest charge step after it are the two
branches. Each branch's SOC comes from the reader's Ah count (`capacity_ah`, the cycler's own
counter) normalised by that branch's total throughput: discharge SOC = 1 - q/Q_dis, charge SOC =
q/Q_cha. Both branches span the same window (full -> the state at the 2.8/2.5 V cut-off -> full),
and normalising each by its own throughput removes the cycler's current offset: at C/20 the
channels' +-0.1 % of full-scale accuracy (75 A LG, 25 A Panasonic) is 5-10 % of the current, and
the counted charge differs from the counted discharge by +6.8 % (LG 25 degC) and -13 %
(Panasonic) although both end at the same voltage. SOC 0 is thus "empty at C/20 to the cut-off
at that temperature" and the table's `capacity_ah` is the measured C/20 discharge capacity.
Each branch is interpolated linearly onto a fixed grid of `SOC_POINTS` SOC values, and the
pseudo-OCV is the mean of the two, which cancels the ohmic and polarisation drop (equal and
opposite at equal |I|) and most of the hysteresis. `half_gap_v` stats are (V_charge -
V_discharge)/2: the size of what was averaged out, hence the uncertainty of the table versus the
true (relaxed) OCV, which lies between the branches.

Error of a C/20 pseudo-OCV versus a relaxed OCV: `panasonic_hppc_rest_points` gives the voltage
after 34-64 min rests between the 25 degC HPPC pulse sets (each reached by a discharge) at SOC =
1 - Ah/2.9; they lie 8-27 mV below the NCA table between 20 and 95 % SOC, i.e. on the discharge
side of the hysteresis (they are within +-15 mV of the C/20 discharge branch there), and up to
~70 mV below it at 5 % SOC. Near the ends (SOC < 0.05 and at 1) the C/20 discharge
overpotential grows (half-gap up to 120 mV at 25 degC) and the mean is a poorer OCV estimate:
the LG 25 degC table reads 2.88 V at SOC 0 where the cell relaxes to 2.93 V (and still rising)
after 1 h.

Literature-shaped tables (no slow-rate data in the shared datasets):
  - LFP: `battery_pipeline.science.synth.LFP.ocv`, the project's flat two-plateau LFP/graphite
    curve (3.27-3.35 V plateaus, steep ends to 2.0 and 3.6 V; A123 APR18650M1A class).
  - LCO: full-cell OCV = U_LiCoO2(y) - U_graphite(x) with the rational LiCoO2 fit of Doyle/
    Ramadass et al. 2004 (as in LIONSIMBA, Torchio et al. 2016) and Newman's DUALFOIL MCMB
    graphite fit, along the stoichiometry path x: 0 -> 0.9, y: 0.99 -> 0.47 (linear in SOC),
    cut and rescaled to the 3.0-4.2 V window. Shape only, not a measured cell: its mid-SOC
    voltage (3.75 V) is some 50 mV below commercial LCO cells, and y < 0.4955 near full extends
    the LiCoO2 fit slightly beyond its usual range.

Monotonicity: voltages are stored in 10 uV units and each value is raised, where needed, to one
unit above its predecessor (cummax on `u - i`), so every table is strictly increasing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SOC_POINTS = 201
VOLT_UNIT = 1e-5  # storage resolution, V (Digatron voltage resolution is 10 uV)
TABLE_FILE = Path(__file__).with_name("ocv_tables.json")
REPO_ROOT = Path(__file__).resolve().parents[3]
PANASONIC_NOMINAL_AH = 2.9  # the HPPC programme steps SOC by 5 % of 2.9 Ah

LG_CITATION = "Kollmeyer P. et al. (2020) LG 18650HG2 Li-ion Battery Data, Mendeley Data, doi:10.17632/cp3473x7xv.3 (CC BY 4.0)"
PANASONIC_CITATION = "Kollmeyer P. (2018) Panasonic 18650PF Li-ion Battery Data, Mendeley Data, doi:10.17632/wykht8y7tg.1 (CC BY 4.0)"


def soc_grid() -> np.ndarray:
    return np.linspace(0.0, 1.0, SOC_POINTS)


def default_datasets_root() -> Path:
    return Path(os.environ.get("BATTERY_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


# ------------------------------------------------------------------------------------------
# Measured C/20 tests
# ------------------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _branch_on_grid(samples: pd.DataFrame, start: int, stop: int, discharge: bool, grid: np.ndarray):
    """(voltage on the SOC grid, Ah throughput, mean temperature) of one CC branch."""
    part = samples.iloc[start:stop]
    q = part["capacity_ah"].to_numpy(dtype="float64")
    cycle = samples["cycle_number"].to_numpy()
    step_type = samples["step_type"].to_numpy()
    before = (cycle[:start] == cycle[start]) & (step_type[:start] == step_type[start])
    if before.any() or not np.isfinite(q).all():
        # capacity_ah counts from the cycle start: an earlier step of the same direction in the
        # cycle would offset q, so this file does not have the layout this method assumes.
        raise ValueError(f"{part['source_file'].iloc[0]}: branch is not the first {step_type[start]} of its cycle")
    total = float(q.max())
    soc = 1.0 - q / total if discharge else q / total
    voltage = part["voltage_v"].to_numpy(dtype="float64")
    order = np.argsort(soc, kind="stable")
    soc, first = np.unique(soc[order], return_index=True)  # drop the duplicated last records
    on_grid = np.interp(grid, soc, voltage[order][first])
    return on_grid, total, float(np.nanmean(part["temperature_c"].to_numpy(dtype="float64")))


def c20_pseudo_ocv(samples: pd.DataFrame, grid: np.ndarray | None = None) -> dict:
    """Pseudo-OCV of one C/20 discharge + charge test (canonical frame of one file)."""
    grid = soc_grid() if grid is None else grid
    step_type = samples["step_type"].to_numpy()
    discharges = _runs(step_type == "discharge")
    if not discharges:
        raise ValueError("no discharge step")
    dis = max(discharges, key=lambda r: r[1] - r[0])
    charges = [r for r in _runs(step_type == "charge") if r[0] >= dis[1]]
    if not charges:
        raise ValueError("no charge step after the discharge")
    cha = max(charges, key=lambda r: r[1] - r[0])
    v_dis, q_dis, t_dis = _branch_on_grid(samples, *dis, discharge=True, grid=grid)
    v_cha, q_cha, t_cha = _branch_on_grid(samples, *cha, discharge=False, grid=grid)
    return {
        "ocv_v": (v_dis + v_cha) / 2.0,
        "half_gap_v": (v_cha - v_dis) / 2.0,
        "capacity_ah": q_dis,
        "charge_capacity_ah": q_cha,
        "temperature_c": (t_dis + t_cha) / 2.0,
    }


def _temperature_folder(path: Path) -> str:
    return next((p for p in reversed(path.parts[:-1]) if "degC" in p), "?")


def _lg_files(root: Path) -> list[Path]:
    return sorted((root / "lg_hg2").glob("*/*_C20DisCh.csv"))


def _panasonic_files(root: Path) -> list[Path]:
    return sorted((root / "panasonic_18650pf").glob("*degC/*/*C20 OCV Test*.mat"))


def measured_tables(root: Path, grid: np.ndarray | None = None) -> list[dict]:
    from battery_pipeline.science.readers.digatron import DigatronCsvReader, _metadata
    from battery_pipeline.science.readers.panasonic_mat import Panasonic18650PFMatReader

    grid = soc_grid() if grid is None else grid
    tables = []
    for path in _lg_files(root):
        result = c20_pseudo_ocv(DigatronCsvReader.read([path], path.stem).samples, grid)
        battery = _metadata(path).get("Battery Name", "?")
        note = ""
        if "HG2" not in battery.upper():
            # 575_* (10 degC) names another cell in the cycler header; its curve and capacity
            # fall between the 0 and 25 degC HG2 tests, so it is kept, with the caveat stated.
            note = f" The cycler header names the battery '{battery}', not the HG2; kept because its curve lies between the 0 and 25 degC HG2 tables."
        tables.append(
            _table_record(
                "NMC",
                result,
                f"LG 18650HG2 (NMC), lg_hg2/{path.parent.name}/{path.name}: C/20 discharge to 2.8 V and C/20 charge "
                f"to 4.2 V, chamber {_temperature_folder(path)}, mean cell {result['temperature_c']:.1f} degC; "
                "pseudo-OCV = mean of charge and discharge voltage at equal SOC (SOC per branch from the "
                f"cycler Ah counter / that branch's throughput). {LG_CITATION}.{note}",
            )
        )
    for path in _panasonic_files(root):
        result = c20_pseudo_ocv(Panasonic18650PFMatReader.read([path], path.stem).samples, grid)
        relative = path.relative_to(root).as_posix()
        tables.append(
            _table_record(
                "NCA",
                result,
                f"Panasonic NCR18650PF (NCA), {relative}: C/20 discharge to 2.5 V and C/20 CC charge to 4.2 V, "
                f"chamber {_temperature_folder(path)}, mean cell {result['temperature_c']:.1f} degC; pseudo-OCV = "
                "mean of charge and discharge voltage at equal SOC (SOC per branch from the cycler Ah counter / "
                f"that branch's throughput). {PANASONIC_CITATION}.",
            )
        )
    return tables


def _table_record(chemistry: str, result: dict, source: str) -> dict:
    grid = soc_grid()
    half = result["half_gap_v"]
    inner = (grid >= 0.05) & (grid <= 0.95)
    middle = (grid >= 0.1) & (grid <= 0.9)
    return {
        "chemistry": chemistry,
        "temperature_c": round(result["temperature_c"], 1),
        "source": source,
        "capacity_ah": round(result["capacity_ah"], 4),
        "charge_capacity_ah": round(result["charge_capacity_ah"], 4),
        "half_gap_v": {
            "median": round(float(np.median(half)), 4),
            "max_soc_10_90": round(float(half[middle].max()), 4),
            "max_soc_5_95": round(float(half[inner].max()), 4),
            "max": round(float(half.max()), 4),
        },
        "ocv_v": result["ocv_v"],
    }


# ------------------------------------------------------------------------------------------
# Literature-shaped tables
# ------------------------------------------------------------------------------------------


def _lico2_ocp(y: np.ndarray) -> np.ndarray:
    """LiCoO2 OCP vs Li (V), rational fit of Doyle/Ramadass 2004 as used in LIONSIMBA."""
    num = -4.656 + 88.669 * y**2 - 401.119 * y**4 + 342.909 * y**6 - 462.471 * y**8 + 433.434 * y**10
    den = -1.0 + 18.933 * y**2 - 79.532 * y**4 + 37.311 * y**6 - 73.083 * y**8 + 95.96 * y**10
    return num / den


def _graphite_ocp(x: np.ndarray) -> np.ndarray:
    """MCMB graphite OCP vs Li (V), Newman's DUALFOIL fit."""
    terms = (
        (0.0351, 0.286, 0.083),
        (-0.0045, 0.849, 0.119),
        (-0.035, 0.9233, 0.05),
        (-0.0147, 0.5, 0.034),
        (-0.102, 0.194, 0.142),
        (-0.022, 0.9, 0.0164),
        (-0.011, 0.124, 0.0226),
        (0.0155, 0.105, 0.029),
    )
    out = 0.194 + 1.5 * np.exp(-120.0 * x)
    for amplitude, centre, width in terms:
        out = out + amplitude * np.tanh((x - centre) / width)
    return out


def lco_ocv(grid: np.ndarray, v_min: float = 3.0, v_max: float = 4.2) -> np.ndarray:
    path = np.linspace(0.0, 1.0, 100_001)
    x = 0.9 * path
    y = 0.99 - 0.52 * path
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        full = _lico2_ocp(y) - _graphite_ocp(np.maximum(x, 1e-9))
    start = int(np.argmax(full >= v_min))
    stop = int(np.argmax(full >= v_max))
    part = full[start : stop + 1]
    if not (np.all(np.isfinite(part)) and np.all(np.diff(part) > 0)):
        raise RuntimeError("LCO construction is not monotone on its window")
    soc = (path[start : stop + 1] - path[start]) / (path[stop] - path[start])
    return np.interp(grid, soc, part)


def literature_tables(grid: np.ndarray | None = None) -> list[dict]:
    from battery_pipeline.science.synth import LFP

    grid = soc_grid() if grid is None else grid
    return [
        {
            "chemistry": "LFP",
            "temperature_c": 25.0,
            "source": (
                "literature-shaped, not measured: battery_pipeline.science.synth.LFP.ocv, flat two-plateau "
                "LFP/graphite curve (3.27-3.35 V plateaus, steep ends to 2.0 and 3.6 V; A123 APR18650M1A "
                "class, as in Severson et al. 2019). No slow-rate LFP data in the shared datasets."
            ),
            "ocv_v": LFP.ocv(grid),
        },
        {
            "chemistry": "LCO",
            "temperature_c": 25.0,
            "source": (
                "literature-shaped, not measured: U_LiCoO2(y) - U_graphite(x), LiCoO2 rational fit of "
                "Ramadass et al. 2004 (LIONSIMBA, Torchio et al. 2016) and Newman's DUALFOIL MCMB graphite "
                "fit, path x 0->0.9, y 0.99->0.47, cut to 3.0-4.2 V. No slow-rate LCO data in the shared "
                "datasets (CALCE CS2 is 0.5C/1C only)."
            ),
            "ocv_v": lco_ocv(grid),
        },
    ]


# ------------------------------------------------------------------------------------------
# The file
# ------------------------------------------------------------------------------------------


def strictly_increasing_units(ocv_v: np.ndarray) -> tuple[np.ndarray, int]:
    """Voltages in VOLT_UNIT integers, strictly increasing; and how many values were raised."""
    units = np.round(np.asarray(ocv_v, dtype="float64") / VOLT_UNIT).astype(np.int64)
    index = np.arange(len(units))
    fixed = np.maximum.accumulate(units - index) + index
    return fixed, int(np.count_nonzero(fixed != units))


def build(root: Path) -> dict:
    tables = measured_tables(root) + literature_tables()
    for table in tables:
        units, raised = strictly_increasing_units(table["ocv_v"])
        table["ocv_v"] = [round(int(u) * VOLT_UNIT, 5) for u in units]
        table["points_raised_for_monotonicity"] = raised
    order = {"NMC": 0, "NCA": 1, "LFP": 2, "LCO": 3}
    tables.sort(key=lambda t: (order.get(t["chemistry"], 9), t["temperature_c"]))
    return {
        "generated_by": "python -m battery_pipeline.science.twin.build_ocv_tables",
        "method": (
            "Measured tables: pseudo-OCV = mean of C/20 charge and discharge voltage at equal SOC; SOC per "
            "branch = cycler Ah count / that branch's throughput, so SOC 0..1 spans full to the C/20 cut-off "
            "at that temperature and capacity_ah is the C/20 discharge capacity. half_gap_v = (V_charge - "
            "V_discharge)/2 (V), what the mean removed; the true OCV lies between the branches. See "
            "build_ocv_tables.py for error figures."
        ),
        "soc_grid": {"start": 0.0, "stop": 1.0, "points": SOC_POINTS},
        "voltage_unit_v": VOLT_UNIT,
        "tables": tables,
    }


def dumps(payload: dict) -> str:
    """Pretty at the top, one line per table (small diffs when a table changes)."""
    head = {k: v for k, v in payload.items() if k != "tables"}
    lines = json.dumps(head, indent=1)[:-2].splitlines()
    lines[-1] += ","
    lines.append(' "tables": [')
    tables = [json.dumps(t, separators=(",", ":")) for t in payload["tables"]]
    lines.append(",\n".join("  " + t for t in tables))
    lines.append(" ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def panasonic_hppc_rest_points(root: Path, min_rest_s: float = 1500.0) -> pd.DataFrame:
    """Relaxed voltages of the 25 degC Panasonic HPPC test: the last sample of every rest of at
    least `min_rest_s` before a pulse set, with SOC = 1 + Ah/2.9 (the cycler's counter, which
    the programme steps by 5 % of 2.9 Ah). An independent check of the NCA table."""
    from battery_pipeline.science.readers._matfile import as_float_vector, load_mat

    path = next((root / "panasonic_18650pf" / "25degC").glob("*/*HPPC*.mat"), None)
    if path is None:
        raise FileNotFoundError("no Panasonic 25 degC HPPC file")
    meas = load_mat(path)["meas"].ravel()[0]
    time_s, voltage, current, ah = (as_float_vector(meas[k]) for k in ("Time", "Voltage", "Current", "Ah"))
    rest = np.abs(current) < 1e-3
    rows = []
    for start, stop in _runs(rest):
        duration = time_s[stop - 1] - time_s[start]
        if duration >= min_rest_s and stop < len(rest):
            rows.append((1.0 + ah[stop - 1] / PANASONIC_NOMINAL_AH, voltage[stop - 1], duration))
    return pd.DataFrame(rows, columns=["soc", "rest_voltage_v", "rest_s"]).assign(source_file=path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=default_datasets_root())
    parser.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    args = parser.parse_args(argv)
    if not args.datasets.is_dir():
        print(f"datasets not found at {args.datasets}", file=sys.stderr)
        return 2
    text = dumps(build(args.datasets))
    if args.check:
        same = TABLE_FILE.exists() and TABLE_FILE.read_text() == text
        print("ocv_tables.json is up to date" if same else "ocv_tables.json differs from a rebuild")
        return 0 if same else 1
    TABLE_FILE.write_text(text)
    for table in json.loads(text)["tables"]:
        gap = table.get("half_gap_v", {})
        print(
            f"{table['chemistry']:4s} {table['temperature_c']:6.1f} degC  "
            f"{table['ocv_v'][0]:.4f}..{table['ocv_v'][-1]:.4f} V  half-gap median/max(10-90%)/max(5-95%)/max "
            f"{gap.get('median', float('nan')) * 1e3:.1f}/{gap.get('max_soc_10_90', float('nan')) * 1e3:.1f}/{gap.get('max_soc_5_95', float('nan')) * 1e3:.1f}/"
            f"{gap.get('max', float('nan')) * 1e3:.1f} mV  raised {table['points_raised_for_monotonicity']}"
        )
    print(f"wrote {TABLE_FILE} ({TABLE_FILE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
