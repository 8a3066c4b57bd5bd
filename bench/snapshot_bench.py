"""The usage snapshot of a long history: what `usage_snapshots` and the snapshot's part of
`stats_index` cost for one day when the previous snapshot holds K keys (every key ever used:
6.3M after 30 days of 10M-event days of `run_bench.py`), against a day of D delta rows.

    PYTHONPATH=. .venv/bin/python bench/snapshot_bench.py --keys 400000 6300000 15000000

For each K: a previous snapshot of K keys is written to a local warehouse (not timed), then
a day of D deltas (half of them keys of the previous snapshot, half new ones; a seventh with
no known owner, some owners changed) is stored, and the steps of the asset run as it runs
them, each timed (wall and CPU seconds of this process): read the previous snapshot, read
the day's deltas, `next_snapshot`, write the day's snapshot, read it back, the chain check
(`snapshot_mismatches`); then `stats_index`'s share: read the day's snapshot and
`stored_snapshot` (the rollups and the items used since the store's previous day). Peak RSS
and the load average are printed; results go to bench/results/snapshot-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from usage_stats.pipeline.metrics import METRICS
from usage_stats.pipeline.snapshots import (
    SNAPSHOT_SCHEMA,
    next_snapshot,
    pending_deltas,
    snapshot_mismatches,
    stored_snapshot,
)
from usage_stats.storage.lake import LocalLake
from usage_stats.storage.warehouse import Warehouse

COUNTRIES = np.array(["BR", "AR", "CO", "MX", "CL", "PE", "EC", "UY", "--", "US", "ES", "PT"])
YESTERDAY, DAY = dt.date(2026, 1, 30), dt.date(2026, 1, 31)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rows(first: int, count: int, day: dt.date, rng: np.random.Generator) -> pl.DataFrame:
    """Item rows numbered first.. of 200 repositories, 12 visitor countries per item; every
    hundredth row a repository rollup (scope source, key its site)."""
    n = np.arange(first, first + count)
    site = (n // 12 % 200).astype(np.int32)
    rollup = n % 100 == 0
    return pl.DataFrame(
        {
            "date": [day] * count,
            "scope": np.where(rollup, "source", "item"),
            "key": np.where(
                rollup,
                [f"{s}:{i}" for s, i in zip(site, n, strict=True)],
                [f"oai:repositorio{s}.edu:{i // 12}" for s, i in zip(site, n, strict=True)],
            ),
            "site_id": site,
            "level": np.where(n % 3 == 0, "national", "repository"),
            "owner_site_id": site,
            "country": COUNTRIES[n % len(COUNTRIES)],
            **{m: rng.integers(0, 6, count) for m in METRICS},
        }
    ).cast(SNAPSHOT_SCHEMA)


def measure(keys: int, day_rows: int, workdir: Path, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    root = Path(tempfile.mkdtemp(prefix="snapshot-bench-", dir=workdir))
    warehouse = Warehouse(LocalLake(root))
    try:
        warehouse.write("usage_snapshots", YESTERDAY, rows(0, keys, YESTERDAY, rng))
        old = day_rows // 2
        used = rng.choice(keys, size=min(old, keys), replace=False)
        delta = pl.concat(
            [
                rows(0, keys, DAY, rng)[np.sort(used)],
                rows(keys, day_rows - len(used), DAY, rng),
            ]
        ).with_columns(
            pl.when(pl.int_range(pl.len()) % 7 == 0)
            .then(None)
            .when(pl.int_range(pl.len()) % 11 == 0)
            .then(pl.col("owner_site_id") + 1)
            .otherwise(pl.col("owner_site_id"))
            .alias("owner_site_id")
        )
        warehouse.write("item_daily_deltas", DAY, delta)
        steps: dict[str, dict[str, float]] = {}

        def step(name, call):
            wall, used_cpu = time.perf_counter(), cpu()
            result = call()
            steps[name] = {
                "seconds": round(time.perf_counter() - wall, 3),
                "cpu": round(cpu() - used_cpu, 3),
            }
            return result

        previous = step("read previous", lambda: warehouse.read("usage_snapshots", YESTERDAY))
        today = step("read deltas", lambda: pending_deltas(warehouse, YESTERDAY, DAY))
        snapshot = step("next_snapshot", lambda: next_snapshot(previous, today, DAY))
        step("write", lambda: warehouse.write("usage_snapshots", DAY, snapshot))
        written = step("read back", lambda: warehouse.read("usage_snapshots", DAY))
        bad = step("chain check", lambda: snapshot_mismatches(written, previous, today))
        asset = sum(s["seconds"] for s in steps.values())
        asset_cpu = sum(s["cpu"] for s in steps.values())
        read = step("stats_index: read", lambda: warehouse.read("usage_snapshots", DAY))
        kept = step("stats_index: stored_snapshot", lambda: stored_snapshot(read, today))
        return {
            "keys": keys,
            "day_rows": day_rows,
            "snapshot_rows": snapshot.height,
            "stored_rows": kept.height,
            "mismatches": bad,
            "steps": steps,
            "usage_snapshots_seconds": round(asset, 3),
            "usage_snapshots_cpu": round(asset_cpu, 3),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[400_000, 6_300_000])
    parser.add_argument("--day-rows", type=int, default=400_000)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(f"load average before: {load_before}")
    results = []
    for keys in args.keys:
        result = measure(keys, args.day_rows, args.workdir, args.seed)
        results.append(result)
        print(
            f"\n{keys:,} keys before the day, {args.day_rows:,} delta rows → "
            f"{result['snapshot_rows']:,} snapshot rows, {result['stored_rows']:,} kept by "
            f"stats_index, {result['mismatches']} mismatches"
        )
        for name, figures in result["steps"].items():
            print(f"  {name:<30} {figures['seconds']:7.2f} s  {figures['cpu']:7.2f} CPU s")
        print(
            f"  {'usage_snapshots (the asset)':<30} {result['usage_snapshots_seconds']:7.2f} s  "
            f"{result['usage_snapshots_cpu']:7.2f} CPU s"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_after = os.getloadavg()
    print(f"\npeak RSS {peak:,.0f} MiB; load average after: {load_after}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    (out / f"snapshot-{stamp}.json").write_text(
        json.dumps(
            {
                "results": results,
                "peak_rss_mib": round(peak),
                "load_before": load_before,
                "load_after": load_after,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
