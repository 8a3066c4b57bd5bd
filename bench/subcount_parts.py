"""Where the usage subcounts' time goes on a real run's day (issue 15's speed aim).

`usage_subcount_deltas` does, per day, the library calls timed here, in the asset's order and
on the asset's inputs: the data folder of a `run_bench.py --subcounts --keep` run (its
warehouse, with the harvested records it planted and the kept events cleaning wrote) and the
lake that run read (for the visits' referrers). Each part is timed alone, best of
`--repeat`, wall and CPU seconds of this process (all threads); the job's Dagster steps add
their writes, checks and metadata around them (`run_bench.py --subcounts` times those).

    .venv/bin/python bench/run_bench.py --events 10000000 --sites 100 --workdir /tmp/rb-rs \\
        --reuse --subcounts --keep        # keeps <workdir>/run-e<E>-<random>
    .venv/bin/python bench/subcount_parts.py --run /tmp/rb-rs/run-e10000000-... \\
        --lake /tmp/rb-rs/e10000000_s100_seed42/lake \\
        --sources /tmp/rb-rs/e10000000_s100_seed42/sources.csv

The parts are grouped as the aim needs them: those that look at every kept event or visit
again (nothing the run stores carries the visits' referrers or the visitors), and those on
the day's item rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from usage_stats.admin.sources import CsvSourceRegistry  # noqa: E402
from usage_stats.metadata.store import MetadataStore  # noqa: E402
from usage_stats.pipeline.referrer_subcounts import (  # noqa: E402
    VISIT_USAGE_COLUMNS,
    indexed_visits,
    referrer_subcounts,
    unique_visitors,
    visit_usage,
)
from usage_stats.pipeline.referrers import read_visit_referrers  # noqa: E402
from usage_stats.pipeline.usage_subcounts import (  # noqa: E402
    full_subcounts,
    item_fields,
    owner_countries,
    top_n,
)
from usage_stats.storage.open import open_lake  # noqa: E402
from usage_stats.storage.warehouse import Warehouse  # noqa: E402

T = TypeVar("T")
EVENT_LEVEL = "event level"
ITEM_ROWS = "item rows"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Timer:
    """Each part's best (wall, CPU) over the repeats, in the order first timed."""

    def __init__(self) -> None:
        self.best: dict[tuple[str, str], tuple[float, float]] = {}

    def __call__(self, group: str, part: str, work: Callable[[], T]) -> T:
        wall, cpu = time.perf_counter(), _cpu()
        result = work()
        took = (time.perf_counter() - wall, _cpu() - cpu)
        known = self.best.get((group, part))
        if known is None or took[0] < known[0]:
            self.best[(group, part)] = took
        return result


def run_parts(store: Warehouse, lake_url: str, owners: pl.DataFrame, day: dt.date, timer: Timer):
    """One pass of the asset's calls for the day."""
    lake = open_lake(lake_url)
    records = timer(
        ITEM_ROWS, "harvested records read", lambda: MetadataStore(store.lake).read_all_current()
    )
    fields = timer(ITEM_ROWS, "item_fields", lambda: item_fields(records))
    deltas = timer(ITEM_ROWS, "item deltas read", lambda: store.read("item_daily_deltas", day))
    full = timer(ITEM_ROWS, "full_subcounts", lambda: full_subcounts(deltas, fields, owners, day))
    visits, _ = timer(EVENT_LEVEL, "read_visit_referrers", lambda: read_visit_referrers(lake, day))
    coded, index = timer(EVENT_LEVEL, "indexed_visits", lambda: indexed_visits(visits))
    pieces = timer(
        EVENT_LEVEL,
        "kept events read (columns counted)",
        lambda: list(store.parts("sessions", day, columns=VISIT_USAGE_COLUMNS)),
    )
    usage = timer(
        EVENT_LEVEL, "visit_usage", lambda: [visit_usage(p, coded, index) for p in pieces]
    )
    referrers = timer(
        EVENT_LEVEL,
        "referrer_subcounts",
        lambda: referrer_subcounts([rows for rows, _ in usage], owners, day),
    )
    timer(
        EVENT_LEVEL, "unique_visitors", lambda: unique_visitors([c for _, c in usage], owners, day)
    )
    timer(ITEM_ROWS, "top_n", lambda: top_n(pl.concat([full, referrers])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a kept run_bench data folder")
    parser.add_argument("--lake", required=True, help="the lake that run read")
    parser.add_argument("--sources", required=True, help="the run's sources.csv")
    parser.add_argument("--day", default="2026-01-01")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    day = dt.date.fromisoformat(args.day)
    store = Warehouse(open_lake(str(Path(args.run) / "warehouse")))
    owners = owner_countries(CsvSourceRegistry(Path(args.sources)).sources())
    timer = Timer()
    for _ in range(args.repeat):
        run_parts(store, args.lake, owners, day, timer)
    print(f"{'group':12s} {'part':36s} {'wall s':>7s} {'cpu s':>7s}")
    totals: dict[str, list[float]] = {}
    for (group, part), (wall, cpu) in timer.best.items():
        print(f"{group:12s} {part:36s} {wall:7.3f} {cpu:7.2f}")
        total = totals.setdefault(group, [0.0, 0.0])
        total[0] += wall
        total[1] += cpu
    for group, (wall, cpu) in totals.items():
        print(f"{group:12s} {'total':36s} {wall:7.3f} {cpu:7.2f}")
    print(f"load average (1, 5, 15 min) after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
