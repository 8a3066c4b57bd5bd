"""CPU seconds `robot_distributed` adds to cleaning: one day cleaned with the rule on for every
source, and with it off, alternately, best of `--repeat`.

Reads a lake `run_bench.py` / `pipeline_bench.py` generated (with its `sources.csv`), e.g.

    .venv/bin/python bench/pipeline_bench.py --child generate --events 1000000 --sites 100 \\
        --seed 42 --workdir /tmp/rb --crosswalk 0
    .venv/bin/python bench/distributed_cost.py /tmp/rb/e1000000_s100_seed42/lake
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline_bench import DAY, IP_SALT  # noqa: E402
from usage_stats.admin.sources import CsvSourceRegistry, sources_frame  # noqa: E402
from usage_stats.pipeline.canonical import read_canonical_day  # noqa: E402
from usage_stats.pipeline.cleaning import clean_events  # noqa: E402
from usage_stats.storage.open import open_lake  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("lake", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    # the generator's registry, beside the lake
    registry = CsvSourceRegistry(args.lake.parent / "sources.csv").sources()
    sources = sources_frame(registry)
    slots = {s.site_id: s.custom_var_slot for s in registry}
    events = read_canonical_day(open_lake(str(args.lake)), DAY, slots, IP_SALT).events
    best = {"on": float("inf"), "off": float("inf")}
    flagged = 0
    for _ in range(args.repeat):
        for mode in ("off", "on"):
            frame = sources.with_columns(pl.lit(mode).alias("distributed_robots"))
            started = time.process_time()
            result = clean_events(events, frame)
            best[mode] = min(best[mode], time.process_time() - started)
            flagged = result.distributed_audit.height
    extra = best["on"] - best["off"]
    print(
        f"{events.height:,} events, cleaning CPU s best of {args.repeat}: off {best['off']:.3f}, "
        f"on {best['on']:.3f} (+{extra:.3f} s, +{100 * extra / best['off']:.1f} %), "
        f"{flagged} flagged blocks; load average {os.getloadavg()}; {dt.datetime.now(dt.UTC):%F %T}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
