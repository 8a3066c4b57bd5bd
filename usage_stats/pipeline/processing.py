"""One day's processing steps as the pipeline composes them, and per site and day what came
in, what was kept, what was rejected and why (the admin DB's processing status)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from usage_stats.admin.registry import DayStatus
from usage_stats.admin.sources import Source, sources_frame
from usage_stats.pipeline.cleaning import (
    REJECTION_REASONS,
    CleaningResult,
    CleaningRules,
    clean_events,
)
from usage_stats.pipeline.identifier_rules import apply_identifier_rules


def replace_sites(
    stored: pl.DataFrame | None, fresh: pl.DataFrame, sites: list[int] | None
) -> pl.DataFrame:
    """A day re-read for some sites only: their fresh rows and the other sites' stored rows.

    An operator re-exports one repository's day without touching the rest of the network.
    """
    if sites is None or stored is None:
        return fresh
    return pl.concat([stored.filter(~pl.col("site_id").is_in(sites)), fresh])


@dataclass
class CleanedDay:
    result: CleaningResult
    statuses: list[DayStatus]


def clean_day(
    raw: pl.DataFrame,
    sources: list[Source],
    rules: CleaningRules,
    run_id: str,
    finished_at: dt.datetime,
) -> CleanedDay:
    """The per-source identifier rules, then the cleaning rules, then each site's status."""
    result = clean_events(apply_identifier_rules(raw, sources), sources_frame(sources), rules)
    statuses = day_statuses(raw, result, [s.site_id for s in sources], run_id, finished_at)
    return CleanedDay(result, statuses)


def day_statuses(
    raw: pl.DataFrame,
    result: CleaningResult,
    active_sites: list[int],
    run_id: str,
    finished_at: dt.datetime,
) -> list[DayStatus]:
    """One status per site that had events or is active (a quiet day is a processed day)."""
    if raw.is_empty():
        return []
    day = raw.get_column("date")[0]
    events_in = dict(raw.group_by("site_id").len().iter_rows())
    kept = dict(result.sessions.group_by("site_id").len().iter_rows())
    rejected: dict[int, dict[str, int]] = {}
    for site, reason, n in result.rejected.group_by("site_id", "reason").len().iter_rows():
        rejected.setdefault(site, dict.fromkeys(REJECTION_REASONS, 0))[reason] = n
    sites = sorted({s for s in events_in if s is not None} | set(active_sites))
    return [
        DayStatus(
            site_id=site,
            day=day,
            events_in=events_in.get(site, 0),
            kept=kept.get(site, 0),
            rejected=sum(rejected.get(site, {}).values()),
            rejected_by_reason={k: v for k, v in rejected.get(site, {}).items() if v},
            run_id=run_id,
            finished_at=finished_at,
        )
        for site in sites
    ]
