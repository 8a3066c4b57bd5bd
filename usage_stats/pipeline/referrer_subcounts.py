"""The referrer subcount and the unique visitors of a day's usage, from the kept events.

Neither is in the usage rows (`item_daily_deltas` are per item and visitor country), so
both start from what cleaning kept (`sessions`, `cleaning.SESSION_SCHEMA`) joined on
(site_id, visit_id) to the day's visits (`referrers.read_visit_referrers`: each visit's
visitor id and referrer value).

Referrer (`field = "referrer"` of `usage_subcounts.USAGE_SUBCOUNT_SCHEMA`): the COUNTER
metrics are `metrics.item_deltas` itself, run with the referrer in place of the visitor
country. That is exact, not an approximation: a session with a visit id is that visit
within the day (`cleaning._visit_session`), a visit has one referrer as it has one country,
so each (item, session) pair the metrics count lies under exactly one referrer, and per
scope the referrer rows add up to the total in every metric, as the country rows do. Kept
events without a visit id, or whose visit is missing from the visits files, count under
`UNKNOWN`.

Unique visitors: per (scope, key, level) and day, the distinct visitor ids
(`canonical.visitor_key` of Matomo's `idvisitor`) among the kept events of the scope's
items on sites of that level. Distinct counts do not add up (a visitor of two repositories
is one visitor of their country), so each scope is counted from the visitor set itself,
never summed from smaller scopes. A visit without a visitor id counts as its own visitor.
There is no cumulative: visitors of a period are not the sum of its days' visitors, so the
snapshot rows hold none (`visitors` is null there) rather than a figure that would be wrong.

Cumulative referrers (`cumulative_referrers`): there is no per-referrer cumulative usage
table to break down, so the referrer snapshot chains on itself: the previous day's stored
referrer rows + the day's referrer deltas, then top-N as for every field. What the chain
does not explain (use from before referrers were recorded, a day missing from the chain)
is added to `UNKNOWN`, so the rows always add up to the snapshot's total. A value cut into
`OTHER` on a day stays there: later use of it counts under its own name, its earlier use in
`OTHER` (the sums stay exact; only that value's share is understated).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import polars as pl

from usage_stats.pipeline.canonical import VisitIndex, visit_rows
from usage_stats.pipeline.metrics import (
    _DOWNLOAD,
    _OUTLINK,
    _VIEW,
    METRICS,
    _action_bit,
    item_deltas,
)
from usage_stats.pipeline.referrers import VISIT_REFERRER_SCHEMA
from usage_stats.pipeline.usage_subcounts import (
    TOP_N,
    TOTAL,
    UNKNOWN,
    USAGE_SUBCOUNT_SCHEMA,
    roll_up_scopes,
    top_n,
)

REFERRER = "referrer"
VISITOR_SCHEMA = pl.Schema(
    {
        "date": pl.Date(),
        "scope": pl.String(),
        "key": pl.String(),
        "level": pl.String(),
        "visitors": pl.Int64(),
    }
)
# What a day's kept events are reduced to for the visitor counts: one row per distinct
# (owner, level, visitor), far fewer than the events.
VISITOR_CELL_SCHEMA = pl.Schema(
    {"owner_site_id": pl.Int32(), "level": pl.String(), "visitor_id": pl.UInt64()}
)
_SESSION_COLUMNS = ["date", "site_id", "level", "session_id", "visit_id", "action", "item_id"]
# What `visit_usage` reads of the stored sessions: a stage decodes these only (event time,
# block hash and country, two of them 8-byte columns, are a third of the decoding).
VISIT_USAGE_COLUMNS = (*_SESSION_COLUMNS, "owner_site_id")


def _with_visits(sessions: pl.DataFrame, visits: pl.DataFrame) -> pl.LazyFrame:
    """Kept events with their visit's visitor id and referrer (null where the visit is not in
    the visits files); events already joined (`visit_usage`) are taken as they are."""
    if "referrer" in sessions.columns:
        return sessions.lazy()
    return (
        sessions.lazy()
        .select(*_SESSION_COLUMNS, "owner_site_id")
        .join(
            # the referrer as a code: each event carries 4 bytes, not a string, and the
            # metrics group on it as on the visitor country
            _piece_visits(sessions, visits),
            on=["site_id", "visit_id"],
            how="left",
            maintain_order="left",
        )
    )


def _piece_visits(sessions: pl.DataFrame, visits: pl.DataFrame) -> pl.LazyFrame:
    """The visits of the sites `sessions` has, their referrer as a code: what a piece's
    events are joined to. A join hashes its right side, and a piece is a few of the day's
    sites: joined to all the day's visits, each of a day's eight pieces hashed the 2.6M
    visits of a 10M-event day again (a third of `visit_usage`)."""
    sites = sessions.get_column("site_id").unique()
    return (
        visits.lazy()
        .filter(pl.col("site_id").is_in(sites.implode()))
        .select(list(VISIT_REFERRER_SCHEMA))
        .with_columns(pl.col("referrer").cast(pl.Categorical))
    )


def indexed_visits(visits: pl.DataFrame) -> tuple[pl.DataFrame, VisitIndex | None]:
    """The day's visits (`VISIT_REFERRER_SCHEMA`) as `visit_usage` reads them for every
    piece of the day (the referrer as a code), and their index by visit id (None where
    visit ids do not allow one: each piece is then joined to its visits)."""
    coded = visits.select(list(VISIT_REFERRER_SCHEMA)).with_columns(
        pl.col("referrer").cast(pl.Categorical)
    )
    return coded, VisitIndex.of(coded)


def visit_usage(
    sessions: pl.DataFrame, visits: pl.DataFrame, index: VisitIndex | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The referrer rows and `visitor_cells` of the kept events, from one group-by of the
    events into (session, item) pairs.

    The referrer rows are `referrer_item_rows` already summed per (level, owner, referrer):
    what `referrer_subcounts` sums them to anyway. Each COUNTER metric is a sum over
    (item, session) pairs of what the pair saw (`metrics._item_metrics`), and a pair lies
    under one referrer (its session's visit). Session ids hash the site and the date
    (`cleaning.session_id_expr`), so a session's events share date, level and visit: the
    pairs are keyed by session, site, item, owner and the visit's referrer, which each event
    reads from its visit's row by visit id (`canonical.visit_rows`, no hashing), as it
    reads its visitor id for the cells. Where visit ids do not allow that look-up, the
    pairs are keyed by visit instead and joined to their visits (`_joined_visit_usage`).
    `index`: `indexed_visits`' of the day, `visits` then its coded visits: the table is
    built once for the day's pieces instead of once per piece. Equal to the reference
    (`test_visit_usage_equals_the_reference_on_random_days`)."""
    if "referrer" in sessions.columns:  # events already joined to their visits
        return _summed(referrer_item_rows(sessions, visits)), visitor_cells(sessions, visits)
    if index is None:
        visits = _piece_visits(sessions, visits).collect()
        row = visit_rows(sessions, visits)
        if row is None:
            return _joined_visit_usage(sessions, visits)
    else:
        row = index.rows(sessions)
    events = sessions.with_columns(
        visits.get_column("referrer").gather(row).alias("referrer"),
        visits.get_column("visitor_id").gather(row).alias("visitor_id"),
    )
    rows = _referrer_rows(_pairs(events, "referrer"))
    return tuple(pl.collect_all([rows, _cells(events.lazy())]))  # type: ignore[return-value]


def _joined_visit_usage(
    sessions: pl.DataFrame, piece_visits: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`visit_usage` by a join of the (session, visit, item) pairs to their visits."""
    pairs = (
        _pairs(sessions, "visit_id")
        .join(piece_visits.lazy(), on=["site_id", "visit_id"], how="left")
        .collect()
    )
    rows = _referrer_rows(pairs.lazy())
    return tuple(pl.collect_all([rows, _cells(pairs.lazy())]))  # type: ignore[return-value]


def _referrer_rows(pairs: pl.LazyFrame) -> pl.LazyFrame:
    """Pairs summed per (level, owner, referrer), the referrer in `country`."""
    return (
        pairs.group_by(
            "level", "owner_site_id", pl.col("referrer").fill_null(UNKNOWN).alias("country")
        )
        .agg(pl.col(m).sum() for m in METRICS)
        .select(
            pl.col("level").cast(pl.String),
            "owner_site_id",
            pl.col("country").cast(pl.String),
            *(pl.col(m).cast(pl.Int64) for m in METRICS),
        )
    )


def _cells(rows: pl.LazyFrame) -> pl.LazyFrame:
    """The distinct (owner, level, visitor) of events or pairs with their visitor id; a
    visit without one stands for its own visitor (a key from site and visit)."""
    surrogate = pl.struct("site_id", "visit_id").hash(seed=23)
    return (
        rows.select(
            pl.col("owner_site_id").cast(pl.Int32),
            "level",
            pl.col("visitor_id").fill_null(surrogate).cast(pl.UInt64),
        )
        .unique()
        .with_columns(pl.col("level").cast(pl.String))
    )


def _pairs(sessions: pl.DataFrame, per_session: str) -> pl.LazyFrame:
    """One row per (session, `per_session`, site, level, item, owner) of the kept events:
    its site, level, owner and `per_session` (a column with one value per session: its
    visit id, or its visit's referrer), and the eight metrics it adds (0 or 1, except the
    two totals)."""
    bit = pl.col("_bit")
    keys = ["session_id", per_session, "site_id", "level", "item_id", "owner_site_id"]
    frame = sessions.lazy().select(*keys, _action_bit().alias("_bit"))
    packing = _pair_packing(sessions)
    if packing is None:
        group, decoded = keys, []
    else:  # site, level, item and owner in one integer: a group-by on three keys, with
        # nothing to carry per group (an aggregate `first` doubled its cost)
        pack, decoded = packing
        frame = frame.select("session_id", per_session, pack.alias("_pair"), "_bit")
        group = ["session_id", per_session, "_pair"]
    pairs = (
        frame.group_by(group)
        .agg(
            bit.bitwise_or().alias("_bits"),
            ((bit & (_VIEW | _DOWNLOAD)) > 0).sum().alias("_investigations"),
            ((bit & _DOWNLOAD) > 0).sum().alias("_requests"),
        )
        .with_columns(decoded)
    )
    bits, investigations, requests = pl.col("_bits"), pl.col("_investigations"), pl.col("_requests")
    view, download = (bits & _VIEW) > 0, (bits & _DOWNLOAD) > 0
    outlink = (bits & _OUTLINK) > 0
    metrics = {
        "views": view,
        "downloads": download,
        "outlinks": outlink,
        "conversions": view & (download | outlink),
        "total_item_investigations": investigations,
        "unique_item_investigations": investigations > 0,
        "total_item_requests": requests,
        "unique_item_requests": requests > 0,
    }
    return pairs.select(
        pl.col("site_id").cast(pl.Int32),
        per_session,
        pl.col("level").cast(pl.String),
        pl.col("owner_site_id").cast(pl.Int32),
        *(e.cast(pl.UInt32).alias(m) for m, e in metrics.items()),
    )


_PACKED = ("site_id", "level", "owner_site_id")


def _pair_packing(sessions: pl.DataFrame) -> tuple[pl.Expr, list[pl.Expr]] | None:
    """The UInt64 of site, level, item and owner (the item's categorical code in the high
    half; site, level and owner as offsets of their value or categorical code from the
    smallest, 0 for null, below it) and the expressions that give site, level and owner back
    from it; None when item or level is not categorical, the item has nulls or site, level
    and owner do not fit in 32 bits."""
    schema = sessions.schema
    if not all(isinstance(schema[c], pl.Categorical) for c in ("item_id", "level")):
        return None
    if not sessions.height or sessions.get_column("item_id").null_count():
        return None
    physical = {c: pl.col(c).to_physical().cast(pl.Int64) for c in _PACKED}
    ends = sessions.select(
        *(e.min().alias(f"{c}_min") for c, e in physical.items()),
        *(e.max().alias(f"{c}_max") for c, e in physical.items()),
    ).row(0, named=True)
    low = {c: ends[f"{c}_min"] or 0 for c in _PACKED}
    widths = {c: ((ends[f"{c}_max"] or 0) - low[c] + 1).bit_length() for c in _PACKED}
    if sum(widths.values()) > 32:
        return None
    shifts = dict(
        zip(_PACKED, (0, widths["site_id"], widths["site_id"] + widths["level"]), strict=True)
    )
    pack = pl.col("item_id").to_physical().cast(pl.UInt64) * pl.lit(1 << 32, dtype=pl.UInt64)
    for c in _PACKED:
        code = (physical[c] - low[c] + 1).fill_null(0).cast(pl.UInt64)
        pack = pack + code * pl.lit(1 << shifts[c], dtype=pl.UInt64)
    # the level's strings by code − low + 1 (slot 0: null), looked up for its few codes only
    levels = sessions.select(pl.col("level").unique().drop_nulls()).select(
        physical["level"].alias("code"), pl.col("level").cast(pl.String).alias("value")
    )
    table = pl.Series("level", [None] * (1 << widths["level"]), dtype=pl.String)
    table = table.scatter(levels.get_column("code") - low["level"] + 1, levels.get_column("value"))
    decoded = []
    for c in _PACKED:
        code = (pl.col("_pair") // pl.lit(1 << shifts[c], dtype=pl.UInt64)) % pl.lit(
            1 << widths[c], dtype=pl.UInt64
        )
        if c == "level":
            decoded.append(pl.lit(table).gather(code).alias(c))
        else:
            value = pl.when(code > 0).then(code.cast(pl.Int64) + (low[c] - 1))
            decoded.append(value.alias(c))
    return pack, decoded


def _summed(rows: pl.DataFrame) -> pl.DataFrame:
    """Referrer item rows summed per (level, owner, referrer)."""
    return rows.group_by("level", "owner_site_id", "country").agg(pl.col(m).sum() for m in METRICS)


def referrer_item_rows(sessions: pl.DataFrame, visits: pl.DataFrame) -> pl.DataFrame:
    """Item rows of the kept events per referrer instead of visitor country (`country` holds
    the referrer): `metrics.item_deltas`, unchanged. `sessions` are whole sites (a piece of
    the day or the day), so the rows are final."""
    events = (
        _with_visits(sessions, visits)
        .with_columns(pl.col("referrer").cast(pl.Categorical).fill_null(UNKNOWN).alias("country"))
        .drop("referrer", "visitor_id")
        .collect()
    )
    return item_deltas(events).select(
        "level",
        "owner_site_id",
        pl.col("country").cast(pl.String),
        *(pl.col(m).cast(pl.Int64) for m in METRICS),
    )


def visitor_cells(sessions: pl.DataFrame, visits: pl.DataFrame) -> pl.DataFrame:
    """The distinct (owner, level, visitor) of the kept events: all the visitor counts need.
    A visit without a visitor id stands for its own visitor (a key from site and visit)."""
    surrogate = pl.struct("site_id", "visit_id").hash(seed=23)
    return (
        _with_visits(sessions, visits)
        .select(
            pl.col("owner_site_id").cast(pl.Int32),
            "level",
            pl.col("visitor_id").fill_null(surrogate).cast(pl.UInt64),
        )
        .unique()
        .with_columns(pl.col("level").cast(pl.String))
        .collect()
    )


def referrer_subcounts(
    rows: pl.DataFrame | Iterable[pl.DataFrame], owners: pl.DataFrame, day: dt.date
) -> pl.DataFrame:
    """The untruncated `referrer` field of the usage subcounts (`USAGE_SUBCOUNT_SCHEMA`,
    every scope) from `referrer_item_rows` (of the day, or of each of its pieces)."""
    frames = [rows] if isinstance(rows, pl.DataFrame) else list(rows)
    if not frames:
        return pl.DataFrame(schema=USAGE_SUBCOUNT_SCHEMA)
    cells = (
        pl.concat(frames, how="vertical_relaxed")
        .lazy()
        .join(owners.lazy().unique("owner_site_id"), on="owner_site_id", how="left")
        .group_by("owner_site_id", "national", "level", pl.col("country").alias("value"))
        .agg(pl.col(m).sum() for m in METRICS)
        .with_columns(pl.lit(REFERRER).alias("field"))
    )
    return roll_up_scopes(cells, day)


def unique_visitors(
    cells: pl.DataFrame | Iterable[pl.DataFrame], owners: pl.DataFrame, day: dt.date
) -> pl.DataFrame:
    """Distinct visitors per (scope, key, level) (`VISITOR_SCHEMA`) from `visitor_cells`;
    each scope counted from the visitor ids, as distinct counts do not add up."""
    frames = [cells] if isinstance(cells, pl.DataFrame) else list(cells)
    if not frames:
        return pl.DataFrame(schema=VISITOR_SCHEMA)
    visitors = (
        pl.concat([f.cast(VISITOR_CELL_SCHEMA) for f in frames])
        .lazy()
        .join(owners.lazy().unique("owner_site_id"), on="owner_site_id", how="left")
    )
    count = pl.col("visitor_id").n_unique().cast(pl.Int64).alias("visitors")
    scopes = [
        ("source", pl.col("owner_site_id").cast(pl.String), pl.col("owner_site_id").is_not_null()),
        ("national", pl.col("national"), pl.col("national").is_not_null()),
        ("global", pl.lit("global"), pl.lit(True)),
    ]
    return (
        pl.concat(
            [
                visitors.filter(present)
                .group_by(key.alias("key"), "level")
                .agg(count)
                .select(
                    pl.lit(day, dtype=pl.Date).alias("date"),
                    pl.lit(scope).alias("scope"),
                    "key",
                    "level",
                    "visitors",
                )
                for scope, key, present in scopes
            ]
        )
        .sort("scope", "key", "level", nulls_last=True)
        .collect()
        .cast(VISITOR_SCHEMA)
    )


def with_visitors(subcounts: pl.DataFrame, visitors: pl.DataFrame) -> pl.DataFrame:
    """`visitors` on the `total` rows of a day's subcount deltas (null on the field rows,
    where a visitor count would not be a share of anything). A scope with visitors but no
    total row cannot happen (both come from the same kept events) and is not invented."""
    counted = visitors.select(
        "date", "scope", "key", "level", pl.col("visitors"), pl.lit(TOTAL).alias("field")
    )
    return (
        subcounts.drop("visitors", strict=False)
        .join(counted, on=["date", "scope", "key", "level", "field"], how="left", nulls_equal=True)
        .select(list(USAGE_SUBCOUNT_SCHEMA))
        .cast(USAGE_SUBCOUNT_SCHEMA)
    )


def cumulative_referrers(
    previous: pl.DataFrame | None, delta: pl.DataFrame, totals: pl.DataFrame, n: int = TOP_N
) -> pl.DataFrame:
    """The day's referrer snapshot rows: `previous` (the stored referrer rows of the day
    before, or None) + `delta` (the day's stored referrer rows), top-N, with what does not
    explain `totals` (the snapshot's `total` rows) added to `UNKNOWN` (see the module
    docstring). Dated as `totals`."""
    group = ["scope", "key", "level"]
    frames = [f for f in (previous, delta) if f is not None]
    rows = (
        pl.concat(
            [
                f.filter(pl.col("field") == REFERRER).select(*group, "value", *METRICS)
                for f in frames
            ]
        )
        .group_by(*group, "value")
        .agg(pl.col(m).sum() for m in METRICS)
    )
    summed = rows.group_by(group).agg(pl.col(m).sum().alias(f"_{m}") for m in METRICS)
    unexplained = (
        totals.filter(pl.col("field") == TOTAL)
        .select("date", *group, *METRICS)
        .join(summed, on=group, how="left", nulls_equal=True)
        .select(
            *group,
            pl.lit(UNKNOWN).alias("value"),
            *((pl.col(m) - pl.col(f"_{m}").fill_null(0)).alias(m) for m in METRICS),
        )
    )
    day = totals.get_column("date").first() if totals.height else None
    merged = (
        pl.concat([rows, unexplained.cast(rows.schema)])
        .group_by(*group, "value")
        .agg(pl.col(m).sum() for m in METRICS)
        .join(totals.select(group).unique(), on=group, how="semi", nulls_equal=True)
        .with_columns(
            pl.lit(day, dtype=pl.Date).alias("date"),
            pl.lit(REFERRER).alias("field"),
            pl.lit(None, dtype=pl.Int64).alias("visitors"),
        )
    )
    # Only the unknown row may be all zero: a referrer of the past with no use now is kept
    # (it had use), an empty unknown row is dropped.
    empty = (pl.col("value") == UNKNOWN) & pl.all_horizontal(pl.col(m) == 0 for m in METRICS)
    merged = merged.filter(~empty).select(list(USAGE_SUBCOUNT_SCHEMA)).cast(USAGE_SUBCOUNT_SCHEMA)
    return top_n(merged, n)
