"""`usage-stats`: operator commands that need no Dagster (data generation, summaries)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from usage_stats.admin import cli as admin_cli
from usage_stats.demo.oai_records import ACCESS_RIGHTS, RESOURCE_TYPES
from usage_stats.demo.synthetic import BREAKDOWN_FIELDS, SyntheticConfig, write_synthetic
from usage_stats.pipeline.cleaning import REJECTION_REASONS
from usage_stats.pipeline.metrics import METRICS
from usage_stats.pipeline.usage_subcounts import OTHER
from usage_stats.settings import Settings
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.open import open_lake
from usage_stats.storage.warehouse import Warehouse


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    config = SyntheticConfig(
        sites=args.sites,
        days=args.days,
        events_per_day=args.events,
        start=dt.date.fromisoformat(args.start),
        seed=args.seed,
    )
    lake_url = args.lake or settings.lake_url
    sources = Path(args.sources or settings.sources_file)
    manifest = Path(args.manifest) if args.manifest else settings.data_dir / "manifest.json"
    oai_dir = None if args.no_records else Path(args.oai_dir or settings.data_dir / "oai")
    result = write_synthetic(
        config, lake_url, sources, manifest, with_manifest=not args.no_manifest, oai_dir=oai_dir
    )
    total = sum(result.events_written.values())
    print(f"wrote {total} events over {config.days} day(s), {config.sites} site(s) to {lake_url}")
    if oai_dir is not None:
        repositories = [s for s in result.sources if s.oai_base_url]
        print(
            f"OAI-PMH records of {len(repositories)} repositories: {oai_dir} (each source's "
            "file:// OAI base URL, harvested with no server)"
        )
    print(f"source registry: {sources}")
    if not args.no_manifest:
        print(f"manifest (expected outcome): {manifest}")
    return 0


def _summary(args: argparse.Namespace, settings: Settings) -> int:
    store = DuckDBStatsStore(Path(args.duckdb or settings.duckdb_path))
    warehouse = Warehouse(open_lake(settings.warehouse_url))
    days = store.days()
    if not days:
        print("the stats store holds no days yet", file=sys.stderr)
        return 1
    start, end = days[0], days[-1]
    print(f"usage-stats summary: {len(days)} day(s), {start} .. {end}  ({store.path})")
    read = kept = 0
    reasons = dict.fromkeys(REJECTION_REASONS, 0)
    for day in days:
        if warehouse.exists("rejected_events", day):
            rejected = warehouse.read("rejected_events", day)
            for reason, n in rejected.group_by("reason").len().iter_rows():
                reasons[reason] += n
            kept += warehouse.row_count("sessions", day)
            read += warehouse.row_count("raw_events", day)
    print(f"\nevents read {read}, kept {kept}, rejected {sum(reasons.values())}")
    for reason, n in reasons.items():
        print(f"  {reason:<18} {n:>10}")
    totals = store.totals("global", "global", start, end)
    print("\nglobal totals")
    for metric in METRICS:
        print(f"  {metric:<28} {totals.get_column(metric)[0]:>10}")
    by_level = store.totals("global", "global", start, end, by=("level",))
    print("\nby level (R repository, N national node, L regional portal)")
    for row in by_level.iter_rows(named=True):
        print(f"  {row['level']}: views {row['views']}, downloads {row['downloads']}")
    print("\ntop items by views")
    for row in store.top("item", start, end, "views", args.top).iter_rows():
        print(f"  {row[1]:>6}  {row[0]}")
    manifest_path = Path(args.manifest) if args.manifest else settings.data_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    problems = _records_and_breakdowns(store, start, end, args.top, manifest)
    if manifest is not None:
        verdict = _compare_with_manifest(store, manifest, read, kept, reasons, problems)
        print(f"\nagainst the generator's planted truth ({manifest_path}): {verdict}")
    if args.json:
        payload = {
            "days": [d.isoformat() for d in days],
            "events_read": read,
            "kept": kept,
            "rejected": reasons,
            "global": totals.to_dicts()[0],
        }
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0 if manifest is None or verdict == MATCHES else 1


MATCHES = "every figure matches"
# Readable names of the vocabularies the demo plants (COAR URIs; ISO 639-3 speaks for itself).
_LABELS = {uri: label for _, uri, label in (*RESOURCE_TYPES, *ACCESS_RIGHTS)}


def _records_and_breakdowns(
    store: DuckDBStatsStore, start: dt.date, end: dt.date, top: int, manifest: dict | None
) -> list[str]:
    """Print the record statistics (records of the repositories, level R, by datestamp) and
    the top values of each usage breakdown over the stored days; returns what disagrees with
    the manifest's `records` and `breakdowns` (nothing when it has none)."""
    problems: list[str] = []
    record_days = store.record_days()
    truth = (manifest or {}).get("records")
    if record_days:
        added = store.record_totals("global", "global", start, end, level="R", by=("date",))
        per_day = {d.isoformat(): a for d, a in added.select("date", "added").iter_rows()}
        totals = store.record_cumulative("global", "global", start, end, level="R")
        total_on = {d.isoformat(): t for d, t in totals.select("date", "total").iter_rows()}
        last = end.isoformat()
        print(
            f"\nrecords (harvested, repositories, by OAI datestamp): {total_on.get(last, 0)} "
            f"on {last}"
        )
        for day in sorted(total_on):
            print(f"  {day}  added {per_day.get(day, 0):>5}  total {total_on[day]:>6}")
        by_type = store.record_snapshot(
            "global", "global", end, field="resource_type", level="R"
        ).sort(["total", "value"], descending=[True, False])
        print(f"records by resource type on {last} (top {top})")
        for row in by_type.head(top).iter_rows(named=True):
            print(f"  {row['total']:>6}  {_label(row['value'])}")
        if truth is not None:
            if {d: truth["added"][d]["total"] for d in truth["added"]} != {
                d: per_day.get(d, 0) for d in truth["added"]
            }:
                problems.append("records added per day")
            if truth["total"] != {d: total_on.get(d) for d in truth["total"]}:
                problems.append("records total")
            stored_types = {r["value"]: r["total"] for r in by_type.iter_rows(named=True)}
            if stored_types != truth["by_resource_type"]:
                problems.append("records by resource type")
            daily = store.record_totals(
                "global",
                "global",
                start,
                end,
                field="resource_type",
                level="R",
                by=("date", "value"),
            )
            added_by_type: dict[str, dict[str, int]] = {d: {} for d in truth["added"]}
            for day, value, n in daily.select("date", "value", "added").iter_rows():
                if n:
                    added_by_type.setdefault(day.isoformat(), {})[value] = n
            if added_by_type != {d: a["resource_type"] for d, a in truth["added"].items()}:
                problems.append("records added per day by resource type")
    elif truth is not None:
        problems.append("records (none stored: run the record_stats job)")
    breakdowns = (manifest or {}).get("breakdowns")
    if store.subcount_days():
        for field in BREAKDOWN_FIELDS:
            ranked = store.subcounts(
                "global", "global", start, end, field=field, metric="views", limit=top
            )
            print(f"usage by {field.replace('_', ' ')} (top {top} by views)")
            shown = []
            for row in ranked.iter_rows(named=True):
                print(
                    f"  {row['views']:>6} views {row['downloads']:>6} downloads  "
                    f"{_label(row['value'])}"
                )
                shown.append((row["value"], row["views"], row["downloads"]))
            if breakdowns is not None and shown != _expected_top(breakdowns[field], top):
                problems.append(f"usage by {field}")
    elif breakdowns is not None:
        problems.append("usage breakdowns (none stored: run the usage_subcounts job)")
    return problems


def _expected_top(truth: dict[str, dict[str, int]], top: int) -> list[tuple[str, int, int]]:
    """The manifest's breakdown as the store ranks it (`ranked_subcounts`): the top values by
    views (then value), unknown ("") after them, the rest added up as `(other)`."""
    named = sorted(
        ((v, c["views"], c["downloads"]) for v, c in truth.items() if v),
        key=lambda t: (-t[1], t[0]),
    )
    rows = named[:top]
    if "" in truth:
        rows.append(("", truth[""]["views"], truth[""]["downloads"]))
    if named[top:]:
        rows.append((OTHER, sum(t[1] for t in named[top:]), sum(t[2] for t in named[top:])))
    return rows


def _label(value: str) -> str:
    if not value:
        return "(unknown)"
    if value == OTHER:
        return "(the other values)"
    label = _LABELS.get(value)
    return f"{label} ({value.rsplit('/', 1)[-1]})" if label else value


def _compare_with_manifest(
    store: DuckDBStatsStore,
    manifest: dict,
    read: int,
    kept: int,
    reasons: dict[str, int],
    found: list[str] | None = None,
) -> str:
    """Whether the stored figures equal the expected outcome the generator planted (`found`:
    disagreements already found, e.g. in the record statistics and breakdowns)."""
    days = manifest["days"]
    stored_days = {d.isoformat() for d in store.days()}
    if set(days) != stored_days:
        return f"not comparable (manifest days {sorted(days)}, stored {sorted(stored_days)})"
    problems = list(found or [])
    if read != sum(d["input_events"] for d in days.values()):
        problems.append("events read")
    if kept != sum(d["kept"] for d in days.values()):
        problems.append("kept events")
    for reason, n in reasons.items():
        if n != sum(d["rejected"].get(reason, 0) for d in days.values()):
            problems.append(f"rejected {reason}")
    start, end = min(stored_days), max(stored_days)
    totals = store.totals(
        "global", "global", dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    )
    for metric in METRICS:
        expected = sum(item[metric] for item in manifest["items"])
        if totals.get_column(metric)[0] != expected:
            problems.append(metric)
    return MATCHES if not problems else "MISMATCH in " + ", ".join(problems)


def _harvest(args: argparse.Namespace, settings: Settings) -> int:
    """One source's OAI-PMH records, with progress per page; exit 1 when the harvest failed
    (nothing stored, the next run starts from the same date), 2 for a source that cannot be
    harvested at all."""
    from usage_stats.admin.db import AdminDbError
    from usage_stats.admin.registry import list_sources
    from usage_stats.metadata.harvest import ClientSettings
    from usage_stats.metadata.store import MetadataStore
    from usage_stats.metadata.sync import harvest_sources

    url = args.url or settings.admin_db_url
    try:
        sources = [s for s in list_sources(url) if s.source_key == args.source]
    except AdminDbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not sources:
        print(f"error: no active source with key {args.source!r}", file=sys.stderr)
        return 2
    if not sources[0].oai_base_url:
        print(
            f"error: source {args.source} has no OAI base URL "
            f"(usage-stats sources update {sources[0].site_id} --oai-base-url URL)",
            file=sys.stderr,
        )
        return 2
    store = MetadataStore(open_lake(settings.warehouse_url))
    client = ClientSettings(
        delay=settings.oai_delay if args.delay is None else args.delay,
        timeout=settings.oai_timeout,
        max_retries=settings.oai_max_retries,
    )
    since = f"{args.start.isoformat()}T00:00:00Z" if args.start else None
    print(
        f"harvesting {args.source} from {sources[0].oai_base_url} "
        f"({'everything' if args.full else since or 'changes since the last harvest'})",
        flush=True,
    )
    [outcome] = harvest_sources(
        sources,
        store,
        url,
        client,
        full=args.full,
        since=since,
        progress=lambda line: print(f"  {line}", flush=True),
    )
    if outcome.status == "failed":
        print(f"error: {outcome.note}", file=sys.stderr)
        return 1
    print(
        f"{outcome.source_key}: {outcome.seen} record(s) since {outcome.since or 'the beginning'} "
        f"({', '.join(outcome.formats)}): {outcome.added} added, {outcome.updated} updated, "
        f"{outcome.deleted} deleted, {outcome.with_problems} with problems; {outcome.total} "
        f"stored in {outcome.uri}; next harvest from {outcome.response_date} "
        f"({outcome.requests} requests, {outcome.seconds:.1f} s)"
    )
    return 0


def _iso_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usage-stats", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write synthetic Matomo Parquet with planted truth")
    gen.add_argument("--sites", type=int, default=5)
    gen.add_argument("--days", type=int, default=3)
    gen.add_argument("--events", type=int, default=2000, help="events per day (approximate)")
    gen.add_argument("--start", default="2026-01-01", help="first day, YYYY-MM-DD")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--lake", help="lake URL (default: USAGE_STATS_LAKE_URL)")
    gen.add_argument("--sources", help="registry CSV to write (default: USAGE_STATS_SOURCES_FILE)")
    gen.add_argument(
        "--manifest", help="manifest JSON to write (default: <data dir>/manifest.json)"
    )
    gen.add_argument("--no-manifest", action="store_true", help="skip the manifest (large days)")
    gen.add_argument(
        "--oai-dir", help="where the repositories' OAI-PMH records go (default: <data dir>/oai)"
    )
    gen.add_argument("--no-records", action="store_true", help="no OAI-PMH records (usage only)")
    summ = sub.add_parser("summary", help="print what the stats store holds")
    summ.add_argument("--duckdb", help="DuckDB file (default: USAGE_STATS_DUCKDB_PATH)")
    summ.add_argument("--top", type=int, default=5)
    summ.add_argument("--json", help="also write the summary as JSON to this file")
    summ.add_argument(
        "--manifest", help="compare with this manifest (default: <data dir>/manifest.json)"
    )
    serve = sub.add_parser("serve", help="the web services (API, widgets, SUSHI) with uvicorn")
    serve.add_argument("--host", help="bind address (default: USAGE_STATS_WEB_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: USAGE_STATS_WEB_PORT, 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes (default: USAGE_STATS_WEB_WORKERS, 1); one per core",
    )
    serve.add_argument(
        "--balance",
        choices=("connections", "kernel"),
        help="with several workers, new connections are handed to them in turn by the parent "
        "process (connections, the default) or taken by the first to accept (kernel); "
        "default: USAGE_STATS_WEB_BALANCE",
    )
    harv = sub.add_parser("harvest", help="harvest one source's records over OAI-PMH")
    harv.add_argument("--source", required=True, help="the source key, e.g. opendoar::1001")
    when = harv.add_mutually_exclusive_group()
    when.add_argument("--full", action="store_true", help="every record, not only the changes")
    when.add_argument(
        "--from", dest="start", type=_iso_day, help="changes since this day (YYYY-MM-DD)"
    )
    harv.add_argument(
        "--delay", type=float, help="seconds between requests (USAGE_STATS_OAI_DELAY)"
    )
    harv.add_argument("--url", help="admin DB URL (default: USAGE_STATS_ADMIN_DB_URL)")
    admin_cli.add_parsers(sub)
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve on localhost unless told otherwise: exposing it is a deliberate operator choice."""
    import logging

    import uvicorn

    from usage_stats.web import balancer
    from usage_stats.web.app import app_from_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    workers = args.workers if args.workers is not None else settings.web_workers
    if workers < 1:
        print("usage-stats serve: --workers must be at least 1", file=sys.stderr)
        return 2
    host, port = args.host or settings.web_host, args.port or settings.web_port
    if workers == 1:
        uvicorn.run(app_from_settings(settings), host=host, port=port, access_log=False)
        return 0
    # Several processes: uvicorn imports the app in each by name, and each reads the same
    # environment (so `--workers` is all that is passed on); they share the port, not memory
    # (each has its own response cache and, with memory://, its own rate-limit counters).
    options = {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "access_log": False,
        # uvicorn kills a worker that does not answer its health ping within this (default
        # 5 s); a worker still importing Polars and DuckDB on a busy machine does not, and
        # was killed and restarted forever (seen with a load average of 15 on two cores)
        "timeout_worker_healthcheck": 60,
    }
    balance = args.balance or settings.web_balance
    if balance == "connections" and balancer.supported():
        balancer.run_balanced(uvicorn.Config("usage_stats.web.app:app_from_env", **options))
    else:
        uvicorn.run("usage_stats.web.app:app_from_env", **options)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    handlers = {"generate": _generate, "summary": _summary, "serve": _serve, "harvest": _harvest}
    if args.command in handlers:
        return handlers[args.command](args, settings)
    return admin_cli.run(args, settings)


if __name__ == "__main__":
    raise SystemExit(main())
