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

from assets.days import each_day, write_day
from assets.metadata import markdown_table, schema_metadata
from assets.partitions import EACH_DAY_USAGE, WAREHOUSE_TABLE
from resources import WarehouseResource
from usage_stats.pipeline.metrics import (
    DELTA_SCHEMA,
    METRICS,
    SESSION_COLUMNS,
    daily_deltas,
    duplicate_keys,
)

NO_DUPLICATES = "no_duplicate_delta_keys"


@asset(
    deps=["sessions"],
    **EACH_DAY_USAGE,
    kinds=WAREHOUSE_TABLE,
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
    duplicates: dict[str, int] = {}
    top_items = None
    for day in each_day(context, "item_daily_deltas"):
        sessions = store.parts("sessions", day, read_ahead=True, columns=SESSION_COLUMNS)
        deltas = daily_deltas(sessions)
        duplicates[day.isoformat()] = duplicate_keys(deltas)
        global_rows = deltas.filter(pl.col("scope") == "global")
        totals = {m: int(global_rows.get_column(m).sum()) for m in METRICS}
        write_day(context, store, "item_daily_deltas", day, deltas, **totals)
        top_items = (
            deltas.filter(pl.col("scope") == "item")
            .group_by("key")
            .agg(pl.col("views").sum(), pl.col("downloads").sum())
            .sort(["views", "downloads", "key"], descending=[True, True, False])
            .head(10)
        )
    yield MaterializeResult(
        metadata={
            **schema_metadata(DELTA_SCHEMA),
            "top_items_last_day": markdown_table(top_items),
        }
    )
    yield AssetCheckResult(
        check_name=NO_DUPLICATES,
        passed=not any(duplicates.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"duplicate_rows_per_day": MetadataValue.json(duplicates)},
    )
