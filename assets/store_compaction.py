"""Periodic compaction of the stats store: an op job of its own (and its monthly schedule,
stopped by default), never part of stats_index.

Each night `stats_index` keeps the DuckDB store cheap to write (its day is a sorted run and
`optimize` merges only small runs: a cost proportional to the day). `store_compaction` is the
periodic half: it rewrites each closed period (a month by default) as one sorted run, so an
item's or a repository's history reads a row group per period instead of one per day
(`DuckDBStatsStore.compact`; policy in usage_stats/storage/duckdb_store.py). OpenSearch
arranges itself: the job does nothing there.

It writes the store, so its op is in the `stats_store` pool with every asset that writes it
(instance/dagster.yaml limits the pool to one at a time): it never runs while a stats_index
day is being written, and a writer from outside Dagster waits on DuckDB's file lock
(`DuckDBStatsStore._connect`), which compaction releases between two periods.
"""

import datetime as dt

from dagster import (
    Config,
    DefaultScheduleStatus,
    OpExecutionContext,
    Output,
    ScheduleDefinition,
    job,
    op,
)
from pydantic import Field

from resources import StatsStoreResource


class CompactionConfig(Config):
    period: str = Field(
        default="month", description="the periods compacted, each to one run: week, month, year"
    )
    max_run_rows: int | None = Field(
        default=None,
        description="rows of a compacted run at most (about): a larger period becomes several "
        "runs of consecutive days; unset: one run per period",
    )
    before: str | None = Field(
        default=None,
        description="compact the periods ending before this day (YYYY-MM-DD); unset: every "
        "period before the latest stored day's",
    )


@op(
    pool="stats_store",
    description="Rewrites each closed period of the stats store as one sorted run (DuckDB; "
    "OpenSearch: nothing to do). Idempotent: a period already compact is left alone.",
)
def compact_stats_store(
    context: OpExecutionContext, config: CompactionConfig, stats_store: StatsStoreResource
):
    store = stats_store.get_store()
    before = dt.date.fromisoformat(config.before) if config.before else None
    report = store.compact(period=config.period, before=before, max_run_rows=config.max_run_rows)
    context.log.info(
        f"store_compaction ({type(store).__name__}): {report.rewritten} period run(s) rewritten, "
        f"{report.already_compact} already compact, {report.rows_moved} rows moved, runs "
        f"{report.runs_before} → {report.runs_after}, {report.seconds:.1f} s"
    )
    return Output(
        None,
        metadata={
            "store": type(store).__name__,
            "period": report.period,
            "before": report.before.isoformat() if report.before else "",
            "runs_before": report.runs_before,
            "runs_after": report.runs_after,
            "periods_rewritten": report.rewritten,
            "periods_already_compact": report.already_compact,
            "rows_moved": report.rows_moved,
            "seconds": round(report.seconds, 2),
        },
    )


@job(
    name="store_compaction",
    description="Periodic maintenance of the stats store: each closed period (a month by "
    "default) of the DuckDB tables rewritten as one sorted run, for reads as fast as a store "
    "sorted whole, without the nightly stats_index re-sorting history.",
)
def store_compaction_job():
    compact_stats_store()


# Once a month, after the month's last day has been processed: its days become one sorted run.
store_compaction_schedule = ScheduleDefinition(
    name="store_compaction_schedule",
    job=store_compaction_job,
    cron_schedule="30 4 2 * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="On the 2nd of each month at 04:30 UTC, compacts the stats store's closed "
    "months (store_compaction, DuckDB only). Its op shares the stats_store pool with the "
    "assets that write the store, so it waits for a running stats_index rather than racing it.",
)
