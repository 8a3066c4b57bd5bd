"""Events per second and peak memory of the usage pipeline, stage by stage.

For each requested size the benchmark generates one synthetic day (E events over S sites) and
runs raw → cleaning → deltas in-process, the way the Dagster assets call the library. Both the
generation and the pipeline run in fresh subprocesses, one per size: peak RSS is a high-water
mark, so a run that shared a process with the generator or with a smaller size would report
their peaks instead of its own. Generation time is reported but is not part of the pipeline.

    .venv/bin/python bench/pipeline_bench.py --events 1000000 10000000 --sites 100

`--crosswalk N` adds the identifier cross-walk (issue 14): N harvested records of the
repositories (`bench_metadata`, written once to the workdir), read and built into the table
once (stage `crosswalk`) and applied in cleaning, as the cleaning asset does.

Results are printed as a table and written to `bench/results/<timestamp>.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DAY = dt.date(2026, 1, 1)
IP_SALT = "bench-salt"
SAMPLE_SECONDS = 0.02
STAGES = ("raw", "crosswalk", "cleaning", "deltas")
MiB = 1024 * 1024


class RssSampler:
    """Samples this process's RSS in a background thread.

    Polars allocates and frees large buffers within a single call, so reading RSS only before
    and after a stage would miss its peak; sampling every ~20 ms catches it to within one
    interval. The sampler keeps a process-wide maximum and a per-stage maximum that `stage()`
    resets.
    """

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.peak = self._rss()
        self._stage_peak = self.peak
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        return self._process.memory_info().rss

    def _record(self) -> None:
        rss = self._rss()
        with self._lock:
            self.peak = max(self.peak, rss)
            self._stage_peak = max(self._stage_peak, rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._record()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._record()

    @contextmanager
    def stage(self, out: dict):
        """Time a block and record the highest RSS seen while it ran (sampled, plus both ends)."""
        with self._lock:
            self._stage_peak = self._rss()
        cpu = self._process.cpu_times()
        start = time.perf_counter()
        try:
            yield out
        finally:
            out["seconds"] = time.perf_counter() - start
            after = self._process.cpu_times()
            out["cpu_seconds"] = (after.user - cpu.user) + (after.system - cpu.system)
            self._record()
            with self._lock:
                out["peak_rss_mib"] = self._stage_peak / MiB
            out["rss_after_mib"] = self._rss() / MiB


def _lake_paths(
    workdir: Path, events: int, sites: int, seed: int, batch_events: int | None = None
) -> tuple[Path, Path]:
    batched = f"_b{batch_events}" if batch_events and events > batch_events else ""
    base = workdir / f"e{events}_s{sites}_seed{seed}{batched}"
    return base / "lake", base / "sources.csv"


def generate(
    events: int, sites: int, seed: int, workdir: Path, batch_events: int | None = None
) -> dict:
    """Write one synthetic day (no manifest: the benchmark needs data, not expected numbers);
    with `batch_events`, drawn in batches of at most that many events (`SyntheticConfig.
    batch_events`: a day of 100M events does not fit in memory whole)."""
    from usage_stats.demo.synthetic import SyntheticConfig, write_synthetic

    lake, sources = _lake_paths(workdir, events, sites, seed, batch_events)
    config = SyntheticConfig(
        sites=sites,
        days=1,
        events_per_day=events,
        start=DAY,
        seed=seed,
        batch_events=batch_events,
    )
    with RssSampler() as sampler:
        timing: dict = {}
        with sampler.stage(timing):
            result = write_synthetic(config, str(lake), sources, with_manifest=False)
    return {
        "events_written": sum(result.events_written.values()),
        "seconds": timing["seconds"],
        "cpu_seconds": timing["cpu_seconds"],
        "peak_rss_mib": sampler.peak / MiB,
        "lake": str(lake),
    }


def bench_metadata(sources: list, records: int):
    """`records` harvested records spread over the repositories, in the columns the
    cross-walk reads (site_id, item_key, deleted, item_keys; `ITEM_METADATA_SCHEMA`).

    Record i of repository o is the generated item `oai:repo<o>.example.org:<o+1000>/<i>`
    (items beyond those the generator uses are records nobody used that day), with a DOI, a
    handle and a landing-page URL; every tenth is a record of another key that lists the
    generated OAI identifier among its identifiers, so its use is re-keyed; every twentieth is
    deleted. A worst case for the table's size (four aliases per record) and a realistic mix
    of keys that resolve to themselves and keys that move.
    """
    import polars as pl

    repositories = [s.site_id for s in sources if s.type == "R"]
    per_repository = -(-records // len(repositories))
    # item by item across the repositories, so that every repository has its share
    frame = pl.DataFrame({"item": pl.int_range(per_repository, eager=True)}).join(
        pl.DataFrame({"site_id": pl.Series(repositories, dtype=pl.Int32)}), how="cross"
    )
    frame = frame.head(records).select("site_id", "item")
    o, i = pl.col("site_id"), pl.col("item")
    generated = pl.format("oai:repo{}.example.org:{}/{}", o, o + 1000, i)
    moved = i % 10 == 3
    own = pl.when(moved).then(pl.format("oai:records{}.example.org:{}", o, i)).otherwise(generated)
    return frame.select(
        "site_id",
        own.alias("item_key"),
        (i % 20 == 7).alias("deleted"),
        pl.concat_list(
            own,
            generated,
            pl.format("10.5555/{}.{}", o, i),
            pl.format("hdl:{}/{}", o + 1000, i),
            pl.format("https://repo{}.example.org/items/{}", o, i),
        ).alias("item_keys"),
    )


def run_pipeline(
    events: int,
    sites: int,
    seed: int,
    workdir: Path,
    crosswalk_records: int = 0,
    batch_events: int | None = None,
) -> dict:
    """raw → cleaning → deltas on the generated day, with per-stage timings and peak RSS;
    with `crosswalk_records`, the cross-walk of that many records built (its own stage) and
    applied in cleaning."""
    import polars as pl

    from usage_stats.admin.sources import CsvSourceRegistry, sources_frame
    from usage_stats.pipeline.canonical import read_canonical_day
    from usage_stats.pipeline.cleaning import clean_events
    from usage_stats.pipeline.crosswalk import crosswalk_summary
    from usage_stats.pipeline.metrics import daily_deltas
    from usage_stats.pipeline.processing import source_crosswalk
    from usage_stats.storage.open import open_lake

    lake_path, sources_path = _lake_paths(workdir, events, sites, seed, batch_events)
    registry = CsvSourceRegistry(sources_path).sources()
    slots = {s.site_id: s.custom_var_slot for s in registry}
    registry_frame = sources_frame(registry)
    lake = open_lake(str(lake_path))
    stages: dict[str, dict] = {name: {} for name in STAGES}
    # The records, as the cleaning asset reads them from the warehouse: generated once,
    # outside the timed stages; reading them is part of the `crosswalk` stage.
    metadata_path = workdir / f"metadata_s{sites}_r{crosswalk_records}.parquet"
    if crosswalk_records and not metadata_path.exists():
        bench_metadata(registry, crosswalk_records).write_parquet(metadata_path)
    gc.collect()
    with RssSampler() as sampler:
        baseline = sampler.peak
        start = time.perf_counter()
        with sampler.stage(stages["raw"]) as s:
            day_input = read_canonical_day(lake, DAY, slots, IP_SALT)
            s["rows_in"] = sum(f["rows"] for f in day_input.files if f["table"] == "events")
            s["rows_out"] = day_input.events.height
        events_frame = day_input.events
        del day_input
        crosswalk = None
        with sampler.stage(stages["crosswalk"]) as s:
            s["rows_in"] = s["rows_out"] = 0
            if crosswalk_records:
                metadata = pl.read_parquet(metadata_path)
                crosswalk = source_crosswalk(metadata, registry)
                s["rows_in"] = metadata.height
                s["rows_out"] = crosswalk.height
                s.update(crosswalk_summary(crosswalk))
                del metadata
        with sampler.stage(stages["cleaning"]) as s:
            cleaned = clean_events(events_frame, registry_frame, crosswalk=crosswalk)
            s["rows_in"] = events_frame.height
            s["rows_out"] = cleaned.sessions.height
            s["rows_rejected"] = cleaned.rejected.height
            s.update(cleaned.crosswalk)
        del events_frame
        sessions = cleaned.sessions
        del cleaned
        with sampler.stage(stages["deltas"]) as s:
            deltas = daily_deltas(sessions)
            s["rows_in"] = sessions.height
            s["rows_out"] = deltas.height
            s["item_rows"] = deltas.filter(pl.col("scope") == "item").height
        total = time.perf_counter() - start
    input_events = stages["raw"]["rows_out"]
    for stage in stages.values():
        stage["events_per_second"] = input_events / stage["seconds"] if stage["seconds"] else None
        stage["rows_in_per_second"] = (
            stage["rows_in"] / stage["seconds"] if stage["seconds"] else None
        )
    return {
        "stages": stages,
        "input_events": input_events,
        "seconds": total,
        "cpu_seconds": sum(stage["cpu_seconds"] for stage in stages.values()),
        "events_per_second": input_events / total if total else None,
        "peak_rss_mib": sampler.peak / MiB,
        "baseline_rss_mib": baseline / MiB,
        "polars_threads": pl.thread_pool_size(),
        "polars_version": pl.__version__,
    }


def _child(mode: str, events: int, args: argparse.Namespace) -> dict:
    """Run one mode for one size in a fresh interpreter and return its JSON result."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--events",
        str(events),
        "--sites",
        str(args.sites),
        "--seed",
        str(args.seed),
        "--workdir",
        str(args.workdir),
        "--crosswalk",
        str(args.crosswalk),
    ]
    if getattr(args, "batch_events", None):
        cmd += ["--batch-events", str(args.batch_events)]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fmt_rate(value: float | None) -> str:
    return f"{value:,.0f}" if value else "-"


def print_table(results: list[dict]) -> None:
    header = (
        f"{'events':>12} {'stage':<10} {'rows in':>12} {'rows out':>12} {'seconds':>8} "
        f"{'cpu s':>7} {'events/s':>12} {'peak RSS MiB':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        gen, run = r["generation"], r["pipeline"]
        e = f"{r['events']:,}"
        print(
            f"{e:>12} {'generate':<10} {'':>12} {gen['events_written']:>12,} "
            f"{gen['seconds']:>8.2f} {gen.get('cpu_seconds', float('nan')):>7.2f} "
            f"{_fmt_rate(gen['events_written'] / gen['seconds']):>12} "
            f"{gen['peak_rss_mib']:>13,.0f}   (not counted)"
        )
        for name in STAGES:
            s = run["stages"][name]
            if name == "crosswalk" and not s["rows_in"]:
                continue  # no cross-walk asked for
            print(
                f"{'':>12} {name:<10} {s['rows_in']:>12,} {s['rows_out']:>12,} "
                f"{s['seconds']:>8.2f} {s['cpu_seconds']:>7.2f} "
                f"{_fmt_rate(s['events_per_second']):>12} "
                f"{s['peak_rss_mib']:>13,.0f}"
            )
        print(
            f"{'':>12} {'end-to-end':<10} {run['input_events']:>12,} {'':>12} "
            f"{run['seconds']:>8.2f} {run['cpu_seconds']:>7.2f} "
            f"{_fmt_rate(run['events_per_second']):>12} "
            f"{run['peak_rss_mib']:>13,.0f}   (process peak)"
        )
    print()
    print(
        "events/s = input events of the day / stage seconds (wall clock); cpu s = user + system "
        "time of all threads; peak RSS sampled every 20 ms."
    )
    print(
        "Other processes on the machine slow every stage down: the load average (1, 5, 15 min) "
        f"at the end was {os.getloadavg()}."
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
        help="where the generated lakes go (default: a temporary folder, removed afterwards)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="skip generation when the workdir already has the lake"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the pipeline this many times per size (each in a fresh process) and report "
        "the fastest; all runs go to the JSON file",
    )
    parser.add_argument(
        "--crosswalk",
        type=int,
        default=0,
        metavar="N",
        help="apply the identifier cross-walk of N harvested records (about 4N aliases) built "
        "from the generated items; 0: none, as before any harvest",
    )
    parser.add_argument(
        "--batch-events",
        type=int,
        default=None,
        metavar="N",
        help="draw a day of more events in batches of N (its lake is kept apart from one drawn "
        "whole); a 10M-event batch takes ~5.5 GiB to draw",
    )
    parser.add_argument("--child", choices=["generate", "run"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        work = args.workdir.resolve()
        if args.child == "generate":
            found = generate(args.events[0], args.sites, args.seed, work, args.batch_events)
        else:
            found = run_pipeline(
                args.events[0], args.sites, args.seed, work, args.crosswalk, args.batch_events
            )
        print(json.dumps(found))
        return 0

    temp = None
    if args.workdir is None:
        temp = tempfile.TemporaryDirectory(prefix="pipeline-bench-")
        args.workdir = Path(temp.name)
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
                generation = _child("generate", events, args)
            runs = []
            for _ in range(max(args.repeat, 1)):
                print(f"running the pipeline on {events:,} events…", file=sys.stderr)
                load = os.getloadavg()[0]
                runs.append(_child("run", events, args) | {"load_average_before": load})
            pipeline = min(runs, key=lambda run: run["seconds"])
            results.append(
                {"events": events, "generation": generation, "pipeline": pipeline, "runs": runs}
            )
    finally:
        if temp is not None:
            temp.cleanup()
    print_table(results)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    out = RESULTS_DIR / f"{stamp}.json"
    report = {
        "timestamp": stamp,
        "sites": args.sites,
        "seed": args.seed,
        "crosswalk_records": args.crosswalk,
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
