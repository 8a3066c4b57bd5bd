"""Documents per second of `stats_index` for one day into the local OpenSearch.

Generates synthetic days (E events over S sites each), computes their deltas, snapshots and
item titles with the library (the same calls as the assets; not the measure), then times what
`stats_index` does for one day with the OpenSearch store, in a fresh index set of the local
OpenSearch (`scripts/services.sh start opensearch`): `replace_day` (delta, snapshot and LA
Referencia compatibility documents, monthly by default: rebuilt from the month's item deltas,
the other days' summed from the warehouse's `item_daily_deltas` as the asset does, timed, or
read back from the store with `--read-back`, as before 2026-12-04; `--compat-granularity day`),
`row_count`, `record_titles` and `optimize`. The figure
is the documents stored (delta + snapshot + the compatibility documents of the period + titles)
over that wall time. The snapshot documents are those stats_index stores: the day's whole
snapshot on the first day, then its rollups and the items used that day (`stored_snapshot`).

A day later in a month costs more, since its monthly compatibility documents are rebuilt from
every stored day of the month: `--month-days K` first loads the K earlier days of the same
month (timed apart, not part of the figure) and then times day K+1. `--cache DIR` keeps the
prepared frames so that runs of two trees in one sitting skip the generation.

    eval "$(scripts/services.sh env)"
    .venv/bin/python bench/index_bench.py --events 1000000 --sites 100 --month-days 9
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_bench import RESULTS_DIR, MiB, RssSampler  # noqa: E402

DAY = dt.date(2026, 1, 1)
OPENSEARCH_URL = os.environ.get("USAGE_STATS_OPENSEARCH_URL", "http://127.0.0.1:9200")


def prepare(events: int, sites: int, days: int, folder: Path) -> float:
    """Write each day's deltas, snapshot and titles to `folder` (once); the seconds it took."""
    from usage_stats.admin.sources import CsvSourceRegistry, sources_frame
    from usage_stats.demo.synthetic import SyntheticConfig, write_synthetic
    from usage_stats.pipeline.canonical import read_canonical_day
    from usage_stats.pipeline.cleaning import clean_events
    from usage_stats.pipeline.metrics import daily_deltas
    from usage_stats.pipeline.snapshots import next_snapshot
    from usage_stats.pipeline.titles import latest_item_titles
    from usage_stats.storage.open import open_lake

    done = folder / "prepared.json"
    if done.exists():
        return 0.0
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="index-bench-") as tmp:
        lake_url = str(Path(tmp) / "lake")
        config = SyntheticConfig(sites=sites, days=days, events_per_day=events, start=DAY)
        write_synthetic(config, lake_url, folder / "sources.csv", with_manifest=False)
        sources = CsvSourceRegistry(folder / "sources.csv").sources()
        slots = {s.site_id: s.custom_var_slot for s in sources}
        snapshot = None
        counts = []
        for n in range(days):
            day = DAY + dt.timedelta(days=n)
            read = read_canonical_day(open_lake(lake_url), day, slots, "salt")
            deltas = daily_deltas(clean_events(read.events, sources_frame(sources)).sessions)
            snapshot = next_snapshot(snapshot, deltas, day)
            titles = latest_item_titles(read.titles, sources)
            deltas.write_parquet(folder / f"{day}-deltas.parquet")
            snapshot.write_parquet(folder / f"{day}-snapshot.parquet")
            titles.write_parquet(folder / f"{day}-titles.parquet")
            counts.append(read.events.height)
    done.write_text(json.dumps({"events": counts}))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="documents per bulk request (store default)"
    )
    parser.add_argument("--compat-granularity", choices=("day", "month"), default="month")
    parser.add_argument(
        "--month-days", type=int, default=0, help="earlier days of the month loaded first"
    )
    parser.add_argument("--cache", type=Path, default=None, help="keep prepared frames here")
    parser.add_argument(
        "--read-back",
        action="store_true",
        help="the store reads the month's other days back (no warehouse sums)",
    )
    args = parser.parse_args()
    if not 0 <= args.month_days <= 27:
        parser.error("--month-days must be 0–27 (the timed day stays in January)")

    import polars as pl

    from usage_stats.admin.sources import CsvSourceRegistry
    from usage_stats.pipeline.snapshots import stored_snapshot
    from usage_stats.storage import lareferencia_index
    from usage_stats.storage.lake import LocalLake
    from usage_stats.storage.opensearch import OpenSearchStatsStore
    from usage_stats.storage.warehouse import Warehouse

    days = args.month_days + 1
    with tempfile.TemporaryDirectory(prefix="index-bench-") as tmp, RssSampler() as sampler:
        cache = args.cache or Path(tmp)
        folder = cache / f"e{args.events}_s{args.sites}_d{days}"
        prepared = prepare(args.events, args.sites, days, folder)
        sources = CsvSourceRegistry(folder / "sources.csv").sources()
        n_events = json.loads((folder / "prepared.json").read_text())["events"][-1]

        def frames(day: dt.date) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
            """The day's deltas, the snapshot rows stats_index stores (sparse after the
            first day: `stored_snapshot`) and titles."""
            deltas, snapshot, titles = (
                pl.read_parquet(folder / f"{day}-{name}.parquet")
                for name in ("deltas", "snapshot", "titles")
            )
            stored = stored_snapshot(snapshot, deltas if day > DAY else None)
            return deltas, stored, titles

        prefix = f"bench{uuid.uuid4().hex[:8]}"
        options = {"batch_size": args.batch_size} if args.batch_size else {}
        store = OpenSearchStatsStore(
            OPENSEARCH_URL,
            prefix=prefix,
            compat_prefix=f"{prefix}-compat",
            compat_granularity=args.compat_granularity,
            sources=sources,
            **options,
        )
        day = DAY + dt.timedelta(days=args.month_days)
        # the warehouse's item_daily_deltas, as the earlier stage of each day wrote them
        warehouse = Warehouse(LocalLake(Path(tmp) / "warehouse"))
        for n in range(days):
            each = DAY + dt.timedelta(days=n)
            warehouse.write("item_daily_deltas", each, frames(each)[0])

        def period_items(day: dt.date, stored: list[dt.date]) -> pl.DataFrame | None:
            """What the stats_index asset gives `replace_day` (None: read back)."""
            period = store.compat_period(day)
            if period is None or args.read_back:
                return None
            return lareferencia_index.warehouse_period_items(warehouse, period, stored, day)

        earlier: dict = {}
        timing: dict = {}
        steps: dict[str, float] = {}
        stored_days: list[dt.date] = []
        try:
            with sampler.stage(earlier):
                for n in range(args.month_days):
                    before = DAY + dt.timedelta(days=n)
                    deltas, snapshot, titles = frames(before)
                    items = period_items(before, stored_days)
                    store.replace_day(before, deltas, snapshot, period_items=items)
                    stored_days.append(before)
                    store.row_count("usage_deltas", before)
                    store.record_titles(before, titles)
                store.optimize()
            deltas, snapshot, titles = frames(day)
            with sampler.stage(timing):  # what stats_index does for the day
                mark = time.perf_counter()
                items = period_items(day, stored_days)
                steps["warehouse_period_items"] = time.perf_counter() - mark
                store.replace_day(day, deltas, snapshot, period_items=items)
                steps["replace_day"] = time.perf_counter() - mark - steps["warehouse_period_items"]
                mark = time.perf_counter()
                store.row_count("usage_deltas", day)
                steps["row_count"] = time.perf_counter() - mark
                mark = time.perf_counter()
                titled = store.record_titles(day, titles)
                steps["record_titles"] = time.perf_counter() - mark
                mark = time.perf_counter()
                store.optimize()
                steps["optimize"] = time.perf_counter() - mark
            period, _ = lareferencia_index.period_of(day, args.compat_granularity)
            compat = store.client.count(
                index=f"{store.compat_prefix}-*",
                body={"query": {"term": {"date": period.isoformat()}}},
            )["count"]
        finally:
            store.delete_all()
    documents = deltas.height + snapshot.height + compat + titled
    report = {
        "day": day.isoformat(),
        "month_days_before": args.month_days,
        "events": n_events,
        "sites": args.sites,
        "delta_documents": deltas.height,
        "snapshot_documents": snapshot.height,
        "compat_documents": compat,
        "title_documents": titled,
        "documents": documents,
        "seconds": timing["seconds"],
        "documents_per_second": documents / timing["seconds"],
        "steps_seconds": steps,
        "earlier_days_seconds": earlier["seconds"],
        "peak_rss_mib": timing["peak_rss_mib"],
        "process_peak_rss_mib": sampler.peak / MiB,
        "batch_size": args.batch_size,
        "compat_granularity": args.compat_granularity,
        "read_back": args.read_back,
        "prepare_seconds": prepared,
        "load_average": os.getloadavg(),
    }
    print(
        f"stats_index for {day} ({args.month_days} earlier days of the month loaded in "
        f"{earlier['seconds']:.1f} s), {n_events:,} events: {deltas.height:,} delta + "
        f"{snapshot.height:,} snapshot + {compat:,} compatibility + {titled:,} title documents "
        f"= {documents:,} in {timing['seconds']:.1f} s = {report['documents_per_second']:,.0f} "
        f"documents/s ({', '.join(f'{k} {v:.1f} s' for k, v in steps.items())}); peak RSS "
        f"{timing['peak_rss_mib']:.0f} MiB"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"index-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
