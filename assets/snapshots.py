from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    asset,
)

from assets.days import each_day, write_day
from assets.metadata import schema_metadata
from assets.partitions import DAILY_USAGE, WAREHOUSE_TABLE, partition_days, per_day, single_run
from resources import WarehouseResource
from usage_stats.pipeline.snapshots import (
    SNAPSHOT_SCHEMA,
    next_snapshot,
    pending_deltas,
    snapshot_mismatches,
)

CHAINS = "snapshot_equals_previous_plus_delta"

# Where a backfill splits the daily stages into runs (USAGE_STATS_BACKFILL_DAYS_PER_RUN), the
# chain says so to Dagster: snapshot(d) also depends on snapshot(d − 1), so the backfill
# launches the snapshots in order, each range once the one before it is in, never two at once.
# (In one-run backfills the range is one run anyway, and the graph stays as it was.)
CHAIN_DEPS = (
    [AssetDep("usage_snapshots", partition_mapping=TimeWindowPartitionMapping(-1, -1))]
    if per_day is not single_run
    else []
)


@asset(
    deps=["item_daily_deltas", *CHAIN_DEPS],
    **DAILY_USAGE,
    kinds=WAREHOUSE_TABLE,
    check_specs=[
        AssetCheckSpec(
            CHAINS,
            asset="usage_snapshots",
            blocking=True,
            description="Every key: snapshot(d) = previous snapshot + deltas since it.",
        )
    ],
    description="Cumulative totals per item and rollup: snapshot(d) = snapshot(d−1) + delta(d).",
)
def usage_snapshots(context: AssetExecutionContext, warehouse: WarehouseResource):
    store = warehouse.get_warehouse()
    days = partition_days(context)
    mismatches: dict[str, int] = {}
    previous_day = store.latest_before("usage_snapshots", days[0])
    previous = store.read("usage_snapshots", previous_day) if previous_day else None
    for day in each_day(context, "usage_snapshots"):
        delta = pending_deltas(store, previous_day, day)
        snapshot = next_snapshot(previous, delta, day)
        write_day(context, store, "usage_snapshots", day, snapshot)
        mismatches[day.isoformat()] = snapshot_mismatches(
            store.read("usage_snapshots", day), previous, delta
        )
        previous_day, previous = day, snapshot
    later = [d.isoformat() for d in store.days("usage_snapshots") if d > days[-1]]
    if later:
        context.log.warning(
            f"snapshots after {days[-1]} ({', '.join(later)}) were built without this run's "
            "deltas; materialise them again to bring them up to date"
        )
    yield MaterializeResult(
        metadata={
            **schema_metadata(SNAPSHOT_SCHEMA),
            "stale_later_snapshots": MetadataValue.json(later),
        }
    )
    yield AssetCheckResult(
        check_name=CHAINS,
        passed=not any(mismatches.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"mismatched_keys_per_day": MetadataValue.json(mismatches)},
    )
