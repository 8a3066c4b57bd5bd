"""Latency and throughput of the web API over a year of data, per stats store (issues 5, 16).

Builds one year of daily deltas directly as delta frames (no raw events): `--items` items
spread over `--sources` repositories (site ids 1..S, type R, identifiers
`oai:repoN.example.org:ID`, or another `--namespace`: a `--workdir` keeps the one it was built
with), plus a national node (S+1, type N) and the regional portal
(S+2, type L) where part of the usage happens. Each day `--active-per-day` item rows are drawn
(Zipf-skewed items, a few visitor countries, levels R/N/L), merged per row key, and rolled up
into source, site and global rows as `metrics.daily_deltas` does. The snapshot of a day is
just its global rows (the endpoints measured read deltas only; the snapshot table only tells
`days()` which days exist).

Each store (a DuckDB file, then a fresh OpenSearch prefix deleted at the end) is loaded with
`replace_day`, one day at a time; processing status for every site and day and one SUSHI
customer per repository go into a SQLite admin DB. The app is served as `usage-stats serve
--workers W` serves it (a separate process tree, rate limits off) and measured by a load
generator in its own process: `C` clients (`--clients 1 4 16`), each one keep-alive HTTP/1.1
connection sending its next request as soon as the last answer arrived, for `--seconds` per
endpoint and client count, after a warm-up. Endpoints:

- `item_widget`: `/report/itemWidget` over the whole year, by month, for items drawn as item
  pages are viewed: by the same Zipf popularity as the usage (`--zipf`), so popular items
  come back, as on a real network;
- `item_widget_cold`: the same for items drawn uniformly among those with usage (mostly
  answers not cached yet: the store's own speed);
- `repository_widget`: `/report/repositoryWidget` for a random repository over the year;
- `ir_month`: `/r51/reports/ir` of a random repository's customer for one random month.

    eval "$(scripts/services.sh env)"
    .venv/bin/python bench/web_bench.py                      # full size, both stores
    .venv/bin/python bench/web_bench.py --items 10000 --days 60 --stores duckdb
    .venv/bin/python bench/web_bench.py --workdir /tmp/wb     # keep (and reuse) the DuckDB year

Prints requests/s, p50/p95/p99 and errors per store, endpoint and client count, load time and
row/document counts, and writes `bench/results/web-<timestamp>.json`.
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


# The OAI namespace of repository N (`--namespace`): `repo{}.example.org` tells repositories
# apart in the first 8 bytes of a key, which DuckDB's string statistics keep; real ones often
# share far more (`repositorio.institucional.` ...).
NAMESPACE = "repo{}.example.org"


def item_key(index: pl.Expr, per_source: int) -> pl.Expr:
    source = index // per_source + 1
    local = index % per_source + 1
    return pl.format(f"oai:{NAMESPACE}:{{}}", source, local)


def oai_key(source: int, local: int) -> str:
    return f"oai:{NAMESPACE.format(source)}:{local}"


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


def harvested_records(items: pl.DataFrame, share: float, seed: int) -> pl.DataFrame:
    """Harvested records (`ITEM_METADATA_SCHEMA`) of `share` of the used items, as a harvested
    network has them for most: a title, three creators, a year, one of 12 COAR types and 4
    access rights (an embargo ending mid-year on some), one of 300 publishers, a DOI on half,
    a handle on a third and a landing page on each; what item reports and widgets show."""
    from usage_stats.metadata.schema import ITEM_METADATA_SCHEMA

    rng = np.random.default_rng(seed)
    used = items.group_by("key").agg(pl.col("owner_site_id").first()).sort("key")
    chosen = used.filter(pl.Series(rng.random(used.height) < share))
    n = chosen.height
    index = np.arange(n)
    years = rng.integers(1980, 2025, n)
    coar = "http://purl.org/coar/"
    codes = "6501 46ec 3248 ddb1 2f33 8042 bdcc 7a1f c94f 5794 18cf 816b".split()
    types = [f"{coar}resource_type/c_{c}" for c in codes]
    rights = [f"{coar}access_right/c_{c}" for c in ("abf2", "f1cf", "16ec", "14cb")]
    right = rng.integers(0, len(rights), n)
    frame = pl.DataFrame(
        {
            "source_key": ("opendoar::" + (chosen["owner_site_id"] + 1000).cast(pl.String)),
            "site_id": chosen["owner_site_id"],
            "oai_identifier": chosen["key"],
            "item_key": chosen["key"],
            "datestamp": [dt.datetime(2024, 12, 1, tzinfo=dt.UTC)] * n,
            "deleted": [False] * n,
            "title": [f"Estudio {i} sobre la región y sus repositorios, {i % 7}" for i in index],
            "creators": [[f"Pérez{i % 997}, A.", f"Silva{i % 89}, J.", f"Li{i}"] for i in index],
            "publication_year": years.astype(np.int32),
            "publication_date": [dt.date(int(y), 1 + i % 12, 1) for i, y in enumerate(years)],
            "resource_type": pl.Series(types).gather(rng.integers(0, len(types), n)),
            "access_rights": pl.Series(rights, dtype=pl.String).gather(right),
            "embargo_end": [dt.date(2025, 7, 15) if r == 1 else None for r in right],
            "publisher": [f"Editorial {i % 300}" for i in index],
            "doi": [f"10.4321/bench.{i}" if i % 2 == 0 else None for i in index],
            "handle": [f"hdl:20.500.12345/{i}" if i % 3 == 0 else None for i in index],
            "urls": [[f"https://repositorio.example.org/handle/20.500.12345/{i}"] for i in index],
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
            identifier_prefix=f"oai:{NAMESPACE.format(i)}:",
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


def server_env(kind: str, location: str, admin_db_url: str) -> dict[str, str]:
    """The environment `usage-stats serve` reads, for this store; rate limits off (one client
    address sends everything), the rest as deployed."""
    env = dict(os.environ)
    env.update(
        {
            "USAGE_STATS_STATS_STORE": kind,
            "USAGE_STATS_ADMIN_DB_URL": admin_db_url,
            "USAGE_STATS_RATE_LIMIT_WIDGETS": "",
            "USAGE_STATS_RATE_LIMIT_API": "",
            "USAGE_STATS_RATE_LIMIT_SUSHI": "",
            # key checks (scrypt, ~70 ms) unthrottled: `warm_customers` checks every key
            "USAGE_STATS_SUSHI_KEY_CHECKS_PER_SECOND": "1000",
            "PYTHONPATH": str(BENCH_DIR.parent),
        }
    )
    if kind == "duckdb":
        env["USAGE_STATS_DUCKDB_PATH"] = location
    else:
        env["USAGE_STATS_OPENSEARCH_URL"] = OPENSEARCH_URL
        env["USAGE_STATS_OPENSEARCH_PREFIX"] = location
    return env


def start_server(
    kind: str, location: str, admin_db_url: str, port: int, workers: int, balance: str
):
    """`usage-stats serve --workers N --balance B` in its own process group (stopped as a
    group)."""
    import subprocess

    return subprocess.Popen(
        [sys.executable, "-m", "usage_stats.cli", "serve", "--port", str(port)]
        + ["--workers", str(workers), "--balance", balance],
        env=server_env(kind, location, admin_db_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_server(server) -> None:
    import signal

    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    except (ProcessLookupError, OSError):
        pass
    except Exception:
        os.killpg(server.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(base_url: str, deadline: float) -> None:
    import httpx

    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=5).status_code in (200, 503):
                return
        except httpx.TransportError:
            time.sleep(0.3)
    raise RuntimeError("the server did not start")


def summary(latencies: list[float], statuses: list[int], seconds: float, failures: int) -> dict:
    ms = np.array(latencies or [0.0]) * 1000
    counts: dict[str, int] = {}
    for status in statuses:
        counts[str(status)] = counts.get(str(status), 0) + 1
    errors = failures + sum(n for code, n in counts.items() if code != "200")
    return {
        "n": len(latencies),
        "requests_per_s": round(len(latencies) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "errors": errors,
        "statuses": counts,
    }


def requests_plan(args, used_items: list[str], api_keys: dict[int, str]) -> dict[str, list]:
    """The request targets of every endpoint, drawn once so every store gets the same ones;
    the clients go through them in turn, each run where the previous one stopped (`--plan-size`
    each, more than the runs send)."""
    from urllib.parse import urlencode

    rng = np.random.default_rng(args.seed + 1)
    size = args.plan_size
    last_day = FIRST_DAY + dt.timedelta(days=args.days - 1)
    year = {"start_date": FIRST_DAY.isoformat(), "end_date": last_day.isoformat()}
    months = sorted(
        {(FIRST_DAY + dt.timedelta(days=d)).strftime("%Y-%m") for d in range(args.days)}
    )
    # Item pages are viewed as the usage was drawn: the same ranking and Zipf weights as
    # `year_of_items` (its first draw is this permutation).
    per_source = args.items // args.sources
    ranking = np.random.default_rng(args.seed).permutation(args.items)
    weights = 1.0 / np.arange(1, args.items + 1) ** args.zipf
    popular = ranking[rng.choice(args.items, size=size, p=weights / weights.sum())]

    def key(index: int) -> str:
        return oai_key(index // per_source + 1, index % per_source + 1)

    def url(path: str, params: dict) -> str:
        return f"{path}?{urlencode(params)}"

    ir_sources = rng.integers(1, args.sources + 1, size=size)
    ir_months = rng.integers(len(months), size=size)
    return {
        "item_widget": [
            url("/report/itemWidget", {"identifier": key(int(i)), **year, "time_unit": "month"})
            for i in popular
        ],
        "item_widget_cold": [
            url(
                "/report/itemWidget",
                {"identifier": used_items[int(i)], **year, "time_unit": "month"},
            )
            for i in rng.integers(len(used_items), size=size)
        ],
        "repository_widget": [
            url(
                "/report/repositoryWidget",
                {"source_id": f"opendoar::{1000 + int(s)}", **year, "time_unit": "month"},
            )
            for s in rng.integers(1, args.sources + 1, size=size)
        ],
        "ir_month": [
            url(
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


# --- the load generator: raw HTTP/1.1 keep-alive over asyncio, in its own process -----------


async def _client_loop(host, port, targets, offset, stride, until, out, per_connection=0) -> None:
    """One client: one connection, the next request as soon as the answer is read; with
    `per_connection` > 0, a new connection after that many answers (as page views from many
    browsers come)."""
    import asyncio

    reader = writer = None
    index = offset
    answered = 0  # on this connection
    while time.monotonic() < until:
        target = targets[index % len(targets)]
        index += stride
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
                "\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)
            out["latencies"].append(time.perf_counter() - started)
            out["statuses"].append(status)
            answered += 1
            if close or answered == per_connection:
                writer.close()
                writer, answered = None, 0
        except (OSError, asyncio.IncompleteReadError, ValueError):
            out["failures"] += 1
            if writer is not None:
                writer.close()
            writer, answered = None, 0
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()
    out["next"] = max(out.get("next", 0), index)


def load_generator(
    host, port, targets, clients, seconds, warmup_seconds, start, queue, per_connection=0
) -> None:
    """Body of the load generator's process: warm up, then `clients` clients for `seconds`,
    going on through `targets` from `start` (the measured requests are not the warm-up's, and
    the next run's are not this one's: otherwise the response cache answers them all)."""
    import asyncio

    async def run(duration: float, out: dict, first: int) -> float:
        until = time.monotonic() + duration
        started = time.perf_counter()
        await asyncio.gather(
            *(
                _client_loop(host, port, targets, first + c, clients, until, out, per_connection)
                for c in range(clients)
            )
        )
        return time.perf_counter() - started

    if warmup_seconds > 0:
        warmup: dict = {"latencies": [], "statuses": [], "failures": 0, "next": start}
        asyncio.run(run(warmup_seconds, warmup, start))
        start = warmup["next"]
    out: dict = {"latencies": [], "statuses": [], "failures": 0, "next": start}
    elapsed = asyncio.run(run(seconds, out, start))
    result = summary(out["latencies"], out["statuses"], elapsed, out["failures"])
    result["next"] = out["next"]
    queue.put(result)


def connections_per_worker(server_pid: int, port: int) -> list[int]:
    """Established connections to `port` each worker process of the server holds, most
    first (the parent, which only hands them out, and multiprocessing's helpers hold none)."""
    import psutil

    def held(process: psutil.Process) -> int:
        return sum(
            1
            for c in process.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
        )

    server = psutil.Process(server_pid)
    counts = []
    for child in server.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                counts.append(held(child))
        except psutil.Error:
            continue
    return sorted(counts, reverse=True) or [held(server)]  # one worker: the server itself


def measure(port: int, plan: dict[str, list], args, server_pid: int) -> dict:
    context = multiprocessing.get_context("spawn")
    out: dict = {}
    for name, targets in plan.items():
        out[name] = {}
        start = 0  # where the next run goes on in the endpoint's targets
        for clients in args.clients:
            queue = context.Queue()
            generator = context.Process(
                target=load_generator,
                args=(
                    "127.0.0.1",
                    port,
                    targets,
                    clients,
                    args.seconds,
                    args.warmup_seconds,
                    start,
                    queue,
                    args.requests_per_connection,
                ),
            )
            generator.start()
            # how the server's workers hold the clients' connections, halfway through
            time.sleep(args.warmup_seconds + args.seconds / 2)
            split = connections_per_worker(server_pid, port)
            result = queue.get(timeout=args.seconds + args.warmup_seconds + 600)
            result["connections_per_worker"] = split
            start = result.pop("next")
            if start > len(targets):
                print(
                    f"  ({name}: {start} requests went round {len(targets)} targets: "
                    "raise --plan-size)",
                    flush=True,
                )
            generator.join(60)
            result["load_average"] = round(os.getloadavg()[0], 2)
            out[name][str(clients)] = result
            print(
                f"  {name:<18} clients {clients:>2}  {result['requests_per_s']:>7.1f} req/s  "
                f"p50 {result['p50_ms']:>7.1f}  p95 {result['p95_ms']:>7.1f}  "
                f"p99 {result['p99_ms']:>7.1f} ms  errors {result['errors']}  "
                f"load {result['load_average']}  workers' connections "
                + ":".join(str(n) for n in split),
                flush=True,
            )
    return out


def warm_customers(port: int, api_keys: dict[int, str], rounds: int = 6) -> float:
    """Each customer's key checked by every worker (w.h.p.: a new connection per request,
    which the kernel hands to any worker) before SUSHI reports are measured. A worker checks
    a key with scrypt (~70 ms) once, then remembers it for 5 minutes: a harvester pays it on
    its first request, and a 10-second run over 50 customers and 2 workers measured mostly
    that (IR p95 240 ms where the report itself took 60-110 ms)."""
    import urllib.request
    from urllib.parse import urlencode

    started = time.perf_counter()
    for _ in range(rounds):
        for source, key in api_keys.items():
            query = urlencode({"customer_id": f"customer-{source}", "api_key": key})
            url = f"http://127.0.0.1:{port}/r51/reports?{query}"
            with urllib.request.urlopen(url, timeout=60) as answer:
                answer.read()
    return time.perf_counter() - started


def check_reused(store, deltas: pl.DataFrame, location: str) -> None:
    """A kept year must be the one these options draw: built with another `--namespace`
    (or `--items`, `--sources`, `--seed`), every item request would answer 404, measured as
    errors, and its records would be added beside the year's under the wrong keys."""
    items = deltas.filter(pl.col("scope") == "item")
    day, key = items.row(0, named=True)["date"], items.row(0, named=True)["key"]
    if store.sums("item", day, day, keys=(key,), by=("key",)).is_empty():
        raise SystemExit(
            f"web_bench: the year kept in {location} has no usage of {key!r} on {day}, which "
            "these options draw: pass the --namespace, --items, --sources, --days and --seed "
            "it was built with, or another --workdir"
        )


def run_store(kind: str, args, deltas: pl.DataFrame, admin_db_url: str, plan, workdir: Path):
    print(f"{kind}:", flush=True)
    location = (
        str(workdir / "stats.duckdb") if kind == "duckdb" else f"webbench{uuid.uuid4().hex[:8]}"
    )
    reused = kind == "duckdb" and Path(location).exists()
    store = make_store(kind, location)
    result: dict = {"store": kind, "workers": args.workers, "balance": args.balance}
    try:
        if reused:
            check_reused(store, deltas, location)
        result["load"] = {"reused": True} if reused else load(store, deltas, args.days)
        if args.records_frame is not None and (
            not reused or store.item_metadata(tuple(args.records_frame["item_key"][:1])).is_empty()
        ):
            result["load"]["records"] = store.record_item_metadata(args.records_frame)
        if kind == "opensearch":
            result["load"]["documents"] = opensearch_counts(location)
        else:
            result["load"]["file_mib"] = round(Path(location).stat().st_size / 2**20, 1)
        print(f"  load: {result['load']}", flush=True)
        port = free_port()
        server = start_server(kind, location, admin_db_url, port, args.workers, args.balance)
        try:
            wait_until_up(f"http://127.0.0.1:{port}", time.monotonic() + 120)
            if "ir_month" in plan:
                seconds = warm_customers(port, args.api_keys)
                print(f"  customers' keys checked by the workers in {seconds:.1f} s", flush=True)
            result["endpoints"] = measure(port, plan, args, server.pid)
        finally:
            stop_server(server)
    finally:
        if kind == "opensearch" and not args.keep:
            store.delete_all()
    return result


def main() -> int:
    global NAMESPACE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--active-per-day", type=int, default=10_000, help="item rows drawn/day")
    parser.add_argument("--zipf", type=float, default=1.0, help="item popularity exponent")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint and clients")
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument(
        "--balance",
        choices=("connections", "kernel"),
        default="connections",
        help="how the workers get connections (`usage-stats serve --balance`): handed in turn "
        "by the parent (the default) or raced for (uvicorn's shared socket, before 2026-12-05)",
    )
    parser.add_argument("--plan-size", type=int, default=60_000, help="targets per endpoint")
    parser.add_argument("--endpoints", nargs="+", help="only these (default: all)")
    parser.add_argument(
        "--requests-per-connection",
        type=int,
        default=0,
        help="a client reconnects after this many answers (0: one connection per client)",
    )
    parser.add_argument("--workdir", help="keep the DuckDB year and admin DB here, and reuse them")
    parser.add_argument("--stores", nargs="+", default=["duckdb", "opensearch"])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--namespace", default=NAMESPACE, help="repository N's OAI namespace, {} for N"
    )
    parser.add_argument("--keep", action="store_true", help="keep the OpenSearch indices")
    parser.add_argument(
        "--records",
        type=float,
        default=0.9,
        help="share of the used items with a harvested record (0: none, as before 2026-12-05)",
    )
    args = parser.parse_args()
    NAMESPACE = args.namespace
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
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        },
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
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        admin_db_url = f"sqlite:///{workdir / 'admin.sqlite'}"
        keys_file = workdir / "api_keys.json"
        if keys_file.exists():
            from usage_stats.admin import db

            db.upgrade(admin_db_url)  # a workdir kept from before a migration
            api_keys = {int(k): v for k, v in json.loads(keys_file.read_text()).items()}
        else:
            api_keys = prepare_admin_db(admin_db_url, args)
            keys_file.write_text(json.dumps(api_keys))
        plan = requests_plan(args, used_items, api_keys)
        args.api_keys = api_keys
        if args.endpoints:
            plan = {k: v for k, v in plan.items() if k in args.endpoints}
        args.records_frame = (
            harvested_records(items, args.records, args.seed) if args.records > 0 else None
        )
        del items
        for kind in args.stores:
            results["stores"].append(run_store(kind, args, deltas, admin_db_url, plan, workdir))

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"web-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\n{'store':<11} {'endpoint':<18} {'clients':>7} {'req/s':>8} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'p99 ms':>8} {'errors':>6}"
    )
    for store in results["stores"]:
        for name, levels in store.get("endpoints", {}).items():
            for clients, s in levels.items():
                print(
                    f"{store['store']:<11} {name:<18} {clients:>7} {s['requests_per_s']:>8.1f}"
                    f" {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} {s['p99_ms']:>8.1f}"
                    f" {s['errors']:>6}"
                )
    print(f"written {path.relative_to(BENCH_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
