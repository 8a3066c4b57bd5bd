"""Usage subcounts: a day's usage (and the cumulative usage) broken down by item metadata.

Built beside the usage pipeline, from what it already wrote: the `item` rows of
`item_daily_deltas` (deltas) or of `usage_snapshots` (cumulative), joined on the item key to
the harvested item metadata (`usage_stats.metadata.store.MetadataStore.read_all_current`).
One long table, `USAGE_SUBCOUNT_SCHEMA`, for deltas and snapshots, in the layout of record
statistics (`usage_stats.pipeline.records`):

- `scope` / `key`: `source` (key: the owning repository's Matomo site id, as the usage
  `source` scope), `national` (key: the owning repository's country, ISO alpha-2 upper case,
  as record statistics' national scope) and `global` (`global`). An item nobody owns counts
  only globally. `level` is the level of the site where the use happened (R, N, L), as in
  the usage rows; levels are different sites' use, so they add up.
- `field` / `value`: `total` / `""` is the scope's usage itself; every other field is a
  subcount: the record's metadata fields (`SUBCOUNT_FIELDS` of record statistics: resource
  type, access status, language, publisher; subject, funder, affiliation, file format), the
  visitor's `country` and the `item` (top items). An item without metadata, or without the
  field, counts under `""` (unknown), so single-valued fields (`USAGE_SINGLE_FIELDS`) add up
  to the total exactly.
- List fields (`LIST_FIELDS`): an item's usage counts in full under each of its values (an
  article on two subjects adds its views to both), so their values overlap and add up to
  *at least* the total; a share of a list field is a share of that sum.
- Top-N: per (date, scope, key, level, field), the values kept are those among the `top_n`
  largest by *any* metric (so "most downloaded" is as exact as "most viewed"), plus `""`
  always (how much use has no metadata is a quality figure, not a ranking). The rest is one
  row, value `OTHER`, holding their sums: every field's rows add up to what they did before
  the cut (the total for single-valued fields, the overlapping sum for list fields). `OTHER`
  is reserved: no vocabulary produces it.

Snapshots are the same breakdown of the cumulative usage snapshot's item rows, so before
top-N, snapshot(d) = snapshot(d − 1) + delta(d) (`usage_snapshots` is that chain) whenever
both are broken down with the same metadata; top-N is then applied to the cumulative
figures, the remainder keeping the sum. Fields are the record's current ones, as in record
statistics: a record whose type changed counts under its new type.

Two figures come from the kept events and the visits rather than the usage rows
(`usage_stats.pipeline.referrer_subcounts`): the `referrer` field (`VISIT_FIELDS`: single
valued, one referrer per visit, so it adds up to the total) and `visitors`, the distinct
visitors of a scope and level on the day, on the deltas' `total` rows only (null elsewhere:
distinct counts are no share of anything, and there is no cumulative of them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import polars as pl

from usage_stats.admin.sources import Source
from usage_stats.pipeline.metrics import METRICS
from usage_stats.pipeline.records import LIST_FIELDS, SINGLE_FIELDS, TOTAL
from usage_stats.pipeline.snapshots import starts_with_previous

USAGE_SUBCOUNT_SCOPES = ("source", "national", "global")
# Fields of the usage rows themselves, not of the record: who used it from where, and what.
USAGE_ROW_FIELDS = ("country", "item")
USAGE_SINGLE_FIELDS = (*SINGLE_FIELDS, *USAGE_ROW_FIELDS)
# Fields of the visit (from the visits files, not the usage rows): single-valued as well.
VISIT_FIELDS = ("referrer",)
USAGE_SUBCOUNT_FIELDS = (*USAGE_SINGLE_FIELDS, *VISIT_FIELDS, *LIST_FIELDS)
OTHER = "(other)"
UNKNOWN = ""
TOP_N = 20
USAGE_SUBCOUNT_KEYS = ("date", "scope", "key", "level", "field", "value")
USAGE_SUBCOUNT_SCHEMA = pl.Schema(
    {
        "date": pl.Date(),
        "scope": pl.String(),
        "key": pl.String(),
        "level": pl.String(),
        "field": pl.String(),
        "value": pl.String(),
        **{m: pl.Int64() for m in METRICS},
        # distinct visitors: on the deltas' `total` rows only (see the module docstring)
        "visitors": pl.Int64(),
    }
)
OWNER_SCHEMA = pl.Schema({"owner_site_id": pl.Int32(), "national": pl.String()})
_CELL = ["owner_site_id", "national", "level"]
_GROUP = ["date", "scope", "key", "level", "field"]
_METADATA_COLUMNS = [*SINGLE_FIELDS.values(), *LIST_FIELDS.values()]


def empty_usage_subcounts() -> pl.DataFrame:
    return pl.DataFrame(schema=USAGE_SUBCOUNT_SCHEMA)


def owner_countries(sources: Iterable[Source]) -> pl.DataFrame:
    """Each repository's site id and country (upper case): what rolls its items' use up to
    its national node, as `records.source_levels` does for its records."""
    rows = [(s.site_id, (s.country or "").upper() or None) for s in sources]
    return pl.DataFrame(rows, schema=OWNER_SCHEMA, orient="row")


def item_fields(metadata: pl.DataFrame) -> pl.DataFrame:
    """One metadata row per item key (the subcount columns only): the latest datestamp, then
    the last harvested, then the first source key, so the choice never depends on row order
    (as the stats store's `metadata_frame`). Deleted records keep their last fields: past use
    of a withdrawn item is still described.

    List fields come as `full_subcounts` counts them: each value once, no null. Done here,
    once per record, not on every breakdown of the usage: list operations per row cost a
    third of a day's breakdown."""
    order = [c for c in ("datestamp", "harvested_at") if c in metadata.columns]
    records = metadata.lazy().filter(pl.col("item_key").is_not_null())
    keys = metadata.get_column("item_key").drop_nulls()
    if keys.n_unique() < keys.len():  # some item in two records: choose (the sort of a
        # million records costs ten times this count, so it is done only when needed)
        descending = [*([True] * len(order)), False]
        records = records.sort([*order, "source_key"], descending=descending, nulls_last=True)
        records = records.filter(pl.col("item_key").is_first_distinct())  # faster than unique
    records = records.select("item_key", *_METADATA_COLUMNS).collect()
    return records.with_columns(_counted_values(records, c) for c in LIST_FIELDS.values())


def _counted_values(records: pl.DataFrame, column: str) -> pl.Expr:
    """`column`'s lists, each value once, no null. Dropping null elements costs most (~40
    ms per 120,000 records and list field), and a mapped record has none, so it is done only
    where one is."""
    values = pl.col(column)
    has_null = values.list.eval(pl.element().is_null().any()).list.first().any()
    if records.select(has_null).item():
        values = values.list.drop_nulls()
    return values.list.unique().alias(column)


def full_subcounts(
    usage: pl.DataFrame, fields: pl.DataFrame, owners: pl.DataFrame, day: dt.date
) -> pl.DataFrame:
    """Every subcount of `usage`'s item rows (delta or snapshot schema), untruncated, dated
    `day`: the scope totals and each field's every value. `fields`: `item_fields`' rows.

    Item rows are first summed per cell (owner, its country, level) and value; the three
    scopes then roll the much smaller cells up. Only the visitor country needs the rows'
    country: the record's fields and the item are summed from the rows per (cell, item),
    about 2.6 per item on a 10M-event day (its countries), so each field's group-by and the
    join to the records go over that many fewer rows."""
    rows = (
        usage.lazy()
        .filter(pl.col("scope") == "item")
        .select(
            pl.col("key").alias("item_key"),
            pl.col("level"),
            pl.col("owner_site_id").cast(pl.Int32),
            pl.col("country").fill_null(UNKNOWN),
            *(pl.col(m).cast(pl.Int64) for m in METRICS),
        )
        .join(owners.lazy().unique("owner_site_id"), on="owner_site_id", how="left")
    )
    sums = [pl.col(m).sum() for m in METRICS]
    countries = rows.group_by([*_CELL, "country"]).agg(sums)
    items = rows.group_by([*_CELL, "item_key"]).agg(sums).collect()
    described = items.lazy().join(fields.lazy(), on="item_key", how="left")

    def labelled(frame: pl.LazyFrame, field: str, value: pl.Expr) -> pl.LazyFrame:
        return frame.select(*_CELL, pl.lit(field).alias("field"), value.alias("value"), *METRICS)

    def part(field: str, value: pl.Expr, explode: bool = False) -> pl.LazyFrame:
        frame = labelled(described, field, value)
        if explode:  # a record without values, or no record: one unknown row
            frame = frame.explode("value", empty_as_null=True, keep_nulls=True).with_columns(
                pl.col("value").fill_null(UNKNOWN)
            )
        return frame.group_by([*_CELL, "field", "value"]).agg(sums)

    parts = [
        labelled(countries, TOTAL, pl.lit(UNKNOWN)).group_by([*_CELL, "field", "value"]).agg(sums),
        labelled(countries, "country", pl.col("country")),  # one row per cell and country
        labelled(items.lazy(), "item", pl.col("item_key")),  # one row per cell and item
        *(part(f, pl.col(c).fill_null(UNKNOWN)) for f, c in SINGLE_FIELDS.items()),
    ]
    for name, column in LIST_FIELDS.items():
        parts.append(part(name, pl.col(column), explode=True))
    return roll_up_scopes(pl.concat(parts).collect().lazy(), day)


def roll_up_scopes(cells: pl.LazyFrame, day: dt.date) -> pl.DataFrame:
    """`USAGE_SUBCOUNT_SCHEMA` rows (every scope, `visitors` null) from per-cell sums
    (owner_site_id, national, level, field, value and the metrics): the source, national
    and global scopes each add the cells up."""
    sums = [pl.col(m).sum() for m in METRICS]
    by = ["level", "field", "value"]
    scopes = [
        cells.filter(pl.col("owner_site_id").is_not_null())
        .group_by(["owner_site_id", *by])
        .agg(sums)
        .with_columns(
            pl.lit("source").alias("scope"), pl.col("owner_site_id").cast(pl.String).alias("key")
        ),
        cells.filter(pl.col("national").is_not_null())
        .group_by(["national", *by])
        .agg(sums)
        .with_columns(pl.lit("national").alias("scope"), pl.col("national").alias("key")),
        cells.group_by(by)
        .agg(sums)
        .with_columns(pl.lit("global").alias("scope"), pl.lit("global").alias("key")),
    ]
    return (
        pl.concat([s.select("scope", "key", *by, *METRICS) for s in scopes])
        .with_columns(
            pl.lit(day, dtype=pl.Date).alias("date"), pl.lit(None, dtype=pl.Int64).alias("visitors")
        )
        .select(list(USAGE_SUBCOUNT_SCHEMA))
        .cast(USAGE_SUBCOUNT_SCHEMA)
        .collect()
    )


def top_n(full: pl.DataFrame, n: int = TOP_N) -> pl.DataFrame:
    """Keep, per (date, scope, key, level, field), the values among the `n` largest by any
    metric (ties by value; a zero earns no place) and `""` (ranked apart: it takes no place
    among the `n`); the rest becomes one `OTHER` row with their sums (a value with no use in
    any metric is dropped: it adds nothing). An `OTHER` row in `full` (a chained
    cumulative: `referrer_subcounts.cumulative_referrers`) joins the rest.

    Each metric and its tie-break are one integer (`_rank_keys`), so one group-by picks
    every group's first `n` row numbers per metric (`top_k_by` on a number): sorting a large
    day's rows by group and value and ranking them per metric in windows cost most of the
    breakdown (bench/README.md, usage subcounts). Only the candidates are ranked so
    (`_candidates`: about a tenth of a day's rows)."""
    if n < 0:
        raise ValueError("top-N needs n ≥ 0")
    rows = full.with_row_index("_row")
    candidates = _candidates(rows, n)
    lexical, keys = _rank_keys(candidates)
    firsts = (
        candidates.lazy()
        .with_columns(lexical)
        .with_columns(keys)
        .group_by(_GROUP)
        .agg(
            pl.col("_row")
            .filter(pl.col(f"_{m}").is_not_null())
            .top_k_by(pl.col(f"_{m}").drop_nulls(), k=n)
            .alias(f"_{m}")
            for m in METRICS
        )
        .select(pl.concat_list([f"_{m}" for m in METRICS]).alias("_row"))
        .explode("_row")
        .drop_nulls()
        .unique()
        .collect()
        .get_column("_row")
    )
    first = pl.col("_row").is_in(firsts.implode())
    value = pl.col("value")
    named = ~value.is_in([UNKNOWN, OTHER])
    used = pl.any_horizontal(pl.col(m) > 0 for m in METRICS)
    values = rows.lazy().filter(pl.col("field") != TOTAL)
    rest = (
        values.filter(~first & ((named & used) | (value == OTHER)))
        .group_by(_GROUP)
        .agg(pl.col(m).sum() for m in METRICS)
        .with_columns(pl.lit(OTHER).alias("value"), pl.lit(None, dtype=pl.Int64).alias("visitors"))
    )
    columns = list(USAGE_SUBCOUNT_SCHEMA)
    kept = rows.lazy().filter((pl.col("field") == TOTAL) | first | (value == UNKNOWN))
    return (
        pl.concat([f.select(columns) for f in (kept, rest)])
        .cast(USAGE_SUBCOUNT_SCHEMA)
        .sort(list(USAGE_SUBCOUNT_KEYS), nulls_last=True)
        .collect()
    )


def _candidates(rows: pl.DataFrame, n: int) -> pl.DataFrame:
    """The named rows that may be among the `n` first of their group by some metric: at
    least the group's `n`-th largest figure in it (ties at that figure included: the
    tie-break decides among them). None when `n` is 0."""
    named = (pl.col("field") != TOTAL) & ~pl.col("value").is_in([UNKNOWN, OTHER])
    if n == 0:
        return rows.clear()
    reaches = (pl.col(m) >= pl.col(m).top_k(n).min().over(_GROUP) for m in METRICS)
    return rows.lazy().filter(named).filter(pl.any_horizontal(reaches)).collect()


def _rank_keys(rows: pl.DataFrame) -> tuple[pl.Expr, list[pl.Expr]]:
    """Per metric, `_<metric>`: larger is first; the metric in the high bits, the value's
    reverse lexical rank (ties go to the smaller value) in the low ones; null where the
    value takes no place (`""`, `OTHER`, a zero, a total row). The reverse rank is a
    column of its own (`_lexical`, the first expression), computed once for all metrics."""
    named = (pl.col("field") != TOTAL) & ~pl.col("value").is_in([UNKNOWN, OTHER])
    distinct = rows.lazy().filter(named).select(pl.col("value").unique().sort()).collect()
    ordered = distinct.get_column("value")
    bits = max(ordered.len().bit_length(), 1)
    largest = rows.select(pl.max_horizontal(pl.col(m).max() for m in METRICS)).item() or 0
    if largest >= 1 << (62 - bits):
        raise ValueError(f"top-N: a metric of {largest} is too large to rank")
    lexical = (
        pl.when(named).then(pl.col("value")).cast(pl.Enum(ordered)).to_physical().cast(pl.Int64)
    )
    tie = ((1 << bits) - 1 - lexical).alias("_lexical")
    return tie, [
        pl.when(pl.col("_lexical").is_not_null() & (pl.col(m) > 0))
        .then(pl.col(m) * (1 << bits) + pl.col("_lexical"))
        .alias(f"_{m}")
        for m in METRICS
    ]


def usage_subcounts(
    usage: pl.DataFrame,
    metadata: pl.DataFrame,
    owners: pl.DataFrame,
    day: dt.date,
    n: int = TOP_N,
) -> pl.DataFrame:
    """The stored subcounts of one day's usage rows (deltas, or a cumulative snapshot):
    `full_subcounts` cut to the top `n`. `metadata` is `ITEM_METADATA_SCHEMA` rows (or
    `item_fields` of them)."""
    fields = metadata if metadata.columns == ["item_key", *_METADATA_COLUMNS] else None
    fields = item_fields(metadata) if fields is None else fields
    return top_n(full_subcounts(usage, fields, owners, day), n)


_KEYS = [k for k in USAGE_SUBCOUNT_KEYS if k != "date"]


def chain_mismatches(
    snapshot: pl.DataFrame, previous: pl.DataFrame | None, delta: pl.DataFrame
) -> int:
    """Keys where the untruncated snapshot ≠ previous + delta in any metric (one signed
    group-by, as `usage_stats.pipeline.snapshots.snapshot_mismatches`)."""
    schema = {k: USAGE_SUBCOUNT_SCHEMA[k] for k in _KEYS} | {m: pl.Int64() for m in METRICS}
    frames = [
        frame.lazy().select(*_KEYS, *(pl.col(m) * sign for m in METRICS)).cast(schema)
        for frame, sign in ((snapshot, 1), (previous, -1), (delta, -1))
        if frame is not None
    ]
    sums = pl.concat(frames).group_by(_KEYS).agg(pl.col(m).sum() for m in METRICS)
    differs = pl.any_horizontal(pl.col(m) != 0 for m in METRICS)
    return sums.filter(differs).select(pl.len()).collect().item()


def subcount_chain_mismatches(
    snapshot: pl.DataFrame,
    previous: pl.DataFrame | None,
    delta: pl.DataFrame,
    fields: pl.DataFrame,
    owners: pl.DataFrame,
    day: dt.date,
) -> int:
    """`chain_mismatches` of the three usage tables' full subcounts (`usage_snapshots` of the
    day and the day before, the day's `item_daily_deltas`), without breaking the previous
    snapshot and the delta down.

    `full_subcounts` is a sum of item rows' metrics, so full(snapshot) − full(previous) −
    full(delta) = full(their item rows' signed sum per key, level, owner and country), and
    that sum is zero but where the chain is broken (or an item changed owner: its earlier
    use moves to the new owner's scopes). Breaking the few rows left down gives the same
    keys as breaking down all three tables (`test_subcount_chain_check_equals_the_reference`)
    at the cost of one group-by of their item rows (the snapshot's rows that continue the
    previous one unchanged are skipped, as in `snapshots.snapshot_mismatches`). The
    snapshot's own breakdown is computed once, for its top-N."""
    residual = _chain_residual(snapshot, previous, delta)
    if not residual.height:
        return 0
    full = full_subcounts(residual, fields, owners, day)
    return full.filter(pl.any_horizontal(pl.col(m) != 0 for m in METRICS)).height


_ITEM_CELL = {
    "key": pl.String(),
    "level": pl.String(),
    "owner_site_id": pl.Int32(),
    "country": pl.String(),
}


def _chain_residual(
    snapshot: pl.DataFrame, previous: pl.DataFrame | None, delta: pl.DataFrame
) -> pl.DataFrame:
    """Item rows of snapshot − previous − delta per (key, level, owner, country) that are not
    all zero, in the usage rows' columns `full_subcounts` reads (scope `item`)."""

    def count(column: str) -> pl.Expr:
        return pl.col(column).cast(pl.Int64).fill_null(0)

    signed: list[tuple[pl.DataFrame, int]]
    if previous is not None and starts_with_previous(snapshot, previous):
        head = snapshot.head(previous.height)
        earlier = previous.select(
            pl.col(c).alias(f"_previous_{c}") for c in (*METRICS, "owner_site_id")
        )
        moved = ~pl.col("owner_site_id").cast(pl.Int32).eq_missing(
            pl.col("_previous_owner_site_id").cast(pl.Int32)
        )
        differs = pl.any_horizontal(moved, *(count(m) != count(f"_previous_{m}") for m in METRICS))
        mask = (
            pl.concat([head.select(*METRICS, "owner_site_id"), earlier], how="horizontal")
            .select(differs)
            .to_series()
        )
        signed = [
            (head.filter(mask), 1),
            (previous.filter(mask), -1),
            (snapshot.slice(previous.height), 1),
            (delta, -1),
        ]
    else:
        signed = [(snapshot, 1), (delta, -1)]
        if previous is not None:
            signed.append((previous, -1))
    frames = [
        frame.lazy()
        .filter(pl.col("scope") == "item")
        .select(
            *(pl.col(c).cast(t) for c, t in _ITEM_CELL.items()),
            *(count(m) * sign for m in METRICS),
        )
        for frame, sign in signed
    ]
    return (
        pl.concat(frames)
        .group_by(list(_ITEM_CELL))
        .agg(pl.col(m).sum() for m in METRICS)
        .filter(pl.any_horizontal(pl.col(m) != 0 for m in METRICS))
        .with_columns(pl.lit("item").alias("scope"))
        .collect()
    )


def total_mismatches(frame: pl.DataFrame, single: Iterable[str] = USAGE_SINGLE_FIELDS) -> int:
    """Subcounts that disagree with their total, per (date, scope, key, level) and field: a
    single-valued field's rows (with `""` and `OTHER`) must add up to the total in every
    metric; no value of a list field may exceed it (values overlap; `OTHER` of a list field
    sums several values, so it may). A total without a field's rows counts too. `single`:
    the single-valued fields expected (with `VISIT_FIELDS` where the referrer was built)."""
    single_fields = list(single)
    group = ["date", "scope", "key", "level"]
    totals = frame.filter(pl.col("field") == TOTAL).select(
        *group, *(pl.col(m).alias(f"_{m}") for m in METRICS)
    )
    present = frame.select(group).unique()
    expected = present.join(pl.DataFrame({"field": single_fields}), how="cross")
    mismatched = (
        frame.filter(pl.col("field").is_in(single_fields))
        .group_by([*group, "field"])
        .agg(pl.col(m).sum() for m in METRICS)
        .join(expected, on=[*group, "field"], how="full", coalesce=True, nulls_equal=True)
        .join(totals, on=group, how="full", coalesce=True, nulls_equal=True)
        .filter(
            pl.any_horizontal(
                pl.col(m).fill_null(0) != pl.col(f"_{m}").fill_null(0) for m in METRICS
            )
        )
    )
    listed = (
        frame.filter(pl.col("field").is_in(list(LIST_FIELDS)) & (pl.col("value") != OTHER))
        .join(totals, on=group, how="left", nulls_equal=True)
        .filter(pl.any_horizontal(pl.col(m) > pl.col(f"_{m}").fill_null(0) for m in METRICS))
    )
    return mismatched.height + listed.height
