"""Per site and day: what came in, what was kept, what was rejected and why."""

from __future__ import annotations

import datetime as dt

import polars as pl

from usage_stats.admin.registry import DayStatus
from usage_stats.cleaning import REJECTION_REASONS, CleaningResult


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
