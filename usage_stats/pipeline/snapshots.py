"""Cumulative snapshots: snapshot(d) = snapshot(d − 1) + delta(d).

Snapshots have the delta table's keys without the date dimension collapsing: one row per key
ever seen, with totals up to and including the snapshot date. A day with no usage still gets
its snapshot (yesterday's totals carried over), so "totals as of day d" is one lookup.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from usage_stats.pipeline.metrics import DELTA_SCHEMA, KEY_COLUMNS, METRICS, empty_deltas
from usage_stats.storage.warehouse import Warehouse

SNAPSHOT_SCHEMA = DELTA_SCHEMA
_KEYS = [k for k in KEY_COLUMNS if k != "date"]


def next_snapshot(previous: pl.DataFrame | None, delta: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Add the deltas of `day` (or of every day since the previous snapshot) to it."""
    frames = [delta.select(list(SNAPSHOT_SCHEMA)).cast(SNAPSHOT_SCHEMA)]
    if previous is not None:
        frames.insert(0, previous.select(list(SNAPSHOT_SCHEMA)).cast(SNAPSHOT_SCHEMA))
    combined = pl.concat(frames)
    return (
        combined.group_by(_KEYS)
        .agg(
            pl.col("owner_site_id").drop_nulls().last(),
            *[pl.col(m).sum() for m in METRICS],
        )
        .with_columns(pl.lit(day, dtype=pl.Date).alias("date"))
        .select(list(SNAPSHOT_SCHEMA))
        .cast(SNAPSHOT_SCHEMA)
        .sort(list(KEY_COLUMNS), nulls_last=True)
    )


def snapshot_mismatches(
    snapshot: pl.DataFrame, previous: pl.DataFrame | None, delta: pl.DataFrame
) -> int:
    """Keys where snapshot ≠ previous + delta, recomputed independently of `next_snapshot`.

    One group-by over the three, the snapshot's metrics added and the others subtracted:
    a key whose sums are not all zero differs (what joining the three tables of totals on
    the keys tells, without the joins).
    """
    schema = {k: SNAPSHOT_SCHEMA[k] for k in _KEYS} | {m: pl.Int64() for m in METRICS}
    frames = [
        frame.lazy()
        .select(*_KEYS, *(pl.col(m).cast(pl.Int64) * sign for m in METRICS))
        .cast(schema)
        for frame, sign in ((snapshot, 1), (previous, -1), (delta, -1))
        if frame is not None
    ]
    sums = pl.concat(frames).group_by(_KEYS).agg(pl.col(m).sum() for m in METRICS)
    differs = pl.any_horizontal(pl.col(m) != 0 for m in METRICS)
    return sums.filter(differs).select(pl.len()).collect().item()


def pending_deltas(store: Warehouse, after: dt.date | None, day: dt.date) -> pl.DataFrame:
    """Deltas of every processed day in (after, day]: normally just `day` itself.

    A snapshot is the previous stored snapshot plus every delta since it, so a day whose
    snapshot was never built (a gap in a backfill) is not lost from the totals.
    """
    days = [d for d in store.days("item_daily_deltas") if (after is None or d > after) and d <= day]
    frames = [store.read("item_daily_deltas", d) for d in days]
    return pl.concat(frames) if frames else empty_deltas()


def stored_snapshot(snapshot: pl.DataFrame, changed: pl.DataFrame | None) -> pl.DataFrame:
    """What the stats store keeps of a day's snapshot: every rollup row (a few per site, and
    nearly all change every day) and the item rows of the keys in `changed`, the deltas since
    the store's previous day (None: there is none, the snapshot is kept whole).

    Every item ever used has a snapshot row, so a whole snapshot a day makes the store's
    nightly write grow with its history (6.3M rows a day after 30 days of 10M-event days,
    against 0.4M of deltas). An item's row is the same until it is used again; the store reads
    each item's latest row on or before a day (`usage_stats.storage.store.rows_in_force`).
    """
    if changed is None:
        return snapshot
    items = pl.col("scope") == "item"
    keys = changed.lazy().filter(items).select(_KEYS).unique()
    return pl.concat(
        [
            snapshot.lazy().filter(~items),
            snapshot.lazy().filter(items).join(keys, on=_KEYS, how="semi", nulls_equal=True),
        ]
    ).collect()
