"""Governance: `data_cards` (one card per dataset, from the run) and `audit_log` (who made what).

* `data_cards`: reads the warehouse (cells, raw / validated / quarantined counts, quarantine
  reasons, sample flags), the rules each cell was validated with (its latest `validated_samples`
  materialization) and the documentation files beside the sources; writes
  `reports/data_cards/<dataset>.md` through the model store and shows every card in the UI.
  Blocking check `data_card_complete`.
* `audit_log`: one row per (run, asset, partition) of every finished run not yet audited, read
  from the Dagster instance's event log: run id, job, status, asset, partition, outcome, code
  version and input data hash (materialization metadata, `battery_pipeline.lineage`), the op's
  run config, run tags, scalar metadata (e.g. `model_id`, `test_rmse`) and the outcome of each
  asset check. A run without asset events (e.g. `register_sources_job`) gets one row with no
  asset. The table itself is the cursor (the run ids already in it): a single writer, appending
  only, and no asset has to change to be audited. The run that materializes `audit_log` is
  audited by the next one.

  Tracing a published figure: `results/soh_results.json` names each model's `model_id` and
  `data_hash`; `audit_log` rows of the model asset carry the same `model_id` (in `metadata`) and
  the run id that trained it, and the row of `soh_training_set` with that `data_hash` names the
  run, code version and configuration that built the training set.
"""

import json
from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from battery_pipeline.checks import documentation
from battery_pipeline.checks.governance import check_spec, rules_markdown
from battery_pipeline.resources import WAREHOUSE_POOL, ModelStore, SourceCatalog, Warehouse
from battery_pipeline.science import data_cards as cards
from battery_pipeline.science.cycle_classes import CYCLE_CLASSES

GOVERNANCE_GROUP = "governance"


# --- data cards --------------------------------------------------------------------------------


def _table_or_empty(warehouse: Warehouse, table: str, sql: str, columns: list[str]) -> pd.DataFrame:
    return warehouse.query(sql) if warehouse.table_exists(table) else pd.DataFrame(columns=columns)


def _counts_by_cell(warehouse: Warehouse) -> pd.DataFrame:
    parts = []
    for table, column in (("raw_samples", "raw_rows"), ("validated_samples", "validated_rows"), ("quarantined_samples", "quarantined_rows")):
        part = _table_or_empty(warehouse, table, f"SELECT cell_id, count(*) AS {column} FROM {table} GROUP BY cell_id", ["cell_id", column])
        parts.append(part.set_index("cell_id"))
    dropped = _table_or_empty(
        warehouse, "quarantined_samples",
        "SELECT cell_id, count(DISTINCT cycle_number) AS dropped_cycles FROM quarantined_samples "
        "WHERE reason_code = 'cycle_incomplete' GROUP BY cell_id",
        ["cell_id", "dropped_cycles"],
    ).set_index("cell_id")
    counts = parts[0].join(parts[1:] + [dropped], how="left").fillna(0).astype("int64")
    return counts.reset_index()


def _label_summary(warehouse: Warehouse) -> pd.DataFrame:
    """Per cell: cycles by class and the label reference and status (data cards)."""
    columns = list(cards.LABEL_SUMMARY_COLUMNS)
    stored = set(warehouse.query("SELECT column_name FROM information_schema.columns WHERE table_name IN ('cycle_features', 'cycle_labels')")["column_name"])
    if not {"cycle_class", "label_status"} <= stored:  # a warehouse from before cycle classes
        return pd.DataFrame(columns=columns)
    classes = _table_or_empty(
        warehouse, "cycle_features",
        "SELECT cell_id, " + ", ".join(
            f"count(*) FILTER (WHERE cycle_class = '{name}') AS {name}" for name in CYCLE_CLASSES
        ) + " FROM cycle_features GROUP BY cell_id",
        ["cell_id", *CYCLE_CLASSES],
    )
    labels = _table_or_empty(
        warehouse, "cycle_labels",
        "SELECT cell_id, any_value(soh_reference) AS soh_reference, round(any_value(initial_soh), 3) AS initial_soh, "
        "any_value(label_status) AS label_status, any_value(label_note) AS label_note FROM cycle_labels GROUP BY cell_id",
        ["cell_id", "soh_reference", "initial_soh", "label_status", "label_note"],
    )
    return classes.merge(labels, on="cell_id", how="outer").reindex(columns=columns)


def _rules_by_cell(instance: dg.DagsterInstance, cell_ids: list[str]) -> dict[str, dict]:
    out = {}
    for cell in cell_ids:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("validated_samples"), asset_partitions=[cell]), limit=1
        ).records
        if records:
            rules = records[0].asset_materialization.metadata.get("rules")
            if rules is not None:
                out[cell] = rules.value
    return out


# Which task used a cell, and how: one query per task's stored table (a task not run yet has none).
_TASK_USE_SQL = {
    "soh_training_set": "SELECT DISTINCT cell_id, 'SOH models' AS task, 'split ' || split AS role FROM soh_training_set",
    "rul_training_set": "SELECT DISTINCT cell_id, 'RUL models' AS task, 'split ' || split AS role FROM rul_training_set",
    "cycle_life_training_set": "SELECT cell_id, 'cycle-life models' AS task, 'cohort (the frozen fit)' AS role FROM cycle_life_training_set",
    "cycle_life_predictions": (
        "SELECT cell_id, 'cycle-life predictions' AS task, 'scored, ' || domain || CASE WHEN in_cohort THEN ', in-sample (cohort)' "
        "ELSE '' END AS role FROM cycle_life_predictions"),
    "cycle_anomalies": (
        "SELECT cell_id, 'per-cycle anomalies' AS task, CASE WHEN count(*) FILTER (WHERE severity = 'critical') > 0 THEN 'a critical cycle' "
        "WHEN count(*) FILTER (WHERE severity = 'warning') > 0 THEN 'warnings only' ELSE 'nothing flagged' END AS role "
        "FROM cycle_anomalies WHERE scored GROUP BY cell_id"),
    "temperature_forecast_files": (
        "SELECT cell_id, 'temperature forecast' AS task, CASE WHEN used THEN 'held out once; ambient ' || split_part(ambient_source, ':', 1) "
        "ELSE 'not used: ' || why_not END AS role FROM temperature_forecast_files"),
}


def _task_use(warehouse: Warehouse) -> pd.DataFrame:
    columns = list(cards.TASK_USE_COLUMNS)
    parts = [_table_or_empty(warehouse, table, sql, columns) for table, sql in _TASK_USE_SQL.items()]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def _source_folders(catalog: SourceCatalog) -> dict[str, set]:
    """cell_id -> folders of its source files (empty if discovery fails: the card says so)."""
    try:
        return {source.partition_key: {p.parent for p in source.files} for source in catalog.discover()}
    except Exception:  # noqa: BLE001 - a card without folder documentation is still a card
        return {}


@dg.asset(
    deps=["cells", "raw_samples", "validated_samples", "quarantined_samples", "sample_flags"],
    group_name=GOVERNANCE_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"markdown"},
    description=(
        "A data card per dataset (reports/data_cards/<dataset>.md): cells and sources, collection "
        "process (source descriptions and README files beside the data), cleaning rules as run, "
        "quarantine counts by reason, interpolated and outlier values, which task used the cells and how, licence and citation."
    ),
    check_specs=[check_spec("data_card_complete", "data_cards")],
)
def data_cards(context: dg.AssetExecutionContext, warehouse: Warehouse, catalog: SourceCatalog, model_store: ModelStore):
    all_cells = _table_or_empty(warehouse, "cells", "SELECT * FROM cells ORDER BY cell_id", ["cell_id", "dataset"])
    all_cells["dataset_name"] = all_cells["dataset"].map(cards.dataset_name)
    counts = _counts_by_cell(warehouse)
    reasons = _table_or_empty(
        warehouse, "quarantined_samples",
        "SELECT cell_id, reason_code, count(*) AS rows FROM quarantined_samples GROUP BY ALL",
        ["cell_id", "reason_code", "rows"],
    )
    flags = _table_or_empty(
        warehouse, "sample_flags",
        "SELECT cell_id, flag, channel, count(*) AS \"values\" FROM sample_flags GROUP BY ALL",
        ["cell_id", "flag", "channel", "values"],
    )
    rules = _rules_by_cell(context.instance, all_cells["cell_id"].astype(str).tolist())
    labels = _label_summary(warehouse)
    task_use = _task_use(warehouse)
    folders = _source_folders(catalog)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    problems, metadata = {}, {}
    for dataset, cells in all_cells.groupby("dataset_name", sort=True):
        ids = set(cells["cell_id"].astype(str))
        mine = lambda frame: frame[frame["cell_id"].astype(str).isin(ids)]  # noqa: E731
        by_reason = mine(reasons).groupby("reason_code", as_index=False)["rows"].sum()
        by_flag = mine(flags).groupby(["flag", "channel"], as_index=False)["values"].sum()
        docs = cards.documentation_files(sorted({f for c in ids for f in folders.get(c, ())}))
        sections = cards.card_sections(dataset, cells, mine(counts), by_reason, by_flag, rules, docs, mine(labels), mine(task_use))
        text = cards.render_card(dataset, sections, generated)
        name = cards.card_file_name(dataset)
        path = model_store.write_report(f"data_cards/{name}.md", text)
        problems[dataset] = cards.missing_facts(sections)
        metadata[f"card_{name}"] = dg.MetadataValue.md(text)
        metadata[f"card_{name}_file"] = dg.MetadataValue.path(str(path))
    if warehouse.table_exists("packs"):
        packs = warehouse.query("SELECT * FROM packs ORDER BY pack_id")
        faults = _table_or_empty(warehouse, "pack_fault_summary", "SELECT * FROM pack_fault_summary", ["pack_id"])
        outputs = ("equivalent_cycles", "soc_estimates", "voltage_alerts", "cell_imbalance", "available_energy", "fault_alerts")
        counts = {t: int(warehouse.query(f"SELECT count(*) AS n FROM {t}")["n"].iloc[0]) for t in outputs if warehouse.table_exists(t)}
        text = cards.render_pack_card(cards.pack_card_sections(packs, faults, counts), generated)
        path = model_store.write_report("data_cards/pack_telemetry.md", text)
        metadata["card_pack_telemetry"] = dg.MetadataValue.md(text)
        metadata["card_pack_telemetry_file"] = dg.MetadataValue.path(str(path))
    metadata["datasets"] = len(problems)
    metadata["governance_rules"] = dg.MetadataValue.md(rules_markdown())
    yield dg.MaterializeResult(metadata=metadata)
    yield documentation.data_card_complete_check(problems)


# --- audit log ---------------------------------------------------------------------------------

AUDIT_COLUMNS = [
    "run_id", "job_name", "run_status", "run_started_at", "run_ended_at", "asset_key", "partition", "outcome",
    "event_id", "materialized_at", "code_version", "data_hash", "config", "run_tags", "metadata", "checks",
    "checks_passed", "failed_checks", "audited_at",
]
_FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
_AUDITED_EVENTS = {
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
}
_MAX_METADATA_TEXT = 300


def _timestamp(seconds) -> pd.Timestamp:
    return pd.Timestamp(seconds, unit="s") if seconds is not None else pd.NaT  # naive UTC, as DuckDB stores it


def _plain_metadata(metadata: dict) -> dict:
    """The scalar metadata values (numbers, short text, small JSON): what a figure is traced by."""
    out = {}
    for key, value in metadata.items():
        raw = getattr(value, "value", value)
        if isinstance(raw, (bool, int, float)) or raw is None:
            out[key] = raw
        elif isinstance(raw, str) and len(raw) <= _MAX_METADATA_TEXT and not isinstance(value, dg.MarkdownMetadataValue):
            out[key] = raw
        elif isinstance(value, dg.JsonMetadataValue) and len(json.dumps(raw, default=str)) <= _MAX_METADATA_TEXT:
            out[key] = raw
    return out


def audit_rows(instance: dg.DagsterInstance, record) -> list[dict]:
    """The audit rows of one finished run (record: a `RunRecord`)."""
    run = record.dagster_run
    events = instance.get_records_for_run(run.run_id, of_type=_AUDITED_EVENTS).records
    by_key: dict[tuple[str, str | None], dict] = {}

    def entry(asset_key: dg.AssetKey, partition, step_key):
        key = (asset_key.to_user_string(), partition)
        row = by_key.setdefault(key, {"asset_key": key[0], "partition": partition, "step_key": step_key, "checks": []})
        row["step_key"] = row["step_key"] or step_key
        return row

    for event_record in events:
        event = event_record.event_log_entry.dagster_event
        data = event.event_specific_data
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
            entry(data.asset_key, data.partition or run.tags.get("dagster/partition"), event.step_key)
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = data.materialization
            row = entry(materialization.asset_key, materialization.partition, event.step_key)
            metadata = materialization.metadata
            row.update(
                event_id=event_record.storage_id,
                materialized_at=_timestamp(event_record.event_log_entry.timestamp),
                code_version=getattr(metadata.get("code_version"), "value", None)
                or (materialization.tags or {}).get("dagster/code_version"),
                data_hash=getattr(metadata.get("data_hash"), "value", None),
                metadata=json.dumps(_plain_metadata(metadata), sort_keys=True, default=str),
            )
        else:  # a check evaluation
            partition = getattr(data, "partition", None) or run.tags.get("dagster/partition")
            entry(data.asset_key, partition, event.step_key)["checks"].append(
                {"check": data.check_name, "passed": bool(data.passed), "severity": data.severity.value,
                 "blocking": bool(getattr(data, "blocking", False))}
            )
    base = {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "run_status": run.status.value,
        "run_started_at": _timestamp(record.start_time),
        "run_ended_at": _timestamp(record.end_time),
        "run_tags": json.dumps(dict(run.tags), sort_keys=True),
        "audited_at": pd.Timestamp.now(tz="UTC").tz_convert(None),
    }
    ops = (run.run_config or {}).get("ops", {})
    rows = []
    for row in by_key.values():
        checks = row.pop("checks")
        step_key = row.pop("step_key")
        failed = [c["check"] for c in checks if not c["passed"]]
        rows.append({
            **base,
            **row,
            "outcome": "materialized" if row.get("event_id") is not None else f"not materialized (run {run.status.value})",
            "config": json.dumps((ops.get(step_key) or {}).get("config", {}), sort_keys=True, default=str),
            "checks": json.dumps(checks, sort_keys=True),
            "checks_passed": (not failed) if checks else None,
            "failed_checks": ", ".join(failed) or None,
        })
    if not rows:  # an op job, or a run that failed before planning any asset
        rows.append({**base, "outcome": f"no asset (run {run.status.value})", "config": json.dumps(run.run_config or {}, default=str),
                     "checks": "[]"})
    return rows


def audit_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows).reindex(columns=AUDIT_COLUMNS)
    text = [c for c in AUDIT_COLUMNS if c not in ("event_id", "checks_passed", "run_started_at", "run_ended_at", "materialized_at", "audited_at")]
    frame[text] = frame[text].astype(object).where(frame[text].notna(), None)
    return frame.astype({
        "event_id": "Int64", "checks_passed": "boolean", "run_started_at": "datetime64[us]", "run_ended_at": "datetime64[us]",
        "materialized_at": "datetime64[us]", "audited_at": "datetime64[us]",
    })


@dg.asset(
    group_name=GOVERNANCE_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    description=(
        "Audit trail: one row per (run, asset, partition) of every finished run, with run id, job, "
        "status, code version, input data hash, config, run tags, scalar metadata and the outcome "
        "of every asset check; appended from the Dagster event log since the last audit."
    ),
)
def audit_log(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    audited = (
        set(warehouse.query("SELECT DISTINCT run_id FROM audit_log")["run_id"]) if warehouse.table_exists("audit_log") else set()
    )
    finished = context.instance.get_run_records(filters=dg.RunsFilter(statuses=_FINISHED))
    pending = sorted(
        (r for r in finished if r.dagster_run.run_id not in audited and r.dagster_run.run_id != context.run.run_id),
        key=lambda r: r.create_timestamp,
    )
    rows = [row for record in pending for row in audit_rows(context.instance, record)]
    if rows:
        warehouse.append_rows("audit_log", audit_frame(rows))
    frame = audit_frame(rows) if rows else pd.DataFrame(columns=AUDIT_COLUMNS)
    failed = frame[frame["checks_passed"].eq(False).fillna(False)] if rows else frame
    return dg.MaterializeResult(
        metadata={
            "runs_audited": len(pending),
            "rows_appended": len(frame),
            "rows_with_failed_checks": len(failed),
            "preview": dg.MetadataValue.md(
                frame[["run_id", "asset_key", "partition", "outcome", "code_version", "data_hash", "failed_checks"]]
                .head(20).astype(str).to_markdown(index=False) if len(frame) else "_no new runs_"
            ),
        }
    )
