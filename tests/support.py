"""Shared helpers for tests: hand-made canonical frames and manifest comparisons."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from usage_stats.admin.sources import CsvSourceRegistry, Source, sources_frame
from usage_stats.pipeline.canonical import CANONICAL_SCHEMA, read_canonical_day
from usage_stats.pipeline.cleaning import clean_events
from usage_stats.pipeline.metrics import METRICS, daily_deltas
from usage_stats.pipeline.snapshots import next_snapshot
from usage_stats.settings import Settings
from usage_stats.storage.open import open_lake

DAY = dt.date(2026, 1, 1)
T0 = dt.datetime(2026, 1, 1, 10, 1, 0, tzinfo=dt.UTC)

TEST_SOURCES = [
    Source(1, "opendoar::1", "Repo one", "R", "CR", "oai:www.kerwa.ucr.ac.cr:", 1, 4, 5),
    Source(2, "opendoar::2", "Repo two", "R", "AR", "oai:repo2.example.org:", 1, 4, 5),
    Source(4, "national::CR", "National node", "N", "CR", None, 1, None, 5),
    Source(5, "regional::LA", "Portal", "L", None, None, 6),
]


def registry() -> pl.DataFrame:
    return sources_frame(TEST_SOURCES)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


_OWN_COOKIE = object()
_AS_STRINGS = ("visitor_id", "action", "visitor_country", "user_agent")


def events(*rows: dict) -> pl.DataFrame:
    """Canonical events with sensible defaults: a small human visit on site 1."""
    defaults = {
        "date": DAY,
        "site_id": 1,
        "visit_id": 1,
        "visitor_id": _OWN_COOKIE,
        "user_hash": None,
        "event_time": T0,
        "action_type": 1,
        "action": "view",
        "url": "https://www.kerwa.ucr.ac.cr/items/1",
        "raw_identifier": "oai:www.kerwa.ucr.ac.cr:10669/578",
        "visitor_country": "CR",
        "user_agent": None,
        "ip_hash": 7,
        "visit_first_action_time": None,
        "visit_last_action_time": None,
        "visit_total_actions": None,
    }
    full = [{**defaults, **row} for row in rows]
    for row in full:
        if row["visitor_id"] is _OWN_COOKIE:  # each visit its own visitor unless said otherwise
            row["visitor_id"] = f"{row['site_id']}-{row['visit_id']}"
    # Hand-made frames spell the compact columns as strings; cleaning takes either.
    schema = {**CANONICAL_SCHEMA, **dict.fromkeys(_AS_STRINGS, pl.String())}
    frame = pl.DataFrame(full, schema=schema, orient="row")
    per_visit = ["site_id", "visit_id"]
    return frame.with_columns(
        pl.col("visit_first_action_time").fill_null(pl.col("event_time").min().over(per_visit)),
        pl.col("visit_last_action_time").fill_null(pl.col("event_time").max().over(per_visit)),
        pl.col("visit_total_actions").fill_null(pl.len().over(per_visit).cast(pl.Int32)),
    )


def item_metrics(deltas: pl.DataFrame) -> dict[tuple, tuple]:
    """Item-scope rows keyed like the manifest: (date, site, item, country) → metrics."""
    items = deltas.filter(pl.col("scope") == "item")
    return {
        (row["date"].isoformat(), row["site_id"], row["key"], row["country"]): tuple(
            row[m] for m in METRICS
        )
        for row in items.iter_rows(named=True)
    }


def manifest_items(manifest: dict, days: list[str] | None = None) -> dict[tuple, tuple]:
    return {
        (i["date"], i["site_id"], i["item_id"], i["country"]): tuple(i[m] for m in METRICS)
        for i in manifest["items"]
        if days is None or i["date"] in days
    }


def day_tables(data, days: int = 3) -> list[tuple[dt.date, pl.DataFrame, pl.DataFrame]]:
    """Deltas and snapshots of the three generated days, computed without Dagster."""
    sources = CsvSourceRegistry(Path(data.settings.sources_file)).sources()
    slots = {s.site_id: s.custom_var_slot for s in sources}
    lake = open_lake(data.settings.lake_url)
    previous = None
    tables = []
    for day in [DAY + dt.timedelta(days=i) for i in range(days)]:
        events = read_canonical_day(lake, day, slots, "salt").events
        deltas = daily_deltas(clean_events(events, sources_frame(sources)).sessions)
        previous = next_snapshot(previous, deltas, day)
        tables.append((day, deltas, previous))
    return tables


def settings_for(data_dir: Path) -> Settings:
    return Settings.from_env({"USAGE_STATS_DATA_DIR": str(data_dir)})
