"""CPU per answer not in the cache: an item widget's miss, a one-month IR and PR (issue 16).

`web_bench.py` measures requests/s through a real server, which on a shared machine mostly
measures the other processes. This measures what one request costs the server: the app of
`usage-stats serve` (shared DuckDB reads, response cache off) called in process through ASGI,
no HTTP client, and the process's CPU time (all its threads: DuckDB's too) per request, which
the machine's load barely changes; wall time is printed beside it. Over `web_bench.py`'s year
(build it once with `web_bench.py --stores duckdb --workdir DIR`):

    .venv/bin/python bench/web_miss_cost.py --workdir /tmp/wb

Items are drawn uniformly among the 100,000 (`item_widget_cold`'s mix), the IR for a random
repository's customer and month; every customer's key is checked once first, by a SUSHI
request that checks it (a worker remembers a key that passed, so the scrypt hash is not a
report's cost; until 2026-12-03 this asked `/r51/status`, which checks none). `ir_month` reads
and describes its items' records every time (`WebContext.reported_items` off); `ir_month, kept`
is the same once the worker has described every item (each repository's year asked first), as
a worker serving harvesters is between two writes of the store.

The list of reports (`/r51/reports`: a customer authenticated, no report) is what any SUSHI
request costs before its report; with the IR's store reads alone (its items' sums and
records, timed by calling the store) it is a lower bound of an IR's CPU through this store
API, and so is the average wait of 16 concurrent IRs on this machine's cores that follows.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import time
import urllib.parse
from pathlib import Path


async def _get(app, path: str, params: dict[str, str]) -> tuple[int, int]:
    """One GET through the ASGI app: (status, body bytes)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": urllib.parse.urlencode(params).encode(),
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"accept-encoding", b"identity")],
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
    }
    status, size = 0, 0

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            size += len(message.get("body", b""))

    await app(scope, receive, send)
    return status, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="web_bench.py's --workdir")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--requests", type=int, default=300, help="item widget misses")
    parser.add_argument("--reports", type=int, default=20, help="IR reports")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="leave the garbage collector as Python sets it (before web/heap.py)",
    )
    parser.add_argument(
        "--namespace", default="repo{}.example.org", help="as web_bench.py's --namespace"
    )
    parser.add_argument(
        "--by-popularity",
        action="store_true",
        help="also an item widget's miss (by month, as web_bench.py asks) per band of the "
        "items' popularity rank in web_bench.py's draw (its --seed 5, --zipf ranking)",
    )
    args = parser.parse_args()

    from usage_stats.admin import db
    from usage_stats.storage.duckdb_store import DuckDBStatsStore
    from usage_stats.web import heap
    from usage_stats.web.app import create_app
    from usage_stats.web.sushi import _REPORTED_FIELDS as REPORTED
    from usage_stats.web.sushi import METRIC_COLUMNS, KeyChecker

    COUNTER = tuple(METRIC_COLUMNS.values())

    workdir = Path(args.workdir)
    admin_db_url = f"sqlite:///{workdir / 'admin.sqlite'}"
    db.upgrade(admin_db_url)  # a workdir kept from before a migration
    store = DuckDBStatsStore(workdir / "stats.duckdb", shared_reads=True)
    app = create_app(
        store,
        admin_db_url,
        response_cache_seconds=0,
        sushi_key_checker=KeyChecker(per_second=1000, burst=1000),  # every key checked first
    )
    if not args.default_gc:
        heap.settle_heap()  # as the served app's startup does (its lifespan is not run here)
    keys = json.loads((workdir / "api_keys.json").read_text())
    rng = random.Random(args.seed)
    per_source = args.items // args.sources

    def item() -> tuple[str, dict[str, str]]:
        source, local = rng.randint(1, args.sources), rng.randint(1, per_source)
        return "/report/itemWidget", {
            "identifier": f"oai:{args.namespace.format(source)}:{local}",
            "start_date": "2025-01-01",
            "end_date": "2025-12-31",
            "time_unit": "year",
        }

    def report(name: str = "ir") -> tuple[str, dict[str, str]]:
        source, month = rng.randint(1, args.sources), f"2025-{rng.randint(1, 12):02d}"
        return f"/r51/reports/{name}", {
            "customer_id": f"customer-{source}",
            "api_key": keys[str(source)],
            "begin_date": month,
            "end_date": month,
        }

    def year_report(source: int) -> tuple[str, dict[str, str]]:
        return "/r51/reports/ir", {
            "customer_id": f"customer-{source}",
            "api_key": keys[str(source)],
            "begin_date": "2025-01",
            "end_date": "2025-12",
        }

    def report_list() -> tuple[str, dict[str, str]]:
        source = rng.randint(1, args.sources)
        return "/r51/reports", {"customer_id": f"customer-{source}", "api_key": keys[str(source)]}

    def store_reads() -> float:
        """CPU ms of what an IR asks the store for a random customer's month: its items'
        sums (the four COUNTER metrics) and their records."""
        source, month = rng.randint(1, args.sources), rng.randint(1, 12)
        first = dt.date(2025, month, 1)
        last = (first + dt.timedelta(days=31)).replace(day=1) - dt.timedelta(days=1)
        cpu = time.process_time()
        sums = store.sums(
            "item", first, last, owner_site_ids=(source,), by=("key", "month"), metrics=COUNTER
        )
        store.item_metadata(tuple(sums.get_column("key").to_list()), REPORTED)
        return (time.process_time() - cpu) * 1000

    async def by_popularity() -> None:
        """The most viewed items have the most stored rows (a day by level and country for
        each day of the year), so their first answer costs most: what every worker pays
        for the head of the popularity curve after each write."""
        import numpy as np

        ranking = np.random.default_rng(5).permutation(args.items)  # web_bench's ranking

        def key(index: int) -> str:
            return f"oai:{args.namespace.format(index // per_source + 1)}:{index % per_source + 1}"

        for low, high in ((0, 10), (10, 100), (100, 1000), (1000, 10_000), (10_000, args.items)):
            ranks = np.linspace(low, high - 1, min(60, high - low)).astype(int)
            cpu = time.process_time()
            for rank in ranks:
                params = {"identifier": key(int(ranking[rank])), "time_unit": "month"}
                params |= {"start_date": "2025-01-01", "end_date": "2025-12-31"}
                status, _ = await _get(app, "/report/itemWidget", params)
                if status != 200:
                    raise SystemExit(f"item ranked {rank}: HTTP {status}")
            cpu = (time.process_time() - cpu) / len(ranks) * 1000
            print(f"item_widget miss, popularity ranks {low + 1:,}-{high:,}: cpu {cpu:5.1f} ms")

    async def run() -> None:
        for source in range(1, args.sources + 1):  # a key checked: `/r51/status` checks none
            params = {"customer_id": f"customer-{source}", "api_key": keys[str(source)]}
            status, _ = await _get(app, "/r51/reports", params)
            if status != 200:
                raise SystemExit(f"customer-{source}'s key: HTTP {status}")
        for make in (item, report):  # warm-up: connection, first queries
            for _ in range(3):
                await _get(app, *make())
        costs = {}
        described = app.state.ctx.reported_items
        keep = described.max_keys
        described.max_keys = 0  # `ir_month`: every report reads and describes its records
        for name, make, count in (
            ("item_widget miss", item, args.requests),
            ("ir_month", report, args.reports),
            ("reports list", report_list, args.reports),
            ("ir_month, kept", report, args.reports),
        ):
            if name == "ir_month, kept":
                # what a worker that has described every item since the last write pays:
                # each repository's year asked once first
                described.max_keys = keep
                for source in range(1, args.sources + 1):
                    await _get(app, *year_report(source))
            cpu, wall, sizes = time.process_time(), time.perf_counter(), 0
            for _ in range(count):
                status, size = await _get(app, *make())
                if status != 200:
                    raise SystemExit(f"{name}: HTTP {status}")
                sizes += size
            cpu = costs[name] = (time.process_time() - cpu) / count * 1000
            wall = (time.perf_counter() - wall) / count * 1000
            print(
                f"{name:18s} cpu {cpu:7.1f} ms  wall {wall:7.1f} ms  "
                f"body {sizes / count / 1000:6.1f} kB  load {os.getloadavg()[0]:.1f}"
            )
        if args.by_popularity:
            await by_popularity()
        reads = sum(store_reads() for _ in range(args.reports)) / args.reports
        floor = costs["reports list"] + reads
        cores = os.cpu_count() or 1
        print(
            f"ir store reads     cpu {reads:7.1f} ms  (its items' sums and records)\n"
            f"an IR costs at least an authenticated request ({costs['reports list']:.1f} ms) "
            f"and its store reads: {floor:.1f} ms of CPU, so 16 concurrent IRs on {cores} "
            f"cores wait {16 * floor / cores:.0f} ms on average with the report's own work "
            f"free ({16 * costs['ir_month'] / cores:.0f} ms as it is, "
            f"{16 * costs['ir_month, kept'] / cores:.0f} ms with its items described before)"
        )

    asyncio.run(run())


if __name__ == "__main__":
    main()
