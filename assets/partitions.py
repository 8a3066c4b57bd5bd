import datetime as dt

from dagster import AssetExecutionContext, BackfillPolicy, DailyPartitionsDefinition

from usage_stats.settings import Settings

# Days in UTC; one run handles all sites of a day (per-site reprocessing is run config).
daily_partitions = DailyPartitionsDefinition(
    start_date=Settings.from_env().start_date, timezone="UTC"
)

# Snapshots chain day after day, so a range is cheapest in one pass; every usage asset uses
# the same policy so a backfill of the whole pipeline is one run.
single_run = BackfillPolicy.single_run()


def partition_days(context: AssetExecutionContext) -> list[dt.date]:
    """The days of this run, ascending: one for a normal run, many for a single-run backfill."""
    return sorted(dt.date.fromisoformat(key) for key in context.partition_keys)
