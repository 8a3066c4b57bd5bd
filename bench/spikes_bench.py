"""Usage spikes' cost on a day of `events` kept events (default 1,000,000: sessions with a
`block_hash`, 50,000 items of 200 repositories, 20,000 network blocks, 10% of the day a
planted crawler on 40 rarely used items from 2 blocks) against 28 stored days of deltas in a DuckDB
store: what the `usage_spikes` asset does for a day (read the day's sessions, count origins,
read the candidates' history from the store, flag, write the warehouse table and the store).

    PYTHONPATH=. python bench/spikes_bench.py [events]

Prints the setup time apart, then wall and CPU seconds of the asset's work, the candidates,
the flags and the load average.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from assets.spikes import spikes_of_day
from usage_stats.pipeline.cleaning import SESSION_SCHEMA
from usage_stats.pipeline.metrics import DELTA_SCHEMA
from usage_stats.pipeline.spikes import SpikeRules
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.open import open_lake
from usage_stats.storage.warehouse import Warehouse

DAY = dt.date(2026, 2, 1)
ITEMS, OWNERS, BLOCKS, COUNTRIES = 50_000, 200, 20_000, ["BR", "AR", "MX", "CO", "CL", "PE"]


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def item_keys(items: np.ndarray) -> pl.Series:
    """`oai:repo<owner>:<n>` of each item number, built by Polars (not a Python loop)."""
    n = pl.Series("n", items)
    return pl.select(pl.format("oai:repo{}:{}", n % OWNERS, n)).to_series()


def sessions(events: int, rng: np.random.Generator) -> pl.DataFrame:
    """A day's kept events: Zipf-like item use; the last 10% a crawler on 40 items of the
    long tail (30,000..30,039), from 2 blocks."""
    crawl = events // 10
    human = events - crawl
    items = np.minimum(rng.zipf(1.3, human) - 1, ITEMS - 1)
    items = np.concatenate([items, rng.integers(30_000, 30_040, crawl)])
    blocks = np.concatenate(
        [rng.integers(0, BLOCKS, human), rng.integers(BLOCKS, BLOCKS + 2, crawl)]
    )
    countries = np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), events)]
    return pl.DataFrame(
        {
            "date": [DAY] * events,
            "site_id": (items % OWNERS + 1).astype(np.int32),
            "level": ["R"] * events,
            "session_id": rng.integers(0, 2**63, events).astype(np.uint64),
            "visit_id": np.arange(events),
            "event_time": [dt.datetime(2026, 2, 1, 12, tzinfo=dt.UTC)] * events,
            "action": np.where(rng.random(events) < 0.7, "view", "download"),
            "item_id": item_keys(items),
            "owner_site_id": (items % OWNERS + 1).astype(np.int32),
            "country": countries,
            "block_hash": blocks.astype(np.uint64),
        }
    ).cast(SESSION_SCHEMA | {"block_hash": pl.UInt64()})


def history_day(day: dt.date, events: int, rng: np.random.Generator) -> pl.DataFrame:
    """A stored day of item and source deltas (per country) of `events` human events."""
    items = np.minimum(rng.zipf(1.3, events) - 1, ITEMS - 1)
    frame = pl.DataFrame(
        {
            "key": item_keys(items),
            "owner_site_id": (items % OWNERS + 1).astype(np.int32),
            "country": np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), events)],
        }
    )
    item_rows = frame.group_by("key", "owner_site_id", "country").agg(
        pl.len().cast(pl.Int64).alias("total_item_investigations")
    )
    source_rows = (
        item_rows.group_by("owner_site_id", "country")
        .agg(pl.col("total_item_investigations").sum())
        .with_columns(pl.col("owner_site_id").cast(pl.String).alias("key"))
    )
    parts = [
        item_rows.with_columns(scope=pl.lit("item")),
        source_rows.with_columns(scope=pl.lit("source")),
    ]
    rows = pl.concat(
        [
            p.select("scope", "key", "owner_site_id", "country", "total_item_investigations")
            for p in parts
        ]
    )
    return (
        rows.with_columns(
            pl.lit(day).alias("date"),
            pl.col("owner_site_id").alias("site_id"),
            pl.lit("R").alias("level"),
            *(
                pl.lit(0).alias(m)
                for m in DELTA_SCHEMA
                if m not in rows.columns and m not in ("date", "site_id", "level")
            ),
        )
        .select(list(DELTA_SCHEMA))
        .cast(DELTA_SCHEMA)
    )


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rng = np.random.default_rng(18)
    rules = SpikeRules()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        store = DuckDBStatsStore(Path(tmp) / "stats.duckdb")
        for n in range(rules.baseline_days, 0, -1):
            day = DAY - dt.timedelta(days=n)
            deltas = history_day(day, int(events * 0.9), rng)
            store.replace_day(day, deltas, deltas)
        warehouse = Warehouse(open_lake(str(Path(tmp) / "warehouse")))
        warehouse.write("sessions", DAY, sessions(events, rng))
        print(
            f"setup: {rules.baseline_days} stored days, {events:,} events "
            f"in {time.monotonic() - started:.1f} s"
        )

        wall, used = time.monotonic(), cpu()
        flags = spikes_of_day(warehouse, store, DAY, rules)
        store.replace_spike_day(DAY, flags)
        warehouse.write("usage_spikes", DAY, flags)
        wall, used = time.monotonic() - wall, cpu() - used
    by = dict(flags.group_by("scope").len().iter_rows())
    print(f"usage_spikes of a {events:,}-event day: {wall:.2f} s wall, {used:.2f} s CPU")
    print(
        f"flagged: {flags.height} ({by}); "
        f"crawled items flagged: {flags.filter(pl.col('scope') == 'item').height}/40"
    )
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
