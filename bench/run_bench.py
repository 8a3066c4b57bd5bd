"""The real run: the `usage_pipeline` job through Dagster, asset by asset, on one generated day.

For each requested size the benchmark generates one synthetic day (E events over S sites, with
`pipeline_bench.py`'s generator, which also writes the day's `sources.csv`), then, in a fresh
process per run, does what `make demo` does on a fresh temporary data folder: creates the admin
DB (SQLite) and imports the sources, loads the code location (`definitions.py`: the real
resources, a local lake and warehouse and the DuckDB store) and executes the `usage_pipeline`
job for the day in-process, on a Dagster instance in a temporary DAGSTER_HOME (the project's
`instance/dagster.yaml`). Generation and setup are not timed.

    .venv/bin/python bench/run_bench.py --events 1000000 10000000 --sites 100

Per step (asset) it reports the seconds between Dagster's STEP_START and STEP_SUCCESS events,
events/s (the day's input events over those seconds), the CPU seconds and peak RSS of the
process while the step ran (sampled every 20 ms with timestamps, each sample attributed to the
step running then) and the bytes of the files the step wrote (every file under the run's data
folder, attributed to the step whose window holds its modification time). Then end to end
(raw_events' start to stats_index's end) with the process peak, and the Dagster overhead: the
wall time of `execute_in_process` minus the sum of the steps. `--with-library` adds
`pipeline_bench.py`'s library-only run (raw → cleaning → deltas) on the same lake as a
secondary line.

Results are printed as a table and written to `bench/results/run-<timestamp>.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from pipeline_bench import (
    DAY,
    IP_SALT,
    RESULTS_DIR,
    MiB,
    RssSampler,
    _fmt_rate,
    _lake_paths,
)
from pipeline_bench import _child as pipeline_child

REPO_ROOT = Path(__file__).resolve().parents[1]
JOB = "usage_pipeline"
SUBCOUNTS_JOB = "usage_subcounts"


class TimedRssSampler(RssSampler):
    """`RssSampler` that also keeps every sample as (time.time(), RSS, CPU seconds), so that
    samples can be attributed afterwards to the Dagster step that was running at the time."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[tuple[float, int, float]] = []

    def _record(self) -> None:
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_times()
        now = time.time()
        with self._lock:
            self.peak = max(self.peak, rss)
            self._stage_peak = max(self._stage_peak, rss)
            self.samples.append((now, rss, cpu.user + cpu.system))


def _run_environment(
    run_dir: Path, lake: Path, sources: Path, piece_mib: float | None = None
) -> dict[str, str]:
    """The project's settings for this run: every USAGE_STATS_* variable from here, none inherited
    (a shell with the test services' variables would otherwise send the run elsewhere)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGE_STATS_")}
    env.update(
        {
            "USAGE_STATS_DATA_DIR": str(run_dir),  # warehouse/, stats.duckdb, admin.db
            "USAGE_STATS_LAKE_URL": str(lake),
            "USAGE_STATS_SOURCES_FILE": str(sources),
            "USAGE_STATS_STATS_STORE": "duckdb",
            "USAGE_STATS_IP_SALT": IP_SALT,
            "USAGE_STATS_START_DATE": DAY.isoformat(),
            "USAGE_STATS_END_DATE": DAY.isoformat(),
            "DAGSTER_HOME": str(run_dir / "dagster_home"),
        }
    )
    if piece_mib is not None:
        env["USAGE_STATS_PIECE_MIB"] = str(piece_mib)
    return env


def _files(root: Path, skip: Path) -> list[tuple[str, int, float]]:
    """(path relative to root, bytes, modification time) of every file under root but skip."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and skip not in path.parents:
            stat = path.stat()
            found.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime))
    return found


def _dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def run_dagster(run_dir: Path, subcounts: bool = False) -> dict:
    """In the child, with the environment of `_run_environment`: admin DB, code location, job;
    with `subcounts`, then records planted for the day's items and the `usage_subcounts` job."""
    from usage_stats.admin import db
    from usage_stats.admin.registry import import_sources
    from usage_stats.settings import Settings

    settings = Settings.current()
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "instance" / "dagster.yaml", dagster_home / "dagster.yaml")
    # `usage-stats db upgrade` and `usage-stats sources import <sources.csv>`, as `make demo`
    db.upgrade(settings.admin_db_url)
    report = import_sources(settings.admin_db_url, Path(settings.sources_file))
    if not report.ok:
        raise SystemExit(f"sources import failed: {report.problems}")

    started = time.perf_counter()
    sys.path.insert(0, str(REPO_ROOT))
    from dagster import DagsterInstance

    from definitions import defs

    job = defs.get_job_def(JOB)
    load_seconds = time.perf_counter() - started
    instance = DagsterInstance.get()
    run = _execute(job, instance, run_dir, dagster_home)
    input_events = run["steps"]["raw_events"]["assets"]["raw_events"]["dagster/row_count"]
    run["input_events"] = input_events
    run["events_per_second"] = input_events / run["end_to_end_seconds"]
    for step in run["steps"].values():
        step["events_per_second"] = input_events / step["seconds"] if step["seconds"] else None
    run["load_code_location_seconds"] = load_seconds
    if subcounts:
        run["planted_records"] = plant_records(settings)
        later = _execute(defs.get_job_def(SUBCOUNTS_JOB), instance, run_dir, dagster_home)
        for step in later["steps"].values():
            step["events_per_second"] = input_events / step["seconds"] if step["seconds"] else None
        run["subcounts"] = later
    return run


def plant_records(settings) -> int:
    """Harvested records for nine in ten of the day's used items (`subcounts_bench.records_of`:
    40 types, 3,000 publishers, 3 of 5,000 subjects each, ...), each under its owner's source,
    written where `item_metadata` keeps a source's current records. Not timed: the harvest is
    another job."""
    import numpy as np
    import polars as pl
    from subcounts_bench import records_of

    from usage_stats.admin.registry import DbSourceRegistry
    from usage_stats.metadata.store import MetadataStore
    from usage_stats.storage.open import open_lake
    from usage_stats.storage.warehouse import Warehouse

    warehouse = Warehouse(open_lake(settings.warehouse_url))
    sources = pl.DataFrame(
        [(s.site_id, s.source_key) for s in DbSourceRegistry(settings.admin_db_url).sources()],
        schema={"owner_site_id": pl.Int32, "source_key": pl.String},
        orient="row",
    )
    used = (
        warehouse.read("item_daily_deltas", DAY)
        .filter(pl.col("scope") == "item")
        .select("key", pl.col("owner_site_id").cast(pl.Int32))
        .unique("key")
        .sort("key")
        .join(sources, on="owner_site_id")
    )
    rng = np.random.default_rng(15)
    used = used.filter(pl.Series(rng.random(used.height) < 0.9))
    records = records_of(used.get_column("key"), used.get_column("source_key"), rng)
    store = MetadataStore(warehouse.lake)
    for (source_key,), frame in records.group_by("source_key"):
        store._write(store._current_key(str(source_key)), frame)
    return records.height


def _execute(job, instance, run_dir: Path, dagster_home: Path) -> dict:
    """Run `job` for the day in-process; its steps' seconds, CPU, peak RSS and bytes written."""
    from dagster import DagsterEventType

    gc.collect()
    with TimedRssSampler() as sampler:
        baseline = sampler.peak
        run_start = time.time()
        wall_start = time.perf_counter()
        result = job.execute_in_process(
            partition_key=DAY.isoformat(), instance=instance, raise_on_error=False
        )
        wall = time.perf_counter() - wall_start
        run_end = time.time()
    if not result.success:
        raise SystemExit(f"the {job.name} run {result.run_id} failed")

    steps: dict[str, dict] = {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        step = steps.setdefault(event.step_key, {"assets": {}})
        if event.event_type == DagsterEventType.STEP_START:
            step["start"] = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            step["end"] = entry.timestamp
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = entry.asset_materialization
            metadata = {k: v.value for k, v in materialization.metadata.items()}
            # the counts and the warehouse file, not the schema or previews
            step["assets"][materialization.asset_key.to_user_string()] = {
                k: v
                for k, v in metadata.items()
                if isinstance(v, int | float) or k == "dagster/uri"
            }
    order = sorted(steps, key=lambda key: steps[key]["start"])
    files = [f for f in _files(run_dir, dagster_home) if run_start <= f[2] <= run_end]
    samples = sampler.samples
    for key in order:
        step = steps[key]
        start, end = step["start"], step["end"]
        step["seconds"] = end - start
        inside = [s for s in samples if start <= s[0] <= end]
        # the samples just before and after the step bound its RSS and CPU time too
        before = [s for s in samples if s[0] < start][-1:]
        after = [s for s in samples if s[0] > end][:1]
        window = before + inside + after
        step["peak_rss_mib"] = max(s[1] for s in window) / MiB
        step["cpu_seconds"] = window[-1][2] - window[0][2]
        step["samples"] = len(inside)
        written = [f for f in files if start <= f[2] <= end]
        step["bytes_written"] = sum(f[1] for f in written)
        step["files_written"] = {path: size for path, size, _ in written}
    first = steps[order[0]]["start"]
    last = max(steps[key]["end"] for key in order)
    in_steps = sum(steps[key]["seconds"] for key in order)
    unattributed = [
        f for f in files if not any(s["start"] <= f[2] <= s["end"] for s in steps.values())
    ]
    return {
        "job": job.name,
        "run_id": result.run_id,
        "order": order,
        "steps": steps,
        "end_to_end_seconds": last - first,
        "cpu_seconds": samples[-1][2] - samples[0][2],
        "peak_rss_mib": sampler.peak / MiB,
        "baseline_rss_mib": baseline / MiB,
        "run_wall_seconds": wall,
        "steps_seconds": in_steps,
        "dagster_overhead_seconds": wall - in_steps,
        "before_first_step_seconds": first - run_start,
        "after_last_step_seconds": run_end - last,
        "bytes_written": sum(f[1] for f in files),
        "files_outside_steps": {path: size for path, size, _ in unattributed},
        "dagster_home_bytes": _dir_bytes(dagster_home),
        "samples": len(samples),
    }


def _child(events: int, args: argparse.Namespace, index: int) -> dict:
    """One Dagster run for one size in a fresh interpreter and data folder."""
    lake, sources = _lake_paths(args.workdir, events, args.sites, args.seed, args.batch_events)
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-e{events}-", dir=args.workdir))
    log = args.workdir / f"run-e{events}-{index}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(run_dir)]
    if args.subcounts:
        cmd.append("--subcounts")
    try:
        with log.open("w") as err:
            done = subprocess.run(
                cmd,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=_run_environment(run_dir, lake, sources, args.piece_mib),
                cwd=REPO_ROOT,
            )
        if done.returncode != 0:
            print(log.read_text()[-4000:], file=sys.stderr)
            raise SystemExit(f"the run on {events:,} events failed (log: {log})")
        return json.loads(done.stdout.strip().splitlines()[-1]) | {"log": str(log)}
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def print_table(results: list[dict]) -> None:
    header = (
        f"{'events':>12} {'step':<18} {'rows out':>20} {'seconds':>8} {'cpu s':>7} "
        f"{'events/s':>12} {'peak RSS MiB':>13} {'MiB written':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        run = r["run"]
        e = f"{r['events']:,}"
        gen = r["generation"]
        if not gen.get("reused"):
            print(
                f"{e:>12} {'generate':<18} {gen['events_written']:>20,} {gen['seconds']:>8.2f} "
                f"{gen['cpu_seconds']:>7.2f} "
                f"{_fmt_rate(gen['events_written'] / gen['seconds']):>12} "
                f"{gen['peak_rss_mib']:>13,.0f} {'':>12}   (not counted)"
            )
            e = ""
        for key in run["order"]:
            s = run["steps"][key]
            rows = "/".join(f"{a.get('dagster/row_count', 0):,}" for a in s["assets"].values())
            optimize = s["assets"].get("stats_index", {}).get("optimize_seconds")
            note = f"   (of which optimize {optimize:.2f} s)" if optimize is not None else ""
            print(
                f"{e:>12} {key:<18} {rows:>20} {s['seconds']:>8.2f} {s['cpu_seconds']:>7.2f} "
                f"{_fmt_rate(s['events_per_second']):>12} {s['peak_rss_mib']:>13,.0f} "
                f"{s['bytes_written'] / MiB:>12,.1f}{note}"
            )
            e = ""
        print(
            f"{'':>12} {'end-to-end':<18} {run['input_events']:>20,} "
            f"{run['end_to_end_seconds']:>8.2f} {run['cpu_seconds']:>7.2f} "
            f"{_fmt_rate(run['events_per_second']):>12} {run['peak_rss_mib']:>13,.0f} "
            f"{run['bytes_written'] / MiB:>12,.1f}   (process peak)"
        )
        print(
            f"{'':>12} {'dagster overhead':<18} {'':>20} "
            f"{run['dagster_overhead_seconds']:>8.2f}   (run wall {run['run_wall_seconds']:.2f} s "
            f"− steps {run['steps_seconds']:.2f} s; code location loaded in "
            f"{run['load_code_location_seconds']:.2f} s, not counted)"
        )
        later = run.get("subcounts")
        if later:
            for key in later["order"]:
                s = later["steps"][key]
                rows = "/".join(f"{a.get('dagster/row_count', 0):,}" for a in s["assets"].values())
                print(
                    f"{'':>12} {key:<18} {rows:>20} {s['seconds']:>8.2f} "
                    f"{s['cpu_seconds']:>7.2f} {_fmt_rate(s['events_per_second']):>12} "
                    f"{s['peak_rss_mib']:>13,.0f} {s['bytes_written'] / MiB:>12,.1f}"
                )
            added = later["cpu_seconds"] / run["cpu_seconds"] * 100
            print(
                f"{'':>12} {'usage_subcounts':<18} {run['planted_records']:>20,} "
                f"{later['end_to_end_seconds']:>8.2f} {later['cpu_seconds']:>7.2f} "
                f"{'':>12} {later['peak_rss_mib']:>13,.0f} "
                f"{later['bytes_written'] / MiB:>12,.1f}   (its own job, after the run, "
                f"records planted for the day's items: {added:.0f} % of the run's CPU)"
            )
        lib = r.get("library")
        if lib:
            print(
                f"{'':>12} {'library only':<18} {lib['input_events']:>20,} "
                f"{lib['seconds']:>8.2f} {lib['cpu_seconds']:>7.2f} "
                f"{_fmt_rate(lib['events_per_second']):>12} {lib['peak_rss_mib']:>13,.0f} "
                f"{'':>12}   (pipeline_bench: raw → cleaning → deltas, no writes)"
            )
    print()
    print(
        "seconds = STEP_START → STEP_SUCCESS; events/s = input events of the day / seconds (wall "
        "clock); cpu s = user + system time of the process while the step ran; peak RSS sampled "
        "every 20 ms; MiB written = files the step wrote (warehouse, DuckDB store, admin DB); "
        "rows out per asset the step materialised."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the generated lakes and run logs go (default: a temporary folder, removed "
        "afterwards)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="skip generation when the workdir already has the lake"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the job this many times per size (each in a fresh process and data folder) "
        "and report the fastest; all runs go to the JSON file",
    )
    parser.add_argument(
        "--with-library",
        action="store_true",
        help="also run pipeline_bench.py's library-only pipeline on the same lake",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep each run's data folder (warehouse, store)"
    )
    parser.add_argument(
        "--piece-mib",
        type=float,
        default=None,
        help="USAGE_STATS_PIECE_MIB for the runs (default: the project's default)",
    )
    parser.add_argument(
        "--subcounts",
        action="store_true",
        help="after the run, plant records for the day's items and run the usage_subcounts "
        "job on the same data folder (timed the same way, reported apart)",
    )
    parser.add_argument(
        "--batch-events",
        type=int,
        default=None,
        metavar="N",
        help="generate a day of more events in batches of N (pipeline_bench.py's option): a "
        "100M-event day does not fit in memory drawn whole",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # pipeline_bench's generator and library run read it: the real run has no cross-walk
    args.crosswalk = 0

    if args.child:
        print(json.dumps(run_dagster(args.child.resolve(), args.subcounts)))
        return 0

    load_before = os.getloadavg()
    print(f"load average (1, 5, 15 min) before: {load_before}", file=sys.stderr)
    temp = None
    if args.workdir is None:
        temp = tempfile.TemporaryDirectory(prefix="run-bench-")
        args.workdir = Path(temp.name)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for events in args.events:
            lake, _ = _lake_paths(args.workdir, events, args.sites, args.seed, args.batch_events)
            if args.reuse and lake.exists():
                generation = {"events_written": events, "seconds": float("nan"), "reused": True}
                generation["peak_rss_mib"] = float("nan")
            else:
                print(f"generating {events:,} events over {args.sites} sites…", file=sys.stderr)
                generation = pipeline_child("generate", events, args)
            runs = []
            for index in range(max(args.repeat, 1)):
                print(f"running {JOB} through Dagster on {events:,} events…", file=sys.stderr)
                load = os.getloadavg()[0]
                runs.append(_child(events, args, index) | {"load_average_before": load})
            best = min(runs, key=lambda run: run["end_to_end_seconds"])
            entry = {"events": events, "generation": generation, "run": best, "runs": runs}
            if args.with_library:
                print(f"running the library pipeline on {events:,} events…", file=sys.stderr)
                load = os.getloadavg()[0]
                entry["library"] = pipeline_child("run", events, args) | {
                    "load_average_before": load
                }
            results.append(entry)
    finally:
        if temp is not None:
            temp.cleanup()
    load_after = os.getloadavg()
    print_table(results)
    print(
        "Other processes on the machine slow every step down: the load average (1, 5, 15 min) "
        f"was {load_before} before and {load_after} after."
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    out = RESULTS_DIR / f"run-{stamp}.json"
    report = {
        "timestamp": stamp,
        "job": JOB,
        "day": DAY.isoformat(),
        "sites": args.sites,
        "seed": args.seed,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": psutil.virtual_memory().total / 1024**3,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "results": results,
    }
    out.write_text(json.dumps(report, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
