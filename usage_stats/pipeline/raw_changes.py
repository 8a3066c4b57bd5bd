"""Which days need processing because raw files appeared or changed.

The new-file sensor lists only the month prefixes that can still receive files (a look-back
window), compares modification times with its cursor and turns new or changed files into days.
A file in a `day=` leaf affects that day; a month-level file affects the days it holds (read
from its timestamp column alone), or, if that cannot be read, every day of its month. Today
is never requested: its partition does not exist until the day is over, and the nightly
schedule processes it then. Work per tick is bounded: at most `max_days` days
are requested, and the cursor only moves past files whose days were all requested, so nothing
is skipped.
"""

from __future__ import annotations

import calendar
import datetime as dt
import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from usage_stats.storage.lake import TABLES, FileInfo, Lake, site_ids_in_lake

_LEAF = re.compile(r"idsite=(\d+)/year=(\d{4})/month=(\d{1,2})(?:/day=(\d{1,2}))?/[^/]+$")


def months_in_window(today: dt.date, lookback_days: int) -> list[tuple[int, int]]:
    first = today - dt.timedelta(days=lookback_days)
    months = []
    year, month = first.year, first.month
    while (year, month) <= (today.year, today.month):
        months.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def recent_prefixes(lake: Lake, today: dt.date, lookback_days: int) -> list[str]:
    """`<table>/idsite=<N>/year=<Y>/month=<M>` for every site and recent month."""
    prefixes = []
    for table in TABLES:
        for site_id in site_ids_in_lake(lake, table):
            for year, month in months_in_window(today, lookback_days):
                prefixes.append(f"{table}/idsite={site_id}/year={year}/month={month}")
    return prefixes


def days_of_file(
    key: str, today: dt.date, month_days: Callable[[str], list[dt.date]] | None = None
) -> list[dt.date]:
    match = _LEAF.search(key)
    if not match:
        return []
    year, month = int(match.group(2)), int(match.group(3))
    if match.group(4):
        days = [dt.date(year, month, int(match.group(4)))]
    else:
        days = month_days(key) if month_days else []
        if not days:
            last = calendar.monthrange(year, month)[1]
            days = [dt.date(year, month, d) for d in range(1, last + 1)]
    return sorted(d for d in days if d < today)


def dates_in_file(lake: Lake, key: str) -> list[dt.date]:
    """The distinct dates of a raw file's `server_time` (events) or last action (visits)."""
    try:
        data = io.BytesIO(lake.read_bytes(key))
        schema = pl.read_parquet_schema(data)
        for column in ("server_time", "visit_last_action_time"):
            if isinstance(schema.get(column), pl.Datetime):
                data.seek(0)
                values = pl.read_parquet(data, columns=[column]).get_column(column)
                return sorted(values.dt.date().drop_nulls().unique().to_list())
    except Exception:  # unreadable: let the run report it, for every day it could hold
        return []
    return []


@dataclass(frozen=True)
class DayRequest:
    day: dt.date
    # Newest modification time among the files behind this request: part of the run key, so
    # a repeated tick asks for nothing new and a changed file asks again.
    fingerprint: float


@dataclass(frozen=True)
class ChangePlan:
    requests: list[DayRequest]
    cursor: float
    pending_files: int


def plan_day_requests(
    files: list[FileInfo],
    cursor: float,
    today: dt.date,
    max_days: int,
    month_days: Callable[[str], list[dt.date]] | None = None,
) -> ChangePlan:
    """Days to (re)process for files modified after `cursor`, oldest change first."""
    changed = sorted((f for f in files if f.modified > cursor), key=lambda f: (f.modified, f.key))
    fingerprints: dict[dt.date, float] = {}
    new_cursor = cursor
    index = 0
    while index < len(changed):
        # Files with the same modification time move the cursor together.
        stamp = changed[index].modified
        group = []
        while index < len(changed) and changed[index].modified == stamp:
            group.append(changed[index])
            index += 1
        days = {d for f in group for d in days_of_file(f.key, today, month_days)}
        if fingerprints and len(set(fingerprints) | days) > max_days:
            index -= len(group)
            break
        for day in days:
            fingerprints[day] = max(fingerprints.get(day, 0.0), stamp)
        new_cursor = stamp
    requests = [DayRequest(d, fingerprints[d]) for d in sorted(fingerprints)]
    return ChangePlan(requests, new_cursor, len(changed) - index)


@dataclass(frozen=True)
class Mark:
    """Where a partition's latest materialisation sits in the event log, and which run made it."""

    order: int
    run_id: str


def first_stale_snapshot(
    deltas: dict[dt.date, Mark], snapshots: dict[dt.date, Mark]
) -> dt.date | None:
    """The earliest day whose snapshot no longer equals previous snapshot + its delta.

    A snapshot is stale when its day's deltas were rebuilt after it, or when the previous
    day's snapshot was rebuilt after it by another run (a single-run backfill writes its days
    together, in no guaranteed order, so the same run never makes its own days stale). A day
    with deltas but no snapshot, before the latest snapshot, is stale too.
    """
    if not snapshots:
        return None
    latest = max(snapshots)
    candidates: list[dt.date] = []
    for day, mark in deltas.items():
        if day > latest:
            continue
        snap = snapshots.get(day)
        if snap is None or (mark.order > snap.order and mark.run_id != snap.run_id):
            candidates.append(day)
    ordered = sorted(snapshots)
    for previous, day in zip(ordered, ordered[1:], strict=False):
        before, this = snapshots[previous], snapshots[day]
        if before.order > this.order and before.run_id != this.run_id:
            candidates.append(day)
    return min(candidates) if candidates else None
