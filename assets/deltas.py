import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.metadata import markdown_table, standard_metadata
from assets.partitions import daily_partitions, partition_days, single_run
from resources import WarehouseResource
from usage_stats.metrics import DELTA_SCHEMA, METRICS, daily_deltas, duplicate_keys

NO_DUPLICATES = "no_duplicate_delta_keys"


@asset(
    deps=["sessions"],
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    group_name="usage",
    kinds={"polars", "parquet"},
    check_specs=[
        AssetCheckSpec(
            NO_DUPLICATES,
            asset="item_daily_deltas",
            blocking=True,
            description="(date, scope, key, site, level, country) is unique.",
        )
    ],
    description="Per day × site × item × visitor country: LA Referencia and COUNTER R5.1 "
    "metrics, with source, site and global rollups.",
)
def item_daily_deltas(context: AssetExecutionContext, warehouse: WarehouseResource):
    store = warehouse.get_warehouse()
    rows: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    totals: dict[str, dict[str, int]] = {}
    top_items = None
    for day in partition_days(context):
        deltas = daily_deltas(store.read("sessions", day))
        store.write("item_daily_deltas", day, deltas)
        rows[day.isoformat()] = deltas.height
        duplicates[day.isoformat()] = duplicate_keys(deltas)
        global_rows = deltas.filter(pl.col("scope") == "global")
        totals[day.isoformat()] = {m: int(global_rows.get_column(m).sum()) for m in METRICS}
        top_items = (
            deltas.filter(pl.col("scope") == "item")
            .group_by("key")
            .agg(pl.col("views").sum(), pl.col("downloads").sum())
            .sort(["views", "downloads", "key"], descending=[True, True, False])
            .head(10)
        )
    yield MaterializeResult(
        metadata={
            **standard_metadata(rows, DELTA_SCHEMA),
            "global_totals_per_day": MetadataValue.json(totals),
            "top_items_last_day": markdown_table(top_items),
        }
    )
    yield AssetCheckResult(
        check_name=NO_DUPLICATES,
        passed=not any(duplicates.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"duplicate_rows_per_day": MetadataValue.json(duplicates)},
    )
