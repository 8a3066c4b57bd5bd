"""Metadata the Dagster UI shows for every stage: counts, schemas, previews."""

from __future__ import annotations

import datetime as dt

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, TableColumn, TableSchema

from usage_stats.pipeline.columns import COLUMN_DESCRIPTIONS


def table_schema(schema: dict[str, pl.DataType] | pl.Schema) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(name, str(dtype), description=COLUMN_DESCRIPTIONS.get(name))
            for name, dtype in dict(schema).items()
        ]
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


def report_day(
    context: AssetExecutionContext,
    asset: str,
    day: dt.date,
    rows: int,
    uri: str | None = None,
    **numbers: int | float,
) -> None:
    """One day's own figures, on that day's materialisation.

    A single-run backfill records one materialisation per partition, and metadata of the
    run's result lands on every one of them: the range's totals would show on each day. So
    row counts, the warehouse path and other counts are added per partition, as plain
    numbers (which the UI plots across partitions); only what holds for every day (schema,
    preview) goes on the result.
    """
    metadata: dict[str, int | float | str] = {"dagster/row_count": rows, **numbers}
    if uri is not None:
        metadata["dagster/uri"] = uri
    context.add_asset_metadata(metadata, asset_key=asset, partition_key=day.isoformat())


def schema_metadata(schema: dict[str, pl.DataType]) -> dict:
    """The column schema: the same on every day's materialisation."""
    return {"dagster/column_schema": table_schema(schema)}
