"""Record statistics per day: thin shells around `usage_stats.pipeline.records`.

Both assets compute their day from the whole harvested state and change log: a later
harvest that reveals older records (a repository harvested for the first time, or late)
changes the days of their datestamps, and re-materialising those days and every later one
(one single-run backfill of `record_stats` from the first such day) brings deltas,
snapshots and the stats store up to date. The snapshot of the day before a run is the
stored one carried forward (`refresh_snapshot`: what the log gained since adds or takes
back only the records it names) when the changes since it allow, else recounted from every
record; each stored snapshot has its log mark (`record_snapshot_marks`) for the next run.
"""

import datetime as dt

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
from assets.partitions import DAILY, WAREHOUSE_TABLE, partition_days
from resources import AdminDbResource, StatsStoreResource, WarehouseResource
from usage_stats.metadata.store import MetadataStore
from usage_stats.pipeline.records import (
    RECORD_SCHEMA,
    advance_snapshot,
    log_mark,
    record_events,
    record_snapshot,
    record_snapshot_mismatches,
    refresh_snapshot,
    source_levels,
    subcount_mismatches,
)
from usage_stats.pipeline.records import (
    record_deltas as compute_deltas,
)

DAILY_RECORDS = {**DAILY, "group_name": "records"}
SUBCOUNTS = "subcounts_add_up_to_totals"
CHAINS = "record_snapshot_equals_previous_plus_delta"
# The preview: global totals and type subcounts, the lines a reader checks first.
# Beside each stored snapshot: what it was counted from (`log_mark`), for the next run.
MARKS = "record_snapshot_marks"
_PREVIEW = (pl.col("scope") == "global") & pl.col("field").is_in(["total", "resource_type"])


def _harvested(warehouse: WarehouseResource, admin_db: AdminDbResource):
    metadata = MetadataStore(warehouse.get_warehouse().lake)
    levels = source_levels(admin_db.get_registry().sources())
    return metadata.read_all_current(), metadata.read_changes(), levels


@asset(
    deps=["item_metadata"],
    **DAILY_RECORDS,
    kinds=WAREHOUSE_TABLE,
    check_specs=[
        AssetCheckSpec(
            SUBCOUNTS,
            asset="record_deltas",
            blocking=True,
            description="Single-valued subcounts add up to the total; no list-field value "
            "exceeds it.",
        )
    ],
    description="Records added and removed per day (by OAI datestamp, and by publication "
    "date), with their files and data volume, per repository, national node and the "
    "network, with subcounts by type, access, language, subject, publisher, funder, "
    "affiliation and file format. Recomputed from the whole change log, so a late harvest "
    "is taken in by re-materialising the day.",
)
def record_deltas(
    context: AssetExecutionContext, warehouse: WarehouseResource, admin_db: AdminDbResource
):
    current, changes, levels = _harvested(warehouse, admin_db)
    # only the run's days' events: one filtering pass over the log, not the whole log's
    events = record_events(current, changes, partition_days(context))
    store = warehouse.get_warehouse()
    bad: dict[str, int] = {}
    last = None
    for day in each_day(context, "record_deltas"):
        last = compute_deltas(current, changes, levels, day, events)
        write_day(context, store, "record_deltas", day, last)
        bad[day.isoformat()] = subcount_mismatches(last)
    yield MaterializeResult(
        metadata={
            **schema_metadata(RECORD_SCHEMA),
            "records_harvested": current.height,
            "preview": markdown_table(last.filter(_PREVIEW) if last is not None else None),
        }
    )
    yield AssetCheckResult(
        check_name=SUBCOUNTS,
        passed=not any(bad.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"mismatched_subcounts_per_day": MetadataValue.json(bad)},
    )


@asset(
    deps=["record_deltas"],
    **DAILY_RECORDS,
    kinds=WAREHOUSE_TABLE,
    pool="stats_store",
    check_specs=[
        AssetCheckSpec(
            CHAINS,
            asset="record_snapshots",
            blocking=True,
            description="Every key and count (records, files, data volume): snapshot(d) = "
            "snapshot(d−1) + the stored delta(d), checked on the day's rows (the snapshot is "
            "the previous plus the delta recounted from the log; a delta stored before a "
            "later harvest fails it: re-materialise record_deltas).",
        ),
        AssetCheckSpec(
            SUBCOUNTS,
            asset="record_snapshots",
            blocking=True,
            description="Single-valued subcounts add up to the total; no list-field value "
            "exceeds it.",
        ),
    ],
    description="Total records per scope on each day (cumulative added and removed), their "
    "files and data volume, with the same subcounts; written with the day's deltas into "
    "the stats store, the day replaced atomically.",
)
def record_snapshots(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    admin_db: AdminDbResource,
    stats_store: StatsStoreResource,
):
    current, changes, levels = _harvested(warehouse, admin_db)
    store = warehouse.get_warehouse()
    target = stats_store.get_store()
    days = partition_days(context)
    events = record_events(current, changes, days)
    # The day before the run: its stored snapshot carried forward when the changes logged
    # since allow (refresh_snapshot, which adds the first day's delta in the same pass), else
    # one count over every record; then each day's own events: the same snapshots as
    # counting the log up to each day (advance_snapshot).
    before = days[0] - dt.timedelta(days=1)
    stored = None
    if store.exists("record_snapshots", before) and store.exists(MARKS, before):
        stored = (store.read("record_snapshots", before), store.read(MARKS, before))
    carried = False
    previous = None
    chain: dict[str, int] = {}
    bad: dict[str, int] = {}
    snapshot = None
    for day in each_day(context, "record_snapshots"):
        delta = store.read("record_deltas", day)
        fresh = compute_deltas(current, changes, levels, day, events)
        if previous is None:  # the run's first day
            if stored is not None:
                snapshot = refresh_snapshot(*stored, current, changes, levels, before, fresh, day)
                carried = snapshot is not None
            context.log.info(
                f"record_snapshots: the snapshot of {before} "
                + ("carried forward from the stored one" if carried else "recounted")
            )
            if not carried:
                previous = record_snapshot(current, changes, levels, before)
        if previous is not None:
            snapshot = advance_snapshot(previous, fresh, day)
        written = target.replace_record_day(day, delta, snapshot)
        # The mark goes before the snapshot is replaced and comes back after it: a snapshot
        # without its mark is recounted by the next run, never carried on another's mark.
        store.lake.delete_prefix(f"{MARKS}/date={day.isoformat()}")
        write_day(
            context,
            store,
            "record_snapshots",
            day,
            snapshot,
            store_delta_rows=written.delta_rows,
            store_snapshot_rows=written.snapshot_rows,
        )
        store.write(MARKS, day, log_mark(changes, snapshot, levels))
        # snapshot = previous + fresh key by key (advance_snapshot, or refresh_snapshot's
        # refreshed previous + fresh), so snapshot − previous −
        # stored delta = fresh − stored delta: the chain checked on the day's rows, not on
        # millions of snapshot rows.
        chain[day.isoformat()] = record_snapshot_mismatches(fresh, None, delta)
        bad[day.isoformat()] = subcount_mismatches(snapshot)
        previous = snapshot
    yield MaterializeResult(
        metadata={
            **schema_metadata(RECORD_SCHEMA),
            "store": type(target).__name__,
            "previous_snapshot": "carried forward" if carried else "recounted",
            "preview": markdown_table(snapshot.filter(_PREVIEW) if snapshot is not None else None),
        }
    )
    yield AssetCheckResult(
        check_name=CHAINS,
        passed=not any(chain.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"mismatched_keys_per_day": MetadataValue.json(chain)},
    )
    yield AssetCheckResult(
        check_name=SUBCOUNTS,
        passed=not any(bad.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"mismatched_subcounts_per_day": MetadataValue.json(bad)},
    )
