"""Digital twin, per pack partition: pack files -> `packs` + `telemetry` -> one asset per enabled
twin model (equivalent cycles, SOC, voltage alerts, imbalance, available energy, ...).

Thin Dagster layer: finding and reading packs is `science.twin.packs`, the models are
`science.twin.models.<name>`, their table layouts `science.twin.tables`. The model assets are
made by a factory from the registry and the twin settings (data/twin_settings.json + local
override), read when the definitions load, so bad settings stop the code location from loading
with the file and key named. A new model folder gives a new asset; nothing here names a model.

A model asset reads the pack's telemetry (and the stored outputs of the models it depends on,
which are asset deps), runs the model, stores each output in the table its manifest names, and
shows its checks (checks/twin_quality.py) and plots (twin_plots.py). A stateful model (e.g.
eq_cycles) continues from its stored state when the telemetry it has already processed is
unchanged (a pack file that grew): only the new samples are processed.
"""

import json
import time

import dagster as dg
import pandas as pd

from battery_pipeline.assets.twin_plots import PLOTS_BY_MODEL, voltage_spread_plot
from battery_pipeline.checks import twin_quality
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.pack_resources import PackSourceCatalog
from battery_pipeline.partitions import pack_partitions
from battery_pipeline.resources import WAREHOUSE_POOL, Warehouse
from battery_pipeline.science.twin.base import input_columns
from battery_pipeline.science.twin.manifest import ParameterError
from battery_pipeline.science.twin.packs import (
    PackFormatError,
    PackSource,
    pack_parameters,
    read_pack_file,
    source_layout,
    telemetry_long,
    telemetry_wide,
)
from battery_pipeline.science.twin.runner import TwinOutputError, run_model
from battery_pipeline.science.twin.settings import (
    TwinInputError,
    TwinSettings,
    enabled_models,
    load_settings,
    resolve_inputs,
)
from battery_pipeline.science.twin.tables import (
    PACK_KEY,
    SAMPLE_KEY,
    append_tables,
    inputs_fingerprint,
    output_tables,
    outputs_to_tables,
    tables_to_outputs,
)

TELEMETRY_GROUP = "telemetry"
TWIN_GROUP = "twin"
PACK_COLUMNS = [
    "pack_id", "source_kind", "origin", "chemistry", "nominal_capacity_ah", "n_cells", "n_temperature_sensors",
    "samples", "start", "duration_h", "metadata_origin", "metadata_json",
]


def _failure(key: str, origin: str, exc: Exception) -> dg.Failure:
    """A clear, non-retried failure of this pack partition only, naming the source and problem."""
    return dg.Failure(description=f"pack {key!r}: {exc}", metadata={"source": origin}, allow_retries=False)


def _pack_source(context: dg.AssetExecutionContext, catalog: PackSourceCatalog) -> PackSource:
    try:
        return catalog.discover()[context.partition_key]
    except KeyError as exc:
        raise dg.Failure(description=f"pack partition {context.partition_key!r} has no source any more: {exc}",
                         allow_retries=False) from None


def _cell_as_pack(warehouse: Warehouse, source: PackSource) -> tuple[pd.DataFrame, dict]:
    """A cell's validated samples and its registry record (chemistry, capacity) as pack metadata."""
    if not (warehouse.table_exists("validated_samples") and warehouse.table_exists("cells")):
        raise ValueError(f"cell {source.cell_id!r}: validated_samples/cells do not exist yet: run the cell pipeline first")
    samples = warehouse.read_partition("validated_samples", "cell_id", source.cell_id)
    cell = warehouse.read_partition("cells", "cell_id", source.cell_id)
    if samples.empty or cell.empty:
        raise ValueError(f"cell {source.cell_id!r} has no validated samples: run the cell pipeline for it first")
    record = cell.iloc[0]
    return samples, {"chemistry": record.get("chemistry"), "nominal_capacity_ah": record.get("nominal_capacity_ah")}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "packs",
            group_name=TELEMETRY_GROUP,
            kinds={"duckdb"},
            description=(
                "Registry of packs: source (file, or a cell's validated samples), source kind, chemistry and "
                "nominal cell capacity (sidecar, cells registry, or the twin settings' defaults), cells, samples."
            ),
        ),
        dg.AssetSpec(
            "telemetry",
            # A one-cell pack reads its cell's validated samples (same partition key, identity mapping).
            deps=["validated_samples", "cells"],
            group_name=TELEMETRY_GROUP,
            kinds={"duckdb", "pandas"},
            description=(
                "Pack telemetry in a long layout, one row per (sample, channel): pack_id, sample (row of the "
                "source), timestamp, time_s, current_a, channel (source column), quantity (cell_voltages, "
                "temperatures, ...), channel_id (cell or sensor), value. Packs of any cell count share the table."
            ),
        ),
    ],
    partitions_def=pack_partitions,
    pool=WAREHOUSE_POOL,
    check_specs=[check_spec("telemetry_row_accounting", "telemetry")],
)
def telemetry(context: dg.AssetExecutionContext, pack_catalog: PackSourceCatalog, warehouse: Warehouse):
    key = context.partition_key
    source = _pack_source(context, pack_catalog)
    settings = twin_settings()
    try:
        if source.kind == "cell":
            frame, metadata = _cell_as_pack(warehouse, source)
            metadata_origin = "cells registry"
        else:
            frame, metadata = read_pack_file(source)
            metadata_origin = f"sidecar {source.sidecar.name}" if source.sidecar else "none (twin settings' defaults)"
        layout = source_layout(settings, source.source_kind)
        long, facts = telemetry_long(frame, layout, key, source.origin, keep_unmapped=source.kind == "file")
    except (PackFormatError, ValueError) as exc:
        raise _failure(key, source.origin, exc) from exc
    parameters = pack_parameters(metadata)
    span_s = facts["time_s_range"][1] - facts["time_s_range"][0]
    record = pd.DataFrame([{
        "pack_id": key, "source_kind": source.source_kind, "origin": source.origin,
        "chemistry": parameters.get("chemistry"), "nominal_capacity_ah": parameters.get("nominal_capacity_ah"),
        "n_cells": len(facts["cells"]), "n_temperature_sensors": len(facts["temperature_sensors"]),
        "samples": facts["samples"], "start": facts["start"], "duration_h": span_s / 3600.0,
        "metadata_origin": metadata_origin, "metadata_json": json.dumps(metadata, default=str),
    }], columns=PACK_COLUMNS).astype({"chemistry": object, "nominal_capacity_ah": "float64", "start": object})
    warehouse.replace_partitions({"packs": record, "telemetry": long}, PACK_KEY, key)

    yield dg.MaterializeResult(asset_key="packs", metadata={
        "dagster/row_count": 1, "origin": source.origin, "source_kind": source.source_kind,
        "chemistry": str(parameters.get("chemistry")), "nominal_capacity_ah": parameters.get("nominal_capacity_ah"),
        "metadata_origin": metadata_origin,
    })
    wide = telemetry_wide(long, layout)
    cells = _cell_voltages(long, wide)
    yield dg.MaterializeResult(asset_key="telemetry", metadata={
        "dagster/row_count": len(long),
        "rows_in_source": len(frame),
        "samples": facts["samples"],
        "cells": len(facts["cells"]),
        "temperature_sensors": len(facts["temperature_sensors"]),
        "unmapped_channels": dg.MetadataValue.json(facts["unmapped_channels"]),
        "ignored_text_columns": dg.MetadataValue.json(facts["ignored_columns"]),
        "duration_h": round(span_s / 3600.0, 3),
        "cell_voltage_spread": voltage_spread_plot(wide[layout.time], cells, f"Cell voltages: {key}"),
    })
    yield twin_quality.telemetry_row_accounting_check(len(frame), facts["samples"], facts["channels"], len(long))


def _cell_voltages(long: pd.DataFrame, wide: pd.DataFrame) -> pd.DataFrame:
    """The cell-voltage channels of the wide telemetry, one column per cell id."""
    cells = long.loc[long["quantity"] == "cell_voltages", ["channel", "channel_id"]].drop_duplicates()
    return wide[cells["channel"].tolist()].set_axis(cells["channel_id"].tolist(), axis=1)


_SETTINGS: list[TwinSettings] = []


def twin_settings() -> TwinSettings:
    """The twin settings read when the definitions loaded (one reading per process)."""
    if not _SETTINGS:
        _SETTINGS.append(load_settings())
    return _SETTINGS[0]


def _pack_record(warehouse: Warehouse, key: str) -> pd.Series:
    if not warehouse.table_exists("packs"):
        raise dg.Failure(description=f"pack {key!r}: no packs table yet: materialize telemetry first", allow_retries=False)
    record = warehouse.read_partition("packs", PACK_KEY, key)
    if record.empty:
        raise dg.Failure(description=f"pack {key!r}: not in the packs table: materialize its telemetry first",
                         allow_retries=False)
    return record.iloc[0]


def _stored_frames(warehouse: Warehouse, manifest, key: str) -> dict[str, pd.DataFrame]:
    frames = {}
    for table in output_tables(manifest):
        if not warehouse.table_exists(table):
            raise dg.Failure(description=f"pack {key!r}: table {table} of model {manifest.name!r} does not exist yet: "
                             f"materialize {manifest.name} first", allow_retries=False)
        frames[table] = warehouse.read_partition(table, PACK_KEY, key)
    return frames


def _state_table(name: str) -> str:
    return f"twin_state_{name}"


def _resume_point(warehouse: Warehouse, name: str, key: str, inputs: pd.DataFrame) -> tuple[int, dict | None, str]:
    """(first sample to process, state to continue from, what was decided) for a stateful model.

    It continues only if the inputs it processed before are unchanged (same fingerprint), so a
    replaced or corrected file is processed from the start again, never added on top.
    """
    table = _state_table(name)
    stored = warehouse.read_partition(table, PACK_KEY, key) if warehouse.table_exists(table) else pd.DataFrame()
    if stored.empty:
        return 0, None, "full run (no stored state)"
    row = stored.iloc[0]
    n = int(row["samples"])
    if n > len(inputs) or inputs_fingerprint(inputs, n) != row["inputs_sha256"]:
        return 0, None, f"full run (the {n} samples processed before have changed)"
    return n, json.loads(row["state_json"]), f"continued from the stored state after sample {n - 1}"


def _slice_upstream(upstream: dict, manifest_classes: dict, index: pd.Index) -> dict:
    """Upstream outputs restricted to the samples being processed (records stay whole)."""
    sliced = {}
    for dep, outputs in upstream.items():
        kinds = {n: s.kind for n, s in manifest_classes[dep].manifest.outputs.items()}
        sliced[dep] = {n: (v if kinds[n] == "records" else v.loc[index]) for n, v in outputs.items()}
    return sliced


def _model_asset(name: str, settings: TwinSettings) -> dg.AssetsDefinition:
    classes = settings.model_classes()
    manifest = classes[name].manifest
    checks = twin_quality.CHECKS_BY_MODEL.get(name, [])
    tables = output_tables(manifest)
    table_list = ", ".join(f"{t} ({', '.join(s.name for s in specs)})" for t, specs in tables.items())

    @dg.asset(
        name=name,
        deps=["telemetry", "packs", *manifest.depends_on],
        partitions_def=pack_partitions,
        pool=WAREHOUSE_POOL,
        group_name=TWIN_GROUP,
        kinds={"duckdb", "pandas"},
        description=f"{manifest.description} Tables: {table_list}.",
        metadata={"model_version": manifest.version, "tables": dg.MetadataValue.json(list(tables))},
        check_specs=[dg.AssetCheckSpec(c.name, asset=name, blocking=c.blocking, description=c.description)
                     for c in checks],
    )
    def twin_model(context: dg.AssetExecutionContext, warehouse: Warehouse):
        key = context.partition_key
        pack = _pack_record(warehouse, key)
        long = warehouse.read_partition("telemetry", PACK_KEY, key)
        kind = pack["source_kind"]
        layout = source_layout(settings, kind)
        data = telemetry_wide(long, layout)
        parameters = pack_parameters(pack)
        upstream = {dep: tables_to_outputs(classes[dep].manifest, _stored_frames(warehouse, classes[dep].manifest, key),
                                           data.index) for dep in manifest.depends_on}
        started = time.perf_counter()
        try:
            resume_at, state, mode = 0, None, "full run"
            if manifest.stateful:
                inputs = resolve_inputs(name, data, settings, kind, upstream=upstream)
                resume_at, state, mode = _resume_point(warehouse, name, key, inputs)
            batch = data.iloc[resume_at:]
            outputs, new_state = run_model(name, batch, settings, kind, _slice_upstream(upstream, classes, batch.index),
                                           state, parameters)
        except (TwinInputError, ParameterError, TwinOutputError, ValueError) as exc:
            raise _failure(key, str(pack["origin"]), exc) from exc
        frames = outputs_to_tables(manifest, outputs, key, batch[layout.time])
        if resume_at:
            frames = append_tables(manifest, _stored_frames(warehouse, manifest, key), frames, resume_at)
        to_store = dict(frames)
        if manifest.stateful:
            to_store[_state_table(name)] = pd.DataFrame([{
                PACK_KEY: key, "samples": len(data), "last_time_s": float(data[layout.time].iloc[-1]) if len(data) else None,
                "inputs_sha256": inputs_fingerprint(inputs, len(data)), "state_json": json.dumps(new_state),
            }])
        seconds = time.perf_counter() - started
        warehouse.replace_partitions(to_store, PACK_KEY, key)

        # Checks and plots judge what is stored (after an incremental run: all of it).
        stored = tables_to_outputs(manifest, frames, data.index)
        metadata = {
            "dagster/row_count": int(sum(len(f) for f in frames.values())),
            "rows_by_table": dg.MetadataValue.json({t: len(f) for t, f in frames.items()}),
            "run": mode,
            "samples_processed": len(batch),
            "parameters": dg.MetadataValue.json(parameters),
            "compute_seconds": round(seconds, 3),
        }
        plots = PLOTS_BY_MODEL.get(name)
        if plots is not None and len(data):
            resolved = resolve_inputs(name, data, settings, kind, upstream=upstream)
            metadata.update(plots(stored, resolved, data[layout.time], key))
        yield dg.MaterializeResult(metadata=metadata)
        for check in checks:
            yield check.evaluate(stored, name)

    return twin_model


def build_twin_assets(settings: TwinSettings) -> list[dg.AssetsDefinition]:
    """One asset per enabled twin model, in dependency order."""
    return [_model_asset(name, settings) for name in enabled_models(settings)]


twin_model_assets = build_twin_assets(twin_settings())
