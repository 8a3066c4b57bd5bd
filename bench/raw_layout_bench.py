"""The raw round trip of a day, piece by piece: read the lake, write the raw warehouse
table(s), read them back as the canonical frames cleaning works on; CPU and wall seconds.

    PYTHONPATH=. .venv/bin/python bench/raw_layout_bench.py \\
        --lake /tmp/rb/e10000000_s100_seed42/lake

`--layout split` (this tree): raw_events without the visit-level columns and raw_visits
beside them, joined back on reading (`usage_stats.pipeline.raw_parts`). `--layout whole`:
every column on every event, as raw_events was stored before (`read_canonical_day`, one
table); with PYTHONPATH at a tree from before the split it measures that tree's own code.
Run the two layouts one after the other, in turns, and compare CPU seconds (the wall clock
of a loaded machine says little). Parts are written as the warehouse writes them (LZ4, no
statistics), into memory, one piece at a time; the lake is `run_bench.py`'s generated day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import time
from pathlib import Path

import polars as pl

from usage_stats.pipeline.pieces import DEFAULT_PIECE_MIB, plan_pieces, site_weights
from usage_stats.storage.lake import LocalLake, raw_files_for_day

DAY = dt.date(2026, 1, 1)
SALT = "bench-salt"


def _write(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="lz4", statistics=False)
    return buffer.getvalue()


def _read(data: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data))


def run(lake: LocalLake, layout: str, piece_mib: float) -> dict:
    files = raw_files_for_day(lake, "events", DAY, None)
    pieces = plan_pieces(site_weights(files), int(piece_mib * 2**20))
    cpu = {"read_lake": 0.0, "write": 0.0, "read_back": 0.0}
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    events = written = 0
    for piece in pieces:
        mark = time.process_time()
        if layout == "whole":
            from usage_stats.pipeline.canonical import read_canonical_day

            frames = [read_canonical_day(lake, DAY, {}, SALT, list(piece)).events]
        else:
            from usage_stats.pipeline.canonical import read_events_and_visits

            got = read_events_and_visits(lake, DAY, {}, SALT, list(piece))
            frames = [got.events, got.visits]
        cpu["read_lake"] += time.process_time() - mark
        mark = time.process_time()
        parts = [_write(f) for f in frames]
        cpu["write"] += time.process_time() - mark
        events += frames[0].height
        written += sum(len(p) for p in parts)
        del frames
        mark = time.process_time()
        if layout == "whole":
            canonical = _read(parts[0])
        else:
            from usage_stats.pipeline.canonical import join_visits

            canonical = join_visits(_read(parts[0]), _read(parts[1]))
        cpu["read_back"] += time.process_time() - mark
        del canonical, parts
    return {
        "layout": layout,
        "pieces": len(pieces),
        "events": events,
        "mib_written": round(written / 2**20, 1),
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_s_total": round(time.process_time() - cpu_started, 2),
        "wall_s": round(time.perf_counter() - wall_started, 2),
        "load": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", type=Path, required=True, help="a lake run_bench generated")
    parser.add_argument("--layout", choices=("split", "whole"), default="split")
    parser.add_argument("--piece-mib", type=float, default=DEFAULT_PIECE_MIB)
    args = parser.parse_args()
    print(json.dumps(run(LocalLake(args.lake), args.layout, args.piece_mib)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
