"""Harvest, map and store the records of many sources, and keep each one's harvest status.

Sources are independent: one that fails (unreachable, malformed XML, an OAI error) is
recorded as failed with its error, nothing of it is stored, its `from` stays where its last
completed harvest left it, and the others are harvested as usual. The caller decides what a
failure means for it (the asset fails after storing the others; the CLI exits non-zero).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from usage_stats.admin.registry import (
    SourceHarvestStatus,
    harvest_status,
    record_harvest_failure,
    record_harvest_success,
)
from usage_stats.admin.sources import Source
from usage_stats.metadata.harvest import ClientSettings, HarvestError, HarvestTarget, harvest_source
from usage_stats.metadata.store import (
    Mapper,
    MetadataStore,
    apply_harvest,
    parse_datestamp,
    record_rows,
)


@dataclass(frozen=True)
class SourceOutcome:
    source_key: str
    site_id: int
    status: str  # ok | failed | skipped
    note: str | None = None  # the error, or why it was skipped
    formats: tuple[str, ...] = ()
    since: str | None = None
    response_date: str | None = None
    seen: int = 0
    added: int = 0
    updated: int = 0
    deleted: int = 0
    with_problems: int = 0
    total: int = 0
    requests: int = 0
    seconds: float = 0.0
    uri: str | None = None


def split_sources(sources: list[Source]) -> tuple[list[HarvestTarget], list[Source]]:
    """Active sources with an OAI base URL to harvest, and the active ones without (skipped)."""
    targets, skipped = [], []
    for s in sources:
        if not s.active:
            continue
        if s.oai_base_url:
            targets.append(HarvestTarget(s.source_key, s.site_id, s.oai_base_url, s.oai_sets))
        else:
            skipped.append(s)
    return targets, skipped


def harvest_sources(
    sources: list[Source],
    store: MetadataStore,
    admin_url: str,
    settings: ClientSettings | None = None,
    mapper: Mapper | None = None,
    full: bool = False,
    since: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[SourceOutcome]:
    """Each source with an OAI base URL harvested from its last response date (or `since`,
    or everything when `full`), stored, and its status recorded; the others skipped."""
    targets, skipped = split_sources(sources)
    outcomes = [
        SourceOutcome(s.source_key, s.site_id, "skipped", "no OAI base URL") for s in skipped
    ]
    last = {s.source_key: s for s in harvest_status(admin_url)}
    for target in targets:
        previous = last.get(target.source_key)
        start = since if since is not None else None if full else _next_from(previous)
        outcomes.append(
            harvest_one(target, store, admin_url, start, full, settings, mapper, progress)
        )
    return outcomes


def _next_from(status: SourceHarvestStatus | None) -> str | None:
    return status.last_response_date if status is not None else None


def harvest_one(
    target: HarvestTarget,
    store: MetadataStore,
    admin_url: str,
    since: str | None,
    full: bool,
    settings: ClientSettings | None,
    mapper: Mapper | None = None,
    progress: Callable[[str], None] | None = None,
) -> SourceOutcome:
    started = time.monotonic()
    run_at = dt.datetime.now(dt.UTC)
    try:
        harvest = harvest_source(target, since, settings, progress=progress)
    except HarvestError as exc:
        record_harvest_failure(admin_url, target.source_key, str(exc), run_at)
        return SourceOutcome(
            target.source_key,
            target.site_id,
            "failed",
            str(exc),
            since=since,
            seconds=time.monotonic() - started,
        )
    harvested_at = dt.datetime.now(dt.UTC)
    rows = record_rows(harvest, harvested_at, mapper)
    applied = apply_harvest(
        store.read_current(target.source_key),
        rows,
        harvested_at,
        full=full or since is None,
        deleted_at=parse_datestamp(harvest.response_date),
    )
    uri = store.write(target.source_key, applied, harvest.response_date)
    record_harvest_success(
        admin_url,
        SourceHarvestStatus(
            source_key=target.source_key,
            last_run_at=run_at,
            last_status="ok",
            last_response_date=harvest.response_date,
            last_completed_at=harvested_at,
            formats=harvest.formats,
            records_seen=applied.seen,
            records_added=applied.added,
            records_updated=applied.updated,
            records_deleted=applied.deleted,
            records_with_problems=applied.with_problems,
            records_total=applied.current.height,
        ),
    )
    return SourceOutcome(
        target.source_key,
        target.site_id,
        "ok",
        None,
        harvest.formats,
        since,
        harvest.response_date,
        applied.seen,
        applied.added,
        applied.updated,
        applied.deleted,
        applied.with_problems,
        applied.current.height,
        harvest.requests,
        time.monotonic() - started,
        uri,
    )
