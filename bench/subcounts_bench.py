"""Usage subcounts' cost on a large day: ~400,000 item rows (a 10M-event day's item deltas)
joined to the metadata of 1,000,000 items, broken down and cut to the top 20; then the
referrer subcount and the unique visitors of a 10M-event day's kept events (sessions) and
its visits (2,000,000, with Matomo's referrer columns).

    PYTHONPATH=. python bench/subcounts_bench.py [item_rows] [items] [events]

Prints wall and CPU seconds (this process, all threads) and the load average.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import sys
import time

import numpy as np
import polars as pl

from usage_stats.metadata.schema import ITEM_METADATA_SCHEMA
from usage_stats.pipeline.cleaning import SESSION_SCHEMA
from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS
from usage_stats.pipeline.referrer_subcounts import (
    referrer_subcounts,
    unique_visitors,
    visit_usage,
)
from usage_stats.pipeline.referrers import classify_visits
from usage_stats.pipeline.usage_subcounts import (
    OWNER_SCHEMA,
    full_subcounts,
    item_fields,
    top_n,
    total_mismatches,
)

DAY = dt.date(2026, 1, 10)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def metadata(items: int, rng: np.random.Generator) -> pl.DataFrame:
    keys = pl.Series([f"oai:repo:{i}" for i in range(items)])
    sources = pl.Series([f"repo::{i}" for i in rng.integers(0, 200, items)])
    return records_of(keys, sources, rng)


def records_of(keys: pl.Series, sources: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    """Harvested records (`ITEM_METADATA_SCHEMA`) of these item keys, each under its source:
    40 resource types, 4 access rights, 3 languages and none, 3,000 publishers, 3 of 5,000
    subjects each, a funder on every fifth, 800 affiliations, one file format. Also what
    `run_bench.py --subcounts` plants for the items of its generated day."""
    items = len(keys)

    def pick(values: list, n: int) -> pl.Series:
        # gathered by Polars: a NumPy array of strings and None is an object array, which
        # Polars reads as Object beyond its first values
        return pl.Series(values, dtype=pl.String).gather(rng.integers(0, len(values), n))

    subjects = [f"subject {i}" for i in range(5_000)]
    frame = pl.DataFrame(
        {
            "source_key": sources,
            "item_key": keys,
            "datestamp": pl.Series([dt.datetime(2025, 1, 1, tzinfo=dt.UTC)] * items),
            "resource_type": pick([f"coar:{i}" for i in range(40)], items),
            "access_rights": pick(["open", "embargoed", "restricted", "metadata"], items),
            "language": pick(["spa", "por", "eng", None], items),
            "publisher": pick([f"publisher {i}" for i in range(3_000)], items),
            "subjects": pl.Series(
                [[subjects[j] for j in row] for row in rng.integers(0, 5_000, (items, 3))]
            ),
            "funders": pl.Series(
                [[f"funder {rng.integers(0, 500)}"] if i % 5 == 0 else [] for i in range(items)]
            ),
            "affiliations": pl.Series([[f"inst {i % 800}"] for i in range(items)]),
            "formats": pl.Series([["application/pdf"]] * items),
        }
    )
    return (
        frame.with_columns(
            pl.lit(None, dtype=ITEM_METADATA_SCHEMA[c]).alias(c)
            for c in ITEM_METADATA_SCHEMA
            if c not in frame.columns
        )
        .select(list(ITEM_METADATA_SCHEMA))
        .cast(ITEM_METADATA_SCHEMA)
    )


def deltas(rows: int, items: int, rng: np.random.Generator) -> pl.DataFrame:
    item = rng.integers(0, int(items * 1.1), rows)  # ~10 % used items not harvested
    owner = (item % 200 + 1).astype(np.int32)
    frame = pl.DataFrame(
        {
            "date": [DAY] * rows,
            "scope": ["item"] * rows,
            "key": [f"oai:repo:{i}" for i in item],
            "site_id": owner,
            "level": pl.Series(np.array(["R", "N", "L"])[rng.integers(0, 3, rows)]),
            "owner_site_id": owner,
            "country": pl.Series(
                np.array(["BR", "AR", "MX", "CO", "CL", "PE", "US", "ES"])[rng.integers(0, 8, rows)]
            ),
            **{m: rng.integers(0, 30, rows) for m in METRICS},
        }
    )
    return frame.select(list(DELTA_SCHEMA)).cast(DELTA_SCHEMA)


def sessions_and_visits(
    events: int, items: int, rng: np.random.Generator
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A day's kept events (`SESSION_SCHEMA`: 5 events a visit, 200 sites, levels by site)
    and its raw visits (Matomo's columns, a referrer mix of every type and 5,000 hosts)."""
    n_visits = events // 5
    visit = np.sort(rng.integers(0, n_visits, events))
    site = (visit % 200 + 1).astype(np.int32)
    item = rng.integers(0, items, events)
    keys = pl.Series([f"oai:repo:{i}" for i in range(items)])
    start = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
    sessions = pl.DataFrame(
        {
            "date": [DAY] * events,
            "site_id": site,
            "level": pl.Series(np.array(["R", "N", "L"])[site % 3]),
            "session_id": visit.astype(np.uint64) * 7919,
            "visit_id": visit,
            "event_time": pl.Series([start] * events),
            "action": pl.Series(np.array(["view", "download", "view"])[rng.integers(0, 3, events)]),
            "item_id": keys.gather(item),
            "owner_site_id": (item % 200 + 1).astype(np.int32),
            "country": pl.Series(np.array(["BR", "AR", "MX", "CO"])[rng.integers(0, 4, events)]),
            "block_hash": visit.astype(np.uint64) * 104729,
        }
    ).cast(SESSION_SCHEMA)
    ids = np.arange(n_visits)
    kind = np.array([1, 1, 2, 2, 3, 3, 3, 6, 7, 0])[rng.integers(0, 10, n_visits)]
    hosts = np.array([f"https://www.site{i}.org/page?q=1" for i in range(5_000)])
    visits = pl.DataFrame(
        {
            "idsite": (ids % 200 + 1).astype(np.uint32),
            "idvisit": ids.astype(np.uint64),
            "idvisitor": rng.integers(0, n_visits // 2, n_visits).astype(np.uint64),
            "referer_type": kind.astype(np.uint8),
            "referer_name": pl.Series(
                np.array(["Google", "Bing", "Facebook", "boletin"])[kind % 4]
            ),
            "referer_url": pl.Series(hosts[rng.integers(0, len(hosts), n_visits)]),
        }
    )
    return sessions, visits


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    items = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    rng = np.random.default_rng(15)
    meta, usage = metadata(items, rng), deltas(rows, items, rng)
    owners = pl.DataFrame(
        [(i, ["BR", "AR", "MX", "CO"][i % 4]) for i in range(1, 201)],
        schema=OWNER_SCHEMA,
        orient="row",
    )
    for label, step in (("item_fields (once per run)", lambda: item_fields(meta)),):
        c0, t0 = cpu(), time.perf_counter()
        fields = step()
        print(f"{label}: {time.perf_counter() - t0:.2f} s wall, {cpu() - c0:.2f} s CPU")
    c0, t0 = cpu(), time.perf_counter()
    full = full_subcounts(usage, fields, owners, DAY)
    cut = top_n(full)
    wall, used = time.perf_counter() - t0, cpu() - c0
    print(f"subcounts of {rows:,} item rows × {items:,} items: {wall:.2f} s wall, {used:.2f} s CPU")
    print(f"rows: {full.height:,} untruncated, {cut.height:,} stored (top 20 + other)")
    print(
        f"mismatches: {total_mismatches(cut)}; load average {os.getloadavg()}; "
        f"cores {os.cpu_count()}"
    )
    events = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000_000
    if not events:
        return
    sessions, raw = sessions_and_visits(events, items, rng)
    c0, t0 = cpu(), time.perf_counter()
    visits, problems = classify_visits(raw)
    classified = cpu() - c0
    rows, cells = visit_usage(sessions, visits)
    referrers = referrer_subcounts(rows, owners, DAY)
    visitors = unique_visitors(cells, owners, DAY)
    cut = top_n(referrers)
    wall, used = time.perf_counter() - t0, cpu() - c0
    print(
        f"referrers + unique visitors of {events:,} events, {raw.height:,} visits: "
        f"{wall:.2f} s wall, {used:.2f} s CPU (classifying the visits: {classified:.2f} s CPU)"
    )
    print(
        f"referrer rows: {referrers.height:,} untruncated, {cut.height:,} stored; "
        f"visitor rows: {visitors.height:,}; problems {problems.as_dict()}; "
        f"load average {os.getloadavg()}"
    )


if __name__ == "__main__":
    main()
