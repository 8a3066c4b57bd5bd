"""Daily usage deltas: LA Referencia and COUNTER R5.1 metrics per item, with rollups.

One long table serves every level of the network, distinguished by `scope`:

- `item`:   key = normalised identifier, per site where the usage happened;
- `source`: key = the owning repository's site id, per site (so a repository sees its items'
            usage on its own site, level R, and on national nodes and the portal, levels N/L);
- `site`:   key = the site id: all usage on one Matomo site (a repository, a national node or
            the regional portal);
- `global`: key = `global`, per level.

Every row is per visitor country. Rollups add item rows up, as LA Referencia does, so a
repository's figures are exactly the sum of its items'. COUNTER sessions are bound to a day
(see `cleaning.session_id_expr`), so unique counts of days add up to months and years.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import polars as pl

LA_REFERENCIA_METRICS = ("views", "downloads", "outlinks", "conversions")
COUNTER_METRICS = (
    "total_item_investigations",
    "unique_item_investigations",
    "total_item_requests",
    "unique_item_requests",
)
METRICS = LA_REFERENCIA_METRICS + COUNTER_METRICS
SCOPES = ("item", "source", "site", "global")

KEY_COLUMNS = ("date", "scope", "key", "site_id", "level", "country")

DELTA_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "scope": pl.String(),
    "key": pl.String(),
    "site_id": pl.Int32(),
    "level": pl.String(),
    "owner_site_id": pl.Int32(),
    "country": pl.String(),
    **{m: pl.Int64() for m in METRICS},
}


ITEM_KEYS = ("date", "site_id", "level", "item_id", "owner_site_id", "country")
# What the deltas read of a session row: a stage that reads the stored sessions decodes these
# only (visit id, event time and block are 8-byte columns, about half of the decoding).
SESSION_COLUMNS = (*ITEM_KEYS, "session_id", "action")

# One bit per action, so a session's actions on an item fold into one small integer.
_VIEW, _DOWNLOAD, _OUTLINK = 1, 2, 4


def item_deltas(sessions: pl.DataFrame) -> pl.DataFrame:
    """Item rows: per day × site × item × visitor country."""
    coded = _coded_item_keys(sessions)
    if coded is None:
        return _item_deltas_by_columns(sessions.lazy()).collect()
    keys, decode = coded
    return _item_deltas_by_code(keys).pipe(decode)


def _action_bit() -> pl.Expr:
    action = pl.col("action")
    return (
        pl.when(action == "view")
        .then(_VIEW)
        .when(action == "download")
        .then(_DOWNLOAD)
        .when(action == "outlink")
        .then(_OUTLINK)
        .otherwise(0)
        .cast(pl.UInt8)
    )


def _item_metrics(bits: pl.Expr, investigations: pl.Expr, requests: pl.Expr) -> list[pl.Expr]:
    """The eight metrics of an item from its per-session action bits and counts."""
    view = (bits & _VIEW) > 0
    download = (bits & _DOWNLOAD) > 0
    outlink = (bits & _OUTLINK) > 0
    return [
        view.sum().alias("views"),
        download.sum().alias("downloads"),
        outlink.sum().alias("outlinks"),
        (view & (download | outlink)).sum().alias("conversions"),
        investigations.sum().alias("total_item_investigations"),
        (investigations > 0).sum().alias("unique_item_investigations"),
        requests.sum().alias("total_item_requests"),
        (requests > 0).sum().alias("unique_item_requests"),
    ]


def _per_session(sessions: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    """One row per item key and session: the actions seen, investigations and requests.

    The two counts share one 64-bit sum (requests in the high half; a session has far fewer
    than 2³² actions): a group-by with one aggregation less.
    """
    bit = pl.col("_bit")
    counts = ((bit & (_VIEW | _DOWNLOAD)) > 0).cast(pl.UInt64) + ((bit & _DOWNLOAD) > 0).cast(
        pl.UInt64
    ) * pl.lit(_HIGH, dtype=pl.UInt64)
    return (
        sessions.with_columns(_action_bit().alias("_bit"))
        .group_by([*keys, "session_id"])
        .agg(bit.bitwise_or().alias("_bits"), counts.sum().alias("_counts"))
        .with_columns(
            (pl.col("_counts") % _HIGH).cast(pl.UInt32).alias("_investigations"),
            (pl.col("_counts") // _HIGH).cast(pl.UInt32).alias("_requests"),
        )
    )


_HIGH = 1 << 32


def _item_deltas_by_columns(sessions: pl.LazyFrame) -> pl.LazyFrame:
    """Group on the key columns themselves: the general path, for keys too wide to pack."""
    keys = list(ITEM_KEYS)
    return (
        _per_session(sessions, keys)
        .group_by(keys)
        .agg(*_item_metrics(pl.col("_bits"), pl.col("_investigations"), pl.col("_requests")))
        .with_columns(pl.lit("item").alias("scope"), pl.col("item_id").alias("key"))
    )


def _item_deltas_by_code(keys: pl.DataFrame) -> pl.DataFrame:
    """Group on `_key`, all item key columns packed into one integer.

    Polars groups on one integer column several times faster than on six columns of which
    three are strings, and these two group-bys are most of the stage on a large day.
    """
    per_session = _per_session(keys.lazy(), ["_key"])
    return (
        per_session.group_by("_key")
        .agg(*_item_metrics(pl.col("_bits"), pl.col("_investigations"), pl.col("_requests")))
        .collect()
    )


def _coded_item_keys(sessions: pl.DataFrame):
    """`_key`, `session_id` and `action` of each row, with `_key` packing the item key columns
    exactly (dense codes side by side in 64 bits), and the function that turns `_key` back
    into the columns; None when the columns are of other types or the codes do not fit.

    Integers and dates are coded as the offset from their minimum, categoricals (what
    cleaning writes: `SESSION_SCHEMA`) as the offset of their code from the smallest one,
    strings through their distinct values (items, countries, levels: few next to the rows);
    0 stands for null. A categorical's strings are only looked up for its distinct codes.
    """
    schema = sessions.schema
    strings = [n for n in ITEM_KEYS if schema[n] == pl.String]
    categoricals = [n for n in ITEM_KEYS if isinstance(schema[n], pl.Categorical)]
    numbers = [n for n in ITEM_KEYS if n not in strings]
    if not all(
        schema[n].is_integer() or schema[n] == pl.Date or n in categoricals for n in numbers
    ):
        return None
    physical = {n: pl.col(n).to_physical().cast(pl.Int64) for n in numbers}
    frame = sessions.lazy()
    ranges, *distinct = pl.collect_all(
        [
            frame.select(
                *(e.min().alias(f"{n}_min") for n, e in physical.items()),
                *(e.max().alias(f"{n}_max") for n, e in physical.items()),
            ),
            *(frame.select(pl.col(n).unique().drop_nulls()) for n in strings),
            *(
                frame.select(pl.col(n).unique().drop_nulls()).select(
                    physical[n].alias("code"), pl.col(n).cast(pl.String).alias("value")
                )
                for n in categoricals
            ),
        ]
    )
    values = {n: d.to_series() for n, d in zip(strings, distinct, strict=False)}
    low = {n: ranges.item(0, f"{n}_min") or 0 for n in numbers}
    high = {n: ranges.item(0, f"{n}_max") or 0 for n in numbers}
    # per categorical: its strings by code − low + 1 (slot 0: null)
    lookups = {}
    for n, d in zip(categoricals, distinct[len(strings) :], strict=True):
        table = pl.Series(n, [None] * (high[n] - low[n] + 2), dtype=pl.String)
        lookups[n] = table.scatter(d.get_column("code") - low[n] + 1, d.get_column("value"))
    codes: dict[str, pl.Expr] = {}
    widths: dict[str, int] = {}
    for n in ITEM_KEYS:
        if n in values:
            code = pl.col(n).cast(pl.Enum(values[n])).to_physical().cast(pl.UInt64) + 1
            widths[n] = values[n].len().bit_length()
        else:
            code = (physical[n] - low[n] + 1).cast(pl.UInt64)
            widths[n] = (high[n] - low[n] + 1).bit_length()
        codes[n] = code.fill_null(0)
    if sum(widths.values()) > 64:
        return None
    shifts = dict(zip(ITEM_KEYS, itertools.accumulate([0, *widths.values()]), strict=False))
    packed = pl.sum_horizontal(
        codes[n] * pl.lit(1 << shifts[n], dtype=pl.UInt64) for n in ITEM_KEYS
    )
    coded = sessions.select(packed.alias("_key"), "session_id", "action")

    def decode(items: pl.DataFrame) -> pl.DataFrame:
        """The key columns back from `_key`, in the types of the sessions (strings for
        categoricals, as the delta table has them)."""
        key = pl.col("_key")
        restored = {}
        for n in ITEM_KEYS:
            code = (key // pl.lit(1 << shifts[n], dtype=pl.UInt64)) % pl.lit(
                1 << widths[n], dtype=pl.UInt64
            )
            if n in values:
                lookup = pl.concat([pl.Series([None], dtype=pl.String), values[n]])
                restored[n] = pl.lit(lookup).gather(code)
            elif n in lookups:
                restored[n] = pl.lit(lookups[n]).gather(code)
            else:
                offset = pl.when(code > 0).then(code.cast(pl.Int64) + (low[n] - 1))
                restored[n] = offset.cast(schema[n])
        return items.select(
            *(e.alias(n) for n, e in restored.items()),
            *METRICS,
            pl.lit("item").alias("scope"),
            restored["item_id"].alias("key"),
        )

    return coded, decode


def _rollup(items: pl.LazyFrame, scope: str, key: pl.Expr, by: list[str]) -> pl.LazyFrame:
    return (
        items.group_by(by)
        .agg(
            key.first().alias("key"),
            *[pl.col(m).sum() for m in METRICS],
        )
        .with_columns(pl.lit(scope).alias("scope"))
    )


def daily_deltas(sessions: pl.DataFrame | Iterable[pl.DataFrame]) -> pl.DataFrame:
    """All scopes of one or more days, in the delta schema, sorted for stable output.

    `sessions` is a frame or the pieces of a day (`usage_stats.pipeline.pieces`), each whole
    sites: item rows are per site, so each piece's are final, and only they (far fewer than
    the events) are held together. The three rollups over them run as one lazy query.
    """
    pieces = [sessions] if isinstance(sessions, pl.DataFrame) else sessions
    per_piece = [item_deltas(piece).cast({m: pl.Int64 for m in METRICS}) for piece in pieces]
    if not per_piece:
        return empty_deltas()
    items = pl.concat(per_piece, how="vertical_relaxed").lazy()
    owned = items.filter(pl.col("owner_site_id").is_not_null())
    source = _rollup(
        owned,
        "source",
        pl.col("owner_site_id").cast(pl.String),
        ["date", "owner_site_id", "site_id", "level", "country"],
    )
    site = _rollup(
        items, "site", pl.col("site_id").cast(pl.String), ["date", "site_id", "level", "country"]
    ).with_columns(pl.col("site_id").alias("owner_site_id"))
    global_ = _rollup(items, "global", pl.lit("global"), ["date", "level", "country"]).with_columns(
        pl.lit(None, dtype=pl.Int32).alias("site_id"),
        pl.lit(None, dtype=pl.Int32).alias("owner_site_id"),
    )
    frames = [
        f.select(list(DELTA_SCHEMA)).cast(DELTA_SCHEMA) for f in (items, source, site, global_)
    ]
    return pl.concat(frames).sort(list(KEY_COLUMNS), nulls_last=True).collect()


def duplicate_keys(deltas: pl.DataFrame) -> int:
    """Rows whose key appears more than once (0 for a well-formed delta table)."""
    keys = list(KEY_COLUMNS)
    return deltas.height - deltas.select(keys).unique().height


def empty_deltas() -> pl.DataFrame:
    return pl.DataFrame(schema=DELTA_SCHEMA)
