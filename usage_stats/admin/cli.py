"""Operator commands on the admin DB: `db`, `sources`, `status` (rich tables for people)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from usage_stats.admin import db
from usage_stats.admin.registry import (
    add_source,
    disable_source,
    export_sources,
    get_source,
    import_sources,
    list_sources,
    processing_status,
    update_source,
)
from usage_stats.admin.sources import Source, SourceRegistryError, normalize_prefix
from usage_stats.admin.sushi import SushiCustomerError, add_customer, list_customers
from usage_stats.pipeline.ownership import split_prefixes
from usage_stats.settings import Settings

# Options of `sources add` / `sources update`: (flag, Source field, type)
SOURCE_OPTIONS = [
    ("--key", "source_key", str),
    ("--name", "name", str),
    ("--type", "type", str),
    ("--country", "country", str),
    ("--prefix", "identifier_prefix", str),
    ("--slot", "custom_var_slot", int),
    ("--national-site-id", "national_site_id", int),
    ("--regional-site-id", "regional_site_id", int),
    ("--rule", "identifier_rule", str),
    ("--pattern", "rule_pattern", str),
    ("--replacement", "rule_replacement", str),
    ("--mapping-file", "mapping_file", str),
    ("--url", "url", str),
    ("--institution", "institution", str),
    ("--oai-base-url", "oai_base_url", str),
    ("--distributed-robots", "distributed_robots", str),
]
# Options that may be repeated, one prefix each (or several separated by `;` or spaces); the
# values given replace the source's list, and an empty value clears it.
PREFIX_OPTIONS = [
    ("--handle-prefix", "handle_prefixes", "a handle prefix of its items, e.g. 1721.1"),
    ("--doi-prefix", "doi_prefixes", "a DOI prefix of its items, e.g. 10.1234"),
    ("--oai-set", "oai_sets", "an OAI-PMH setSpec to harvest (none: the whole repository)"),
]


def _console() -> Console:
    return Console(width=160, soft_wrap=False)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _site_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a site id: {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"site ids are positive, got {value}")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    dbp = sub.add_parser("db", help="admin DB migrations").add_subparsers(
        dest="db_command", required=True
    )
    for name, text in (
        ("upgrade", "migrate to the newest version"),
        ("current", "show the version"),
    ):
        p = dbp.add_parser(name, help=text)
        p.add_argument("--url", help="admin DB URL (default: USAGE_STATS_ADMIN_DB_URL)")
    down = dbp.add_parser("downgrade", help="migrate back, e.g. -1")
    down.add_argument("revision")
    down.add_argument("--url")

    src = sub.add_parser("sources", help="the source registry").add_subparsers(
        dest="sources_command", required=True
    )
    add = src.add_parser("add", help="add a source")
    add.add_argument("--site-id", type=_site_id, required=True)
    for flag, field, kind in SOURCE_OPTIONS:
        add.add_argument(
            flag, dest=field, type=kind, required=flag in ("--key", "--name", "--type")
        )
    _add_prefix_options(add)
    lst = src.add_parser("list", help="list sources")
    lst.add_argument("--all", action="store_true", help="include disabled sources")
    show = src.add_parser("show", help="one source in full")
    show.add_argument("site_id", type=_site_id)
    upd = src.add_parser("update", help="change fields of a source")
    upd.add_argument("site_id", type=_site_id)
    for flag, field, kind in SOURCE_OPTIONS:
        upd.add_argument(flag, dest=field, type=kind)
    _add_prefix_options(upd)
    upd.add_argument("--active", choices=["true", "false"])
    dis = src.add_parser("disable", help="stop using a source (kept for history)")
    dis.add_argument("site_id", type=_site_id)
    imp = src.add_parser("import", help="add/update sources from a CSV or XLSX file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    exp = src.add_parser("export", help="write all sources to a CSV or XLSX file")
    exp.add_argument("file", type=Path)

    su = sub.add_parser("sushi", help="COUNTER SUSHI customers").add_subparsers(
        dest="sushi_command", required=True
    )
    cust = su.add_parser("add-customer", help="add a customer; prints its API key once")
    cust.add_argument("--customer-id", required=True)
    cust.add_argument("--name", required=True)
    cust.add_argument(
        "--site-id",
        dest="site_ids",
        type=_site_id,
        action="append",
        required=True,
        help="a site whose items the customer may report on (repeat for several)",
    )
    cust.add_argument("--requestor-id")
    su.add_parser("list", help="list customers (never their keys)")

    st = sub.add_parser("status", help="what runs did per site and day")
    st.add_argument("--site", type=_site_id)
    st.add_argument("--from", dest="start", type=_date)
    st.add_argument("--to", dest="end", type=_date)


def _add_prefix_options(parser: argparse.ArgumentParser) -> None:
    for flag, field, text in PREFIX_OPTIONS:
        parser.add_argument(
            flag, dest=field, action="append", metavar="PREFIX", help=f"{text} (repeatable)"
        )


def _sources_table(sources: list[Source]) -> Table:
    table = Table(title=f"{len(sources)} source(s)")
    columns = (
        "site", "key", "name", "type", "country", "prefix", "handle prefixes", "DOI prefixes",
        "rule", "slot", "active",
    )  # fmt: skip
    for column in columns:
        table.add_column(column)
    for s in sources:
        table.add_row(
            str(s.site_id),
            s.source_key,
            s.name,
            s.type,
            s.country or "",
            s.identifier_prefix or "",
            " ".join(s.handle_prefixes),
            " ".join(s.doi_prefixes),
            s.identifier_rule,
            str(s.custom_var_slot),
            "yes" if s.active else "no",
        )
    return table


def _source_detail(source: Source) -> Table:
    table = Table(title=f"source {source.site_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field in dataclasses.fields(Source):
        value = getattr(source, field.name)
        text = " ".join(value) if isinstance(value, tuple) else str(value)
        table.add_row(field.name, "" if value is None else text)
    return table


def run(args: argparse.Namespace, settings: Settings) -> int:
    console = _console()
    url = getattr(args, "url", None) or settings.admin_db_url
    try:
        if args.command == "db":
            if args.db_command == "upgrade":
                db.upgrade(url)
                console.print(f"admin DB at migration {db.current_revision(url)} (newest)")
            elif args.db_command == "downgrade":
                db.downgrade(url, args.revision)
                console.print(f"admin DB at migration {db.current_revision(url) or 'none'}")
            else:
                console.print(
                    f"{db.current_revision(url) or 'none'} (newest: {db.head_revision()})"
                )
            return 0
        if args.command == "status":
            return _status(console, url, args)
        if args.command == "sushi":
            return _sushi(console, url, args)
        return _sources(console, url, args)
    except (SourceRegistryError, SushiCustomerError, db.AdminDbError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _changes(args: argparse.Namespace) -> dict[str, object]:
    changes = {
        field: getattr(args, field)
        for _, field, _ in SOURCE_OPTIONS
        if getattr(args, field, None) is not None
    }
    if "type" in changes:
        changes["type"] = str(changes["type"]).upper()
    if "country" in changes:
        changes["country"] = str(changes["country"]).upper() or None
    if "identifier_prefix" in changes:
        changes["identifier_prefix"] = normalize_prefix(str(changes["identifier_prefix"]))
    for _, field, _ in PREFIX_OPTIONS:
        values = getattr(args, field, None)
        if values is not None:  # normalised and checked when saved, like every other field
            changes[field] = tuple(split_prefixes(values))
    if getattr(args, "active", None) is not None:
        changes["active"] = args.active == "true"
    return changes


def _sources(console: Console, url: str, args: argparse.Namespace) -> int:
    command = args.sources_command
    if command == "add":
        changes = _changes(args)
        slot = changes.pop("custom_var_slot", None) or (6 if changes["type"] == "L" else 1)
        source = Source(
            site_id=args.site_id,
            source_key=str(changes.pop("source_key")),
            name=str(changes.pop("name")),
            type=str(changes.pop("type")),
            country=changes.pop("country", None),  # type: ignore[arg-type]
            identifier_prefix=changes.pop("identifier_prefix", None),  # type: ignore[arg-type]
            custom_var_slot=int(slot),  # type: ignore[arg-type]
            **changes,  # type: ignore[arg-type]
        )
        add_source(url, source)
        console.print(f"added source {source.site_id} ({source.source_key})")
    elif command == "list":
        console.print(_sources_table(list_sources(url, include_inactive=args.all)))
    elif command == "show":
        console.print(_source_detail(get_source(url, args.site_id)))
    elif command == "update":
        changes = _changes(args)
        if not changes:
            raise SourceRegistryError("nothing to update: give at least one field option")
        update_source(url, args.site_id, **changes)
        console.print(f"updated source {args.site_id}: {', '.join(sorted(changes))}")
    elif command == "disable":
        disable_source(url, args.site_id)
        console.print(f"disabled source {args.site_id}")
    elif command == "import":
        report = import_sources(url, args.file, dry_run=args.dry_run)
        if not report.ok:
            print(f"error: {args.file} rejected, nothing written:", file=sys.stderr)
            for problem in report.problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
        verb = "would add" if report.dry_run else "added"
        console.print(
            f"{verb} {len(report.added)}, {'would update' if report.dry_run else 'updated'} "
            f"{len(report.updated)}, unchanged {len(report.unchanged)}"
            + (" (dry run: nothing written)" if report.dry_run else "")
        )
    elif command == "export":
        count = export_sources(url, args.file)
        console.print(f"wrote {count} source(s) to {args.file}")
    return 0


def _status(console: Console, url: str, args: argparse.Namespace) -> int:
    rows = processing_status(url, args.site, args.start, args.end)
    table = Table(title=f"processing status ({len(rows)} site-day(s))")
    for column in ("day", "site", "events in", "kept", "rejected", "by reason", "run", "finished"):
        table.add_column(column)
    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r.rejected_by_reason.items()) if v)
        table.add_row(
            r.day.isoformat(),
            str(r.site_id),
            str(r.events_in),
            str(r.kept),
            str(r.rejected),
            reasons,
            r.run_id[:8],
            r.finished_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)
    return 0


def _sushi(console: Console, url: str, args: argparse.Namespace) -> int:
    """The API key is printed once, on stdout alone, so it can be piped; only its hash is kept."""
    if args.sushi_command == "add-customer":
        customer, api_key = add_customer(
            url, args.customer_id, args.name, args.site_ids, requestor_id=args.requestor_id
        )
        print(
            f"added SUSHI customer {customer.customer_id} for sites {customer.site_ids}",
            file=sys.stderr,
        )
        print(api_key)
        return 0
    table = Table(title="SUSHI customers")
    for column in ("customer_id", "name", "requestor_id", "sites", "active"):
        table.add_column(column)
    for c in list_customers(url):
        table.add_row(
            c.customer_id,
            c.name,
            c.requestor_id or "",
            ", ".join(map(str, c.site_ids)),
            "yes" if c.active else "no",
        )
    console.print(table)
    return 0
