"""Daily maintenance of the DuckDB stats store against the size of its history (issue 13).

Builds one DuckDB store day by day as `stats_index` does (replace_day, row_count,
record_titles, optimize), with days made by `web_bench.py`'s builders: `--rows-per-day`
item rows drawn per day over `--items` items (merged per row key, plus source/site/global
rollups; the snapshot of a day is its global rows, as in web_bench). A large day is costly to
draw, so `--distinct-days` days are drawn and repeated under new dates.

At each size of `--days` (a copy of the store at that size, except the largest), it times:

- `append`: one new day written and maintained (the stats_index steps, each timed);
- `rewrite`: a mid-history day re-written with other rows and maintained, `--rewrites` times,
  noting the file size after each;
- reads, median of `--repeats` calls (each opens its connection, as the web services do):
  an item over the whole history by month, a repository (source scope) by month and level,
  global totals by date, the top 10 items, a repository's top 10 items;
- then a copy arranged the old way (`sort_fully`, the whole tables sorted, as `optimize` did
  before runs): one more day appended to each store, each maintained its own way;
- and a copy of the runs store compacted (`compact`, `--compact-period`, `--max-run-rows`;
  every stored period counted as closed, as at the end of the latest one), timed, then
  compacted again (nothing should move); the row groups of usage_deltas and how many of them
  a query of scope global, source or item cannot skip by their `scope` min/max, per store;
- the same reads on the three stores (runs, compacted, sorted whole), taking turns call by
  call; then, on the compacted copy, a day inside the compacted period re-written and one
  appended, each as a stats_index day (timed).

    .venv/bin/python bench/store_bench.py --days 1 30 365                 # web_bench's size
    .venv/bin/python bench/store_bench.py --days 1 30 --rows-per-day 1200000 \\
        --items 2000000 --distinct-days 3                                 # ~1M rows a day

Prints a table per size and the load average before and after, and writes
`bench/results/store-<timestamp>.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

import web_bench  # noqa: E402
from web_bench import FIRST_DAY, RESULTS_DIR, with_rollups, year_of_items  # noqa: E402

from usage_stats.pipeline.metrics import METRICS  # noqa: E402
from usage_stats.storage.duckdb_store import RUN_ROWS, DuckDBStatsStore  # noqa: E402
from usage_stats.storage.store import RowFilter  # noqa: E402


def draw_days(args: argparse.Namespace) -> list[pl.DataFrame]:
    """`--distinct-days` days of delta rows (dates from FIRST_DAY), one frame per day."""
    drawn = argparse.Namespace(
        seed=args.seed,
        items=args.items,
        sources=args.sources,
        days=args.distinct_days,
        active_per_day=args.rows_per_day,
        zipf=args.zipf,
    )
    deltas = with_rollups(year_of_items(drawn))
    parts = deltas.partition_by("date", as_dict=True)
    return [parts[(FIRST_DAY + dt.timedelta(days=i),)] for i in range(args.distinct_days)]


def day_of(templates: list[pl.DataFrame], index: int, variant: int = 0) -> pl.DataFrame:
    """Day `index` of the history: a drawn day under that date (`variant` picks another)."""
    day = FIRST_DAY + dt.timedelta(days=index)
    frame = templates[(index + variant) % len(templates)]
    return frame.with_columns(pl.lit(day).alias("date"))


SNAPSHOT = "sparse"  # main() sets it from --snapshot


def stored_snapshot(deltas: pl.DataFrame) -> pl.DataFrame:
    """The snapshot rows a day stores. `sparse`: as many as stats_index stores now (every
    rollup row and the rows of the items used that day: the day's own rows, metrics doubled
    to stand for totals; the store never looks at the values); `global`: its global rows
    only (the bench before sparse snapshots, which left the snapshot's size out)."""
    if SNAPSHOT == "global":
        return deltas.filter(pl.col("scope") == "global")
    return deltas.with_columns(pl.col(m) * 2 for m in METRICS)


def stats_index_day(store: DuckDBStatsStore, deltas: pl.DataFrame, arrange: Callable) -> dict:
    """The steps of the stats_index asset for one day, each timed (seconds)."""
    day = deltas.item(0, "date")
    snapshot = stored_snapshot(deltas)
    titles = (
        deltas.filter(pl.col("scope") == "item")
        .select("key")
        .unique()
        .with_columns(pl.concat_str(pl.lit("Title of "), pl.col("key")).alias("title"))
    )
    out = {}
    started = time.perf_counter()
    store.replace_day(day, deltas, snapshot)
    out["replace_day"] = time.perf_counter() - started
    mark = time.perf_counter()
    if store.row_count("usage_deltas", day) != deltas.height:
        raise RuntimeError(f"{day}: row count differs")
    out["row_count"] = time.perf_counter() - mark
    mark = time.perf_counter()
    store.record_titles(day, titles)
    out["record_titles"] = time.perf_counter() - mark
    mark = time.perf_counter()
    arrange()
    out["optimize"] = time.perf_counter() - mark
    out["total"] = time.perf_counter() - started
    return {k: round(v, 3) for k, v in out.items()}


def read_plan(templates: list[pl.DataFrame], args: argparse.Namespace) -> dict[str, list]:
    rng = np.random.default_rng(args.seed + 1)
    keys = (
        pl.concat([t.filter(pl.col("scope") == "item").select("key") for t in templates])
        .unique()
        .sort("key")
        .get_column("key")
        .to_list()
    )
    return {
        "items": [keys[i] for i in rng.integers(len(keys), size=args.repeats)],
        "sources": [int(s) for s in rng.integers(1, args.sources + 1, size=args.repeats)],
    }


def reads(stores: dict[str, DuckDBStatsStore], days: int, plan: dict[str, list]) -> dict:
    """Median ms of each query over the whole stored history on each store, connection
    included; the stores take turns call by call, so a change of load hits both alike."""
    first, last = FIRST_DAY, FIRST_DAY + dt.timedelta(days=days)

    def queries(store: DuckDBStatsStore) -> dict[str, Callable[[int], object]]:
        return {
            "item_by_month": lambda i: store.totals(
                "item", plan["items"][i], first, last, ("month",)
            ),
            "source_by_month": lambda i: store.sums(
                "source", first, last, keys=(str(plan["sources"][i]),), by=("month", "level")
            ),
            "global_by_date": lambda i: store.totals("global", "global", first, last, ("date",)),
            "top_items": lambda i: store.top("item", first, last, "views", 10),
            "source_top_items": lambda i: store.top(
                "item", first, last, "views", 10, owner_site_ids=(plan["sources"][i],)
            ),
            # cumulative reads: each item's latest snapshot row on or before each day
            "item_snapshot": lambda i: store.snapshot("item", plan["items"][i], last),
            "item_cumulative": lambda i: store.snapshot_sums_where(
                "item", first, last, (RowFilter(keys=(plan["items"][i],)),)
            ),
        }

    each = {name: queries(store) for name, store in stores.items()}
    out: dict[str, dict[str, float]] = {name: {} for name in stores}
    for query in each[next(iter(stores))]:
        times: dict[str, list[float]] = {name: [] for name in stores}
        for name in stores:
            each[name][query](0)  # warm the page cache
        for i in range(len(plan["items"])):
            for name in stores:
                started = time.perf_counter()
                each[name][query](i)
                times[name].append(time.perf_counter() - started)
        for name in stores:
            out[name][query] = round(statistics.median(times[name]) * 1000, 1)
    return out


def file_mib(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def measure(path: Path, days: int, templates, plan, args) -> dict:
    """Append and rewrite with runs; then a copy sorted whole, the old way; both get one more
    day, each its own way, and the reads alternate between them."""
    store = DuckDBStatsStore(path, run_rows=args.run_rows)
    result: dict = {"days": days, "file_mib": file_mib(path), "runs": runs_summary(store)}
    result["append"] = stats_index_day(store, day_of(templates, days), store.optimize)
    mid = days // 2
    rewrites, sizes = [], []
    for r in range(args.rewrites):
        rewrites.append(stats_index_day(store, day_of(templates, mid, r + 1), store.optimize))
        sizes.append(file_mib(path))
    result["rewrite"] = rewrites[0]
    result["rewrite_totals"] = [r["total"] for r in rewrites]
    result["file_mib_after_rewrites"] = sizes
    whole_path = path.with_name("whole.duckdb")
    shutil.copyfile(path, whole_path)
    whole = DuckDBStatsStore(whole_path)
    last = day_of(templates, days + 1)
    result["append_sorted_whole"] = stats_index_day(whole, last, whole.sort_fully)
    result["append_again"] = stats_index_day(store, last, store.optimize)
    result["runs_after"] = runs_summary(store)
    result["file_mib_after"] = file_mib(path)
    result["file_mib_sorted_whole"] = file_mib(whole_path)
    compacted_path = path.with_name("compacted.duckdb")
    shutil.copyfile(path, compacted_path)
    compacted = DuckDBStatsStore(compacted_path, run_rows=args.run_rows)
    result.update(compaction(compacted, days, args))
    stores = {"runs": store, "compacted": compacted, "sorted_whole": whole}
    for name, each in stores.items():
        result[f"row_groups_{name}"] = row_groups(each.path)
    three = reads(stores, days + 2, plan)
    for name in stores:
        result[f"reads_{name}"] = three[name]
    # After the reads, which compare the same rows: a day inside the compacted period
    # re-written and one appended, each maintained by `optimize` as every night.
    result["rewrite_compacted"] = stats_index_day(
        compacted, day_of(templates, days // 2, 1), compacted.optimize
    )
    result["append_compacted"] = stats_index_day(
        compacted, day_of(templates, days + 2), compacted.optimize
    )
    result["runs_compacted_after"] = runs_summary(compacted)
    whole_path.unlink()
    compacted_path.unlink()
    return result


def measure_maintenance(path: Path, days: int, templates, plan, args) -> dict:
    """`--maintenance-only`: what the nightly run costs at this size, on this store only (as
    built, compacted monthly with `--compact-during-build`): one day appended, a mid-history
    day re-written, one more appended, and the reads, without the copies arranged otherwise
    (sorting or compacting a long history whole takes hours at large days)."""
    store = DuckDBStatsStore(path, run_rows=args.run_rows)
    result: dict = {"days": days, "file_mib": file_mib(path), "runs": runs_summary(store)}
    result["append"] = stats_index_day(store, day_of(templates, days), store.optimize)
    rewrites = [
        stats_index_day(store, day_of(templates, days // 2, r + 1), store.optimize)
        for r in range(args.rewrites)
    ]
    result["rewrite"] = rewrites[0] if rewrites else None
    result["rewrite_totals"] = [r["total"] for r in rewrites]
    result["append_again"] = stats_index_day(store, day_of(templates, days + 1), store.optimize)
    result["runs_after"] = runs_summary(store)
    result["file_mib_after"] = file_mib(path)
    result["row_groups_runs"] = row_groups(path)
    result["reads_runs"] = reads({"runs": store}, days + 2, plan)["runs"]
    return result


def print_maintenance(stage: dict) -> None:
    runs = {name: len(each) for name, each in stage["runs_after"].items()}
    print(f"\n{stage['days']} days stored, {stage['file_mib']} MiB; runs after: {runs}")
    steps = ("replace_day", "row_count", "record_titles", "optimize", "total")
    print(f"  {'one day, seconds':<26}" + "".join(f"{s:>14}" for s in steps))
    for label, key in (
        ("append", "append"),
        ("rewrite mid-history", "rewrite"),
        ("append again", "append_again"),
    ):
        if stage[key] is not None:
            print(f"  {label:<26}" + "".join(f"{stage[key][s]:>14.2f}" for s in steps))
    groups = stage["row_groups_runs"]
    print(
        f"  {groups['row_groups']} row groups; a query of scope global may read "
        f"{groups['global']}, source {groups['source']}, item {groups['item']}; "
        f"{stage['file_mib_after']} MiB"
    )
    print("  reads, median ms: " + ", ".join(f"{k} {v}" for k, v in stage["reads_runs"].items()))


def row_groups(path: Path) -> dict[str, int]:
    """Row groups of usage_deltas, and how many of them a query of each scope cannot skip by
    the min/max of their `scope` column (what DuckDB keeps per column segment; a group's
    range is its segments' together): where stale statistics of moved rollups show."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        segments = con.execute(
            "SELECT row_group_id, stats FROM pragma_storage_info('usage_deltas') "
            "WHERE column_name = 'scope'"
        ).fetchall()
    finally:
        con.close()
    ranges: dict[int, tuple[str, str]] = {}
    for group, stats in segments:
        if not isinstance(stats, dict) or "min" not in stats:
            continue  # a segment without statistics (empty, all null)
        low, high = stats["min"], stats["max"]
        if group in ranges:
            low, high = min(low, ranges[group][0]), max(high, ranges[group][1])
        ranges[group] = (low, high)
    out = {"row_groups": len(ranges)}
    for scope in ("global", "source", "item"):
        out[scope] = sum(low <= scope <= high for low, high in ranges.values())
    return out


def compaction(store: DuckDBStatsStore, days: int, args) -> dict:
    """`compact` of everything stored (the latest period counted as closed, as at its end),
    timed, and again (idempotent: nothing moved)."""
    after_last = FIRST_DAY + dt.timedelta(days=days + 2)
    out: dict = {}
    for key in ("compact", "compact_again"):
        report = store.compact(
            period=args.compact_period, before=after_last, max_run_rows=args.max_run_rows
        )
        out[key] = {
            "seconds": round(report.seconds, 2),
            "runs_before": report.runs_before,
            "runs_after": report.runs_after,
            "rewritten": report.rewritten,
            "rows_moved": report.rows_moved,
        }
    out["runs_compacted"] = runs_summary(store)
    out["file_mib_compacted"] = file_mib(store.path)
    return out


def runs_summary(store: DuckDBStatsStore) -> dict[str, list[int]]:
    """Rows of each run, per table and part."""
    return {f"{t}/{p}": [rows for _, _, rows in runs] for (t, p), runs in store.runs().items()}


def print_stage(stage: dict) -> None:
    items, rollups = (stage["runs_after"][f"usage_deltas/{p}"] for p in ("item", "rollup"))
    print(
        f"\n{stage['days']} days stored, {stage['file_mib']} MiB; delta runs: "
        f"{len(items)} of items (rows {min(items):,}–{max(items):,}), "
        f"{len(rollups)} of rollups (rows {min(rollups):,}–{max(rollups):,})"
    )
    steps = ("replace_day", "row_count", "record_titles", "optimize", "total")
    print(f"  {'one day, seconds':<26}" + "".join(f"{s:>14}" for s in steps))
    for label, key in (
        ("append, runs", "append"),
        ("rewrite mid-history, runs", "rewrite"),
        ("append again, runs", "append_again"),
        ("append, sorted whole", "append_sorted_whole"),
    ):
        print(f"  {label:<26}" + "".join(f"{stage[key][s]:>14.2f}" for s in steps))
    print(
        f"  rewrites (total s): {stage['rewrite_totals']}; file MiB after each: "
        f"{stage['file_mib_after_rewrites']}; at the end {stage['file_mib_after']}, "
        f"sorted whole {stage['file_mib_sorted_whole']}"
    )
    c = stage["compact"]
    print(
        f"  compact: {c['seconds']:.2f} s, {c['rows_moved']:,} rows moved, runs "
        f"{c['runs_before']} → {c['runs_after']} ({c['rewritten']} rewritten); again "
        f"{stage['compact_again']['seconds']:.2f} s, {stage['compact_again']['rows_moved']} "
        f"moved; {stage['file_mib_compacted']} MiB"
    )
    for label, key in (
        ("rewrite in compacted", "rewrite_compacted"),
        ("append, compacted", "append_compacted"),
    ):
        print(f"  {label:<26}" + "".join(f"{stage[key][s]:>14.2f}" for s in steps))
    for name in ("runs", "compacted", "sorted_whole"):
        groups = stage[f"row_groups_{name}"]
        print(
            f"  {name}: {groups['row_groups']} row groups; a query of scope global may read "
            f"{groups['global']}, source {groups['source']}, item {groups['item']}"
        )
    print(
        f"  {'reads, median ms':<20}{'runs':>10}{'compacted':>11}{'sorted whole':>14}"
        f"{'runs/whole':>12}{'compacted/whole':>17}"
    )
    for name, ms in stage["reads_runs"].items():
        whole = stage["reads_sorted_whole"][name]
        compact = stage["reads_compacted"][name]
        print(
            f"  {name:<20}{ms:>10.1f}{compact:>11.1f}{whole:>14.1f}{ms / whole:>12.2f}"
            f"{compact / whole:>17.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, nargs="+", default=[1, 30, 365])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--rows-per-day", type=int, default=10_000, help="item rows drawn/day")
    parser.add_argument("--distinct-days", type=int, default=60, help="drawn days, repeated")
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--run-rows", type=int, default=RUN_ROWS, help="the store's run size")
    parser.add_argument("--rewrites", type=int, default=3, help="mid-history rewrites per size")
    parser.add_argument(
        "--compact-period", choices=("week", "month", "year"), default="month", help="compact's"
    )
    parser.add_argument("--max-run-rows", type=int, default=None, help="compact's run bound")
    parser.add_argument("--repeats", type=int, default=15, help="calls per read, median")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--namespace",
        default=web_bench.NAMESPACE,
        help="repository N's OAI namespace, {} for N (as web_bench.py's)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where the store is built")
    parser.add_argument(
        "--compact-during-build",
        action="store_true",
        help="compact the closed months as each new month starts (the store_compaction job)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the built store (and its copies) in --workdir for a later look; its path "
        "is printed",
    )
    parser.add_argument(
        "--maintenance-only",
        action="store_true",
        help="at each size only the stats_index days and the reads, no copies arranged otherwise",
    )
    parser.add_argument(
        "--snapshot",
        choices=("sparse", "global"),
        default="sparse",
        help="the snapshot rows a day stores (see stored_snapshot)",
    )
    args = parser.parse_args()
    sizes = sorted(set(args.days))
    global SNAPSHOT
    SNAPSHOT = args.snapshot
    web_bench.NAMESPACE = args.namespace

    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    started = time.perf_counter()
    templates = draw_days(args)
    per_day = [t.height for t in templates]
    print(
        f"drew {len(templates)} days of {min(per_day):,}–{max(per_day):,} delta rows "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    plan = read_plan(templates, args)
    results: dict = {
        "benchmark": "store",
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "delta_rows_per_day": {"min": min(per_day), "max": max(per_day)},
        "load_before": load_before,
        "build": [],
        "compactions": [],
        "stages": [],
    }
    with (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="store-bench-", dir=args.workdir))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="store-bench-", dir=args.workdir)
    ) as tmp:
        if args.keep:
            print(f"the store is kept in {tmp}")
        path = Path(tmp) / "stats.duckdb"
        store = DuckDBStatsStore(path, run_rows=args.run_rows)
        built = time.perf_counter()
        for index in range(sizes[-1]):
            timing = stats_index_day(store, day_of(templates, index), store.optimize)
            results["build"].append(timing)
            upcoming = FIRST_DAY + dt.timedelta(days=index + 1)
            if args.compact_during_build and upcoming.day == 1:
                # The month just ended is closed: the monthly job rewrites it as one run
                # before the next month's first stats_index (not part of any day's cost).
                report = store.compact(period="month", max_run_rows=args.max_run_rows)
                results["compactions"].append(
                    {
                        "before": upcoming.isoformat(),
                        "seconds": round(report.seconds, 2),
                        "rows_moved": report.rows_moved,
                        "runs_before": report.runs_before,
                        "runs_after": report.runs_after,
                    }
                )
                print(
                    f"  compacted before {upcoming}: {report.rows_moved:,} rows moved in "
                    f"{report.seconds:.1f} s, runs {report.runs_before} → {report.runs_after}",
                    flush=True,
                )
            if (index + 1) % 30 == 0 or index + 1 in sizes:
                print(
                    f"  built {index + 1} days in {time.perf_counter() - built:.0f} s; "
                    f"last day {timing}",
                    flush=True,
                )
            if index + 1 in sizes:
                days = index + 1
                measured, show = (
                    (measure_maintenance, print_maintenance)
                    if args.maintenance_only
                    else (measure, print_stage)
                )
                if days == sizes[-1]:
                    stage = measured(path, days, templates, plan, args)
                else:
                    copy = Path(tmp) / f"stage-{days}.duckdb"
                    shutil.copyfile(path, copy)
                    stage = measured(copy, days, templates, plan, args)
                    copy.unlink()
                results["stages"].append(stage)
                show(stage)
    load_after = os.getloadavg()
    results["load_after"] = load_after
    totals = [b["total"] for b in results["build"]]
    optimizes = [b["optimize"] for b in results["build"]]
    print(
        f"\nbuild, one stats_index day: total median {statistics.median(totals):.2f} s, "
        f"max {max(totals):.2f} s; optimize median {statistics.median(optimizes):.2f} s, "
        f"max {max(optimizes):.2f} s"
    )
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"store-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out.relative_to(BENCH_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
