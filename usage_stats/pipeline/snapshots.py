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
# owners (Int32, or null) packed under a row number: see `_summed_deltas`
_OWNER_LOW = -(1 << 31)
_OWNER_SPAN = 1 << 32


def next_snapshot(previous: pl.DataFrame | None, delta: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Add the deltas of `day` (or of every day since the previous snapshot) to it.

    The previous snapshot holds every key ever used (6.3M rows after 30 days of 10M-event
    days) and a day's deltas a few hundred thousand, so the previous rows are not grouped
    again: the deltas are summed per key, found in it by a join, and added in place; only the
    keys new today are sorted. A group-by and sort of everything took 11 s at 6.3M keys, more
    than the day's whole usage run; this takes about 1.2 s (bench/README.md, "The snapshot of
    a long history").
    The rows keep the previous snapshot's order, with the new keys after them in key order;
    a first snapshot is in key order.
    """
    summed = _summed_deltas(delta)
    if previous is None:
        return _dated(summed.lazy().sort(_KEYS, nulls_last=True), day).collect()
    previous = previous.select(list(SNAPSHOT_SCHEMA)).cast(SNAPSHOT_SCHEMA)
    used = (
        previous.lazy()
        .select(_KEYS)
        .with_row_index("_row")
        .join(summed.lazy(), on=_KEYS, how="inner", nulls_equal=True)
        .collect()
    )
    at = used.get_column("_row")
    # only the used rows change: written in place of a copy of each column, in the same order
    carried = {}
    for m in METRICS:
        totals = previous.get_column(m).fill_null(0)
        carried[m] = totals.scatter(at, totals.gather(at) + used.get_column(m))
    owners = previous.get_column("owner_site_id")
    latest = used.select(pl.coalesce("owner_site_id", owners.gather(at))).to_series()
    carried["owner_site_id"] = owners.clone().scatter(at, latest)
    new_keys = (
        summed.lazy()
        .join(used.lazy().select(_KEYS), on=_KEYS, how="anti", nulls_equal=True)
        .sort(_KEYS, nulls_last=True)
    )
    return pl.concat(
        [_dated(previous.with_columns(**carried).lazy(), day), _dated(new_keys, day)]
    ).collect()


def _summed_deltas(delta: pl.DataFrame) -> pl.DataFrame:
    """One row per key: its metrics summed and its last non-null owner (an item can change
    owner; a day of no known owner keeps the earlier one). The owner is taken as the largest
    of (row number, owner) packed in one integer, a plain `max` per group: `drop_nulls().last()`
    was most of the group-by's time."""
    owner = pl.col("owner_site_id").cast(pl.Int64)
    packed = pl.int_range(pl.len(), dtype=pl.Int64) * _OWNER_SPAN + (owner - _OWNER_LOW)
    return (
        delta.lazy()
        .select(list(SNAPSHOT_SCHEMA))
        .cast(SNAPSHOT_SCHEMA)
        .with_columns(packed.alias("_owner"))
        .group_by(_KEYS)
        .agg(pl.col("_owner").max(), *(pl.col(m).sum() for m in METRICS))
        .with_columns(
            ((pl.col("_owner") % _OWNER_SPAN) + _OWNER_LOW).cast(pl.Int32).alias("owner_site_id")
        )
        .collect()
    )


def _dated(rows: pl.LazyFrame, day: dt.date) -> pl.LazyFrame:
    return rows.with_columns(pl.lit(day, dtype=pl.Date).alias("date")).select(list(SNAPSHOT_SCHEMA))


def snapshot_mismatches(
    snapshot: pl.DataFrame, previous: pl.DataFrame | None, delta: pl.DataFrame
) -> int:
    """Keys where snapshot ≠ previous + delta, recomputed independently of `next_snapshot`
    (a group-by where it joins).

    One group-by, the snapshot's metrics added and the others' subtracted: a key whose sums
    are not all zero differs (what joining the three tables of totals on the keys tells,
    without the joins). When the snapshot starts with the previous one's keys, row for row
    (as `next_snapshot` writes it, and checked here column by column), those rows enter the
    group-by as their differences, and only where they differ: a few hundred thousand rows
    instead of the two snapshots' millions (6.3M keys: 0.3 s instead of 6 s).
    """
    if previous is not None and starts_with_previous(snapshot, previous):
        earlier = previous.select(pl.col(m).alias(f"_previous_{m}") for m in METRICS)
        difference = [(_as_count(m) - _as_count(f"_previous_{m}")).alias(m) for m in METRICS]
        changed = (
            pl.concat([snapshot.head(previous.height), earlier], how="horizontal")
            .lazy()
            .select(*_KEYS, *difference)
            .filter(pl.any_horizontal(pl.col(m) != 0 for m in METRICS))
            .collect()
        )
        signed = [(changed, 1), (snapshot.slice(previous.height), 1), (delta, -1)]
    else:
        signed = [(snapshot, 1), (previous, -1), (delta, -1)]
    schema = {k: SNAPSHOT_SCHEMA[k] for k in _KEYS} | {m: pl.Int64() for m in METRICS}
    frames = [
        frame.lazy().select(*_KEYS, *(_as_count(m) * sign for m in METRICS)).cast(schema)
        for frame, sign in signed
        if frame is not None
    ]
    sums = pl.concat(frames).group_by(_KEYS).agg(pl.col(m).sum() for m in METRICS)
    differs = pl.any_horizontal(pl.col(m) != 0 for m in METRICS)
    return sums.filter(differs).select(pl.len()).collect().item()


def _as_count(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Int64).fill_null(0)


def starts_with_previous(snapshot: pl.DataFrame, previous: pl.DataFrame) -> bool:
    """Whether the snapshot's first rows have the previous snapshot's keys in its order."""
    if snapshot.height < previous.height:
        return False
    earlier = previous.select(pl.col(k).alias(f"_previous_{k}") for k in _KEYS)
    same = pl.all_horizontal(
        pl.col(k)
        .cast(SNAPSHOT_SCHEMA[k])
        .eq_missing(pl.col(f"_previous_{k}").cast(SNAPSHOT_SCHEMA[k]))
        .all()
        for k in _KEYS
    )
    both = pl.concat([snapshot.head(previous.height).select(_KEYS), earlier], how="horizontal")
    return bool(both.lazy().select(same).collect().item())


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
