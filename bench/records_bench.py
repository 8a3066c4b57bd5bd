"""Record statistics' cost at network scale (issue 15: "record and usage subcount aggregation
for 1M items ... aim: ≤ 10 % added to the run"): what `record_deltas` and `record_snapshots`
compute for one day over the harvested metadata of 1,000,000 records, step by step, with the
CPU seconds and the peak RSS of each.

The records are generated (not harvested): 200 sources in 8 countries (one in twenty a
national node re-exposing records, level N), datestamps of their first appearance spread
over ten years, 1 % of them deleted later, and on the measured day `--changes` records added
and a tenth as many deleted; fields shaped like a real network's (40 types, 4 access rights,
4 languages, 3,000 publishers, 3 of 5,000 subjects each, a funder on every fifth, 800
affiliations, one or two of 6 file formats), file counts 0-4 and sizes on 80 % of them.

Steps, as the assets run them for one day:

- `events`: `record_events` of the run's days (both assets, once per run: the log rows of
  the day and the histories of the records it deletes);
- `all events`: `record_events` over the whole change log and current state (what both
  assets computed before; now only a recount needs them);
- `delta`: `record_deltas` of the day (the record_deltas asset; record_snapshots counts it
  again to advance);
- `carry`: `refresh_snapshot` of the day before: the stored snapshot of that day (counted
  before the day's harvest, with its log mark) brought up to the log that harvest left (its
  new records added, its deleted records' publication events taken back), what a run does
  when the changes since allow;
- `previous`: `record_snapshot` of the day before, from the log: the full recount, what a
  run falls back to otherwise (asserted equal to `carry`);
- `advance`: `advance_snapshot(previous, delta)`, the day's snapshot;
- `carry+advance`: `refresh_snapshot` given the day's delta: the day's snapshot from the
  stored one in one pass (what a run's first day does when it carries; asserted equal to
  `advance`);
- `checks`: what the asset checks: the chain (the day's delta recounted against the stored
  one: the snapshot is previous + recounted delta) and `subcount_mismatches` of snapshot and
  delta;
- `full chain`: `record_snapshot_mismatches(snapshot, previous, delta)` over every snapshot
  row, what the chain check cost before (for comparison);
- `rebuild`: `record_snapshot` of the day from the log, what each day cost before
  `advance_snapshot` (measured for comparison, not run by the assets).

    PYTHONPATH=. .venv/bin/python bench/records_bench.py [--items 1000000] [--changes 2000]

Writes `bench/results/records-<timestamp>.json`. The peak RSS of a step is the process's
high-water mark reset before it (`/proc/self/clear_refs`), so it includes what was already
held (the generated records, about half of it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from usage_stats.admin.sources import Source
from usage_stats.metadata.schema import (
    ITEM_METADATA_SCHEMA,
    METADATA_CHANGES_SCHEMA,
    conform_metadata,
)
from usage_stats.pipeline.records import (
    RECORD_KEYS,
    advance_snapshot,
    log_mark,
    record_deltas,
    record_events,
    record_snapshot,
    record_snapshot_mismatches,
    refresh_snapshot,
    source_levels,
    subcount_mismatches,
)

DAY = dt.date(2026, 1, 10)
FIRST = dt.datetime(2016, 1, 1, tzinfo=dt.UTC)
SOURCES = 200
COUNTRIES = ["BR", "AR", "MX", "CO", "CL", "PE", "CR", "EC"]
EPOCH_1986 = (dt.date(1986, 1, 1) - dt.date(1970, 1, 1)).days
HARVEST = dt.datetime(2026, 1, 11, 6, tzinfo=dt.UTC)  # the harvest of the day's changes
RESULTS = Path(__file__).resolve().parent / "results"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_peak() -> bool:
    """Reset the process's RSS high-water mark (Linux); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sources() -> list[Source]:
    return [
        Source(
            i,
            f"opendoar::{i}",
            f"Source {i}",
            "N" if i % 20 == 0 else "R",
            COUNTRIES[i % len(COUNTRIES)].lower(),
            None,
            1,
        )
        for i in range(1, SOURCES + 1)
    ]


def _labels(prefix: str, values: np.ndarray) -> pl.Series:
    return pl.Series(values).cast(pl.String).str.replace(r"^", prefix)


def _lists(prefix: str, matrix: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """Rows of `matrix` cut to `lengths`, as lists of labelled strings."""
    frame = pl.DataFrame({"v": matrix, "n": lengths})
    return frame.select(
        pl.col("v")
        .arr.to_list()
        .list.head(pl.col("n"))
        .list.eval(pl.format(prefix + "{}", pl.element()))
    ).to_series()


def generate(items: int, changes: int, seed: int = 15) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(current state, change log) of `items` records, `changes` of them added on DAY and a
    tenth as many deleted on DAY."""
    rng = np.random.default_rng(seed)
    source = rng.integers(1, SOURCES + 1, items)
    ids = np.arange(items)
    span = int((dt.datetime.combine(DAY, dt.time(), dt.UTC) - FIRST).total_seconds())
    offset = rng.integers(0, span, items)
    day_start = int((dt.datetime.combine(DAY, dt.time(), dt.UTC) - FIRST).total_seconds())
    offset[-changes:] = day_start + rng.integers(0, 86_400, changes)  # the day's additions
    datestamp = pl.select(
        pl.lit(FIRST, dtype=pl.Datetime("us", "UTC"))
        + pl.duration(seconds=pl.Series(offset, dtype=pl.Int64))
    ).to_series()
    files = rng.integers(0, 5, items)
    sized = rng.random(items) < 0.8
    deleted_before = rng.random(items) < 0.01
    deleted_before[-changes:] = False
    deleted_today = np.zeros(items, dtype=bool)
    deleted_today[rng.choice(items - changes, changes // 10, replace=False)] = True
    deleted_today &= ~deleted_before
    pub = rng.integers(0, 365 * 40, items)
    current = pl.DataFrame(
        {
            "source_key": _labels("opendoar::", source),
            "site_id": pl.Series(source, dtype=pl.Int32),
            "oai_identifier": _labels("oai:repo:", ids),
            "item_key": _labels("oai:repo:", ids),
            "datestamp": datestamp,
            "deleted": deleted_before | deleted_today,
            "publication_date": pl.Series(pub + EPOCH_1986, dtype=pl.Int32).cast(pl.Date),
            "resource_type": _labels("coar:", rng.integers(0, 40, items)),
            "access_rights": _labels("access:", rng.integers(0, 4, items)),
            "language": pl.Series(
                np.array(["spa", "por", "eng", ""])[rng.integers(0, 4, items)]
            ).replace("", None),
            "publisher": _labels("publisher ", rng.integers(0, 3_000, items)),
            "subjects": _lists("subject ", rng.integers(0, 5_000, (items, 3)), np.full(items, 3)),
            "funders": _lists(
                "funder ", rng.integers(0, 500, (items, 1)), (ids % 5 == 0).astype(np.int64)
            ),
            "affiliations": _lists(
                "inst ", rng.integers(0, 800, (items, 1)), np.ones(items, dtype=np.int64)
            ),
            "formats": _lists(
                "application/x-", rng.integers(0, 6, (items, 2)), rng.integers(1, 3, items)
            ),
            "file_count": pl.Series(files, dtype=pl.Int32),
            "file_bytes": pl.Series(files * rng.integers(1, 50_000_000, items), dtype=pl.Int64)
            .to_frame("b")
            .select(pl.when(pl.Series(sized)).then(pl.col("b")))
            .to_series(),
        }
    )
    current = conform_metadata(current)
    harvested = pl.lit(dt.datetime(2026, 1, 11, tzinfo=dt.UTC), dtype=pl.Datetime("us", "UTC"))
    # The day's harvest (its additions and deletions), after everything else.
    todays = pl.lit(HARVEST, dtype=pl.Datetime("us", "UTC"))
    new = pl.Series(np.arange(items) >= items - changes)
    log = current.select(
        "source_key",
        "oai_identifier",
        "item_key",
        pl.lit("added").alias("change"),
        "datestamp",
        pl.when(new).then(todays).otherwise(harvested).alias("harvested_at"),
    )
    gone = current.filter(pl.Series(deleted_before | deleted_today))
    later = pl.Series(deleted_today[deleted_before | deleted_today])
    removal = gone.select(
        "source_key",
        "oai_identifier",
        "item_key",
        pl.lit("deleted").alias("change"),
        pl.when(later)
        .then(pl.lit(dt.datetime(2026, 1, 10, 18, tzinfo=dt.UTC)))
        .otherwise(pl.col("datestamp") + pl.duration(days=30))
        .alias("datestamp"),
        pl.when(later)
        .then(todays)
        .otherwise(harvested + pl.duration(hours=1))
        .alias("harvested_at"),
    )
    changes_log = pl.concat([log, removal]).cast(METADATA_CHANGES_SCHEMA)
    return current.cast(ITEM_METADATA_SCHEMA), changes_log


def before_harvest(current: pl.DataFrame, changes: pl.DataFrame) -> tuple:
    """(current state, change log) as they were before the day's harvest."""
    old = changes.filter(pl.col("harvested_at") < HARVEST)
    gone_today = changes.filter(
        (pl.col("harvested_at") >= HARVEST) & (pl.col("change") == "deleted")
    ).select("source_key", "oai_identifier")
    state = (
        current.join(
            old.select("source_key", "oai_identifier").unique(),
            on=["source_key", "oai_identifier"],
            how="semi",
        )
        .join(
            gone_today.with_columns(pl.lit(True).alias("_today")),
            on=["source_key", "oai_identifier"],
            how="left",
        )
        .with_columns(
            pl.when(pl.col("_today")).then(False).otherwise(pl.col("deleted")).alias("deleted")
        )
        .drop("_today")
    )
    return state, old


def measure(label: str, step: Callable[[], object], steps: list[dict]) -> object:
    exact = reset_peak()
    c0, t0 = cpu(), time.perf_counter()
    result = step()
    steps.append(
        {
            "step": label,
            "wall_s": round(time.perf_counter() - t0, 3),
            "cpu_s": round(cpu() - c0, 3),
            "peak_rss_mib": round(peak_mib()),
            "peak_is_step": exact,
            "rows": getattr(result, "height", None),
        }
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=2_000)
    args = parser.parse_args()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    current, changes = generate(args.items, args.changes)
    generated = time.perf_counter() - t0
    levels = source_levels(sources())
    steps: list[dict] = []
    before = DAY - dt.timedelta(days=1)
    # The snapshot of the day before as a run stored it before the day's harvest (not timed).
    old_current, old_changes = before_harvest(current, changes)
    stored = record_snapshot(old_current, old_changes, levels, before)
    mark = log_mark(old_changes, stored, levels)
    del old_current
    events = measure("all events", lambda: record_events(current, changes), steps)
    day_events = measure("events", lambda: record_events(current, changes, [DAY]), steps)
    delta = measure(
        "delta", lambda: record_deltas(current, changes, levels, DAY, day_events), steps
    )
    keys = list(RECORD_KEYS)
    from_all = record_deltas(current, changes, levels, DAY, events)
    assert delta.sort(keys, nulls_last=True).equals(from_all.sort(keys, nulls_last=True))
    carried = measure(
        "carry",
        lambda: refresh_snapshot(stored, mark, current, changes, levels, before),
        steps,
    )
    previous = measure(
        "previous", lambda: record_snapshot(current, changes, levels, before, events), steps
    )
    assert carried is not None, "the day's harvest should carry forward"
    assert carried.sort(keys, nulls_last=True).equals(previous.sort(keys, nulls_last=True))
    assert not stored.equals(carried)
    snapshot = measure("advance", lambda: advance_snapshot(previous, delta, DAY), steps)
    at_once = measure(
        "carry+advance",
        lambda: refresh_snapshot(stored, mark, current, changes, levels, before, delta, DAY),
        steps,
    )
    assert at_once.sort(keys, nulls_last=True).equals(snapshot.sort(keys, nulls_last=True))
    bad = measure(
        "checks",
        lambda: (
            record_snapshot_mismatches(delta, None, delta),  # the asset's chain check
            subcount_mismatches(snapshot),
            subcount_mismatches(delta),
        ),
        steps,
    )
    rebuilt = measure(
        "rebuild", lambda: record_snapshot(current, changes, levels, DAY, events), steps
    )
    same = rebuilt.sort(keys, nulls_last=True).equals(snapshot.sort(keys, nulls_last=True))
    assert same, "advance_snapshot differs from the rebuild"
    assert bad == (0, 0, 0), bad
    chain = measure(
        "full chain",
        lambda: record_snapshot_mismatches(snapshot, previous, delta),
        steps,
    )
    assert chain == 0, chain
    run = ("events", "delta", "carry+advance", "checks")
    # record_deltas: events + delta + its check; record_snapshots: events + delta (counted
    # again to advance) + carry+advance (or, when it must recount, all events + previous +
    # advance) + checks.
    by = {s["step"]: s for s in steps}
    run_cpu = sum(by[s]["cpu_s"] for s in run) + by["events"]["cpu_s"] + by["delta"]["cpu_s"]
    recount_cpu = run_cpu - by["carry+advance"]["cpu_s"]
    recount_cpu += sum(by[s]["cpu_s"] for s in ("all events", "previous", "advance"))
    # the same day as the assets ran it before this change, from the same steps
    old_cpu = 2 * (by["all events"]["cpu_s"] + by["delta"]["cpu_s"])
    old_cpu += sum(by[s]["cpu_s"] for s in ("carry", "advance", "checks"))
    result = {
        "items": args.items,
        "changes": args.changes,
        "generate_s": round(generated, 2),
        "events": events.height,
        "delta_rows": delta.height,
        "snapshot_rows": snapshot.height,
        "steps": steps,
        "run_cpu_s": round(run_cpu, 2),
        "run_cpu_recount_s": round(recount_cpu, 2),
        "run_cpu_before_s": round(old_cpu, 2),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    print(
        f"{args.items:,} records, {args.changes:,} added on {DAY} (generated in {generated:.1f} s)"
    )
    print(f"{'step':13} {'wall s':>7} {'cpu s':>7} {'peak MiB':>9} {'rows':>11}")
    for s in steps:
        rows = f"{s['rows']:,}" if s["rows"] is not None else ""
        print(
            f"{s['step']:13} {s['wall_s']:7.2f} {s['cpu_s']:7.2f} {s['peak_rss_mib']:9} {rows:>11}"
        )
    print(f"a day of both assets (events twice, delta twice): {run_cpu:.2f} CPU s carried")
    print(f"  (before: all events twice, carry and advance apart: {old_cpu:.2f} CPU s)")
    print(f"  ({recount_cpu:.2f} CPU s when it must recount the day before)")
    print("load average before/after:", load_before, result["load_average_after"])
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"records-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
