"""Rows per second and peak memory of the Matomo export (MariaDB → lake).

Generates one synthetic day (E events over S sites), loads it into a fresh database of the
local MariaDB (`scripts/services.sh start mariadb`) with Matomo's log tables, then exports
every site of that day to a local lake exactly as the `matomo_export` asset does, in a fresh
subprocess so its peak RSS is its own. Loading is timed but is not part of the export.

    eval "$(scripts/services.sh env)"
    .venv/bin/python bench/export_bench.py --events 1000000 --sites 22
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_bench import RESULTS_DIR, MiB, RssSampler  # noqa: E402

DAY = dt.date(2026, 1, 1)
MATOMO_URL = os.environ.get(
    "USAGE_STATS_MATOMO_TEST_URL", "mysql+pymysql://matomo:matomo@127.0.0.1:3307/matomo"
)


def prepare(events: int, sites: int, workdir: Path) -> dict:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from usage_stats.demo.synthetic import SyntheticConfig, write_synthetic
    from usage_stats.demo.synthetic_matomo import load_lake_into_matomo
    from usage_stats.storage.open import open_lake

    config = SyntheticConfig(sites=sites, days=1, events_per_day=events, start=DAY)
    started = time.perf_counter()
    result = write_synthetic(
        config, str(workdir / "source"), workdir / "sources.csv", with_manifest=False
    )
    generated = time.perf_counter() - started
    name = f"matomo_bench_{uuid.uuid4().hex[:8]}"
    with create_engine(MATOMO_URL).begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}`"))
    url = make_url(MATOMO_URL).set(database=name).render_as_string(hide_password=False)
    started = time.perf_counter()
    counts = load_lake_into_matomo(
        create_engine(url), "matomo_", open_lake(str(workdir / "source"))
    )
    loaded = time.perf_counter() - started
    return {
        "database": name,
        "url": url,
        "events_generated": sum(result.events_written.values()),
        "generate_seconds": generated,
        "load_seconds": loaded,
        "load_rows_per_second": sum(counts.values()) / loaded,
        "loaded": counts,
    }


def export(url: str, sites: list[int], workdir: Path, chunk_rows: int) -> dict:
    from usage_stats.ingest.matomo import MatomoTables, export_day, matomo_engine
    from usage_stats.storage.open import open_lake

    tables = MatomoTables(matomo_engine(url), "matomo_")
    lake = open_lake(str(workdir / "exported"))
    with RssSampler() as sampler:
        timing: dict = {}
        with sampler.stage(timing):
            results = export_day(tables, lake, sites, DAY, chunk_rows)
    events = sum(r.events for r in results)
    visits = sum(r.visits for r in results)
    return {
        "events": events,
        "visits": visits,
        "seconds": timing["seconds"],
        "rows_per_second": (events + visits) / timing["seconds"],
        "events_per_second": events / timing["seconds"],
        "peak_rss_mib": timing["peak_rss_mib"],
        "process_peak_rss_mib": sampler.peak / MiB,
        "chunk_rows": chunk_rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=22)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(
            json.dumps(export(spec["url"], spec["sites"], Path(spec["workdir"]), args.chunk_rows))
        )
        return 0
    from sqlalchemy import create_engine, text

    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        workdir = Path(tmp)
        prepared = prepare(args.events, args.sites, workdir)
        sites = list(range(1, args.sites + 1))
        child = subprocess.run(
            [sys.executable, __file__, "--chunk-rows", str(args.chunk_rows), "--child",
             json.dumps({"url": prepared["url"], "sites": sites, "workdir": str(workdir)})],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(child.stdout.strip().splitlines()[-1])
        with create_engine(prepared["url"]).begin() as conn:
            conn.execute(text(f"DROP DATABASE `{prepared['database']}`"))
    prepared.pop("url")
    report = {"prepared": prepared, "export": result, "events_requested": args.events}
    print(
        f"export of one day: {result['events']:,} events + {result['visits']:,} visits from "
        f"{args.sites} sites in {result['seconds']:.1f} s = {result['rows_per_second']:,.0f} "
        f"rows/s ({result['events_per_second']:,.0f} events/s); peak RSS "
        f"{result['peak_rss_mib']:.0f} MiB (chunks of {args.chunk_rows:,} rows)"
    )
    print(
        f"(setup, not measured: generated {prepared['events_generated']:,} events in "
        f"{prepared['generate_seconds']:.1f} s, loaded into MariaDB at "
        f"{prepared['load_rows_per_second']:,.0f} rows/s)"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"export-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
