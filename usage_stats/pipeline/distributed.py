"""`robot_distributed`: a network block whose visits of a day together look like one crawler.

Crawlers that spread a harvest over hundreds of addresses of a few blocks, a request or two
per address with a browser's user agent, pass the robots list and the per-visit behaviour
rule. Taken together per (site, block, day), their visits do not look like readers: the rule
counts, for each block with at least `min_addresses` addresses, how many of five signals
fire, and flags the block when `min_signals` do:

- `short_visits`: actions per visit ≤ `max_actions_per_visit` (readers look at a few things);
- `sweep`: distinct items per event ≥ `min_items_per_event` (a harvest rarely comes back);
- `coverage`: the block's items ≥ `min_item_share` of the items the site served that day;
- `flat_day`: active in ≥ `min_active_hours` of the 24 hours (people sleep);
- `downloads_without_views`: ≥ `min_download_only_share` of the events are downloads of an
  item the same address did not view that day.

Blocks are taken at two widths (`fine`: /24 and /48 by default, `wide`: /16 and /32), as
salted hashes (`usage_stats.pipeline.blocks`); a row is flagged when either of its blocks is.
Only rows no per-visit rule rejected are looked at or flagged. Per source the rule is `on`
(flagged rows are rejected), `report` (flagged blocks are audited, nothing is rejected) or
`off`. Everything is per site and day, so a piece of whole sites decides as the day would.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

MODES = ("off", "on", "report")
DEFAULT_MODE = "on"
SIGNALS = ("short_visits", "sweep", "coverage", "flat_day", "downloads_without_views")
LEVELS = {"fine": "block_hash", "wide": "wide_block_hash"}

AUDIT_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "site_id": pl.Int32(),
    "level": pl.String(),
    "block_hash": pl.UInt64(),
    "mode": pl.String(),
    "events": pl.UInt32(),
    "visits": pl.UInt32(),
    "addresses": pl.UInt32(),
    "items": pl.UInt32(),
    "site_items": pl.UInt32(),
    "actions_per_visit": pl.Float64(),
    "items_per_event": pl.Float64(),
    "item_share": pl.Float64(),
    "active_hours": pl.UInt32(),
    "download_only_share": pl.Float64(),
    "signals": pl.UInt8(),
    "fired": pl.String(),
    "rejected_events": pl.UInt32(),
}


@dataclass(frozen=True)
class DistributedRules:
    """Thresholds of `robot_distributed` (configuration; defaults measured on planted
    traffic with `bench/distributed_bench.py`, see the README)."""

    min_addresses: int = 10
    max_actions_per_visit: float = 2.0
    min_items_per_event: float = 0.8
    min_item_share: float = 0.3
    min_active_hours: int = 20
    min_download_only_share: float = 0.5
    min_signals: int = 3
    # audit every block with `min_addresses`, flagged or not (to measure thresholds by)
    audit_all: bool = False

    def __post_init__(self) -> None:
        if self.min_addresses < 2:
            raise ValueError(f"distributed min_addresses must be ≥ 2, got {self.min_addresses}")
        if not 1 <= self.min_signals <= len(SIGNALS):
            raise ValueError(
                f"distributed min_signals must be 1..{len(SIGNALS)}, got {self.min_signals}"
            )


def empty_audit() -> pl.DataFrame:
    return pl.DataFrame(schema=AUDIT_SCHEMA)


def source_modes(sources: pl.DataFrame) -> dict[int, str]:
    """Each site's mode (`distributed_robots` of the registry; `on` where it says nothing)."""
    if "distributed_robots" not in sources.columns:
        return {s: DEFAULT_MODE for s in sources.get_column("site_id").to_list()}
    return {
        site: mode or DEFAULT_MODE
        for site, mode in sources.select("site_id", "distributed_robots").iter_rows()
    }


def _signals(rules: DistributedRules) -> dict[str, pl.Expr]:
    return {
        "short_visits": pl.col("actions_per_visit") <= rules.max_actions_per_visit,
        "sweep": pl.col("items_per_event") >= rules.min_items_per_event,
        "coverage": pl.col("item_share") >= rules.min_item_share,
        "flat_day": pl.col("active_hours") >= rules.min_active_hours,
        "downloads_without_views": pl.col("download_only_share") >= rules.min_download_only_share,
    }


def distributed_blocks(
    candidates: pl.LazyFrame, modes: dict[int, str], rules: DistributedRules
) -> tuple[pl.Series | None, pl.DataFrame]:
    """Which rows to reject (positions in `rows`, or None) and the audit of flagged blocks.

    `candidates`: the rows the per-visit rules kept, with `_row` (their position in the day's
    frame), `date`, `site_id`, `block_hash`, `wide_block_hash`, `ip_hash`, `visit_id`,
    `event_time`, `action` and `_item` (an integer per item). Cheap where nothing is odd:
    one group-by per width counts the addresses of each block, and only blocks with
    `min_addresses` are looked at further.
    """
    watched = [site for site, mode in modes.items() if mode in ("on", "report")]
    if not watched:
        return None, empty_audit()
    candidates = candidates.filter(pl.col("site_id").is_in(watched))
    # A visit's events share its address and blocks, and follow one another: the first of
    # each run of a visit's rows stands for the rest (a third of them).
    site, visit = pl.col("site_id"), pl.col("visit_id")
    first_of_visit = ((visit != visit.shift()) | (site != site.shift())).fill_null(True)
    visits = (
        candidates.select("site_id", "visit_id", *LEVELS.values(), "ip_hash")
        .filter(pl.col("ip_hash").is_not_null())
        .filter(first_of_visit)
        .select("site_id", *LEVELS.values(), "ip_hash")
        .collect()
    )
    gates = pl.collect_all(
        [_crowded(visits, column, rules.min_addresses) for column in LEVELS.values()]
    )
    if all(gate.is_empty() for gate in gates):
        return None, empty_audit()
    crowded_sites = pl.concat([g.get_column("site_id") for g in gates]).unique()
    rows = candidates.filter(pl.col("site_id").is_in(crowded_sites.implode())).collect()
    audits = []
    for (level, column), crowded in zip(LEVELS.items(), gates, strict=True):
        if not crowded.is_empty():
            audits.append(_judge(rows, crowded, level, column, rules))
    if not audits:
        return None, empty_audit()
    audit = pl.concat(audits)
    flagged = audit if rules.audit_all else audit.filter(pl.col("signals") >= rules.min_signals)
    if flagged.is_empty():
        return None, empty_audit()
    flagged = flagged.with_columns(
        pl.col("site_id").replace_strict(modes, default=DEFAULT_MODE).alias("mode")
    )
    rejecting = flagged.filter((pl.col("mode") == "on") & (pl.col("signals") >= rules.min_signals))
    hit = pl.lit(False)
    for level, column in LEVELS.items():
        keys = rejecting.filter(pl.col("level") == level).select(
            pl.struct("site_id", pl.col("block_hash").alias(column))
        )
        if not keys.is_empty():
            site = pl.col("site_id").cast(pl.Int32)
            hit = hit | pl.struct(site, column).is_in(keys.to_series().implode())
    rejected_rows = rows.lazy().filter(hit).select("_row", "site_id", *LEVELS.values()).collect()
    counts = []
    for level, column in LEVELS.items():
        counts.append(
            rejected_rows.group_by("site_id", column)
            .len()
            .select(
                "site_id",
                pl.lit(level).alias("level"),
                pl.col(column).alias("block_hash"),
                pl.col("len").alias("rejected_events"),
            )
        )
    audit = (
        flagged.drop("rejected_events")
        .join(
            pl.concat(counts),
            on=["site_id", "level", "block_hash"],
            how="left",
        )
        .with_columns(pl.col("rejected_events").fill_null(0))
        .select(list(AUDIT_SCHEMA))
        .cast(AUDIT_SCHEMA)
        .sort("site_id", "level", "block_hash")
    )
    positions = rejected_rows.get_column("_row") if rejected_rows.height else None
    return positions, audit


def _crowded(visits: pl.DataFrame, column: str, min_addresses: int) -> pl.LazyFrame:
    """The blocks (`site_id`, `column`) with at least `min_addresses` distinct addresses.

    A block has no more addresses than visits, so the distinct addresses are counted only
    in blocks with that many visits: most blocks of a day have a visit or two, and counting
    rows per block is about half the cost of hashing every address into a distinct set.
    """
    block = ["site_id", column]
    known = visits.lazy().filter(pl.col(column).is_not_null())
    busy = known.group_by(block).len().filter(pl.col("len") >= min_addresses).select(block)
    return (
        known.join(busy, on=block, how="semi")
        .group_by(block)
        .agg(pl.col("ip_hash").n_unique().alias("addresses"))
        .filter(pl.col("addresses") >= min_addresses)
    )


def _judge(
    rows: pl.DataFrame, crowded: pl.DataFrame, level: str, column: str, rules: DistributedRules
) -> pl.DataFrame:
    """The features and signals of each crowded block (`AUDIT_SCHEMA` less the mode)."""
    site_items = (
        rows.lazy()
        .filter(pl.col("site_id").is_in(crowded.get_column("site_id").unique().implode()))
        .group_by("site_id")
        .agg(pl.col("_item").n_unique().alias("site_items"))
    )
    block = ["site_id", column]
    viewed = (pl.col("action") == "view").any().over(*block, "ip_hash", "_item")
    features = (
        rows.lazy()
        .join(crowded.lazy().select(block), on=block, how="semi")
        .with_columns(
            ((pl.col("action") == "download") & ~viewed).alias("_download_only"),
        )
        .group_by(block)
        .agg(
            pl.col("date").first(),
            pl.len().cast(pl.UInt32).alias("events"),
            pl.col("visit_id").n_unique().cast(pl.UInt32).alias("visits"),
            pl.col("ip_hash").n_unique().cast(pl.UInt32).alias("addresses"),
            pl.col("_item").n_unique().cast(pl.UInt32).alias("items"),
            pl.col("event_time").dt.hour().n_unique().cast(pl.UInt32).alias("active_hours"),
            pl.col("_download_only").mean().alias("download_only_share"),
        )
        .join(site_items, on="site_id", how="left")
        .with_columns(
            (pl.col("events") / pl.col("visits")).alias("actions_per_visit"),
            (pl.col("items") / pl.col("events")).alias("items_per_event"),
            (pl.col("items") / pl.col("site_items")).alias("item_share"),
        )
    )
    signals = _signals(rules)
    fired = pl.concat_list(
        [pl.when(expr).then(pl.lit(name)) for name, expr in signals.items()]
    ).list.drop_nulls()
    return (
        features.with_columns(
            pl.sum_horizontal([e.cast(pl.UInt8) for e in signals.values()])
            .cast(pl.UInt8)
            .alias("signals"),
            fired.list.join(", ").alias("fired"),
            pl.lit(level).alias("level"),
            pl.col(column).alias("block_hash"),
            pl.lit(None, dtype=pl.String).alias("mode"),
            pl.lit(0, dtype=pl.UInt32).alias("rejected_events"),
        )
        .select(list(AUDIT_SCHEMA))
        .cast(AUDIT_SCHEMA)
        .collect()
    )
