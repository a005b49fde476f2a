"""Helpers that describe frames and models as Dagster metadata (shown in the UI)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

_TYPE_NAMES = {"str": "string", "int64": "bigint", "float64": "double"}


def table_schema(model) -> dg.TableSchema:
    """Column schema of a pandera model, for the asset's 'Columns' panel."""
    schema = model.to_schema()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=_TYPE_NAMES.get(str(column.dtype), str(column.dtype)),
                description=column.description,
                constraints=dg.TableColumnConstraints(nullable=column.nullable),
            )
            for name, column in schema.columns.items()
        ]
    )


def frame_preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    if frame.empty:
        return dg.MetadataValue.md("_no rows_")
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False, floatfmt=".6g"))


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
