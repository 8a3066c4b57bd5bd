"""The per-day loop every daily stage runs: days in order, progress, a day's write reported.

A single-run backfill hands one run many days; each stage walks them in order (snapshots chain
day after day) and says how far it is, and each day's table is written and its figures put on
that day's own materialisation (`report_day`), the same way in every stage.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import polars as pl
from dagster import AssetExecutionContext

from assets.metadata import report_day
from assets.partitions import partition_days
from usage_stats.storage.warehouse import DayParts, Warehouse


def each_day(context: AssetExecutionContext, stage: str) -> Iterator[dt.date]:
    """The run's days, ascending; before each, a log line with how many are done and, after
    the first, an estimate of the time left (a year's backfill says when it will end)."""
    days = partition_days(context)
    started = time.monotonic()
    for done, day in enumerate(days):
        if len(days) > 1:
            note = f"{stage}: day {done + 1} of {len(days)}, {day}"
            if done:
                elapsed = time.monotonic() - started
                left = elapsed / done * (len(days) - done)
                note += f" ({elapsed:.0f} s so far, about {left:.0f} s left)"
            context.log.info(note)
        yield day


def write_day(
    context: AssetExecutionContext,
    warehouse: Warehouse,
    table: str,
    day: dt.date,
    frame: pl.DataFrame,
    **numbers: int | float,
) -> str:
    """Write `table` for `day` and report the rows stored, where, and `numbers` on that day's
    materialisation of the asset of the same name; returns the file's URI."""
    uri = warehouse.write(table, day, frame)
    report_day(context, table, day, frame.height, uri, **numbers)
    return uri


def report_parts(context: AssetExecutionContext, parts: DayParts, **numbers: int | float) -> None:
    """Report a table written in parts (`Warehouse.day_parts`): rows, where, how many parts."""
    report_day(context, parts.table, parts.day, parts.rows, parts.uri, parts=parts.count, **numbers)
