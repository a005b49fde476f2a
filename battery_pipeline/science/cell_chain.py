"""One cell's chain as plain functions: source files -> registry record -> raw samples ->
validated samples -> per-cycle features -> labels.

No Dagster and no warehouse here. The `cell_pipeline` asset hands each cell of its run to
`compute_cell`, in worker processes when the run holds several cells, and stores what comes back
stage by stage (the writes and the checks that read the stored rows stay in the one process that
holds the DuckDB writer). A stage that fails stops that cell's chain with the reason; the other
cells of the run are not affected.

Stages and the tables they write (`STAGE_TABLES`):
    cells      cells
    raw        raw_samples, cell_impedance, source_cycle_summaries
    validated  validated_samples, quarantined_samples, sample_flags
    features   cycle_features, cycle_curves
    labels     cycle_labels
A task computes a contiguous run of stages; the stored tables a later stage needs when its
upstream stage is not computed in the same task are passed in `CellTask.inputs`
(`stage_inputs` names them).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from battery_pipeline.science.cycle_classes import CLASS_COLUMNS, classify_cycles
from battery_pipeline.science.features import CYCLE_FEATURE_COLUMNS, FeatureConfig, compute_curves, compute_cycle_features
from battery_pipeline.science.labels import LABEL_COLUMNS, LabelConfig, label_config_for, labels_for_cell
from battery_pipeline.science.readers import CyclerReader, SourceFormatError
from battery_pipeline.science.sample_quality import FLAG_COLUMNS
from battery_pipeline.science.schema import CELL_COLUMNS, IMPEDANCE_COLUMNS, SAMPLE_COLUMNS, CellImpedance, CellRecord
from battery_pipeline.science.sources import CellSource, cell_record, trusted_nominal
from battery_pipeline.science.validation import CellLimits, ValidationResult, ValidationRules, validate_samples

STAGES = ("cells", "raw", "validated", "features", "labels")
STAGE_TABLES = {
    "cells": ("cells",),
    "raw": ("raw_samples", "cell_impedance", "source_cycle_summaries"),
    "validated": ("validated_samples", "quarantined_samples", "sample_flags"),
    "features": ("cycle_features", "cycle_curves"),
    "labels": ("cycle_labels",),
}
# What each stage reads: (table, columns or None for all).
STAGE_READS = {
    "cells": (),
    "raw": (),
    "validated": (("raw_samples", SAMPLE_COLUMNS), ("cells", None)),
    "features": (("validated_samples", SAMPLE_COLUMNS), ("cells", None), ("cell_impedance", None), ("source_cycle_summaries", None)),
    "labels": (("cycle_features", None), ("cells", None), ("source_cycle_summaries", None)),
}
CURVE_TYPES = {"cell_id": str, "cycle_number": "int64", "curve": str, "voltage_v": "float64", "value": "float64"}

_TEXT_COLUMNS = {"cell_id", "source_file", "cycle_class", "cycle_class_reason"}
_INTEGER_COLUMNS = {"cycle_number", "n_samples", "source_row"}


def typed_feature_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Fixed column types for per-cycle tables, so partitions from samples and from summary-level
    sources (where most features are missing) land in one DuckDB table: text, nullable integers,
    doubles."""
    types = {}
    for column in frame.columns:
        if column in _TEXT_COLUMNS:
            types[column] = str
        elif column in _INTEGER_COLUMNS:
            types[column] = "Int64"
        else:
            types[column] = "float64"
    return frame.astype(types)


def summary_table(summary: pd.DataFrame | None) -> pd.DataFrame:
    """A source's per-cycle table in the cycle_features layout (+ provenance), fixed types."""
    columns = [*CYCLE_FEATURE_COLUMNS, "source_file", "source_row"]
    frame = summary.reindex(columns=columns) if summary is not None else pd.DataFrame(columns=columns)
    return typed_feature_frame(frame)


def stage_inputs(stages: tuple[str, ...]) -> list[tuple[str, list[str] | None]]:
    """The stored tables the first of `stages` reads (none when the chain starts at the files)."""
    return list(STAGE_READS[stages[0]]) if stages else []


# FeatureConfig fields a settings file may set (the definitions a dataset may need its own of:
# the delta-Q grid and reference, the CC charge window, the early-discharge point).
SETTABLE_FIELDS = {
    "voltage_window_v": "range", "reference_cycle": "int", "reference_complete_rank": "int", "n_grid_points": "int",
    "grid_capacity_quantiles": "range", "charge_window_v": "range", "early_discharge_s": "number",
    "dqdv_window_v": "number",
}


def _checked_settings(values: dict, where: str) -> dict:
    out = {}
    for name, value in values.items():
        kind = SETTABLE_FIELDS.get(name)
        if kind is None:
            raise ValueError(f"{where}: {name!r} is not a settable feature setting; settable: {sorted(SETTABLE_FIELDS)}")
        if kind == "range":
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value) and value[0] < value[1]):
                raise ValueError(f"{where}: {name!r} must be [low, high] with low < high, got {value!r}")
            value = (float(value[0]), float(value[1]))
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: {name!r} must be a whole number >= 1, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{where}: {name!r} must be a positive number, got {value!r}")
        out[name] = value
    return out


def feature_settings_for(cell, settings_path: Path | None) -> tuple[dict, list[str]]:
    """(FeatureConfig overrides for this cell, where each layer came from) from a settings file:
    "default", then the cell's dataset under "datasets", then every matching "cell_patterns"."""
    if settings_path is None or not Path(settings_path).exists():
        return {}, []
    import json
    import re

    settings = json.loads(Path(settings_path).read_text())
    name = Path(settings_path).name
    layers = [(f"{name} default", settings.get("default", {}))]
    dataset = cell.get("dataset")
    if dataset and dataset in settings.get("datasets", {}):
        layers.append((f"{name} datasets[{dataset!r}]", settings["datasets"][dataset]))
    for pattern, values in settings.get("cell_patterns", {}).items():
        if re.search(pattern, str(cell.get("cell_id", ""))):
            layers.append((f"{name} cell_patterns[{pattern!r}]", values))
    merged, origin = {}, []
    for where, values in layers:
        if values:
            merged.update(_checked_settings(values, where))
            origin.append(f"{where}: {', '.join(sorted(values))}")
    return merged, origin


def feature_config_for(cell, settings_path: Path | None = None) -> tuple[FeatureConfig, list[str]]:
    """(feature settings for a cell, the settings-file layers that set any): how its cycler logs
    step changes comes from its reader; the definitions a dataset needs its own of from the
    settings file (`feature_settings_for`)."""
    reader = CyclerReader.registry.get(str(cell.get("source_format")))
    overrides, origin = feature_settings_for(cell, settings_path)
    return FeatureConfig(step_end_logging=reader.logs_step_end if reader else True, **overrides), origin


class CellStageError(ValueError):
    """A cell's stage cannot be computed from its inputs (a user-facing reason, not a bug)."""


@dataclass
class CellTask:
    source: CellSource
    stages: tuple[str, ...]  # contiguous, in STAGES order
    rules: ValidationRules = field(default_factory=ValidationRules)
    label_settings: Path | None = None
    inputs: dict[str, pd.DataFrame] = field(default_factory=dict)  # stored tables (stage_inputs)
    feature_settings: Path | None = None


@dataclass
class CellOutcome:
    """What one cell's chain produced: the tables of every stage that completed, what the
    descriptions and checks need beyond the tables, seconds per stage, and the failure if a
    stage failed (its stage, the message, and the traceback for an unexpected error)."""

    key: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    read_seconds: float | None = None
    validation: ValidationResult | None = None
    feature_origin: str | None = None
    feature_settings: list[str] = field(default_factory=list)  # the settings-file layers that applied
    record: pd.Series | None = None  # the cell's registry row
    feature_columns: list[str] = field(default_factory=list)
    label_config: LabelConfig | None = None
    label_cycles: pd.DataFrame | None = None
    failed_stage: str | None = None
    error: str | None = None
    error_trace: str | None = None
    # stage -> what the orchestration layer built from this outcome in the worker (the UI's
    # metadata and check results); opaque here
    reports: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed_stage is None


def compute_cell(task: CellTask) -> CellOutcome:
    """Run the task's stages for one cell; never raises for the cell's data."""
    outcome = CellOutcome(task.source.partition_key)
    tables = dict(task.inputs)
    for stage in task.stages:
        started = time.perf_counter()
        try:
            produced = _STAGE_FUNCTIONS[stage](task, tables, outcome)
        except (SourceFormatError, CellStageError, ValueError) as exc:
            outcome.failed_stage, outcome.error = stage, str(exc)
            break
        except Exception as exc:  # a bug or an unforeseen file: this cell fails, with the traceback
            outcome.failed_stage, outcome.error = stage, f"{type(exc).__name__}: {exc}"
            outcome.error_trace = traceback.format_exc()
            break
        tables.update(produced)
        outcome.tables.update(produced)
        outcome.completed.append(stage)
        outcome.seconds[stage] = time.perf_counter() - started
    return outcome


def _cells(task: CellTask, tables, outcome) -> dict[str, pd.DataFrame]:
    source = task.source
    if source.problem:
        raise SourceFormatError(source.files[0], source.problem)
    return {"cells": CellRecord.validate(pd.DataFrame([cell_record(source)], columns=CELL_COLUMNS))}


def _raw(task: CellTask, tables, outcome) -> dict[str, pd.DataFrame]:
    source = task.source
    started = time.perf_counter()
    result = source.reader.read(list(source.files), source.partition_key)
    outcome.read_seconds = time.perf_counter() - started
    impedance = result.impedance if result.impedance is not None else pd.DataFrame(columns=IMPEDANCE_COLUMNS)
    return {
        "raw_samples": result.samples,
        "cell_impedance": CellImpedance.validate(impedance)[IMPEDANCE_COLUMNS],
        # summary-level sources carry a per-cycle table instead of samples; empty otherwise
        "source_cycle_summaries": summary_table(result.cycle_summary),
    }


def _record(tables, key: str, outcome: CellOutcome) -> pd.Series:
    cells = tables.get("cells")
    if cells is None or cells.empty:
        raise CellStageError(f"cell {key!r} is not in the cells registry: materialize `cells` first")
    outcome.record = cells.iloc[0]
    return outcome.record


def _validated(task: CellTask, tables, outcome) -> dict[str, pd.DataFrame]:
    cell = _record(tables, task.source.partition_key, outcome)
    result = validate_samples(tables["raw_samples"][SAMPLE_COLUMNS], CellLimits.from_record(cell.to_dict()), task.rules)
    outcome.validation = result
    return {"validated_samples": result.valid, "quarantined_samples": result.quarantined, "sample_flags": result.flags[FLAG_COLUMNS]}


def _features(task: CellTask, tables, outcome) -> dict[str, pd.DataFrame]:
    key = task.source.partition_key
    cell = _record(tables, key, outcome)
    samples = tables["validated_samples"][SAMPLE_COLUMNS]
    config, outcome.feature_settings = feature_config_for(cell, task.feature_settings)
    if len(samples):
        impedance = tables.get("cell_impedance")
        features = compute_cycle_features(samples, nominal_capacity_ah=trusted_nominal(cell), impedance=impedance, config=config)
        curves = compute_curves(samples, config)
        outcome.feature_origin = "computed from validated samples"
    else:
        features = _summary_features(tables.get("source_cycle_summaries"), key)
        curves = pd.DataFrame(columns=list(CURVE_TYPES))
        outcome.feature_origin = "summary-level source (no raw samples)"
    return {
        "cycle_features": typed_feature_frame(features[CYCLE_FEATURE_COLUMNS]),
        "cycle_curves": curves.astype(CURVE_TYPES),
    }


def _summary_features(summary: pd.DataFrame | None, key: str) -> pd.DataFrame:
    if summary is None or summary.empty or summary["discharge_capacity_ah"].isna().all():
        raise CellStageError(f"cell {key!r} has neither validated samples nor a per-cycle summary")
    summary = summary.drop(columns=[c for c in CLASS_COLUMNS if c in summary.columns])
    return summary.join(classify_cycles(summary)).reindex(columns=CYCLE_FEATURE_COLUMNS)


def _labels(task: CellTask, tables, outcome) -> dict[str, pd.DataFrame]:
    key = task.source.partition_key
    cell = _record(tables, key, outcome)
    config = label_config_for(cell.get("dataset"), task.label_settings)
    summary = tables.get("source_cycle_summaries") if config.capacity_source == "source" else None
    try:
        labels, config, cycles = labels_for_cell(tables["cycle_features"], cell, config, summary)
    except ValueError as exc:
        raise CellStageError(f"cell {key!r}: {exc} (label settings: {task.label_settings})") from exc
    outcome.label_config, outcome.label_cycles = config, cycles
    outcome.feature_columns = list(tables["cycle_features"].columns)
    return {"cycle_labels": labels[LABEL_COLUMNS]}


_STAGE_FUNCTIONS = {"cells": _cells, "raw": _raw, "validated": _validated, "features": _features, "labels": _labels}
