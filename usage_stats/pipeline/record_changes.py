"""Late harvests: which stored days of record statistics a harvest made stale.

Record deltas and snapshots are recomputed from the whole harvested change log
(`usage_stats.pipeline.records`), so a harvest that reveals older records (a repository
harvested for the first time, or late), or changes a record's fields, changes figures of
days already stored: snapshot(d) counts every record whose events fall on or before d, by
its current fields. This module says from which day on; the late-harvest sensor asks for
one single-run backfill of `record_stats` from that day to the last stored one.

When a day's figures saw a change: the change log is written by a harvest before its
`item_metadata` materialisation is recorded, so a change is surely visible to any run that
*started* after the first `item_metadata` materialisation at or after its `harvested_at`
(its harvest's). A run that started earlier may have read the log before the change was
written, so its days count as not having seen it. A change whose harvest recorded no
materialisation yet (a run still going, or one that failed after storing other sources) is
taken in with the next one.

No Dagster here: the sensor passes the timestamps it reads from the event log.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass

import polars as pl

_RECORD = ["source_key", "oai_identifier"]


def change_days(current: pl.DataFrame, changes: pl.DataFrame) -> pl.DataFrame:
    """Per logged change, its `harvested_at` and the first `day` whose figures it alters:
    the earliest of the change's own day (its datestamp's, else its harvest's, as
    `records.record_events` dates it), the day the record was first added, and the record's
    publication date (the publication basis). Every later day's snapshot is altered too."""
    dated = changes.select(
        *_RECORD,
        "harvested_at",
        pl.col("change").cast(pl.String),
        pl.coalesce("datestamp", "harvested_at").dt.date().alias("_day"),
    )
    first_added = (
        dated.filter(pl.col("change") == "added")
        .group_by(_RECORD)
        .agg(pl.col("_day").min().alias("_added"))
    )
    published = current.select(*_RECORD, pl.col("publication_date").alias("_published")).unique(
        _RECORD, keep="last"
    )
    return (
        dated.join(first_added, on=_RECORD, how="left")
        .join(published, on=_RECORD, how="left")
        .select("harvested_at", pl.min_horizontal("_day", "_added", "_published").alias("day"))
    )


@dataclass(frozen=True)
class StaleRecords:
    first: dt.date  # the first stale stored day: re-run it and every later one
    last: dt.date  # the last stored day
    trigger: dt.datetime  # the newest harvest materialisation behind it (for the run key)


def first_stale_record_day(
    affected: pl.DataFrame,
    harvests: list[dt.datetime],
    runs: dict[dt.date, dt.datetime],
) -> StaleRecords | None:
    """The first stored day whose figures miss a change, or None.

    `affected`: `change_days`; `harvests`: when `item_metadata` materialisations were
    recorded; `runs`: per stored day, when the run that stored it started. A change made
    visible by the harvest at time h makes stale every stored day d ≥ its `day` whose run
    started before h; the earliest of those days starts the re-run (a stored day before the
    change's day keeps its figures; a change before the first stored day makes that day
    stale, its snapshot holding the history)."""
    if not runs or affected.is_empty() or not harvests:
        return None
    stamps = sorted(harvests)
    days = sorted(runs)
    oldest_run = min(runs.values())
    # Only the changes some stored day may have missed, and per harvest only its earliest day
    # (an earlier day is stale whenever a later one is): a handful of rows, however long the log.
    seen_by_all = [s for s in stamps if s <= oldest_run]
    recent = (
        affected if not seen_by_all else affected.filter(pl.col("harvested_at") > seen_by_all[-1])
    )
    per_harvest = recent.group_by("harvested_at").agg(pl.col("day").min()).sort("harvested_at")
    first: dt.date | None = None
    trigger: dt.datetime | None = None
    for harvested_at, day in per_harvest.iter_rows():
        at = bisect.bisect_left(stamps, harvested_at)
        if at == len(stamps) or stamps[at] <= oldest_run:
            continue  # not yet recorded, or seen by every stored day
        visible = stamps[at]
        start = bisect.bisect_left(days, day) if day is not None else len(days)
        stale = next((d for d in days[start:] if runs[d] < visible), None)
        if stale is None:
            continue
        if first is None or stale < first:
            first = stale
        trigger = visible if trigger is None else max(trigger, visible)
    if first is None or trigger is None:
        return None
    return StaleRecords(first, days[-1], trigger)
