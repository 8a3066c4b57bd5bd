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


def item_deltas(sessions: pl.DataFrame) -> pl.DataFrame:
    """Item rows: per day × site × item × visitor country."""
    item_keys = ["date", "site_id", "level", "item_id", "owner_site_id", "country"]
    is_view = pl.col("action") == "view"
    is_download = pl.col("action") == "download"
    is_outlink = pl.col("action") == "outlink"
    per_session = sessions.group_by([*item_keys, "session_id"]).agg(
        is_view.any().alias("_view"),
        is_download.any().alias("_download"),
        is_outlink.any().alias("_outlink"),
        (is_view | is_download).sum().alias("_investigations"),
        is_download.sum().alias("_requests"),
    )
    return (
        per_session.group_by(item_keys)
        .agg(
            pl.col("_view").sum().alias("views"),
            pl.col("_download").sum().alias("downloads"),
            pl.col("_outlink").sum().alias("outlinks"),
            (pl.col("_view") & (pl.col("_download") | pl.col("_outlink")))
            .sum()
            .alias("conversions"),
            pl.col("_investigations").sum().alias("total_item_investigations"),
            (pl.col("_investigations") > 0).sum().alias("unique_item_investigations"),
            pl.col("_requests").sum().alias("total_item_requests"),
            (pl.col("_requests") > 0).sum().alias("unique_item_requests"),
        )
        .with_columns(pl.lit("item").alias("scope"), pl.col("item_id").alias("key"))
    )


def _rollup(items: pl.DataFrame, scope: str, key: pl.Expr, by: list[str]) -> pl.DataFrame:
    return (
        items.group_by(by)
        .agg(
            key.first().alias("key"),
            *[pl.col(m).sum() for m in METRICS],
        )
        .with_columns(pl.lit(scope).alias("scope"))
    )


def daily_deltas(sessions: pl.DataFrame) -> pl.DataFrame:
    """All scopes of one or more days, in the delta schema, sorted for stable output."""
    items = item_deltas(sessions).cast({m: pl.Int64 for m in METRICS})
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
    return pl.concat(frames).sort(list(KEY_COLUMNS), nulls_last=True)


def duplicate_keys(deltas: pl.DataFrame) -> int:
    """Rows whose key appears more than once (0 for a well-formed delta table)."""
    keys = list(KEY_COLUMNS)
    return deltas.height - deltas.select(keys).unique().height


def empty_deltas() -> pl.DataFrame:
    return pl.DataFrame(schema=DELTA_SCHEMA)
