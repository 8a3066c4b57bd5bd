"""Late data: when a day's deltas change, every later snapshot is rebuilt without anyone asking.

Why a sensor rather than an automation condition: snapshot(d) depends on snapshot(d − 1), so a
late file for day D invalidates a chain of days; an eager condition would rebuild them one
day per evaluation, while this sensor finds the first stale day from the event log and asks
for one single-run backfill of `usage_snapshots` and `stats_index` from that day to the
latest snapshot. Its run key names the triggering materialisation, so a repeated tick (or one
that comes while the refresh is still running) requests nothing new.
"""

import datetime as dt

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

from assets.jobs import record_stats_job
from resources import WarehouseResource
from usage_stats.metadata.store import MetadataStore
from usage_stats.pipeline.raw_changes import Mark, first_stale_snapshot
from usage_stats.pipeline.record_changes import change_days, first_stale_record_day
from usage_stats.settings import Settings

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"

snapshot_refresh_job = define_asset_job(
    "snapshot_refresh",
    selection=["usage_snapshots", "stats_index"],
    description="Rebuilds snapshots (and their indexed copy) from a day on.",
)


def latest_marks(instance: DagsterInstance, asset: str) -> dict[dt.date, Mark]:
    key = AssetKey(asset)
    ids = instance.get_latest_storage_id_by_partition(key, DagsterEventType.ASSET_MATERIALIZATION)
    if not ids:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, storage_ids=list(ids.values())), limit=len(ids)
    ).records
    runs = {r.storage_id: r.run_id for r in records}
    return {
        dt.date.fromisoformat(partition): Mark(storage_id, runs.get(storage_id, ""))
        for partition, storage_id in ids.items()
    }


def evaluate_late_data(context: SensorEvaluationContext) -> RunRequest | SkipReason:
    snapshots = latest_marks(context.instance, "usage_snapshots")
    deltas = latest_marks(context.instance, "item_daily_deltas")
    stale = first_stale_snapshot(deltas, snapshots)
    if stale is None:
        return SkipReason(f"all {len(snapshots)} snapshot(s) are up to date")
    latest = max(snapshots)
    trigger = max(m.order for d, m in {**snapshots, **deltas}.items() if d <= stale)
    context.log.info(f"snapshots {stale} .. {latest} are stale; refreshing them in one run")
    return RunRequest(
        run_key=f"snapshot-refresh:{stale.isoformat()}:{latest.isoformat()}:{trigger}",
        tags={
            RANGE_START: stale.isoformat(),
            RANGE_END: latest.isoformat(),
            "usage_stats/trigger": "late data",
        },
    )


@sensor(
    job=snapshot_refresh_job,
    minimum_interval_seconds=Settings.current().sensor_interval_seconds,
    default_status=DefaultSensorStatus.STOPPED,
    description="Rebuilds every snapshot after a day whose deltas changed (late files). Turn it "
    "on in production, with the nightly schedule or the new-file sensor: whenever a past day "
    "is processed again, the cumulative snapshots after it are stale until it runs.",
)
def late_data_sensor(context: SensorEvaluationContext):
    return evaluate_late_data(context)


def _run_starts(instance: DagsterInstance, asset: str) -> tuple[dict[dt.date, dt.datetime], int]:
    """Per partition of `asset`, when the run of its latest materialisation started; and the
    newest of those materialisations' places in the event log (0: none)."""
    marks = latest_marks(instance, asset)
    starts = {}
    for day, mark in marks.items():
        record = instance.get_run_record_by_id(mark.run_id) if mark.run_id else None
        started = record.start_time if record is not None else None
        if started is None and record is not None:
            started = record.create_timestamp.timestamp()
        starts[day] = dt.datetime.fromtimestamp(started or 0, dt.UTC)
    return starts, max((m.order for m in marks.values()), default=0)


def _harvest_times(instance: DagsterInstance) -> list[dt.datetime]:
    records = instance.fetch_materializations(AssetKey("item_metadata"), limit=1000).records
    return [dt.datetime.fromtimestamp(r.timestamp, dt.UTC) for r in records]


def evaluate_late_harvest(
    context: SensorEvaluationContext, warehouse: WarehouseResource
) -> SensorResult | SkipReason:
    """One tick: the stored record days whose figures miss a harvested change, from the first
    of them to the last stored day, as one single-run backfill of `record_stats`.

    The change log is read only when something happened since the last tick that read it (a
    harvest recorded, or record days stored): the cursor is the newest harvest and the newest
    record materialisation it saw."""
    runs, snapshots_seen = _run_starts(context.instance, "record_snapshots")
    deltas, deltas_seen = _run_starts(context.instance, "record_deltas")
    # A day is as fresh as the older of its two materialisations.
    runs = {d: min(t, deltas.get(d, t)) for d, t in runs.items()}
    harvests = _harvest_times(context.instance)
    if not runs or not harvests:
        return SkipReason(f"{len(runs)} stored record day(s), {len(harvests)} harvest(s)")
    cursor = f"{max(harvests).isoformat()}|{max(snapshots_seen, deltas_seen)}"
    if cursor == context.cursor:
        return SkipReason("no harvest and no record run since the last look")
    metadata = MetadataStore(warehouse.get_warehouse().lake)
    affected = change_days(metadata.read_all_current(), metadata.read_changes())
    stale = first_stale_record_day(affected, harvests, runs)
    if stale is None:
        return SensorResult(
            skip_reason=f"all {len(runs)} record day(s) have seen every harvest", cursor=cursor
        )
    context.log.info(
        f"record days {stale.first} .. {stale.last} miss a harvest of {stale.trigger}; "
        "refreshing them in one run"
    )
    request = RunRequest(
        run_key=f"record-refresh:{stale.first}:{stale.last}:{stale.trigger.isoformat()}",
        tags={
            RANGE_START: stale.first.isoformat(),
            RANGE_END: stale.last.isoformat(),
            "usage_stats/trigger": "late harvest",
        },
    )
    return SensorResult(run_requests=[request], cursor=cursor)


@sensor(
    job=record_stats_job,
    minimum_interval_seconds=Settings.current().sensor_interval_seconds,
    default_status=DefaultSensorStatus.STOPPED,
    description="Late data for records: after a harvest (item_metadata) whose changes fall on "
    "days record_stats already stored (older records revealed, a record's fields changed), "
    "re-runs record_stats from the first such day to the last stored one, in one run. Turn "
    "it on with the harvest and record schedules.",
)
def late_harvest_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource):
    return evaluate_late_harvest(context, warehouse)
