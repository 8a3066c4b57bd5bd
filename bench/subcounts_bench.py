"""Usage subcounts' cost on a large day: ~400,000 item rows (a 10M-event day's item deltas)
joined to the metadata of 1,000,000 items, broken down and cut to the top 20.

    PYTHONPATH=. python bench/subcounts_bench.py [item_rows] [items]

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
from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS
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
    pick = lambda values, n: pl.Series(np.array(values)[rng.integers(0, len(values), n)])  # noqa: E731
    subjects = [f"subject {i}" for i in range(5_000)]
    frame = pl.DataFrame(
        {
            "source_key": pick([f"repo::{i}" for i in range(200)], items),
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


if __name__ == "__main__":
    main()
