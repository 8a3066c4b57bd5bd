"""Metadata mapping alone: records/s of `map_record` and `map_records` per format.

The harvest aims at 2,000 oai_dc records/s overall (issue 14); this measures the mapping's part
of it, on records shaped like the tests' planted ones (tests/data/metadata), each with its own
title, identifiers and dates so no cache sees a repeat. `map_records` maps a page at a time
(an OAI-PMH ListRecords page is 100 records by default in DSpace) and normalises the page's
identifiers in one pass; `map_record` does one record at a time.

    .venv/bin/python bench/metadata_bench.py [--records 20000] [--page 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from usage_stats.metadata.mapping import map_record, map_records

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "metadata"
RESULTS = Path(__file__).resolve().parent / "results"


def records(prefix: str, count: int) -> list[dict[str, bytes]]:
    """`count` distinct records of one format (or oai_dc beside oai_openaire for "both")."""
    prefixes = ("oai_openaire", "oai_dc") if prefix == "both" else (prefix,)
    templates = {p: (DATA / f"{p}.xml").read_text(encoding="utf-8") for p in prefixes}
    out = []
    for i in range(count):
        record = {}
        for p, text in templates.items():
            text = (
                text.replace("10669/81234", f"10669/{i}")
                .replace("35000", f"{i}")
                .replace("Reventazón", f"Reventazón {i}")
                .replace("2019-05", f"{1990 + i % 30}-{1 + i % 12:02d}")
            )
            record[p] = text.encode()
        out.append(record)
    return out


def measure(prefix: str, count: int, page: int, repeat: int) -> dict[str, object]:
    batch = records(prefix, count)
    best_page = best_single = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for at in range(0, len(batch), page):
            map_records(batch[at : at + page])
        best_page = min(best_page, time.perf_counter() - start)
        start = time.perf_counter()
        for record in batch[: count // 4]:
            map_record(record)
        best_single = min(best_single, (time.perf_counter() - start) * 4)
    return {
        "format": prefix,
        "records": count,
        "map_records_per_s": round(count / best_page),
        "map_record_per_s": round(count / best_single),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--page", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    map_records(records("both", 10))  # load vocabularies, warm the parser
    load_before = os.getloadavg()
    rows = [
        measure(p, args.records, args.page, args.repeat) for p in ("oai_dc", "oai_openaire", "both")
    ]
    result = {
        "page": args.page,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "results": rows,
    }
    print(f"{'format':14} {'records':>8} {'map_records/s':>14} {'map_record/s':>13}")
    for row in rows:
        print(
            f"{row['format']:14} {row['records']:>8} {row['map_records_per_s']:>14}"
            f" {row['map_record_per_s']:>13}"
        )
    print("load average before/after:", load_before, result["load_average_after"])
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"metadata-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
