"""Harvest-and-map throughput from the local oai-repo provider: records/s, with load average.

Serves N planted records of one repository (oai_dc alone, or oai_dc + OpenAIRE v4) from an
in-process provider on 127.0.0.1 (pages of 100, as DSpace's default), harvests them with the
production client (no delay between requests) and maps them with the shared mapping.

    python bench/harvest_bench.py [--records 20000] [--page-size 100]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import threading
import time

from usage_stats.admin.sources import Source
from usage_stats.demo.oai_records import planted_records, provider_dataset
from usage_stats.demo.oai_server import Provider, make_server
from usage_stats.metadata.harvest import ClientSettings, HarvestTarget, harvest_source
from usage_stats.metadata.store import record_rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()
    provider = Provider()
    server = make_server("127.0.0.1", 0, provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    for site_id, label in ((4, "oai_dc"), (1, "oai_dc + oai_openaire")):
        source = Source(site_id, f"bench::{site_id}", "Bench", "R", "CR", None, 1)
        records = planted_records([source], args.records, 42)
        dataset = provider_dataset([source], records, args.page_size)
        provider.put("bench", dataset)
        target = HarvestTarget(
            source.source_key, site_id, f"http://127.0.0.1:{port}/oai/bench/{source.source_key}"
        )
        settings = ClientSettings(delay=0)
        started = time.perf_counter()
        harvest = harvest_source(target, settings=settings)
        harvested = time.perf_counter()
        rows = record_rows(harvest, dt.datetime.now(dt.UTC))
        done = time.perf_counter()
        n = rows.height
        print(
            f"{label:<22} {n} records, {harvest.requests} requests: "
            f"harvest {harvested - started:.2f} s "
            f"({n / (harvested - started):,.0f}/s), map {done - harvested:.2f} s, "
            f"harvest+map {n / (done - started):,.0f} records/s; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )


if __name__ == "__main__":
    main()
