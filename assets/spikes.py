"""`usage_spikes`: days on which an item or a repository was used far above its baseline,
mostly from a few network blocks or countries (COUNTER R5.1: look for unusual usage).
Flagged for review, never dropped: a warehouse table, the stats store (the dashboard's note on
the day), the asset's metadata and a warning asset check. Rules: `usage_stats.pipeline.spikes`.
"""

import datetime as dt
from dataclasses import asdict

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.days import each_day, write_day
from assets.metadata import markdown_table, schema_metadata
from assets.partitions import DAILY_USAGE, WAREHOUSE_TABLE
from resources import SpikeSettings, StatsStoreResource, WarehouseResource
from usage_stats.pipeline.spikes import (
    SPIKE_METRIC,
    SPIKE_SCHEMA,
    SPIKE_SCOPES,
    SpikeRules,
    day_origins,
    day_usage,
    flag_spikes,
    over_baseline,
    unit_column,
)
from usage_stats.storage.store import RowFilter, StatsStore
from usage_stats.storage.warehouse import Warehouse

NO_SPIKES = "no_usage_spikes"


def candidates_of(usage: pl.DataFrame, rules: SpikeRules) -> pl.DataFrame:
    """The keys used at least `min_count` times (`day_usage` rows)."""
    return usage.filter(pl.col("usage") >= rules.min_count)


def spikes_of_day(
    store: Warehouse, target: StatsStore, day: dt.date, rules: SpikeRules
) -> pl.DataFrame:
    """The day's flags: its kept events' origins against the stored deltas of the
    `baseline_days` before it (only the candidates' rows are read).

    Cheapest first, as nearly every day has no spike: with fewer stored days than a baseline
    needs nothing of the day is read; then a row per key from three columns of `sessions`;
    the origins only of the keys above their baseline."""
    unit = unit_column(store.schema("sessions", day))  # (and the day must be materialised)
    start, end = day - dt.timedelta(days=rules.baseline_days), day - dt.timedelta(days=1)
    stored = [d for d in target.days() if start <= d <= end]
    if len(stored) < rules.min_history_days:
        return pl.DataFrame(schema=SPIKE_SCHEMA)
    columns = ["action", "item_id", "owner_site_id"]
    wanted = candidates_of(day_usage(store.parts("sessions", day, True, columns)), rules)
    history = []
    for scope in SPIKE_SCOPES:
        keys = tuple(wanted.filter(pl.col("scope") == scope).get_column("key"))
        if not keys or not stored:
            continue
        where = (RowFilter(keys=keys),)
        sums = target.sums_where(scope, start, end, where, ("date", "key", "country"))
        history.append(
            sums.select(
                pl.lit(scope).alias("scope"),
                pl.col("key").cast(pl.String),
                "date",
                pl.col("country").cast(pl.String),
                pl.col(SPIKE_METRIC).cast(pl.Int64).alias("usage"),
            )
        )
    schema = {
        "scope": pl.String(),
        "key": pl.String(),
        "date": pl.Date(),
        "country": pl.String(),
        "usage": pl.Int64(),
    }
    past = pl.concat(history) if history else pl.DataFrame(schema=schema)
    above = over_baseline(wanted, past, stored, rules)
    if above.is_empty():
        return pl.DataFrame(schema=SPIKE_SCHEMA)
    parts = store.parts("sessions", day, True, [*columns, unit, "country"])
    origins = day_origins(parts, unit, rules.min_count, only=above)
    return flag_spikes(day, origins, past, stored, rules, unit)


@asset(
    deps=["sessions", "stats_index"],
    **DAILY_USAGE,
    kinds=WAREHOUSE_TABLE,  # and the configured store's: assets.described_assets
    pool="stats_store",
    check_specs=[
        AssetCheckSpec(
            NO_SPIKES,
            asset="usage_spikes",
            blocking=False,
            description="Warns when a day's usage of an item or repository was flagged as a "
            "spike (for review: nothing is dropped).",
        )
    ],
    description="Items and repositories whose usage (COUNTER investigations) on a day is far "
    "above their stored baseline, mostly from few network blocks or countries: flagged for "
    "review, stored for the dashboard, never dropped.",
)
def usage_spikes(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    stats_store: StatsStoreResource,
    spike_settings: SpikeSettings,
):
    store = warehouse.get_warehouse()
    target = stats_store.get_store()
    rules = spike_settings.rules()
    flagged: dict[str, int] = {}
    frames = []
    for day in each_day(context, "usage_spikes"):
        spikes = spikes_of_day(store, target, day, rules)
        target.replace_spike_day(day, spikes)
        write_day(context, store, "usage_spikes", day, spikes, flagged=spikes.height)
        flagged[day.isoformat()] = spikes.height
        frames.append(spikes)
        if spikes.height:
            context.log.warning(f"usage_spikes {day}: {spikes.height} flagged for review")
    every = pl.concat(frames) if frames else pl.DataFrame(schema=SPIKE_SCHEMA)
    shown = every.sort("usage", descending=True).select(
        "date",
        "scope",
        "key",
        "usage",
        pl.col("baseline").round(1),
        pl.col("factor").round(1),
        "top_blocks_share",
        "top_countries",
        "top_countries_share",
        "reason",
    )
    yield MaterializeResult(
        metadata={
            **schema_metadata(dict(SPIKE_SCHEMA)),
            "flagged": int(every.height),
            "spikes": markdown_table(shown, limit=50),
            "rules": MetadataValue.json(asdict(rules)),
        }
    )
    yield AssetCheckResult(
        check_name=NO_SPIKES,
        passed=not every.height,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "flagged_per_day": MetadataValue.json(flagged),
            "spikes": markdown_table(shown, limit=50),
        },
    )
