"""Documents per second of indexing one day into the local OpenSearch.

Generates one synthetic day (E events over S sites), computes its deltas and snapshot with
the library (the same calls as the assets; timed, not the measure), then replaces that day
in a fresh index set of the local OpenSearch (`scripts/services.sh start opensearch`): delta
documents, snapshot documents and the LA Referencia compatibility documents (monthly by
default, rebuilt from the month's item deltas in the store; `--compat-granularity day`).

    eval "$(scripts/services.sh env)"
    .venv/bin/python bench/index_bench.py --events 10000000 --sites 100
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_bench import RESULTS_DIR, MiB, RssSampler  # noqa: E402

DAY = dt.date(2026, 1, 1)
OPENSEARCH_URL = os.environ.get("USAGE_STATS_OPENSEARCH_URL", "http://127.0.0.1:9200")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--compat-granularity", choices=("day", "month"), default="month")
    args = parser.parse_args()

    from usage_stats.admin.sources import CsvSourceRegistry, sources_frame
    from usage_stats.demo.synthetic import SyntheticConfig, write_synthetic
    from usage_stats.pipeline.canonical import read_canonical_day
    from usage_stats.pipeline.cleaning import clean_events
    from usage_stats.pipeline.metrics import daily_deltas
    from usage_stats.pipeline.snapshots import next_snapshot
    from usage_stats.storage import lareferencia_index
    from usage_stats.storage.open import open_lake
    from usage_stats.storage.opensearch import OpenSearchStatsStore

    with tempfile.TemporaryDirectory(prefix="index-bench-") as tmp, RssSampler() as sampler:
        workdir = Path(tmp)
        config = SyntheticConfig(sites=args.sites, days=1, events_per_day=args.events, start=DAY)
        started = time.perf_counter()
        write_synthetic(config, str(workdir / "lake"), workdir / "sources.csv", with_manifest=False)
        sources = CsvSourceRegistry(workdir / "sources.csv").sources()
        events = read_canonical_day(
            open_lake(str(workdir / "lake")),
            DAY,
            {s.site_id: s.custom_var_slot for s in sources},
            "salt",
        ).events
        deltas = daily_deltas(clean_events(events, sources_frame(sources)).sessions)
        snapshot = next_snapshot(None, deltas, DAY)
        items = deltas.filter(deltas.get_column("scope") == "item")
        facts = lareferencia_index.SiteFacts.of(sources)
        compat = lareferencia_index.documents(items, facts, DAY).height
        n_events = events.height
        del events
        prepared = time.perf_counter() - started

        prefix = f"bench{uuid.uuid4().hex[:8]}"
        store = OpenSearchStatsStore(
            OPENSEARCH_URL,
            prefix=prefix,
            compat_prefix=f"{prefix}-compat",
            compat_granularity=args.compat_granularity,
            sources=sources,
            batch_size=args.batch_size,
        )
        timing: dict = {}
        try:
            with sampler.stage(timing):
                store.replace_day(DAY, deltas, snapshot)
        finally:
            store.delete_all()
    documents = deltas.height + snapshot.height + compat
    report = {
        "events": n_events,
        "sites": args.sites,
        "delta_documents": deltas.height,
        "snapshot_documents": snapshot.height,
        "compat_documents": compat,
        "documents": documents,
        "seconds": timing["seconds"],
        "documents_per_second": documents / timing["seconds"],
        "peak_rss_mib": timing["peak_rss_mib"],
        "process_peak_rss_mib": sampler.peak / MiB,
        "batch_size": args.batch_size,
        "compat_granularity": args.compat_granularity,
        "prepare_seconds": prepared,
    }
    print(
        f"indexed one day of {n_events:,} events: {deltas.height:,} delta + {snapshot.height:,} "
        f"snapshot + {compat:,} compatibility documents = {documents:,} in "
        f"{timing['seconds']:.1f} s = {report['documents_per_second']:,.0f} documents/s "
        f"(bulk batches of {args.batch_size:,}); peak RSS while indexing "
        f"{timing['peak_rss_mib']:.0f} MiB"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"index-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
