"""Latency of the web API over a year of data, per stats store (issue 5).

Builds one year of daily deltas directly as delta frames (no raw events): `--items` items
spread over `--sources` repositories (site ids 1..S, type R, identifiers
`oai:repoN.example.org:ID`), plus a national node (S+1, type N) and the regional portal
(S+2, type L) where part of the usage happens. Each day `--active-per-day` item rows are drawn
(Zipf-skewed items, a few visitor countries, levels R/N/L), merged per row key, and rolled up
into source, site and global rows as `metrics.daily_deltas` does. The snapshot of a day is
just its global rows (the endpoints measured read deltas only; the snapshot table only tells
`days()` which days exist).

Each store (a DuckDB file, then a fresh OpenSearch prefix deleted at the end) is loaded with
`replace_day`, one day at a time; processing status for every site and day and one SUSHI
customer per repository go into a SQLite admin DB. The app is served by uvicorn in a separate
process on 127.0.0.1 and measured with one keep-alive httpx client, one request at a time:

- `item_widget`: `/report/itemWidget` for a random used item over the whole year, by month;
- `repository_widget`: `/report/repositoryWidget` for a random repository over the year;
- `ir_month`: `/r51/reports/ir` of a random repository's customer for one random month.

    eval "$(scripts/services.sh env)"
    .venv/bin/python bench/web_bench.py                      # full size, both stores
    .venv/bin/python bench/web_bench.py --items 10000 --days 60 --stores duckdb

Prints p50/p95/max per endpoint and store, load time and row/document counts, and writes
`bench/results/web-<timestamp>.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import polars as pl

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
OPENSEARCH_URL = os.environ.get("USAGE_STATS_OPENSEARCH_URL", "http://127.0.0.1:9200")
FIRST_DAY = dt.date(2025, 1, 1)
COUNTRIES = ["BR", "AR", "MX", "CL", "CO", "PE", "US", "ES", "PT", "FR", "DE", "UY", "EC", "ZZ"]
COUNTRY_WEIGHTS = np.array([40, 10, 8, 6, 6, 4, 8, 4, 3, 2, 2, 2, 2, 3], dtype=float)


# --- data ------------------------------------------------------------------------------------


def item_key(index: pl.Expr, per_source: int) -> pl.Expr:
    source = index // per_source + 1
    local = index % per_source + 1
    return pl.concat_str(
        [pl.lit("oai:repo"), source.cast(pl.String), pl.lit(".example.org:"), local.cast(pl.String)]
    )


def year_of_items(args: argparse.Namespace) -> pl.DataFrame:
    """Item rows of every day: date, key, site_id, level, owner_site_id, country, metrics."""
    from usage_stats.pipeline.metrics import METRICS

    rng = np.random.default_rng(args.seed)
    per_source = args.items // args.sources
    n = args.days * args.active_per_day
    # Zipf over a random ranking of the items, so popular items are spread over the sources.
    ranking = rng.permutation(args.items)
    weights = 1.0 / np.arange(1, args.items + 1) ** args.zipf
    weights /= weights.sum()
    items = ranking[rng.choice(args.items, size=n, p=weights)]
    day = np.repeat(np.arange(args.days, dtype=np.int32), args.active_per_day)
    owner = (items // per_source + 1).astype(np.int32)
    level_code = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])  # R on the repository, N, L
    site = np.where(level_code == 0, owner, args.sources + level_code).astype(np.int32)
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_WEIGHTS / COUNTRY_WEIGHTS.sum())
    views = 1 + rng.poisson(0.6, size=n)
    downloads = rng.binomial(views, 0.35)
    outlinks = rng.binomial(views, 0.03)
    frame = pl.DataFrame(
        {
            "_day": day,
            "_item": items.astype(np.int64),
            "site_id": site,
            "level": np.array(["R", "N", "L"])[level_code],
            "owner_site_id": owner,
            "country": np.array(COUNTRIES)[country],
            "views": views.astype(np.int64),
            "downloads": downloads.astype(np.int64),
            "outlinks": outlinks.astype(np.int64),
            "conversions": np.minimum(views, downloads + outlinks).astype(np.int64),
            "total_item_investigations": (views + downloads).astype(np.int64),
            "unique_item_investigations": views.astype(np.int64),
            "total_item_requests": downloads.astype(np.int64),
            "unique_item_requests": np.minimum(downloads, 1).astype(np.int64),
        }
    )
    keys = ["_day", "_item", "site_id", "level", "owner_site_id", "country"]
    merged = frame.group_by(keys).agg(*[pl.col(m).sum() for m in METRICS])
    return merged.select(
        (pl.lit(FIRST_DAY) + pl.duration(days=pl.col("_day"))).alias("date"),
        pl.lit("item").alias("scope"),
        item_key(pl.col("_item"), per_source).alias("key"),
        "site_id",
        "level",
        "owner_site_id",
        "country",
        *METRICS,
    )


def with_rollups(items: pl.DataFrame) -> pl.DataFrame:
    """Item rows plus source, site and global rollups, as `metrics.daily_deltas` builds them."""
    from usage_stats.pipeline.metrics import DELTA_SCHEMA, KEY_COLUMNS, METRICS

    sums = [pl.col(m).sum() for m in METRICS]
    lazy = items.lazy()
    source = (
        lazy.group_by("date", "owner_site_id", "site_id", "level", "country")
        .agg(*sums)
        .with_columns(
            pl.lit("source").alias("scope"), pl.col("owner_site_id").cast(pl.String).alias("key")
        )
    )
    site = (
        lazy.group_by("date", "site_id", "level", "country")
        .agg(*sums)
        .with_columns(
            pl.lit("site").alias("scope"),
            pl.col("site_id").cast(pl.String).alias("key"),
            pl.col("site_id").alias("owner_site_id"),
        )
    )
    global_ = (
        lazy.group_by("date", "level", "country")
        .agg(*sums)
        .with_columns(
            pl.lit("global").alias("scope"),
            pl.lit("global").alias("key"),
            pl.lit(None, dtype=pl.Int32).alias("site_id"),
            pl.lit(None, dtype=pl.Int32).alias("owner_site_id"),
        )
    )
    frames = [
        f.select(list(DELTA_SCHEMA)).cast(DELTA_SCHEMA) for f in (lazy, source, site, global_)
    ]
    return pl.concat(frames).sort(list(KEY_COLUMNS), nulls_last=True).collect()


def sources_list(count: int) -> list:
    from usage_stats.admin.sources import Source

    node, portal = count + 1, count + 2
    out = [
        Source(
            site_id=i,
            source_key=f"opendoar::{1000 + i}",
            name=f"Repository {i}",
            type="R",
            country="BR",
            identifier_prefix=f"oai:repo{i}.example.org:",
            custom_var_slot=1,
            national_site_id=node,
            regional_site_id=portal,
        )
        for i in range(1, count + 1)
    ]
    out.append(Source(node, "national::br", "National node", "N", "BR", None, 1))
    out.append(Source(portal, "regional::portal", "Regional portal", "L", None, None, 1))
    return out


def prepare_admin_db(url: str, args: argparse.Namespace) -> dict[int, str]:
    """Sources, processing status of every site and day, one SUSHI customer per repository;
    returns the API key of each repository's customer."""
    from usage_stats.admin import db
    from usage_stats.admin.registry import DayStatus, add_source, record_processing
    from usage_stats.admin.sushi import add_customer

    db.upgrade(url)
    sources = sources_list(args.sources)
    for source in sources:
        add_source(url, source)
    now = dt.datetime.now(dt.UTC)
    statuses = [
        DayStatus(s.site_id, FIRST_DAY + dt.timedelta(days=d), 1, 1, 0, {}, "web-bench", now)
        for s in sources
        for d in range(args.days)
    ]
    record_processing(url, statuses)
    keys = {}
    for site_id in range(1, args.sources + 1):
        _, keys[site_id] = add_customer(
            url, f"customer-{site_id}", f"Repository {site_id} Library", [site_id]
        )
    return keys


# --- stores ----------------------------------------------------------------------------------


def make_store(kind: str, location: str):
    if kind == "duckdb":
        from usage_stats.storage.duckdb_store import DuckDBStatsStore

        return DuckDBStatsStore(Path(location))
    from usage_stats.storage.opensearch import OpenSearchStatsStore

    return OpenSearchStatsStore(OPENSEARCH_URL, prefix=location, compat_prefix=f"{location}-compat")


def load(store, deltas: pl.DataFrame, days: int) -> dict:
    started = time.perf_counter()
    rows = 0
    parts = deltas.partition_by("date", as_dict=True)
    for i in range(days):
        day = FIRST_DAY + dt.timedelta(days=i)
        part = parts.get((day,))
        if part is None:
            part = deltas.clear()
        snapshot = part.filter(pl.col("scope") == "global")
        rows += store.replace_day(day, part, snapshot).delta_rows
        if (i + 1) % 30 == 0 or i + 1 == days:
            elapsed = time.perf_counter() - started
            print(f"  loaded {i + 1}/{days} days, {rows:,} rows, {elapsed:.0f} s", flush=True)
    optimized = store.optimize()  # as the stats_index asset does at the end of each run
    print(f"  store arranged for reading in {optimized:.1f} s", flush=True)
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "optimize_seconds": round(optimized, 1),
        "delta_rows": rows,
    }


def opensearch_counts(prefix: str) -> dict:
    import requests

    out = {}
    for name, pattern in (
        ("deltas", f"{prefix}-deltas-*"),
        ("snapshots", f"{prefix}-snapshots-*"),
        ("compat", f"{prefix}-compat-*"),
    ):
        response = requests.get(f"{OPENSEARCH_URL}/{pattern}/_count", timeout=60)
        out[name] = response.json().get("count")
    return out


# --- serving and measuring -------------------------------------------------------------------


def serve(kind: str, location: str, admin_db_url: str, port: int) -> None:
    """Body of the server process: the app over the store, as `usage-stats serve` runs it."""
    import uvicorn

    from usage_stats.web import create_app

    app = create_app(make_store(kind, location), admin_db_url)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(client, deadline: float) -> None:
    import httpx

    while time.monotonic() < deadline:
        try:
            if client.get("/health").status_code in (200, 503):
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def summary(latencies: list[float], statuses: list[int]) -> dict:
    ms = np.array(latencies) * 1000
    counts: dict[str, int] = {}
    for status in statuses:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return {
        "n": len(latencies),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "max_ms": round(float(ms.max()), 1),
        "mean_ms": round(float(ms.mean()), 1),
        "statuses": counts,
    }


def requests_plan(args, used_items: list[str], api_keys: dict[int, str]) -> dict[str, list]:
    """The query strings of every endpoint, drawn once so both stores get the same ones."""
    rng = np.random.default_rng(args.seed + 1)
    last_day = FIRST_DAY + dt.timedelta(days=args.days - 1)
    year = {"start_date": FIRST_DAY.isoformat(), "end_date": last_day.isoformat()}
    months = sorted(
        {(FIRST_DAY + dt.timedelta(days=d)).strftime("%Y-%m") for d in range(args.days)}
    )
    total = args.requests + args.warmup
    ir_total = args.ir_requests + args.warmup
    item_picks = rng.integers(len(used_items), size=total)
    source_picks = rng.integers(1, args.sources + 1, size=total)
    ir_sources = rng.integers(1, args.sources + 1, size=ir_total)
    ir_months = rng.integers(len(months), size=ir_total)
    return {
        "item_widget": [
            ("/report/itemWidget", {"identifier": used_items[i], **year, "time_unit": "month"})
            for i in item_picks
        ],
        "repository_widget": [
            (
                "/report/repositoryWidget",
                {"source_id": f"opendoar::{1000 + int(s)}", **year, "time_unit": "month"},
            )
            for s in source_picks
        ],
        "ir_month": [
            (
                "/r51/reports/ir",
                {
                    "customer_id": f"customer-{int(s)}",
                    "api_key": api_keys[int(s)],
                    "begin_date": months[m],
                    "end_date": months[m],
                },
            )
            for s, m in zip(ir_sources, ir_months, strict=True)
        ],
    }


def measure(base_url: str, plan: dict[str, list], warmup: int) -> dict:
    import httpx

    out = {}
    with httpx.Client(base_url=base_url, timeout=120) as client:
        wait_until_up(client, time.monotonic() + 120)
        for name, calls in plan.items():
            latencies, statuses, sizes = [], [], []
            for i, (path, params) in enumerate(calls):
                started = time.perf_counter()
                response = client.get(path, params=params)
                body = response.content
                elapsed = time.perf_counter() - started
                if i < warmup:
                    continue
                latencies.append(elapsed)
                statuses.append(response.status_code)
                sizes.append(len(body))
            out[name] = summary(latencies, statuses) | {"mean_bytes": int(np.mean(sizes))}
            s = out[name]
            print(
                f"  {name:<18} n={s['n']:<4} p50 {s['p50_ms']:>8.1f} ms  p95 {s['p95_ms']:>8.1f} ms"
                f"  max {s['max_ms']:>8.1f} ms  statuses {s['statuses']}",
                flush=True,
            )
    return out


def run_store(kind: str, args, deltas: pl.DataFrame, admin_db_url: str, plan, workdir: Path):
    print(f"{kind}:", flush=True)
    location = (
        str(workdir / "stats.duckdb") if kind == "duckdb" else f"webbench{uuid.uuid4().hex[:8]}"
    )
    store = make_store(kind, location)
    result: dict = {"store": kind}
    try:
        result["load"] = load(store, deltas, args.days)
        if kind == "opensearch":
            result["load"]["documents"] = opensearch_counts(location)
        else:
            result["load"]["file_mib"] = round(Path(location).stat().st_size / 2**20, 1)
        print(f"  load: {result['load']}", flush=True)
        port = free_port()
        context = multiprocessing.get_context("spawn")
        server = context.Process(target=serve, args=(kind, location, admin_db_url, port))
        server.start()
        try:
            result["endpoints"] = measure(f"http://127.0.0.1:{port}", plan, args.warmup)
        finally:
            server.terminate()
            server.join(30)
    finally:
        if kind == "opensearch" and not args.keep:
            store.delete_all()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--active-per-day", type=int, default=10_000, help="item rows drawn/day")
    parser.add_argument("--zipf", type=float, default=1.0, help="item popularity exponent")
    parser.add_argument("--requests", type=int, default=200, help="per widget endpoint")
    parser.add_argument("--ir-requests", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--stores", nargs="+", default=["duckdb", "opensearch"])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the OpenSearch indices")
    args = parser.parse_args()
    if args.days > 365 * 2 or args.items < args.sources:
        parser.error("--days at most 730 and --items at least --sources")

    started = time.perf_counter()
    items = year_of_items(args)
    deltas = with_rollups(items)
    used_items = items.get_column("key").unique().sort().to_list()
    generated = time.perf_counter() - started
    by_scope = dict(deltas.group_by("scope").len().iter_rows())
    print(
        f"generated {deltas.height:,} delta rows ({by_scope}) in {generated:.1f} s; "
        f"{len(used_items):,} items with usage",
        flush=True,
    )
    results: dict = {
        "benchmark": "web",
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {k: v for k, v in vars(args).items()},
        "data": {
            "first_day": FIRST_DAY.isoformat(),
            "delta_rows": deltas.height,
            "rows_by_scope": by_scope,
            "items_with_usage": len(used_items),
            "generate_seconds": round(generated, 1),
        },
        "stores": [],
    }
    with tempfile.TemporaryDirectory(prefix="web-bench-") as tmp:
        workdir = Path(tmp)
        admin_db_url = f"sqlite:///{workdir / 'admin.sqlite'}"
        api_keys = prepare_admin_db(admin_db_url, args)
        plan = requests_plan(args, used_items, api_keys)
        del items
        for kind in args.stores:
            results["stores"].append(run_store(kind, args, deltas, admin_db_url, plan, workdir))

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"web-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'store':<11} {'endpoint':<18} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for store in results["stores"]:
        for name, s in store.get("endpoints", {}).items():
            print(
                f"{store['store']:<11} {name:<18} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f}"
                f" {s['max_ms']:>8.1f}"
            )
    print(f"written {path.relative_to(BENCH_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
