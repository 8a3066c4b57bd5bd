"""`days()` of an OpenSearch store as its sparse snapshots grow (issue 13: a stats_index day
that does not grow with the history).

Writes `--days` generated days (store_bench's drawn days: `--rows-per-day` item rows over
1,000,000 items, each day's sparse snapshot as stats_index stores it) into the store under
`--prefix`, and every `--every` days prints: snapshot documents, the day's write, `days()`
first after the write (what stats_index and the first health check pay) and its median of 5
after that (the node's request cache), and the aggregation over every snapshot document that
`days()` was before the registry of stored days, uncached. `--keep` goes on from the days
the store holds (e.g. to compare code versions on the same store); otherwise the prefix is
emptied first.

    eval "$(scripts/services.sh env)"
    .venv/bin/python bench/stored_days_bench.py --days 30 --rows-per-day 100000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store_bench import day_of, draw_days, stored_snapshot  # noqa: E402

from usage_stats.storage.opensearch import OpenSearchStatsStore  # noqa: E402
from usage_stats.storage.opensearch.queries import _group_sources  # noqa: E402


def aggregated_days_seconds(store: OpenSearchStatsStore) -> float:
    """The aggregation `days()` was, with the request cache off: the best of 3."""
    body = {
        "size": 0,
        "aggs": {"g": {"composite": {"size": 10_000, "sources": _group_sources(["date"])}}},
    }
    times = []
    for _ in range(3):
        start = time.perf_counter()
        store.client.search(index=store.alias("usage_snapshots"), body=body, request_cache=False)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--prefix", default="daysbench")
    parser.add_argument("--keep", action="store_true", help="go on from the stored days")
    args = parser.parse_args()
    drawn = argparse.Namespace(
        seed=5,
        items=1_000_000,
        sources=50,
        distinct_days=3,
        rows_per_day=args.rows_per_day,
        zipf=0.8,
    )
    templates = draw_days(drawn)
    store = OpenSearchStatsStore(url=os.environ["USAGE_STATS_OPENSEARCH_URL"], prefix=args.prefix)
    if not args.keep:
        store.delete_all()
    start = len(store.days())
    for index in range(start, start + args.days):
        deltas = day_of(templates, index)
        began = time.perf_counter()
        store.replace_day(deltas["date"][0], deltas, stored_snapshot(deltas))
        written = time.perf_counter() - began
        if (index + 1) % args.every:
            continue
        began = time.perf_counter()
        days = store.days()
        first = time.perf_counter() - began
        again = []
        for _ in range(5):
            began = time.perf_counter()
            store.days()
            again.append(time.perf_counter() - began)
        documents = store.client.count(index=store.alias("usage_snapshots"))["count"]
        print(
            f"days {len(days)}  snapshot documents {documents:,}  write {written:.1f} s  "
            f"days() first {first * 1000:.1f} ms, again {statistics.median(again) * 1000:.1f} ms  "
            f"aggregation {aggregated_days_seconds(store) * 1000:.1f} ms  "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
