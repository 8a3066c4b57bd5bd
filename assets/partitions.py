import datetime as dt

from dagster import AssetExecutionContext, BackfillPolicy, DailyPartitionsDefinition

import assets.beta  # noqa: F401  (before any asset: silences the beta warnings)
from usage_stats.settings import Settings

_settings = Settings.current()
# Days in UTC; one run handles all sites of a day (per-site reprocessing is run config). An
# end date bounds the window (the demo's three days), otherwise it runs up to yesterday.
daily_partitions = DailyPartitionsDefinition(
    start_date=_settings.start_date,
    end_date=(
        (dt.date.fromisoformat(_settings.end_date) + dt.timedelta(days=1)).isoformat()
        if _settings.end_date
        else None
    ),
    timezone="UTC",
)

# Snapshots chain day after day, so a range is cheapest in one pass; every usage asset uses
# the same policy so a backfill of the whole pipeline is one run.
single_run = BackfillPolicy.single_run()

# Production (USAGE_STATS_BACKFILL_DAYS_PER_RUN=N): the stages whose days are independent of
# each other (export, raw events, cleaning, titles, deltas) split a backfill into runs of N
# days that the run queue launches in parallel (bounded by its limits, on the executor's
# workers); the cumulative chain (snapshots, stats_index) keeps single-run ranges and follows
# in order (assets/snapshots.py: CHAIN_DEPS). 0 (the default) keeps the whole range in one run.
per_day = (
    BackfillPolicy.multi_run(_settings.backfill_days_per_run)
    if _settings.backfill_days_per_run
    else single_run
)


# What every daily stage shares: the day partitions, one run per range, its group; and what a
# warehouse stage is. `@asset(**DAILY_USAGE, kinds=WAREHOUSE_TABLE, …)`.
DAILY = {"partitions_def": daily_partitions, "backfill_policy": single_run}
DAILY_USAGE = {**DAILY, "group_name": "usage"}
# ... and the stages whose days are independent (see per_day)
EACH_DAY = {**DAILY, "backfill_policy": per_day}
EACH_DAY_USAGE = {**EACH_DAY, "group_name": "usage"}
WAREHOUSE_TABLE = {"polars", "parquet"}


def partition_days(context: AssetExecutionContext) -> list[dt.date]:
    """The days of this run, ascending: one for a normal run, many for a single-run backfill."""
    return sorted(dt.date.fromisoformat(key) for key in context.partition_keys)
