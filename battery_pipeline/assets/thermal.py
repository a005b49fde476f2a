"""Cell temperature forecasting 60 s and 300 s ahead, over every stored cell that can carry it
(group `thermal`, `thermal_job`).

The science is `science.ml.thermal`; here we pick the cells from the warehouse, record and check.

* `temperature_forecast_models`: every cell whose validated samples have a measured temperature,
  a current that moves and samples no coarser than 10 s, grouped by cell type (the registry's
  dataset, chemistry and rated capacity: one thermal model per type). Per group: the lumped
  thermal model (one and two states) and the hybrid (ML on the physics residual), evaluated by
  leaving one stored cell file out, against persistence. The ambient is the registry's
  (`cells.ambient_temperature_c`: sidecar or dataset rule) unless the file's first readings
  contradict it, else inferred from those readings; every file says which. Figures in the table
  `temperature_forecast_metrics` and `results/temperature_forecast_results.json`, the card in
  `reports/temperature_forecast_card.md`.
"""


import json
import re
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pandas as pd

from battery_pipeline.checks import thermal_quality
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.checks.outcomes import not_evaluated
from battery_pipeline.provenance import code_version
from battery_pipeline.resources import WAREHOUSE_POOL, ModelStore, Warehouse

THERMAL_GROUP = "thermal"
FORECAST_MODELS = "temperature_forecast_models"
METRICS_TABLE = "temperature_forecast_metrics"
FILES_TABLE = "temperature_forecast_files"  # every stored cell considered: used or why not (data cards read it)
RESULTS_FILE = "temperature_forecast_results.json"
CARD_FILE = "temperature_forecast_card.md"
CHECKS = ("thermal_split_by_file", "thermal_no_future_temperature", "thermal_beats_persistence", "thermal_card_complete")


class ThermalConfig(dg.Config):
    cell_pattern: str = ".*"  # the cells considered (a regular expression on cell ids)
    horizons_s: list[int] = [60, 300]
    max_sample_interval_s: float = 10.0
    min_duration_s: float = 1200.0  # shorter files hold too few 300 s forecasts
    min_current_std_a: float = 0.05  # a file whose current never moves has no duty to forecast from
    # Leaving one file out refits per file: n files cost n fits of n - 1 files. Beyond this many
    # files of one cell type, the rest are listed, not used.
    max_files_per_type: int = 20


def _candidates(warehouse: Warehouse, config: ThermalConfig) -> tuple[list[str], dict[str, str]]:
    """(cells to use, {cell: why not}) from one aggregate over the validated samples."""
    stats = warehouse.query(
        "SELECT cell_id, count(*) AS n, count(temperature_c) AS n_temperature, stddev_samp(current_a) AS current_std, "
        "max(time_s) - min(time_s) AS duration_s FROM validated_samples GROUP BY cell_id ORDER BY cell_id"
    )
    pattern = re.compile(config.cell_pattern)
    use, skipped = [], {}
    for row in stats.itertuples():
        cell = str(row.cell_id)
        if not pattern.search(cell):
            continue
        if row.n_temperature < 0.5 * row.n:
            skipped[cell] = f"temperature measured on {row.n_temperature} of {row.n} samples"
        elif not (row.current_std or 0) > config.min_current_std_a:
            skipped[cell] = f"current never moves (SD {row.current_std or 0:.3g} A)"
        elif row.duration_s < config.min_duration_s:
            skipped[cell] = f"{row.duration_s:.0f} s of data (needs {config.min_duration_s:.0f})"
        else:
            use.append(cell)
    return use, skipped


def _cell_group(record: pd.Series) -> str:
    # one thermal model per cell type: a form factor and its fixture set C and R_th
    dataset = record.get("dataset") if isinstance(record.get("dataset"), str) else "dataset not stated"
    chemistry = record.get("chemistry") if isinstance(record.get("chemistry"), str) else "chemistry not stated"
    nominal = record.get("nominal_capacity_ah")
    capacity = f"{nominal:g} Ah" if nominal == nominal and nominal is not None else "capacity not stated"
    return f"{dataset} | {chemistry} | {capacity}"


def drive_cycles(warehouse: Warehouse, config: ThermalConfig) -> tuple[list, dict[str, str]]:
    """The stored cells as DriveCycles on their group's step, and the cells left out with why."""
    from battery_pipeline.science.ml import thermal

    use, skipped = _candidates(warehouse, config)
    cells = warehouse.query("SELECT * FROM cells").assign(cell_id=lambda f: f["cell_id"].astype(str)).set_index("cell_id")
    loaded = {}
    for cell in use:
        samples = warehouse.query(
            "SELECT time_s, current_a, voltage_v, temperature_c FROM validated_samples WHERE cell_id = ? ORDER BY time_s", [cell])
        interval = float(np.median(np.diff(samples["time_s"].to_numpy()))) if len(samples) > 1 else np.inf
        if not interval <= config.max_sample_interval_s:
            skipped[cell] = f"sampled every {interval:.3g} s (median): too coarse for a 60 s forecast"
            continue
        record = cells.loc[cell] if cell in cells.index else pd.Series(dtype=object)
        loaded[cell] = (samples, interval, record)
    steps: dict[str, float] = {}
    for cell, (_, interval, record) in loaded.items():
        group = _cell_group(record)
        steps[group] = max(steps.get(group, 0.0), thermal.step_for(interval) or np.inf)
    cycles = []
    for cell, (samples, _, record) in loaded.items():
        group = _cell_group(record)
        stated = record.get("ambient_temperature_c")
        stated = None if stated is None or stated != stated else float(stated)
        ambient, source, notes = thermal.ambient_for(samples["temperature_c"].to_numpy(float), stated,
                                                     str(record.get("ambient_temperature_source") or "unknown"))
        cycle = thermal.cycle_from_canonical(cell, str(record.get("dataset") or "dataset not stated"), group, samples,
                                             ambient, source, steps[group])
        cycle.notes.extend(notes)
        cycles.append(cycle)
    per_type: dict[str, int] = {}
    for cycle in sorted(cycles, key=lambda c: c.file_id):
        per_type[cycle.cell_id] = per_type.get(cycle.cell_id, 0) + 1
        if per_type[cycle.cell_id] > config.max_files_per_type and cycle.excluded_reason is None:
            cycle.excluded_reason = f"more than {config.max_files_per_type} files of its cell type (max_files_per_type)"
    return cycles, skipped


def file_rows(cycles: list, skipped: dict[str, str], held_out: set[str]) -> pd.DataFrame:
    """One row per stored cell considered: its cell type, ambient and source, and whether it was
    used (held out once) or why not."""
    rows = [{"cell_id": c.file_id, "cell_type": c.cell_id, "step_s": c.step_s,
             "ambient_c": float(np.nanmedian(c.ambient_c)) if len(c.ambient_c) else None, "ambient_source": c.ambient_source,
             "used": c.excluded_reason is None and c.file_id in held_out,
             "why_not": c.excluded_reason or ("" if c.file_id in held_out else "the only usable file of its cell type: nothing to train on when it is held out")}
            for c in cycles]
    rows += [{"cell_id": cell, "cell_type": None, "step_s": None, "ambient_c": None, "ambient_source": None, "used": False, "why_not": why}
             for cell, why in skipped.items()]
    return pd.DataFrame(rows, columns=["cell_id", "cell_type", "step_s", "ambient_c", "ambient_source", "used", "why_not"])


def metrics_rows(result: dict) -> pd.DataFrame:
    rows = []
    for m in result["metrics"]:
        for model in ("persistence", "physics_one_state", "physics_two_state", "hybrid"):
            rows.append({"dataset": m["dataset"], "horizon_s": m["horizon_s"], "model": model, "files": m["files"], "n": m["n"],
                         "rmse_c": m[model]["rmse_c"], "max_abs_error_c": m[model]["max_abs_error_c"]})
    return pd.DataFrame(rows, columns=["dataset", "horizon_s", "model", "files", "n", "rmse_c", "max_abs_error_c"])


def card_markdown(result: dict, skipped: dict[str, str]) -> str:
    """The forecaster's card: every section from this run's result."""
    files = result["files"]
    lines = ["# Card: cell temperature forecast (lumped thermal model + residual ML)", ""]
    lines += ["## Intended use",
              f"Forecast a cell's measured (case) temperature {' and '.join(str(h) for h in result['horizons_s'])} s ahead "
              "from its current, voltage and ambient, when the coming current is planned (a drive cycle or test programme); "
              "for cells of the types it was fitted on.", ""]
    groups = sorted({f["cell_id"] for f in files})
    lines += ["## Data",
              f"{len(files)} stored cell file(s) in {len(groups)} cell type(s): " + "; ".join(
                  f"{g}: {sum(1 for f in files if f['cell_id'] == g)} file(s)" for g in groups) + ". Ambient: "
              + "; ".join(sorted({f['ambient_source'].split(' (')[0] for f in files})) + ". "
              + (f"Left out: {len(skipped)} cell(s) ({'; '.join(f'{k}: {v}' for k, v in list(skipped.items())[:5])}"
                 f"{' ...' if len(skipped) > 5 else ''})." if skipped else "No stored cell left out."), ""]
    lines += ["## Method",
              "C dT/dt = I^2 R(T) + I T dU/dT - (T - T_amb)/R_th, one state or two (core/surface), exact update for "
              "piecewise-constant input; R(T) from the voltage response, C, R_th and dU/dT by bounded least squares on the "
              "training files' forecast errors; a gradient-boosting model per horizon on the physics residual. Split: leave "
              "one file out within each cell type, never by row.", ""]
    lines += ["## Metrics (degC, held-out files)", "| dataset | horizon | files | points | persistence RMSE / max | physics 1-state | physics 2-state | hybrid |",
              "|---|---|---|---|---|---|---|---|"]
    for m in result["metrics"]:
        cells = " | ".join(f"{m[k]['rmse_c']:.3f} / {m[k]['max_abs_error_c']:.2f}" for k in ("persistence", "physics_one_state", "physics_two_state", "hybrid"))
        lines.append(f"| {m['dataset']} | {m['horizon_s']} s | {m['files']} | {m['n']} | {cells} |")
    if not result["metrics"]:
        lines.append("| no cell type has two usable files: nothing was held out | | | | | | | |")
    lines += ["", "## Limitations",
              "The coming current is assumed known; ambient is held at its value at t. An inferred ambient (first readings) "
              "is only as good as the cell was idle when the file began. dU/dT is an effective term (it absorbs heat the "
              "resistance estimate misses). A new cell type needs its own fit: C and R_th belong to the cell and its fixture.", ""]
    return "\n".join(lines) + "\n"


@dg.asset(
    name=FORECAST_MODELS,
    deps=["cells", "validated_samples"],
    group_name=THERMAL_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "scikit-learn", "scipy"},
    description=(
        "Cell temperature 60 s / 300 s ahead: a lumped thermal model per cell type and an ML model on its residual, "
        "evaluated by leaving one file out, against persistence; the ambient of every file says where it came from."
    ),
    check_specs=[check_spec(name, FORECAST_MODELS) for name in CHECKS],
)
def temperature_forecast_models(context: dg.AssetExecutionContext, config: ThermalConfig, warehouse: Warehouse, model_store: ModelStore):
    from battery_pipeline.science.ml import thermal

    if not warehouse.table_exists("cells"):
        raise dg.Failure(description="table cells does not exist yet: run cell_pipeline_job for some cells first")
    cycles, skipped = drive_cycles(warehouse, config)
    used = [c for c in cycles if c.excluded_reason is None]
    splits = thermal.leave_one_file_out(used)
    warehouse.replace_table(FILES_TABLE, file_rows(cycles, skipped, {held for _, held in splits}))
    if not splits:
        reason = (f"no cell type has two usable files to hold one out ({len(used)} usable file(s); "
                  f"left out: {dict(list(skipped.items())[:5]) or 'none'})")
        context.log.warning(reason)
        yield dg.AssetObservation(asset_key=FORECAST_MODELS, metadata={"skipped": reason})
        for name in CHECKS:
            yield not_evaluated(name, FORECAST_MODELS, reason)
        return
    result = thermal.evaluate(cycles, horizons_s=tuple(config.horizons_s))
    metrics = metrics_rows(result)
    warehouse.replace_table(METRICS_TABLE, metrics)
    card = card_markdown(result, skipped)
    card_path = model_store.write_report(CARD_FILE, card)
    # the probe asks whether the code reads temperature after t; any fitted parameters will do
    group = [c for c in used if c.cell_id == used[0].cell_id]
    probe_params = thermal.fit_thermal(group, 1, tuple(config.horizons_s), resistance=thermal.fit_resistance(group))
    probes = [thermal.causality_probe(c, probe_params, max(config.horizons_s)) for c in group[:3]]
    results_path = model_store.write_result(RESULTS_FILE, {
        "generated_at": datetime.now(timezone.utc).isoformat(), "code_version": code_version(),
        "config": json.loads(config.model_dump_json()), "left_out_cells": skipped, "causality_probes": probes, **result,
    })
    hybrid = metrics[metrics["model"] == "hybrid"].set_index(["dataset", "horizon_s"])["rmse_c"]
    persistence = metrics[metrics["model"] == "persistence"].set_index(["dataset", "horizon_s"])["rmse_c"]
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(metrics),
            "files_used": len(used),
            "cells_left_out": len(skipped),
            "folds": len(result["folds"]),
            "hybrid_vs_persistence_rmse": dg.MetadataValue.json({f"{d} {h} s": f"{hybrid[(d, h)]:.3f} vs {persistence[(d, h)]:.3f} degC"
                                                                 for d, h in hybrid.index}),
            "ambient_sources": dg.MetadataValue.json({f["file_id"]: f["ambient_source"] for f in result["files"][:30]}),
            "left_out": dg.MetadataValue.json(dict(list(skipped.items())[:30])),
            "metrics": dg.MetadataValue.md(metrics.to_markdown(index=False)),
            "results": dg.MetadataValue.path(str(results_path)),
            "card": dg.MetadataValue.path(str(card_path)),
        }
    )
    yield thermal_quality.thermal_split_by_file_check(result["folds"], FORECAST_MODELS)
    yield thermal_quality.thermal_no_future_temperature_check(probes, FORECAST_MODELS)
    yield thermal_quality.thermal_beats_persistence_check(result["metrics"], FORECAST_MODELS)
    yield thermal_quality.thermal_card_complete_check(card, FORECAST_MODELS)
