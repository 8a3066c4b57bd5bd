"""Metadata the Dagster UI shows for every stage: counts, schemas, previews."""

from __future__ import annotations

import polars as pl
from dagster import MetadataValue, TableColumn, TableSchema


def table_schema(schema: dict[str, pl.DataType] | pl.Schema) -> TableSchema:
    return TableSchema(
        columns=[TableColumn(name, str(dtype)) for name, dtype in dict(schema).items()]
    )


def markdown_table(frame: pl.DataFrame | None, limit: int = 10) -> MetadataValue:
    if frame is None or frame.is_empty():
        return MetadataValue.md("_no rows_")
    head = frame.head(limit)
    lines = [
        "| " + " | ".join(head.columns) + " |",
        "|" + "---|" * len(head.columns),
    ]
    for row in head.iter_rows():
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row) + " |")
    return MetadataValue.md("\n".join(lines))


def per_day(counts: dict[str, int]) -> MetadataValue:
    return MetadataValue.json(counts)


def standard_metadata(rows_per_day: dict[str, int], schema: dict[str, pl.DataType]) -> dict:
    """Row count over the run's days, rows per day, and the column schema."""
    return {
        "dagster/row_count": sum(rows_per_day.values()),
        "rows_per_day": per_day(rows_per_day),
        "dagster/column_schema": table_schema(schema),
    }
