"""Validation: `raw_samples` -> `validated_samples` + `quarantined_samples` + `sample_flags` (per cell
partition): the specs, the Launchpad config and what the UI shows of each cell.

The rules live in `science.validation`; the governance checks in `checks.data_quality` run on
what `assets.cell_pipeline` just stored, so that a failed blocking check stops the cell's
downstream stages.
"""


from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd

from battery_pipeline.assets.ingest import INGEST_GROUP
from battery_pipeline.assets.metadata import StageReport, frame_preview, table_schema
from battery_pipeline.checks import data_quality
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.lineage import lineage_metadata
from battery_pipeline.resources import Warehouse, split_by_key
from battery_pipeline.science.sample_quality import INTERPOLATED_CHANNELS
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample, QuarantinedSample
from battery_pipeline.science.validation import ValidationResult, ValidationRules


class ValidationConfig(dg.Config):
    """Tunable rules (Launchpad); defaults suit lab cycler data."""

    voltage_margin_low_v: float = 0.2
    voltage_margin_high_v: float = 0.1
    max_c_rate: float = 20.0
    max_quarantine_rate: float = 0.05  # the quarantine_rate check warns above this share
    # The seed's data rules (science.sample_quality): interpolate gaps under 5 points, drop cycles
    # with over 10 % of their samples missing, flag 3-sigma outliers.
    max_gap_points: int = 4
    max_missing_share: float = 0.10
    outlier_sigma: float = 3.0

    def rules(self) -> ValidationRules:
        return ValidationRules(
            voltage_margin_low_v=self.voltage_margin_low_v,
            voltage_margin_high_v=self.voltage_margin_high_v,
            max_c_rate=self.max_c_rate,
            max_gap_points=self.max_gap_points,
            max_missing_share=self.max_missing_share,
            outlier_sigma=self.outlier_sigma,
        )


_MISSING = "NOT coalesce(isfinite({0}), false)"  # NULL, NaN or infinite


_IN_GROUP = "cell_id IN (SELECT key FROM _keys)"


@dataclass
class StoredValidation:
    """What the validation stage stored for one cell, read back: the checks judge this, not what
    was meant to be stored."""

    raw_rows: int
    validated_rows: int
    quarantined_rows: int
    valid: pd.DataFrame  # validated_samples, SAMPLE_COLUMNS, in stored order
    flags: pd.DataFrame  # sample_flags
    cycle_accounting: pd.DataFrame  # per cycle: raw rows, raw rows missing a measurement, validated rows
    filled_values: pd.DataFrame  # (source_file, source_row, channel) missing in raw, present in validated
    outliers: pd.DataFrame  # outlier marks with the value stored in validated_samples (NaN if none)


def read_back_validation(warehouse: Warehouse, keys: list[str]) -> dict[str, StoredValidation]:
    """The stored validation tables of a group of cells, in one query per kind (not per cell).
    `validated_samples` is a view (`resources.validated_samples_sql`), evaluated once here: what
    the checks need of it is looked up in the rows read."""
    counts = warehouse.query_keys(
        f"""
        SELECT k.key AS cell_id,
               (SELECT count(*) FROM raw_samples WHERE cell_id = k.key) AS raw,
               (SELECT count(*) FROM quarantined_samples WHERE cell_id = k.key) AS quarantined
        FROM _keys k
        """,
        keys,
    ).set_index("cell_id")
    missing = " OR ".join(_MISSING.format(c) for c in ("time_s", "voltage_v", "current_a"))
    raw_cycles = warehouse.query_keys(
        f"""SELECT cell_id, cycle_number, count(*) AS raw_rows, count(*) FILTER (WHERE {missing}) AS missing_rows
            FROM raw_samples WHERE {_IN_GROUP} GROUP BY cell_id, cycle_number ORDER BY cell_id, cycle_number""",
        keys,
    )
    raw_missing = warehouse.query_keys(
        " UNION ALL ".join(
            f"SELECT cell_id, source_file, source_row, '{c}' AS channel FROM raw_samples WHERE {_IN_GROUP} AND {_MISSING.format(c)}"
            for c in INTERPOLATED_CHANNELS
        ),
        keys,
    )
    outlier_marks = warehouse.query_keys(f"SELECT * FROM sample_flags WHERE {_IN_GROUP} AND flag = 'outlier'", keys)
    valid = warehouse.read_partitions("validated_samples", "cell_id", keys, text_as_category=True)
    flags = warehouse.read_partitions("sample_flags", "cell_id", keys)
    cycles_by, missing_by, outliers_by = (split_by_key(frame, "cell_id", keys) for frame in (raw_cycles, raw_missing, outlier_marks))
    stored = {}
    for key in keys:
        rows = valid[key][SAMPLE_COLUMNS]
        accounting = cycles_by[key].drop(columns="cell_id")
        per_cycle = rows["cycle_number"].value_counts()
        accounting["validated_rows"] = accounting["cycle_number"].map(per_cycle).fillna(0).astype("int64")
        filled = _stored_values(rows, missing_by[key])
        outliers = _stored_values(rows, outliers_by[key])
        stored[key] = StoredValidation(
            raw_rows=int(counts.at[key, "raw"]),
            validated_rows=len(rows),
            quarantined_rows=int(counts.at[key, "quarantined"]),
            valid=rows,
            flags=flags[key],
            cycle_accounting=accounting,
            filled_values=filled.loc[np.isfinite(filled["stored_value"]), ["source_file", "source_row", "channel"]].reset_index(drop=True),
            outliers=outliers,
        )
    return stored


def _stored_values(valid: pd.DataFrame, marks: pd.DataFrame) -> pd.DataFrame:
    """`marks` (rows naming a sample and a `channel`) with `stored_value`: that channel's value in
    validated_samples, NaN where the sample is not there."""
    marks = marks.reset_index(drop=True)
    values = np.full(len(marks), np.nan)
    if len(marks) and len(valid):
        # one int64 per sample, (file code, row): no Python string per validated row
        files = pd.Categorical(valid["source_file"])
        mark_files = pd.Categorical(marks["source_file"], categories=files.categories).codes.astype(np.int64)
        sample = pd.Index((files.codes.astype(np.int64) << 40) | valid["source_row"].to_numpy(dtype=np.int64))
        position = sample.get_indexer((mark_files << 40) | marks["source_row"].to_numpy(dtype=np.int64))
        position[mark_files < 0] = -1  # a file validation kept no row of
        for channel in marks["channel"].unique():
            pick = (marks["channel"] == channel).to_numpy() & (position >= 0)
            values[pick] = valid[channel].to_numpy(dtype=float)[position[pick]]
    return marks.assign(stored_value=values)


VALIDATED_SPECS = (
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
    dg.AssetSpec(
        "sample_flags",
        deps=["raw_samples", "cells"],
        group_name=INGEST_GROUP,
        kinds={"duckdb", "pandas"},
        description=(
            "Ledger of validated values that are not plain measurements: `interpolated` (a gap "
            "under 5 samples filled linearly in time; raw_samples keeps the hole) and `outlier` "
            "(over 3 sigma from the local median; kept in validated_samples). Join on "
            "(cell_id, source_file, source_row)."
        ),
    ),
)
VALIDATED_CHECKS = (
    check_spec("schema_conformance", "validated_samples"),
    check_spec("row_accounting", "validated_samples"),
    check_spec("no_duplicate_samples", "validated_samples"),
    check_spec("cycle_numbers_continuous", "validated_samples"),
    check_spec("quarantine_rate", "quarantined_samples"),
    check_spec("incomplete_cycles_quarantined", "validated_samples"),
    check_spec("interpolation_marked", "validated_samples"),
    check_spec("outliers_kept", "validated_samples"),
)


def describe_validated(stored: StoredValidation, result: ValidationResult, config: ValidationConfig, input_hash: str) -> StageReport:
    """Metadata of the three tables, and the checks, which judge what is stored (`stored`, read
    back by `read_back_validation`), not what we meant to store."""
    flag_counts = result.flag_counts()
    lineage = lineage_metadata(input_hash)
    metadata = {
        "validated_samples": {
            "dagster/row_count": len(result.valid),
            "cycles": int(result.valid["cycle_number"].nunique()),
            "interpolated_values": sum(flag_counts.get("interpolated", {}).values()),
            "outliers_flagged": sum(flag_counts.get("outlier", {}).values()),
            "cycles_dropped_incomplete": dg.MetadataValue.json(result.dropped_cycles()),
            "cycles_with_missing_samples": frame_preview(result.missing_by_cycle, rows=20),
            "rules": dg.MetadataValue.json(config.rules().__dict__),
            "preview": frame_preview(result.valid),
            **lineage,
        },
        "quarantined_samples": {
            "dagster/row_count": len(result.quarantined),
            "by_reason": dg.MetadataValue.json(result.counts_by_reason()),
            "preview": frame_preview(result.quarantined),
            **lineage,
        },
        "sample_flags": {
            "dagster/row_count": len(result.flags),
            "by_flag_and_channel": dg.MetadataValue.json(flag_counts),
            "preview": frame_preview(result.flags),
            **lineage,
        },
    }
    checks = [
        data_quality.schema_conformance_check(stored.valid),
        data_quality.row_accounting_check(stored.raw_rows, stored.validated_rows, stored.quarantined_rows, len(result.valid)),
        data_quality.no_duplicates_check(stored.valid),
        data_quality.cycle_continuity_check(stored.valid["cycle_number"]),
        data_quality.quarantine_rate_check(stored.raw_rows, result.quarantined, config.max_quarantine_rate),
        data_quality.incomplete_cycles_quarantined_check(stored.cycle_accounting, config.max_missing_share),
        data_quality.interpolation_marked_check(stored.filled_values, stored.flags),
        data_quality.outliers_kept_check(stored.outliers, stored.validated_rows),
    ]
    return StageReport(metadata, checks)
