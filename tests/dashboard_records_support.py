"""Harvested records, record statistics and usage subcounts planted beside usage item rows
(those of `bench/web_bench.py`), for the dashboard's record and breakdown panels: the browser
tests (`test_dashboard_records_browser.py`) and the benchmark (`bench/dashboard_bench.py`).

Each used item gets a record whose fields are a function of its position in the key order
(type, access status, language, year, a title, 0–3 subjects out of 30, one of 26 publishers,
a funder for every third, file formats), so every breakdown has more than 20 values, an
"unknown" share and an "(other)" remainder. Records appear on a datestamp spread over the
days; record statistics and usage subcounts are built by the pipeline's own functions
(`records.record_deltas`, `usage_subcounts.usage_subcounts`) and written day by day.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from usage_stats.metadata.schema import ITEM_METADATA_SCHEMA, METADATA_CHANGES_SCHEMA
from usage_stats.pipeline.metrics import METRICS
from usage_stats.pipeline.records import (
    RECORD_COUNTS,
    RECORD_KEYS,
    RECORD_SCHEMA,
    record_deltas,
    source_levels,
)
from usage_stats.pipeline.usage_subcounts import (
    empty_usage_subcounts,
    item_fields,
    owner_countries,
    usage_subcounts,
)

COAR_TYPE = "http://purl.org/coar/resource_type/"
COAR_ACCESS = "http://purl.org/coar/access_right/"
TYPES = [
    COAR_TYPE + "c_6501",  # journal article
    COAR_TYPE + "c_46ec",  # thesis
    COAR_TYPE + "c_3248",  # book part
    COAR_TYPE + "c_ddb1",  # dataset
    None,
]
ACCESS = [COAR_ACCESS + "c_abf2", COAR_ACCESS + "c_f1cf", COAR_ACCESS + "c_16ec", None]
LANGUAGES = ["spa", "por", "eng", "spa", "fra", None]
SUBJECTS = [f"Subject {chr(65 + i % 26)}{i // 26 or ''}" for i in range(30)]
PUBLISHERS = [f"Publisher {i:02d}" for i in range(26)]
HARVESTED = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
_ITEM_KEYS = ["scope", "key", "site_id", "level", "owner_site_id", "country"]
_RECORD_GROUP = [k for k in RECORD_KEYS if k != "date"]


@dataclass
class Planted:
    metadata: pl.DataFrame  # ITEM_METADATA_SCHEMA, one row per used item
    record_days: int
    subcount_snapshot_days: int
    seconds: float


def records_for(keys: Iterable[str], sources, first_day: dt.date, days: int) -> pl.DataFrame:
    """A harvested record (ITEM_METADATA_SCHEMA) for each item key `oai:repo<N>.example.org:
    <M>` of `web_bench.item_key`, harvested from repository N."""
    by_site = {s.site_id: s for s in sources}
    rows = []
    for i, key in enumerate(sorted(set(keys))):
        site = int(key.split(".example.org:")[0].removeprefix("oai:repo"))
        local = key.rsplit(":", 1)[1]
        source = by_site[site]
        stamp = dt.datetime.combine(
            first_day + dt.timedelta(days=(i * 7) % days), dt.time(12), dt.UTC
        )
        subjects = [SUBJECTS[(i * k) % len(SUBJECTS)] for k in range(1, i % 4 + 1)]
        row = dict.fromkeys(ITEM_METADATA_SCHEMA) | {
            "source_key": source.source_key,
            "site_id": site,
            "oai_identifier": key,
            "item_key": key,
            "datestamp": stamp,
            "deleted": False,
            "sets": [],
            "metadata_format": "oai_dc",
            "title": f"Record {local} of {source.name}",
            "creators": [],
            "publication_year": 1999 + i % 26,  # before any usage day: no publication
            "publication_date": dt.date(1999 + i % 26, 1, 1),  # basis event in range
            "resource_type": TYPES[i % len(TYPES)],
            "access_rights": ACCESS[i % len(ACCESS)],
            "language": LANGUAGES[i % len(LANGUAGES)],
            "subjects": list(dict.fromkeys(subjects)),
            "publisher": PUBLISHERS[(i * i) % len(PUBLISHERS)] if i % 9 else None,
            "funders": [f"Funder {i % 23}"] if i % 3 == 0 else [],
            "projects": [],
            "affiliations": [],
            "formats": ["application/pdf"] + (["text/html"] if i % 5 == 0 else []),
            "identifiers": [key],
            "item_keys": [key],
            "urls": [],
            "problems": [],
            "harvested_at": HARVESTED,
        }
        rows.append(row)
    return pl.DataFrame(rows, schema=ITEM_METADATA_SCHEMA, orient="row")


def _changes(metadata: pl.DataFrame) -> pl.DataFrame:
    return metadata.select(
        "source_key",
        "oai_identifier",
        "item_key",
        pl.lit("added").alias("change"),
        "datestamp",
        "harvested_at",
    ).cast(METADATA_CHANGES_SCHEMA)


def _next_records(previous: pl.DataFrame | None, delta: pl.DataFrame, day: dt.date):
    """snapshot(day) = snapshot(day − 1) + delta(day), every value ever counted kept."""
    parts = [delta] if previous is None else [previous, delta]
    return (
        pl.concat(parts)
        .group_by(_RECORD_GROUP)
        .agg(pl.col(c).sum() for c in RECORD_COUNTS)
        .with_columns(pl.lit(day, dtype=pl.Date).alias("date"))
        .select(list(RECORD_SCHEMA))
        .cast(RECORD_SCHEMA)
        .sort(list(RECORD_KEYS), nulls_last=True)
    )


def _next_items(previous: pl.DataFrame | None, delta: pl.DataFrame) -> pl.DataFrame:
    parts = [delta] if previous is None else [previous, delta]
    columns = delta.columns
    return (
        pl.concat(parts)
        .group_by(_ITEM_KEYS)
        .agg(pl.col("date").max(), *(pl.col(m).sum() for m in METRICS))
        .select(columns)
    )


def plant(
    store,
    items: pl.DataFrame,
    sources,
    first_day: dt.date,
    days: int,
    snapshot_every: int = 1,
    log=None,
) -> Planted:
    """Write records (`record_item_metadata`), record statistics and usage subcounts of the
    `items` rows (web_bench's item rows: date, scope "item", key, …, metrics) for `days` days
    from `first_day`. Usage-subcount snapshots are written every `snapshot_every` days and on
    the last (the API reads the last one on or before a range's end); record snapshots
    every day (the records chart reads each bucket's)."""
    started = time.perf_counter()
    used = items.get_column("key").unique().to_list()
    metadata = records_for(used, sources, first_day, days)
    store.record_item_metadata(metadata)
    levels = source_levels(sources)
    fields, owners = item_fields(metadata), owner_countries(sources)
    by_day = items.partition_by("date", as_dict=True)
    # A day's record events are those of the records stamped that day (no publication date
    # falls in range), so each day's deltas are counted from those records alone.
    stamped = metadata.with_columns(pl.col("datestamp").dt.date().alias("_day"))
    records_of = stamped.partition_by("_day", as_dict=True, include_key=False)
    record_snapshot, item_snapshot = None, None
    pending: list[pl.DataFrame] = []  # item rows since the last usage-subcount snapshot
    snapshots = 0
    for i in range(days):
        day = first_day + dt.timedelta(days=i)
        today = records_of.get((day,), metadata.clear())
        delta = record_deltas(today, _changes(today), levels, day)
        record_snapshot = _next_records(record_snapshot, delta, day)
        store.replace_record_day(day, delta, record_snapshot)
        used_today = by_day.get((day,))
        if used_today is None:
            used_today = items.clear()
        pending.append(used_today)
        held = empty_usage_subcounts()
        if (i + 1) % snapshot_every == 0 or i + 1 == days:
            item_snapshot = _next_items(item_snapshot, pl.concat(pending))
            pending = []
            held = usage_subcounts(item_snapshot, fields, owners, day)
            snapshots += 1
        store.replace_subcount_day(day, usage_subcounts(used_today, fields, owners, day), held)
        if log and ((i + 1) % 30 == 0 or i + 1 == days):
            log(f"  planted records and subcounts of {i + 1}/{days} days")
    return Planted(metadata, days, snapshots, round(time.perf_counter() - started, 1))
