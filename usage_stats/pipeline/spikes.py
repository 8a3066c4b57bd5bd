"""Usage spikes (COUNTER R5.1, robots and unusual usage): days on which an item or a
repository was used far above its recent baseline, most of the excess coming from a few
network blocks or a few countries. Flagged for review, never dropped.

The usage measured is COUNTER's `Total_Item_Investigations` (every view or download of an
item, after cleaning): a harvest of a repository shows in it whether the crawler fetches
landing pages or files, and it is the figure operators see first. A day's usage and its
origins come from the day's kept events (`sessions`), counted per item (`item`) and per owning
repository (`source`, key its site id) exactly as `metrics.item_deltas` counts them; the
baseline comes from the stats store's stored deltas of the days before (`StatsStore.sums_where`
by date, key and country), so a re-run of a past day compares it with what was stored.

The unit of concentration is the network block of the visit (`block_hash`, the salted hash of
its /24 IPv4 or /48 IPv6 block) when `sessions` holds it; else the salted IP hash (`ip_hash`)
if it does; else the COUNTER session (`session_id`): a weaker signal (a crawler spreading over
many addresses is many sessions), named in every flag's `unit`.

A day is flagged when, with at least `min_history_days` stored days in the baseline window:

- `usage >= min_count` and `usage > factor * baseline` (baseline: the median daily usage of
  the `baseline_days` stored days before, a day without usage counting 0; the median, so one
  past spike does not mask the next), and
- the excess (`usage - baseline`) is concentrated: the top `top_blocks` units gave at least
  `block_share` of it (`reason` "blocks"), or the top `top_countries` countries' excess over
  their own baselines is at least `country_share` of the whole positive excess ("countries").

A reading-list spike (a course assigns one paper: many readers from many networks and
countries) passes neither concentration test and is not flagged; a reading list within one
country is flagged "countries" (for review, as COUNTER asks: an operator who sees it expected
can raise `country_share` above 1 to turn that test off).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

SPIKE_METRIC = "total_item_investigations"
SPIKE_SCOPES = ("item", "source")
# Which column of `sessions` tells the origins apart, best first (see the module docstring).
UNIT_COLUMNS = ("block_hash", "ip_hash", "session_id")

SPIKE_SCHEMA = pl.Schema(
    {
        "date": pl.Date(),
        "scope": pl.String(),
        "key": pl.String(),
        "owner_site_id": pl.Int32(),
        "usage": pl.Int64(),
        "baseline": pl.Float64(),
        "history_days": pl.Int32(),
        "factor": pl.Float64(),
        "units": pl.Int64(),
        "unit": pl.String(),
        "top_blocks_share": pl.Float64(),
        "top_countries": pl.String(),
        "top_countries_share": pl.Float64(),
        "reason": pl.String(),
    }
)


@dataclass(frozen=True)
class SpikeRules:
    """What makes a day a spike (configuration: `resources.SpikeSettings`)."""

    factor: float = 5.0
    baseline_days: int = 28
    min_history_days: int = 7
    min_count: int = 50
    top_blocks: int = 3
    block_share: float = 0.5
    top_countries: int = 1
    country_share: float = 0.9

    def __post_init__(self) -> None:
        checks = {
            "factor": self.factor > 1,
            "baseline_days": self.baseline_days >= 1,
            "min_history_days": 0 <= self.min_history_days <= self.baseline_days,
            "min_count": self.min_count >= 1,
            "top_blocks": self.top_blocks >= 1,
            "block_share": 0 < self.block_share,
            "top_countries": self.top_countries >= 1,
            "country_share": 0 < self.country_share,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"spike rules: invalid {', '.join(bad)} ({self})")


def unit_column(columns: Iterable[str]) -> str:
    """The best origin column `sessions` holds (`UNIT_COLUMNS`)."""
    have = set(columns)
    for name in UNIT_COLUMNS:
        if name in have:
            return name
    raise ValueError(f"sessions hold none of {UNIT_COLUMNS}: cannot tell origins apart")


def origin_counts(sessions: pl.DataFrame, unit: str) -> pl.DataFrame:
    """Investigations (views and downloads) of one piece of a day's kept events per item,
    owner, origin unit and visitor country: the small table a day's pieces add up to.
    Grouped on the categorical columns as they are (their codes; a cast to text first would
    cost four times as much), text only once a day's candidates are known."""
    return (
        sessions.lazy()
        .filter(pl.col("action").cast(pl.String).is_in(["view", "download"]))
        .group_by(
            pl.col("item_id").alias("key"),
            "owner_site_id",
            pl.col(unit).cast(pl.UInt64).alias("unit"),
            "country",
        )
        .agg(pl.len().cast(pl.Int64).alias("n"))
        .collect()
    )


def day_origins(
    pieces: Iterable[pl.DataFrame],
    unit: str,
    min_count: int = 1,
    only: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`origin_counts` of every piece of a day added up, for both scopes (`scope`, `key`,
    `owner_site_id`, `unit`, `country`, `n`), only of the keys used at least `min_count`
    times (the others cannot be spikes), or only of the `scope`/`key` rows of `only` (those
    `over_baseline`): an item used on several sites is in several pieces; a source's key is
    its site id, as the stored `source` rollup's."""
    if only is not None:
        items_of = only.filter(pl.col("scope") == "item").get_column("key")
        owners_of = only.filter(pl.col("scope") == "source").get_column("key").cast(pl.Int32)
        wanted = pl.col("item_id").cast(pl.String).is_in(items_of.implode()) | pl.col(
            "owner_site_id"
        ).is_in(owners_of.implode())
        pieces = (piece.filter(wanted) for piece in pieces)
    counts = [origin_counts(piece, unit) for piece in pieces]
    columns = ["scope", "key", "owner_site_id", "unit", "country", "n"]
    schema = {
        "scope": pl.String(),
        "key": pl.String(),
        "owner_site_id": pl.Int32(),
        "unit": pl.UInt64(),
        "country": pl.String(),
        "n": pl.Int64(),
    }
    if not counts:
        return pl.DataFrame(schema=schema)
    frame = pl.concat(counts, how="vertical_relaxed")
    keys = ["key", "owner_site_id", "unit", "country"]
    if len(counts) > 1:
        frame = frame.group_by(keys).agg(pl.col("n").sum())
    enough = pl.col("n").sum().over("key") >= min_count
    items = frame.filter(enough).with_columns(scope=pl.lit("item"))
    if only is not None:  # (an owner's other items came along for its source's counts)
        items = items.filter(pl.col("key").cast(pl.String).is_in(items_of.implode()))
    sources = (
        frame.filter(pl.col("owner_site_id").is_not_null())
        .group_by("owner_site_id", "unit", "country")
        .agg(pl.col("n").sum())
        .filter(pl.col("n").sum().over("owner_site_id") >= min_count)
        .filter(True if only is None else pl.col("owner_site_id").is_in(owners_of.implode()))
        .with_columns(scope=pl.lit("source"), key=pl.col("owner_site_id").cast(pl.String))
    )
    return pl.concat([items.select(columns).cast(schema), sources.select(columns).cast(schema)])


def candidates(origins: pl.DataFrame, rules: SpikeRules) -> pl.DataFrame:
    """Scope keys used at least `min_count` times on the day (`scope`, `key`, `usage`): only
    these can be spikes, so only their history is read from the store."""
    return (
        origins.group_by("scope", "key")
        .agg(pl.col("n").sum().alias("usage"))
        .filter(pl.col("usage") >= rules.min_count)
        .sort("scope", "key")
    )


def over_baseline(
    usage: pl.DataFrame, history: pl.DataFrame, history_days: list[dt.date], rules: SpikeRules
) -> pl.DataFrame:
    """The keys of `usage` (`candidates`) above `factor` × their baseline (`scope`, `key`,
    `usage`, `baseline`, `excess`); none with fewer than `min_history_days` stored days.
    Cheap (a row per key): the asset asks it first, so that only these keys' events are
    broken down by origin."""
    empty = usage.head(0).with_columns(pl.lit(0.0).alias("baseline"), pl.lit(0.0).alias("excess"))
    if len(history_days) < rules.min_history_days or usage.is_empty():
        return empty
    days = pl.DataFrame({"date": history_days}, schema={"date": pl.Date()})
    past = history.select("scope", "key", "date", pl.col("usage").cast(pl.Int64))
    # the median daily usage, days without usage counting 0 (a full keys × days grid)
    daily = past.group_by("scope", "key", "date").agg(pl.col("usage").sum())
    grid = usage.select("scope", "key").join(days, how="cross")
    baseline = (
        grid.join(daily, on=["scope", "key", "date"], how="left")
        .group_by("scope", "key")
        .agg(pl.col("usage").fill_null(0).median().alias("baseline"))
    )
    if not history_days:
        baseline = usage.select("scope", "key", pl.lit(0.0).alias("baseline"))
    return (
        usage.join(baseline, on=["scope", "key"], how="left")
        .with_columns(pl.col("baseline").fill_null(0.0).cast(pl.Float64))
        .filter(pl.col("usage") > rules.factor * pl.col("baseline"))
        .with_columns((pl.col("usage") - pl.col("baseline")).alias("excess"))
        .sort("scope", "key")
    )


def day_usage(pieces: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """A day's investigations per scope and key (`scope`, `key`, `usage`), without origins:
    the cheap first look (`candidates` of `day_origins` gives the same numbers)."""
    parts = [
        piece.lazy()
        .filter(pl.col("action").cast(pl.String).is_in(["view", "download"]))
        .group_by(pl.col("item_id").alias("key"), "owner_site_id")
        .agg(pl.len().cast(pl.Int64).alias("n"))
        .collect()
        for piece in pieces
    ]
    schema = {"scope": pl.String(), "key": pl.String(), "usage": pl.Int64()}
    if not parts:
        return pl.DataFrame(schema=schema)
    frame = pl.concat(parts, how="vertical_relaxed")
    items = frame.group_by("key").agg(pl.col("n").sum().alias("usage"))
    sources = (
        frame.filter(pl.col("owner_site_id").is_not_null())
        .group_by("owner_site_id")
        .agg(pl.col("n").sum().alias("usage"))
        .select(pl.col("owner_site_id").cast(pl.String).alias("key"), "usage")
    )
    return pl.concat(
        [
            items.select(pl.lit("item").alias("scope"), "key", "usage").cast(schema),
            sources.select(pl.lit("source").alias("scope"), "key", "usage").cast(schema),
        ]
    ).sort("scope", "key")


def flag_spikes(
    day: dt.date,
    origins: pl.DataFrame,
    history: pl.DataFrame,
    history_days: list[dt.date],
    rules: SpikeRules,
    unit: str,
) -> pl.DataFrame:
    """The day's flags (`SPIKE_SCHEMA`, ordered by scope and key).

    `origins`: `day_origins`; `history`: the stored deltas of the candidates over the baseline
    window summed per `scope`, `date`, `key`, `country` (column `usage`); `history_days`: the
    stored days of the window (a candidate absent on one of them used nothing that day)."""
    spikes = over_baseline(candidates(origins, rules), history, history_days, rules)
    if spikes.is_empty():
        return pl.DataFrame(schema=SPIKE_SCHEMA)
    past = history.select("scope", "key", "date", "country", pl.col("usage").cast(pl.Int64))
    n_days = max(len(history_days), 1)
    on = ["scope", "key"]
    mine = origins.join(spikes.select(on), on=on)

    # few blocks: the top units' usage over the excess (capped at 1)
    per_unit = mine.group_by(*on, "unit").agg(pl.col("n").sum())
    blocks = per_unit.group_by(on).agg(
        pl.col("n").top_k(rules.top_blocks).sum().alias("_top_units"),
        pl.len().cast(pl.Int64).alias("units"),
    )

    # few countries: each country's excess over its own mean, the top ones' share of it all
    country_base = (
        past.join(spikes.select(on), on=on)
        .group_by(*on, "country")
        .agg((pl.col("usage").sum() / n_days).alias("_base"))
    )
    per_country = (
        mine.group_by(*on, "country")
        .agg(pl.col("n").sum())
        .join(country_base, on=[*on, "country"], how="left", nulls_equal=True)
        .with_columns(
            (pl.col("n") - pl.col("_base").fill_null(0.0)).clip(lower_bound=0).alias("_excess")
        )
        .sort([*on, "_excess", "country"], descending=[False, False, True, False])
    )
    countries = per_country.group_by(on, maintain_order=True).agg(
        pl.col("country")
        .fill_null("")
        .head(rules.top_countries)
        .str.join(",")
        .alias("top_countries"),
        (
            pl.col("_excess").head(rules.top_countries).sum()
            / pl.col("_excess").sum().clip(lower_bound=1e-9)
        ).alias("top_countries_share"),
    )
    flagged = (
        spikes.join(blocks, on=on, how="left")
        .join(countries, on=on, how="left")
        .with_columns(
            (pl.col("_top_units") / pl.col("excess"))
            .clip(upper_bound=1.0)
            .alias("top_blocks_share"),
        )
        .with_columns(
            pl.concat_str(
                pl.when(pl.col("top_blocks_share") >= rules.block_share).then(pl.lit("blocks")),
                pl.when(pl.col("top_countries_share") >= rules.country_share).then(
                    pl.lit("countries")
                ),
                separator="+",
                ignore_nulls=True,
            ).alias("reason")
        )
        .filter(pl.col("reason") != "")
    )
    owners = origins.group_by(on).agg(pl.col("owner_site_id").drop_nulls().min())
    return (
        flagged.join(owners, on=on, how="left")
        .with_columns(
            pl.lit(day).alias("date"),
            pl.lit(len(history_days)).alias("history_days"),
            pl.when(pl.col("baseline") > 0)
            .then(pl.col("usage") / pl.col("baseline"))
            .alias("factor"),
            pl.lit(unit).alias("unit"),
            pl.col("top_blocks_share").round(4),
            pl.col("top_countries_share").round(4),
        )
        .select(list(SPIKE_SCHEMA))
        .cast(SPIKE_SCHEMA)
        .sort("scope", "key")
    )


def spike_frame(day: dt.date, spikes: pl.DataFrame) -> pl.DataFrame:
    """A day's flags as a store keeps them (`SPIKE_SCHEMA`), refused if they hold another
    day's rows or two rows of one scope and key."""
    missing = [c for c in SPIKE_SCHEMA if c not in spikes.columns]
    if missing:
        raise ValueError(f"usage spikes lack column(s) {missing}")
    frame = spikes.select(list(SPIKE_SCHEMA)).cast(SPIKE_SCHEMA)
    other = frame.filter(pl.col("date") != day).height
    if other:
        raise ValueError(f"usage spikes for {day} hold {other} row(s) of other days")
    if frame.select("scope", "key").is_duplicated().any():
        raise ValueError(f"usage spikes for {day} hold a scope and key twice")
    return frame.sort("scope", "key")
