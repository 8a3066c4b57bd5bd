"""Record statistics: how many harvested records each scope gained, lost and holds, per day.

Computed from the warehouse's item metadata (`usage_stats.metadata.store`): the change log
says when each record appeared and when it was deleted, the current state says what it is
(type, access, language, ...). One long table, `RECORD_SCHEMA`, for deltas and snapshots:

- `scope` / `key`: `source` (key: the repository's Matomo site id, as the usage `source`
  scope; a source is one site, so it is also the record's `site`), `national` (key: the
  source's country, ISO alpha-2 upper case: the national node's records) and `global`
  (`global`: the regional network). `level` is the type of the source the record was
  harvested from (R repository, N national node, L regional portal), as usage rows carry the
  level of the site where use happened: a national node that exposes its country's records
  over OAI-PMH would count them a second time, so readers pick the level (R: the records of
  the repositories) rather than add levels up.
- `basis`: `datestamp`: a record is *added* on the UTC day of the datestamp of its `added`
  change (its first appearance, or its return after a deletion) and *removed* on that of its
  `deleted` change (only when it was counted before: a record never seen alive is never
  removed); `publication`: each live record is *added* on its publication date (records
  published that day; a deleted record leaves this basis entirely, so nothing is removed).
- `field` / `value`: `total` / `""` is the count itself; every other field is a subcount by
  one metadata field of the record's current state (`SUBCOUNT_FIELDS`), a missing value
  under `""`. Single-valued fields (`SINGLE_FIELDS`) add up to the total; a record counts
  once under each of its values of a list field (subjects, funders, ...), so those overlap.
- `added`, `removed`, `total`: deltas hold the day's counts and `total` = added − removed;
  snapshots the cumulative sums up to and including their day, so
  snapshot(d) = snapshot(d − 1) + delta(d) holds for every column.
- `files`, `data_volume`: the files and bytes of those records (`file_count`, `file_bytes`
  of `ITEM_METADATA_SCHEMA`), net like `total`: a delta's is what the records added brought
  minus what the records removed took away, a snapshot's what the records held hold. A
  record that does not say counts 0 there and 1 in `files_unknown` / `volume_unknown`
  (also net): a volume covers only the records that state theirs, and says how many do not
  (an oai_openaire record lists its files but rarely their size, an oai_dc one neither).
  A record counts its whole volume under each of its file formats (a PDF and a ZIP: both
  hold its bytes), so list-field volumes overlap as their record counts do.

Deltas and snapshots are both the figures of the whole change log: a late harvest that
reveals older records changes the days of their datestamps, and re-materialising those and
every later day brings them up to date. Fields are the record's current ones: a record whose
type changed is counted under its new type on every day, so subcounts of a day always match
the total of that day. A run does not recount every record for each day: it takes the
snapshot of the day before its first from the stored one, carried forward to the current
log (`refresh_snapshot`, when the changes since allow; else `record_snapshot`, the full
count), then adds each day's delta (`advance_snapshot`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable

import polars as pl

from usage_stats.admin.sources import Source

RECORD_SCOPES = ("source", "national", "global")
BASES = ("datestamp", "publication")
# Subcount field -> the ITEM_METADATA_SCHEMA column it counts.
SINGLE_FIELDS = {
    "resource_type": "resource_type",
    "access_status": "access_rights",
    "language": "language",
    "publisher": "publisher",
}
LIST_FIELDS = {
    "subject": "subjects",
    "funder": "funders",
    "affiliation": "affiliations",
    "file_format": "formats",
}
SUBCOUNT_FIELDS = (*SINGLE_FIELDS, *LIST_FIELDS)
TOTAL = "total"
# Record counts, then what those records hold: `files` and `data_volume` (bytes) of the
# records counted (a record's current `file_count` / `file_bytes`, 0 where it does not say),
# and how many of the counted records do not say (`files_unknown`, `volume_unknown`), so a
# volume is always read beside the records it leaves out. All net like `total`.
RECORD_COUNTS = (
    "added",
    "removed",
    "total",
    "files",
    "data_volume",
    "files_unknown",
    "volume_unknown",
)
# The counts that are record events, never negative in a delta.
EVENT_COUNTS = ("added", "removed")
RECORD_KEYS = ("date", "scope", "key", "level", "basis", "field", "value")
_KEYS = [k for k in RECORD_KEYS if k != "date"]
RECORD_SCHEMA = pl.Schema(
    {
        "date": pl.Date(),
        "scope": pl.String(),
        "key": pl.String(),
        "level": pl.String(),
        "basis": pl.String(),
        "field": pl.String(),
        "value": pl.String(),
        **dict.fromkeys(RECORD_COUNTS, pl.Int64()),
    }
)
SOURCE_LEVELS_SCHEMA = pl.Schema(
    {"source_key": pl.String(), "level": pl.String(), "country": pl.String()}
)
_RECORD = ["source_key", "oai_identifier"]
# For the join of the records with their fields Polars' default streaming engine took five
# times the CPU of the in-memory one (bench/records_bench.py); the group-bys over string keys
# (per source, the scopes) stay on the default, which took
# half the CPU of the in-memory engine there (1M records: 11.6 CPU s against 21.7).
_ENGINE = "in-memory"


def empty_records() -> pl.DataFrame:
    return pl.DataFrame(schema=RECORD_SCHEMA)


def source_levels(sources: Iterable[Source]) -> pl.DataFrame:
    """Each source's level (its type) and country: what rolls records up to scopes."""
    rows = [(s.source_key, s.type, (s.country or "").upper() or None) for s in sources]
    return pl.DataFrame(rows, schema=SOURCE_LEVELS_SCHEMA, orient="row")


def record_events(
    current: pl.DataFrame, changes: pl.DataFrame, days: Iterable[dt.date] | None = None
) -> pl.DataFrame:
    """One row per counted event: `source_key`, `oai_identifier`, `basis`, `date`, `added`,
    `removed` (0/1).

    Datestamp basis: a record's added/deleted changes in harvest order; an `added` counts,
    a `deleted` counts only after an `added` (the record was alive). An unreadable datestamp
    falls back to the day of the harvest that logged it.

    `days`: only the events dated on those days (what a run's deltas count), from only the
    log rows that decide them: the changes dated on those days, and the whole history of the
    records with a deletion among them (whether it follows an `added`). Each record's events
    depend on its own changes only, so these are exactly the whole log's events of those
    days, for one filtering pass over the log instead of the joins and sort of every row."""
    if days is not None:
        days = pl.Series(sorted(set(days)), dtype=pl.Date)
        dated = pl.coalesce("datestamp", "harvested_at").dt.date().is_in(days.implode())
        on_days = changes.filter(dated)
        deleting = on_days.filter(pl.col("change").cast(pl.String) == "deleted").select(_RECORD)
        history = changes.join(deleting.unique(), on=_RECORD, how="semi")
        changes = pl.concat([on_days.join(deleting, on=_RECORD, how="anti"), history])
        current = current.filter(pl.col("publication_date").is_in(days.implode()))
        return record_events(current, changes).filter(pl.col("date").is_in(days.implode()))
    changed = (
        changes.lazy()
        .filter(pl.col("change").cast(pl.String).is_in(["added", "deleted"]))
        .with_columns(
            pl.col("change").cast(pl.String),
            pl.coalesce("datestamp", "harvested_at").dt.date().alias("date"),
        )
    )
    # Only a record with a deletion needs its changes in order (is a deletion of a live
    # record? is an `added` a return?); every change of the others is an `added` that
    # counts. Sorting the whole log for the 1 % that were ever deleted cost most of the step.
    deleted = changed.filter(pl.col("change") == "deleted").select(_RECORD).unique()
    ordered = (
        changed.join(deleted, on=_RECORD, how="semi")
        .sort([*_RECORD, "harvested_at", "datestamp"], nulls_last=True)
        .with_columns(pl.col("change").shift(1).over(_RECORD).alias("_before"))
        .filter(
            (pl.col("change") == "added")
            | ((pl.col("change") == "deleted") & (pl.col("_before") == "added"))
        )
    )
    log = pl.concat(
        [changed.join(deleted, on=_RECORD, how="anti"), ordered.drop("_before")]
    ).select(
        *_RECORD,
        pl.lit("datestamp").alias("basis"),
        "date",
        (pl.col("change") == "added").cast(pl.Int64).alias("added"),
        (pl.col("change") == "deleted").cast(pl.Int64).alias("removed"),
    )
    published = (
        current.lazy()
        .filter(~pl.col("deleted") & pl.col("publication_date").is_not_null())
        .select(
            *_RECORD,
            pl.lit("publication").alias("basis"),
            pl.col("publication_date").alias("date"),
            pl.lit(1, dtype=pl.Int64).alias("added"),
            pl.lit(0, dtype=pl.Int64).alias("removed"),
        )
    )
    return pl.concat([log, published]).collect(engine=_ENGINE)


def _column(count: str, basis: str) -> str:
    return f"{count}|{basis}"


def _weighted(events: pl.LazyFrame, current: pl.DataFrame) -> pl.LazyFrame:
    """One row per counted record with, per basis, every count of `RECORD_COUNTS` and the
    number of its events (`events|<basis>`: whether the record counts there at all), and the
    fields subcounts are taken by. The events are summed per record first (a record deleted
    and added back has several), and both bases sit side by side, so each record's lists are
    exploded once, not once per basis."""
    columns = [*SINGLE_FIELDS.values(), *LIST_FIELDS.values()]
    basis = pl.col("basis")
    split = [
        *(
            pl.when(basis == b).then(pl.col(c)).otherwise(0).alias(_column(c, b))
            for b in BASES
            for c in EVENT_COUNTS
        ),
        *((basis == b).cast(pl.Int64).alias(_column("events", b)) for b in BASES),
    ]
    summed = [_column(c, b) for b in BASES for c in (*EVENT_COUNTS, "events")]
    per_record = (
        events.select(*_RECORD, *split).group_by(_RECORD).agg(pl.col(c).sum() for c in summed)
    )
    fields = (
        current.lazy()
        .select(*_RECORD, "site_id", *columns, "file_count", "file_bytes")
        .join(per_record.select(_RECORD), on=_RECORD, how="semi")
        .unique(_RECORD, keep="last")
    )
    weights = []
    for b in BASES:
        net = pl.col(_column("added", b)) - pl.col(_column("removed", b))
        weights += [
            net.alias(_column("total", b)),
            (net * pl.col("file_count").fill_null(0)).alias(_column("files", b)),
            (net * pl.col("file_bytes").fill_null(0)).alias(_column("data_volume", b)),
            (net * pl.col("file_count").is_null()).alias(_column("files_unknown", b)),
            (net * pl.col("file_bytes").is_null()).alias(_column("volume_unknown", b)),
        ]
    return per_record.join(fields, on=_RECORD, how="left").with_columns(weights)


def _count(
    events: pl.LazyFrame, current: pl.DataFrame, levels: pl.DataFrame, day: dt.date
) -> pl.DataFrame:
    """Sum `events` per scope, level, basis and subcount value, all dated `day` (rows in no
    particular order: sorting millions of rows by seven strings cost more than the counting).

    Each field is summed per source first (one group-by over the records, both bases at
    once; a list field exploded once), and only those per-source sums, a few rows per value,
    are split by basis and rolled up to the source, national and global scopes."""
    # Materialised once: every field's group-by reads it (a lazy plan would redo the join
    # per field).
    rows = _weighted(events, current).collect(engine=_ENGINE).lazy()
    sums_of = [_column(c, b) for b in BASES for c in (*RECORD_COUNTS, "events")]
    counts = [pl.col(c).sum() for c in sums_of]
    per_source = ["source_key", "site_id", "field", "value"]
    parts = [
        rows.with_columns(pl.lit(TOTAL).alias("field"), pl.lit("").alias("value"))
        .group_by(per_source)
        .agg(counts)
    ]
    for name, column in SINGLE_FIELDS.items():
        parts.append(
            rows.with_columns(
                pl.lit(name).alias("field"), pl.col(column).fill_null("").alias("value")
            )
            .group_by(per_source)
            .agg(counts)
        )
    for name, column in LIST_FIELDS.items():
        values = pl.col(column).list.unique()
        parts.append(
            rows.select(
                "source_key",
                "site_id",
                *sums_of,
                pl.lit(name).alias("field"),
                pl.when(values.list.len().fill_null(0) > 0)
                .then(values)
                .otherwise(pl.lit([""], dtype=pl.List(pl.String)))
                .alias("value"),
            )
            .explode("value")
            .with_columns(pl.col("value").fill_null(""))
            .group_by(per_source)
            .agg(counts)
        )
    wide = (
        pl.concat([p.select(*per_source, *sums_of) for p in parts])
        .join(levels.lazy(), on="source_key", how="left")
        .with_columns(pl.col("site_id").cast(pl.String).alias("_source"))
        .collect()
        .lazy()
    )
    # Rolled up with both bases side by side (half the rows of one row per basis), then one
    # row per basis where the value had an event in it (so a value counted and then removed
    # stays, at total 0, and a basis without events adds no zero rows).
    by = ["level", "field", "value"]
    scopes = [
        wide.filter(pl.col("_source").is_not_null())
        .group_by(["_source", *by])
        .agg(counts)
        .with_columns(pl.lit("source").alias("scope"), pl.col("_source").alias("key")),
        wide.filter(pl.col("country").is_not_null())
        .group_by(["country", *by])
        .agg(counts)
        .with_columns(pl.lit("national").alias("scope"), pl.col("country").alias("key")),
        wide.group_by(by)
        .agg(counts)
        .with_columns(pl.lit("global").alias("scope"), pl.lit("global").alias("key")),
    ]
    rolled = pl.concat([s.select("scope", "key", *by, *sums_of) for s in scopes]).collect().lazy()
    return (
        pl.concat(
            [
                rolled.filter(pl.col(_column("events", b)) > 0).select(
                    "scope",
                    "key",
                    "level",
                    pl.lit(b).alias("basis"),
                    "field",
                    "value",
                    *(pl.col(_column(c, b)).alias(c) for c in RECORD_COUNTS),
                )
                for b in BASES
            ]
        )
        .with_columns(pl.lit(day, dtype=pl.Date).alias("date"))
        .select(list(RECORD_SCHEMA))
        .cast(RECORD_SCHEMA)
        .collect()
    )


def record_deltas(
    current: pl.DataFrame,
    changes: pl.DataFrame,
    levels: pl.DataFrame,
    day: dt.date,
    events: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Records added and removed on `day`, per scope, level, basis and subcount value (only
    rows with an event). `events`: `record_events(current, changes)` when the caller already
    has them (a run over many days computes them once)."""
    if events is None:
        events = record_events(current, changes)
    return _count(events.lazy().filter(pl.col("date") == day), current, levels, day)


def record_snapshot(
    current: pl.DataFrame,
    changes: pl.DataFrame,
    levels: pl.DataFrame,
    day: dt.date,
    events: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Records added and removed up to and including `day`, and the total they leave, per
    scope, level, basis and subcount value (every value ever counted, even at total 0)."""
    if events is None:
        events = record_events(current, changes)
    return _count(events.lazy().filter(pl.col("date") <= day), current, levels, day)


_SEED = 15


def _plus(base: pl.DataFrame, parts: list[pl.LazyFrame], day: dt.date, keep=None) -> pl.DataFrame:
    """`base` (one row per key) plus the few rows of `parts`, key by key, dated `day`.

    Only the base rows whose key `parts` names are summed again: the keys are hashed
    (`hash_rows`) and the base rows whose hash is not among those of `parts` pass as they
    are (equal keys hash alike, so none of them has a key in `parts`; a collision only sends
    a row more through the sum, which groups by the keys themselves). A group-by over every
    snapshot row took four times as long. `keep`: which summed rows stay."""
    small = (
        pl.concat(parts)
        .group_by(_KEYS)
        .agg(pl.col(c).sum() for c in RECORD_COUNTS)
        .collect()
        .cast({k: RECORD_SCHEMA[k] for k in _KEYS})
    )
    base = base.select(*_KEYS, *RECORD_COUNTS).cast({k: RECORD_SCHEMA[k] for k in _KEYS})
    hit = (
        base.select(_KEYS)
        .hash_rows(seed=_SEED)
        .is_in(small.select(_KEYS).hash_rows(seed=_SEED).implode())
    )
    summed = (
        pl.concat([base.filter(hit), small])
        .group_by(_KEYS)
        .agg(pl.col(c).sum() for c in RECORD_COUNTS)
    )
    if keep is not None:
        summed = summed.filter(keep)
    return (
        pl.concat([base.filter(~hit), summed])
        .with_columns(pl.lit(day, dtype=pl.Date).alias("date"))
        .select(list(RECORD_SCHEMA))
        .cast(RECORD_SCHEMA)
    )


def advance_snapshot(previous: pl.DataFrame, delta: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """snapshot(`day`) = `previous` (the snapshot of the day before) + `delta` (the day's),
    key by key: the same rows `record_snapshot` counts from the log (every key either had
    an event before or has one that day), for the price of hashing the snapshot's keys and
    summing the day's (`_plus`) instead of a count over every record."""
    return _plus(previous, [delta.lazy().select(*_KEYS, *RECORD_COUNTS)], day)


def record_snapshot_mismatches(
    snapshot: pl.DataFrame, previous: pl.DataFrame | None, delta: pl.DataFrame
) -> int:
    """Keys where snapshot ≠ previous + delta in any count, by one signed group-by (as
    `usage_stats.pipeline.snapshots.snapshot_mismatches`)."""
    schema = {k: RECORD_SCHEMA[k] for k in _KEYS} | {c: pl.Int64() for c in RECORD_COUNTS}
    frames = [
        frame.lazy().select(*_KEYS, *(pl.col(c) * sign for c in RECORD_COUNTS)).cast(schema)
        for frame, sign in ((snapshot, 1), (previous, -1), (delta, -1))
        if frame is not None
    ]
    sums = pl.concat(frames).group_by(_KEYS).agg(pl.col(c).sum() for c in RECORD_COUNTS)
    differs = pl.any_horizontal(pl.col(c) != 0 for c in RECORD_COUNTS)
    return sums.filter(differs).select(pl.len()).collect().item()


def subcount_mismatches(frame: pl.DataFrame) -> int:
    """Subcounts that disagree with their total, per (date, scope, key, level, basis):
    a single-valued field's values must add up to the total in every count; a list field's
    value can never exceed it (a record counts once per value, so values overlap)."""
    group = ["date", "scope", "key", "level", "basis"]
    # The group as one integer code (its hash) rather than five strings: the group-by and
    # joins below over millions of snapshot rows took three times as long on the strings.
    # Two groups sharing a code (a 64-bit hash collision) would only be checked together.
    coded = frame.select(
        frame.select(group).hash_rows(seed=_SEED).alias("_group"), "field", *RECORD_COUNTS
    )
    group = ["_group"]
    totals = coded.filter(pl.col("field") == TOTAL).select(
        *group, *(pl.col(c).alias(f"_{c}") for c in RECORD_COUNTS)
    )
    subs = coded.filter(pl.col("field") != TOTAL)
    single = (
        subs.filter(pl.col("field").is_in(list(SINGLE_FIELDS)))
        .group_by([*group, "field"])
        .agg(pl.col(c).sum() for c in RECORD_COUNTS)
        .join(totals, on=group, how="full", coalesce=True, nulls_equal=True)
        .filter(
            pl.any_horizontal(
                pl.col(c).fill_null(0) != pl.col(f"_{c}").fill_null(0) for c in RECORD_COUNTS
            )
        )
    )
    listed = (
        subs.filter(pl.col("field").is_in(list(LIST_FIELDS)))
        .join(totals, on=group, how="left", nulls_equal=True)
        .filter(
            pl.any_horizontal(
                pl.col(c).abs() > pl.col(f"_{c}").fill_null(0).abs() for c in EVENT_COUNTS
            )
        )
    )
    # A total without any single-valued subcount (the full join's null field) also counts.
    return single.height + listed.height


# What a stored snapshot was counted from (`log_mark`), kept beside it so a later run can
# carry it forward (`refresh_snapshot`): the change-log rows it saw, the newest `harvested_at`
# among them, its own rows (a snapshot and mark written by different runs do not pair) and a
# digest of the source levels it rolled up with.
LOG_MARK_SCHEMA = pl.Schema(
    {
        "log_rows": pl.Int64(),
        "log_until": pl.Datetime("us", "UTC"),
        "snapshot_rows": pl.Int64(),
        "levels": pl.String(),
    }
)


def _levels_digest(levels: pl.DataFrame) -> str:
    rows = sorted(repr(r) for r in levels.select(list(SOURCE_LEVELS_SCHEMA)).iter_rows())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def log_mark(changes: pl.DataFrame, snapshot: pl.DataFrame, levels: pl.DataFrame) -> pl.DataFrame:
    """The one-row `LOG_MARK_SCHEMA` frame of a snapshot counted from `changes`."""
    until = changes.get_column("harvested_at").max() if changes.height else None
    return pl.DataFrame(
        [(changes.height, until, snapshot.height, _levels_digest(levels))],
        schema=LOG_MARK_SCHEMA,
        orient="row",
    )


def refresh_snapshot(
    stored: pl.DataFrame,
    mark: pl.DataFrame | None,
    current: pl.DataFrame,
    changes: pl.DataFrame,
    levels: pl.DataFrame,
    day: dt.date,
    delta: pl.DataFrame | None = None,
    next_day: dt.date | None = None,
) -> pl.DataFrame | None:
    """The snapshot of `day` as `record_snapshot` would count it from the whole log now,
    from `stored` (that day's snapshot as counted when its `mark` was made), or None when
    only a full recount can say.

    With `delta` (the `record_deltas` of `next_day`, the day after `day`): the snapshot of
    `next_day` instead, as `advance_snapshot` of the refreshed one would give it, in one pass
    over the stored rows (their keys hashed once, not once to refresh and once to advance).

    Since a record counts under its current fields on every day it has events, a change
    logged after the mark alters `stored` unless it is one of these two:

    - any change of a record the marked log never named (a new record, however dated: a
      late harvest's too): the record was not in `stored`; its events up to `day` are
      counted on their own and added (a few thousand records, not every record);
    - the `deleted` change of a record the marked log last saw `added`, dated after `day`:
      its datestamp-basis events up to `day` stay as they were (its fields are kept on
      deletion), its removal falls on a later day (that day's delta), and it leaves the
      publication basis, so its publication event up to `day` is taken back out.

    Anything else (an `updated` change, a record added back after a deletion, a deletion
    dated on or before `day`, a log that grew before the mark's time, other source levels,
    a mark of another snapshot, a snapshot of another day) returns None."""
    if mark is None or mark.height != 1:
        return None
    log_rows, until, snapshot_rows, digest = mark.row(0)
    if snapshot_rows != stored.height or digest != _levels_digest(levels):
        return None
    if stored.height and stored.select((pl.col("date") != day).any()).item():
        return None
    log = changes.lazy().select(
        *_RECORD,
        pl.col("change").cast(pl.String),
        pl.coalesce("datestamp", "harvested_at").dt.date().alias("date"),
        "harvested_at",
    )
    seen_rule = pl.col("harvested_at") <= until if until is not None else pl.lit(False)
    seen_rows = changes.lazy().filter(seen_rule).select(pl.len()).collect().item()
    if seen_rows != log_rows:
        return None
    if delta is not None and next_day is None:
        raise ValueError("refresh_snapshot: a delta needs its next_day")
    then = [] if delta is None else [delta.lazy().select(*_KEYS, *RECORD_COUNTS)]
    new = log.filter(~seen_rule).collect()
    if new.is_empty():
        if delta is not None:
            return advance_snapshot(stored, delta, next_day)
        return stored.with_columns(pl.lit(day, dtype=pl.Date).alias("date"))
    # The records the new changes name, their whole history and state (a few thousand rows:
    # one pass over the log and one over the state), and those the marked log named too,
    # with their last added/deleted change seen (the log is in harvest order).
    named = new.select(_RECORD).unique()
    history = changes.join(named, on=_RECORD, how="semi")
    seen_before = (
        history.lazy()
        .filter(seen_rule)
        .select(*_RECORD, pl.col("change").cast(pl.String))
        .group_by(_RECORD)
        .agg(pl.col("change").filter(pl.col("change") != "updated").last().alias("_last"))
        .collect()
    )
    touched = new.join(seen_before, on=_RECORD, how="inner")
    if touched.height:
        ok = (pl.col("change") == "deleted") & (pl.col("_last") == "added") & (pl.col("date") > day)
        per_record = touched.group_by(_RECORD).agg(pl.len().alias("n"), ok.all().alias("ok"))
        if not per_record.select((pl.col("n") == 1) & pl.col("ok")).to_series().all():
            return None
    state = current.join(named, on=_RECORD, how="semi")
    fresh = named.join(seen_before.select(_RECORD), on=_RECORD, how="anti")
    added = (
        record_events(state, history)
        .lazy()
        .join(fresh.lazy(), on=_RECORD, how="semi")
        .filter(pl.col("date") <= day)
    )
    parts = [_count(added, state, levels, day).lazy().select(*_KEYS, *RECORD_COUNTS)]
    if touched.height:
        gone = (
            state.lazy()
            .join(touched.lazy().select(_RECORD), on=_RECORD, how="semi")
            .filter(pl.col("publication_date").is_not_null() & (pl.col("publication_date") <= day))
            .select(
                *_RECORD,
                pl.lit("publication").alias("basis"),
                pl.col("publication_date").alias("date"),
                pl.lit(1, dtype=pl.Int64).alias("added"),
                pl.lit(0, dtype=pl.Int64).alias("removed"),
            )
            .unique(_RECORD, keep="last")
        )
        taken = _count(gone, state, levels, day).lazy()
        parts.append(taken.select(*_KEYS, *(-pl.col(c) for c in RECORD_COUNTS)))
    # A publication-basis row counts only `added` events: at 0 no record is left in it (every
    # count is 0), and the recount has no such row. A delta's publication rows all have
    # `added` > 0, so the filter keeps the same rows after the delta is added as before.
    keep = (pl.col("basis") != "publication") | (pl.col("added") != 0)
    return _plus(stored, parts + then, next_day or day, keep)
