"""First load of the dashboard in a real browser over a year of data (aim: first figures
under 1 s on the network dashboard).

Why: the dashboard is a static page whose script asks the public API for everything, so what
a visitor waits for is the page, its scripts and several API requests, some of them in
parallel, some one after the other. The API's own latency (`web_bench.py`) does not tell how
long that chain takes; this measures it end to end in headless Chromium.

What: the year of `web_bench.py` (`--items` items over `--sources` repositories, a national
node and the portal, built with its functions) is loaded into each store, with a harvested
record for every used item and the record statistics and usage subcounts of every day
(`tests/dashboard_records_support.plant`: the pipeline's own functions; usage-subcount
snapshots every `--subcount-snapshot-every` days and on the last, record snapshots daily)
(`--stores`: a DuckDB file in a temporary folder; `opensearch` on a fresh prefix, deleted
afterwards unless `--keep`, if `USAGE_STATS_OPENSEARCH_URL` is set). The app is served by
uvicorn on 127.0.0.1 (`tests/browser_support.serving`) and Debian's Chromium opens, for each
view, one warm-up load and then `--loads` loads, each in a fresh browser context (empty
cache):

- `network`: `/dashboard` (default range: the last 12 months, by month);
- `source`: `/dashboard/source/<key>` of the repository with the most views;
- `node`: `/dashboard/node/<country>` of the national node;
- `widget`: `/widget/item?identifier=<the item with the most views>` (the whole year).

The warm-up load fills the server's response cache, so the measured loads are a browser's
first visit to a server that already answered those requests since the last write;
`--no-response-cache` serves with the cache off, so that every load is what the first
visitor after a run's write gets.

Per load, in ms from navigation start, from the browser's own clocks:

- `first_figures`: the `first-figures` performance mark the dashboard sets once the single
  figures are rendered (the widget has no mark: its `settled`);
- `response_end`, `dom_content_loaded`: navigation timing `responseEnd` and
  `domContentLoadedEventEnd` of the HTML page;
- `first_api`: when the first API request started (what comes before is the page and its
  scripts; between it and `first_figures`, the API and rendering);
- `settled`: when `body[data-state]` stopped being "loading" (chart, map and top lists
  rendered), recorded by a MutationObserver the benchmark adds before the page's scripts run
  (`performance.now()` read after Playwright saw it is kept too, as `settled_seen`);
- `all_panels`: the `all-panels` mark the dashboard sets once the record figures and chart,
  the all-time figures, every breakdown panel and the most viewed and downloaded records are
  drawn (`body[data-panels]` "ready"; the widget has none: its `settled`).

Every load must end in state "ready" with no console error, failed request or request
leaving 127.0.0.1. The API requests each page made (resource timing) are then replayed one at
a time with httpx, `--loads` times each, so a slow request can be told from a slow chain.

    .venv/bin/python bench/dashboard_bench.py                    # DuckDB, 100,000 items, 1 year
    .venv/bin/python bench/dashboard_bench.py --items 10000 --days 60 --loads 3

Prints median/max per view and measure, the API requests' times, and writes
`bench/results/dashboard-<store>-<timestamp>.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import polars as pl

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))

import web_bench  # noqa: E402
from browser_support import CHROMIUM, PageWatch, chromium, serving  # noqa: E402
from dashboard_records_support import plant  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
SETTLED = "body:not([data-state=loading])"
MEASURES = (
    "response_end",
    "dom_content_loaded",
    "first_api",
    "first_figures",
    "settled",
    "all_panels",
)
PANELS_DONE = "body[data-panels=ready], body[data-panels=error]"
TIMEOUT_MS = 180_000
# Runs before the page's own scripts: note when body[data-state] first leaves "loading". The
# observer only sees changes of that one attribute, so it costs the page nothing measurable.
SETTLED_OBSERVER = """
(() => {
  const observer = new MutationObserver(() => {
    const state = document.body && document.body.dataset.state;
    if (state && state !== "loading") {
      performance.mark("bench-settled");
      observer.disconnect();
    }
  });
  observer.observe(document, {
    attributes: true, attributeFilter: ["data-state"], subtree: true,
  });
})();
"""
READ_TIMING = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const mark = (name) => {
    const entry = performance.getEntriesByName(name)[0];
    return entry ? entry.startTime : null;
  };
  return {
    first_figures: mark("first-figures"),
    all_panels: mark("all-panels"),
    panels: document.body.dataset.panels || null,
    settled_mark: mark("bench-settled"),
    response_end: nav.responseEnd,
    dom_content_loaded: nav.domContentLoadedEventEnd,
    load_event: nav.loadEventEnd,
    state: document.body.dataset.state,
    api: performance.getEntriesByType("resource")
      .filter((r) => new URL(r.name).pathname.startsWith("/api/"))
      .map((r) => ({url: r.name, start: r.startTime, end: r.responseEnd,
                    duration: r.duration, bytes: r.encodedBodySize})),
  };
}"""


# --- what to open ----------------------------------------------------------------------------


def views(items: pl.DataFrame, deltas: pl.DataFrame, source_count: int) -> dict[str, str]:
    """The path of every view: the busiest repository, the national node, the top item."""
    sources = web_bench.sources_list(source_count)
    busiest = (
        deltas.filter(pl.col("scope") == "source")
        .group_by("key")
        .agg(pl.col("views").sum())
        .sort(["views", "key"], descending=[True, False])
        .get_column("key")[0]
    )
    source = next(s for s in sources if s.site_id == int(busiest))
    node = next(s for s in sources if s.type == "N")
    item = (
        items.group_by("key")
        .agg(pl.col("views").sum())
        .sort(["views", "key"], descending=[True, False])
        .get_column("key")[0]
    )
    return {
        "network": "/dashboard",
        "source": f"/dashboard/source/{source.source_key}",
        "node": f"/dashboard/node/{node.country.lower()}",
        "widget": "/widget/item?" + urlencode({"identifier": item}),
    }


# --- measuring -------------------------------------------------------------------------------


def one_load(browser: Any, url: str) -> dict[str, Any]:
    """Open `url` in a fresh context; the page's timings, or an error if anything went wrong."""
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    try:
        context.add_init_script(SETTLED_OBSERVER)
        page = context.new_page()
        watch = PageWatch(page)
        page.goto(url, timeout=TIMEOUT_MS)
        page.wait_for_selector(SETTLED, state="attached", timeout=TIMEOUT_MS)
        seen = page.evaluate("performance.now()")
        if page.query_selector("#records-panel"):  # the dashboard: its panels too
            page.wait_for_selector(PANELS_DONE, state="attached", timeout=TIMEOUT_MS)
        timing = page.evaluate(READ_TIMING)
        problems = []
        if timing["state"] != "ready":
            problems.append(f'state "{timing["state"]}", not "ready"')
        if timing["panels"] not in (None, "ready"):
            problems.append(f'panels "{timing["panels"]}", not "ready"')
        problems += [f"outside 127.0.0.1: {u}" for u in watch.outside]
        problems += watch.errors + [f"failed: {f}" for f in watch.failed]
        if problems:
            raise RuntimeError(f"{url}: " + "; ".join(problems))
    finally:
        context.close()
    settled = timing["settled_mark"] if timing["settled_mark"] is not None else seen
    first = timing["first_figures"] if timing["first_figures"] is not None else settled
    return {
        "first_figures": round(first, 1),
        "response_end": round(timing["response_end"], 1),
        "dom_content_loaded": round(timing["dom_content_loaded"], 1),
        "first_api": round(min((r["start"] for r in timing["api"]), default=0.0), 1),
        "settled": round(settled, 1),
        # the record and breakdown panels (the widget has none: its `settled`)
        "all_panels": round(
            timing["all_panels"] if timing["all_panels"] is not None else settled, 1
        ),
        "settled_seen": round(seen, 1),
        "load_event": round(timing["load_event"], 1),
        "first_figures_mark": timing["first_figures"] is not None,
        "api": [
            {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()}
            for r in timing["api"]
        ],
    }


def summarise(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def measure_views(base: str, paths: dict[str, str], loads: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with chromium() as browser:
        for name, path in paths.items():
            one_load(browser, base + path)  # warm-up: server caches, Chromium's first start
            runs = []
            for i in range(loads):
                runs.append(one_load(browser, base + path))
                r = runs[-1]
                print(
                    f"  {name:<8} load {i + 1}/{loads}: first figures {r['first_figures']:7.1f}"
                    f" ms, settled {r['settled']:7.1f} ms, all panels {r['all_panels']:7.1f} ms,"
                    f" {len(r['api'])} API requests",
                    flush=True,
                )
            out[name] = {
                "path": path,
                "runs": runs,
                "summary": {m: summarise([r[m] for r in runs]) for m in MEASURES},
            }
    return out


def replay_api(base: str, results: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Each API request a view made, alone and sequentially: median/max over `repeat`."""
    import httpx

    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=120) as client:
        for name, view in results.items():
            rows = []
            for request in view["runs"][-1]["api"]:
                parts = urlsplit(request["url"])
                target = parts.path + (f"?{parts.query}" if parts.query else "")
                times, status, size = [], 0, 0
                client.get(target)  # warm-up
                for _ in range(repeat):
                    started = time.perf_counter()
                    response = client.get(target)
                    size = len(response.content)
                    times.append((time.perf_counter() - started) * 1000)
                    status = response.status_code
                in_page = [
                    r["duration"]
                    for run in view["runs"]
                    for r in run["api"]
                    if r["url"] == request["url"]
                ]
                rows.append(
                    {
                        "request": target,
                        "status": status,
                        "bytes": size,
                        "alone_ms": summarise(times),
                        "in_page_ms": summarise(in_page),
                    }
                )
            out[name] = rows
    return out


# --- report ----------------------------------------------------------------------------------


def print_tables(store: str, result: dict[str, Any]) -> None:
    titles = {
        "response_end": "responseEnd",
        "dom_content_loaded": "DOMContentLoaded",
        "first_api": "first API request",
        "first_figures": "first figures",
        "settled": "usage rendered",
        "all_panels": "all panels",
    }
    print(f"\n{store}: ms from navigation start, median / max of {result['loads']} cold loads")
    print(f"{'view':<9}" + "".join(f"{titles[m]:>22}" for m in MEASURES))
    for name, view in result["views"].items():
        cells = "".join(
            f"{view['summary'][m]['median']:>13.1f} / {view['summary'][m]['max']:>6.1f}"
            for m in MEASURES
        )
        print(f"{name:<9}{cells}")
    print(
        f"\n{store}: API requests of each view, ms: in the page (median / max) and alone, "
        "sequentially (median / max)"
    )
    for name, rows in result["api"].items():
        print(f"{name}:")
        for row in rows:
            request = row["request"]
            if len(request) > 86:
                request = request[:83] + "..."
            print(
                f"  {request:<86} {row['in_page_ms']['median']:>7.1f} /"
                f" {row['in_page_ms']['max']:>7.1f}   {row['alone_ms']['median']:>7.1f} /"
                f" {row['alone_ms']['max']:>7.1f}  {row['bytes']:>8,} B"
            )


def run_store(
    kind: str,
    args: argparse.Namespace,
    deltas: pl.DataFrame,
    items: pl.DataFrame,
    admin_db_url: str,
    paths: dict[str, str],
    workdir: Path,
) -> dict[str, Any]:
    from usage_stats.storage.duckdb_store import DuckDBStatsStore
    from usage_stats.web import create_app

    print(f"{kind}:", flush=True)
    location = (
        str(workdir / "stats.duckdb") if kind == "duckdb" else f"dashbench{uuid.uuid4().hex[:8]}"
    )
    store = web_bench.make_store(kind, location)
    result: dict[str, Any] = {"store": kind, "loads": args.loads, "views": {}}
    try:
        result["load"] = web_bench.load(store, deltas, args.days)
        planted = plant(
            store,
            items,
            web_bench.sources_list(args.sources),
            web_bench.FIRST_DAY,
            args.days,
            snapshot_every=args.subcount_snapshot_every,
            log=lambda line: print(line, flush=True),
        )
        result["load"]["records"] = planted.metadata.height
        result["load"]["records_and_subcounts_seconds"] = planted.seconds
        result["load"]["subcount_snapshot_days"] = planted.subcount_snapshot_days
        del planted
        if kind == "opensearch":
            result["load"]["documents"] = web_bench.opensearch_counts(location)
            result["load"]["prefix"] = location
        else:
            result["load"]["file_mib"] = round(Path(location).stat().st_size / 2**20, 1)
        print(f"  load: {result['load']}", flush=True)
        result["load_average_before"] = os.getloadavg()
        # served as `usage-stats serve` opens it: the DuckDB file through one shared read-only
        # connection (a reader of its own per request, some of them writable, bumped the data
        # version and so emptied the response cache at every record or subcount request)
        served = DuckDBStatsStore(Path(location), shared_reads=True) if kind == "duckdb" else store
        cache = {"response_cache_seconds": 0} if args.no_response_cache else {}
        with serving(create_app(served, admin_db_url, **cache)) as base:
            result["views"] = measure_views(base, paths, args.loads)
            result["api"] = replay_api(base, result["views"], args.loads)
        result["load_average_after"] = os.getloadavg()
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
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--loads", type=int, default=5, help="cold loads per view")
    parser.add_argument("--stores", nargs="+", choices=["duckdb", "opensearch"], default=["duckdb"])
    parser.add_argument("--keep", action="store_true", help="keep the OpenSearch indices")
    parser.add_argument(
        "--subcount-snapshot-every",
        type=int,
        default=30,
        help="days between usage-subcount snapshots (and the last day)",
    )
    parser.add_argument(
        "--no-response-cache",
        action="store_true",
        help="serve with the response cache off: every load computes every API answer, as "
        "the first visitor after a run's write gets them",
    )
    args = parser.parse_args()
    if args.days > 365 * 2 or args.items < args.sources or args.loads < 1:
        parser.error("--days at most 730, --items at least --sources, --loads at least 1")
    if "opensearch" in args.stores and not os.environ.get("USAGE_STATS_OPENSEARCH_URL"):
        parser.error("opensearch needs USAGE_STATS_OPENSEARCH_URL (scripts/services.sh env)")
    if not os.access(CHROMIUM, os.X_OK):
        parser.error(f"no browser at {CHROMIUM} (scripts/browser.sh installs Debian's Chromium)")

    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    items = web_bench.year_of_items(args)
    deltas = web_bench.with_rollups(items)
    paths = views(items, deltas, args.sources)
    by_scope = dict(deltas.group_by("scope").len().iter_rows())
    data = {
        "first_day": web_bench.FIRST_DAY.isoformat(),
        "days": args.days,
        "items": args.items,
        "items_with_usage": items.get_column("key").n_unique(),
        "sources": args.sources,
        "delta_rows": deltas.height,
        "rows_by_scope": by_scope,
        "generate_seconds": round(time.perf_counter() - started, 1),
    }
    print(
        f"generated {deltas.height:,} delta rows ({by_scope}), {data['items_with_usage']:,} "
        f"items with usage, in {data['generate_seconds']} s; views: {paths}",
        flush=True,
    )
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "chromium": CHROMIUM}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        workdir = Path(tmp)
        admin_db_url = f"sqlite:///{workdir / 'admin.sqlite'}"
        web_bench.prepare_admin_db(admin_db_url, args)
        for kind in args.stores:
            result = run_store(kind, args, deltas, items, admin_db_url, paths, workdir)
            print_tables(kind, result)
            document = {
                "benchmark": "dashboard",
                "started": started_at,
                "machine": machine | {"load_average": os.getloadavg()},
                "config": vars(args),
                "data": data,
                **result,
            }
            path = RESULTS_DIR / f"dashboard-{kind}-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
            path.write_text(json.dumps(document, indent=2) + "\n")
            written.append(path)
    for path in written:
        print(f"written {path.relative_to(BENCH_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
