"""Validation: `raw_samples` -> `validated_samples` + `quarantined_samples` (per cell partition).

The rules live in `science.validation`; the governance checks in `checks.data_quality` run here,
on what was just stored, so that a failed blocking check stops downstream assets in the run.
"""


import dagster as dg

from battery_pipeline.assets.ingest import INGEST_GROUP
from battery_pipeline.assets.metadata import frame_preview, table_schema
from battery_pipeline.checks import data_quality
from battery_pipeline.partitions import cell_partitions
from battery_pipeline.resources import DUCKDB_POOL, Warehouse
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample, QuarantinedSample
from battery_pipeline.science.validation import CellLimits, ValidationRules, validate_samples


class ValidationConfig(dg.Config):
    """Tunable rules (Launchpad); defaults suit lab cycler data."""

    voltage_margin_low_v: float = 0.2
    voltage_margin_high_v: float = 0.1
    max_c_rate: float = 20.0
    max_quarantine_rate: float = 0.05  # the quarantine_rate check warns above this share

    def rules(self) -> ValidationRules:
        return ValidationRules(
            voltage_margin_low_v=self.voltage_margin_low_v,
            voltage_margin_high_v=self.voltage_margin_high_v,
            max_c_rate=self.max_c_rate,
        )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "validated_samples",
            deps=["raw_samples", "cells"],
            group_name=INGEST_GROUP,
            kinds={"duckdb", "pandas", "pandera"},
            description="Raw samples that pass the pandera schema and the physical rules.",
            metadata={"dagster/column_schema": table_schema(CellCycleSample)},
        ),
        dg.AssetSpec(
            "quarantined_samples",
            deps=["raw_samples", "cells"],
            group_name=INGEST_GROUP,
            kinds={"duckdb", "pandas"},
            description="Every rejected raw sample, verbatim, with a reason code and message.",
            metadata={"dagster/column_schema": table_schema(QuarantinedSample)},
        ),
    ],
    partitions_def=cell_partitions,
    pool=DUCKDB_POOL,
    check_specs=[
        dg.AssetCheckSpec("schema_conformance", asset="validated_samples", blocking=True),
        dg.AssetCheckSpec("row_accounting", asset="validated_samples", blocking=True),
        dg.AssetCheckSpec("no_duplicate_samples", asset="validated_samples", blocking=True),
        dg.AssetCheckSpec("cycle_numbers_continuous", asset="validated_samples"),
        dg.AssetCheckSpec("quarantine_rate", asset="quarantined_samples"),
    ],
)
def validated_samples(context: dg.AssetExecutionContext, config: ValidationConfig, warehouse: Warehouse):
    key = context.partition_key
    raw = warehouse.read_partition("raw_samples", "cell_id", key, columns=SAMPLE_COLUMNS)
    cell = warehouse.read_partition("cells", "cell_id", key)
    if cell.empty:
        raise dg.Failure(description=f"cell {key!r} is not in the cells registry: materialize `cells` first")
    result = validate_samples(raw, CellLimits.from_record(cell.iloc[0].to_dict()), config.rules())

    warehouse.replace_partitions(
        {"validated_samples": result.valid, "quarantined_samples": result.quarantined}, "cell_id", key
    )

    # Checks read back what is stored, not what we meant to store.
    counts = warehouse.query(
        """
        SELECT (SELECT count(*) FROM raw_samples WHERE cell_id = ?) AS raw,
               (SELECT count(*) FROM validated_samples WHERE cell_id = ?) AS validated,
               (SELECT count(*) FROM quarantined_samples WHERE cell_id = ?) AS quarantined
        """,
        [key, key, key],
    ).iloc[0]
    stored_valid = warehouse.read_partition("validated_samples", "cell_id", key, columns=SAMPLE_COLUMNS)

    by_reason = result.counts_by_reason()
    yield dg.MaterializeResult(
        asset_key="validated_samples",
        metadata={
            "dagster/row_count": len(result.valid),
            "cycles": int(result.valid["cycle_number"].nunique()),
            "preview": frame_preview(result.valid),
        },
    )
    yield dg.MaterializeResult(
        asset_key="quarantined_samples",
        metadata={
            "dagster/row_count": len(result.quarantined),
            "by_reason": dg.MetadataValue.json(by_reason),
            "preview": frame_preview(result.quarantined),
        },
    )
    yield data_quality.schema_conformance_check(stored_valid)
    yield data_quality.row_accounting_check(int(counts["raw"]), int(counts["validated"]), int(counts["quarantined"]))
    yield data_quality.no_duplicates_check(stored_valid)
    yield data_quality.cycle_continuity_check(stored_valid["cycle_number"])
    yield data_quality.quarantine_rate_check(int(counts["raw"]), result.quarantined, config.max_quarantine_rate)
