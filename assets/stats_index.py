import datetime as dt

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.days import each_day
from assets.metadata import report_day
from assets.partitions import DAILY_USAGE
from resources import StatsStoreResource, WarehouseResource
from usage_stats.pipeline.snapshots import pending_deltas, stored_snapshot
from usage_stats.storage.lareferencia_index import warehouse_period_items

MATCHES_DELTAS = "store_rows_equal_delta_rows"


@asset(
    deps=["item_daily_deltas", "usage_snapshots", "item_titles"],
    **DAILY_USAGE,
    kinds={"duckdb", "opensearch"},  # the configured one: assets.described_assets
    pool="stats_store",
    check_specs=[
        AssetCheckSpec(
            MATCHES_DELTAS,
            asset="stats_index",
            blocking=True,
            description="Documents stored for each day = delta rows of that day.",
        )
    ],
    description="Deltas and snapshots in the stats store; re-materialising a day replaces "
    "exactly that day. Item titles are kept per item, the latest day's winning.",
)
def stats_index(
    context: AssetExecutionContext, warehouse: WarehouseResource, stats_store: StatsStoreResource
):
    store = warehouse.get_warehouse()
    target = stats_store.get_store()
    mismatched: dict[str, dict[str, int]] = {}
    stored_days = target.days()
    for day in each_day(context, "stats_index"):
        deltas = store.read("item_daily_deltas", day)
        snapshot = store.read("usage_snapshots", day)
        # Items keep their stored row until used again: the day stores the rows of the items
        # used since the store's previous day (normally this day's deltas), rollups whole.
        previous = max((d for d in stored_days if d < day), default=None)
        changed = None
        if previous is not None:
            changed = deltas if previous == day - dt.timedelta(days=1) else None
            changed = pending_deltas(store, previous, day) if changed is None else changed
        # The compatibility set's month is rebuilt from the warehouse's copy of the store's
        # other days of the month, not read back from the store (a quarter of the day's
        # indexing by the 10th of a month)
        period = target.compat_period(day)
        earlier = None
        if period is not None:
            earlier = warehouse_period_items(store, period, stored_days, day)
        result = target.replace_day(
            day, deltas, stored_snapshot(snapshot, changed), period_items=earlier
        )
        stored_days = sorted({*stored_days, day})
        stored = target.row_count("usage_deltas", day)
        titles = store.read_optional("item_titles", day)
        titled = target.record_titles(day, titles) if titles is not None else 0
        report_day(
            context,
            "stats_index",
            day,
            result.delta_rows + result.snapshot_rows,
            delta_rows=result.delta_rows,
            snapshot_rows=result.snapshot_rows,
            snapshot_rows_unchanged=snapshot.height - result.snapshot_rows,
            titles_recorded=titled,
            # the month's other days, summed from the warehouse (absent: read back, or none)
            **({} if earlier is None else {"compat_period_rows_from_warehouse": earlier.height}),
        )
        if stored != deltas.height:
            mismatched[day.isoformat()] = {"stored": stored, "delta_rows": deltas.height}
        context.log.info(
            f"stats_index {day}: {result.delta_rows} deltas, {result.snapshot_rows} snapshot rows"
        )
    optimized = target.optimize()
    context.log.info(f"stats_index: store arranged for reading in {optimized:.1f} s")
    yield MaterializeResult(
        metadata={
            "store": type(target).__name__,
            "optimize_seconds": round(optimized, 2),
        }
    )
    yield AssetCheckResult(
        check_name=MATCHES_DELTAS,
        passed=not mismatched,
        severity=AssetCheckSeverity.ERROR,
        metadata={"mismatched_days": MetadataValue.json(mismatched)},
    )
