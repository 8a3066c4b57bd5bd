"""One day's processing steps as the pipeline composes them, and per site and day what came
in, what was kept, what was rejected and why (the admin DB's processing status)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl

from usage_stats.admin.registry import DayStatus
from usage_stats.admin.sources import Source, sources_frame
from usage_stats.pipeline.blocks import DEFAULT_PREFIXES, BlockPrefixes
from usage_stats.pipeline.canonical import (
    DayInput,
    empty_events,
    empty_visits,
    read_events_and_visits,
)
from usage_stats.pipeline.cleaning import (
    REJECTION_REASONS,
    CleaningResult,
    CleaningRules,
    clean_events,
)
from usage_stats.pipeline.crosswalk import crosswalk_table
from usage_stats.pipeline.identifier_rules import apply_identifier_rules
from usage_stats.pipeline.pieces import plan_pieces, site_weights
from usage_stats.pipeline.titles import empty_page_titles
from usage_stats.storage.lake import Lake, raw_files_for_day


def replace_sites(
    stored: pl.DataFrame | None, fresh: pl.DataFrame, sites: list[int] | None
) -> pl.DataFrame:
    """A day re-read for some sites only: their fresh rows and the other sites' stored rows.

    An operator re-exports one repository's day without touching the rest of the network.
    """
    if sites is None or stored is None:
        return fresh
    return pl.concat([stored.filter(~pl.col("site_id").is_in(sites)), fresh])


def canonical_pieces(
    lake: Lake,
    day: dt.date,
    slots: dict[int, int],
    ip_salt: str,
    piece_bytes: int,
    sites: list[int] | None = None,
    prefixes: BlockPrefixes = DEFAULT_PREFIXES,
) -> Iterator[DayInput]:
    """The day's events and visits piece by piece (`usage_stats.pipeline.pieces`), each piece
    whole sites, not joined (`canonical.read_events_and_visits`); only `sites` if given. A
    day without files is one empty piece."""
    files = raw_files_for_day(lake, "events", day, sites)
    pieces = plan_pieces(site_weights(files), piece_bytes)
    if not pieces:
        yield DayInput(empty_events(), [], empty_page_titles(), empty_visits())
    for piece in pieces:
        yield read_events_and_visits(lake, day, slots, ip_salt, list(piece), prefixes)


def clean_piece(
    raw: pl.DataFrame,
    sources: list[Source],
    rules: CleaningRules,
    crosswalk: pl.DataFrame | None = None,
) -> CleaningResult:
    """The per-source identifier rules, then the cleaning rules, on a day or a piece of it
    (whole sites: every rule works within a site), with the identifier cross-walk of the
    harvested records where there is one (`usage_stats.pipeline.crosswalk`): it works per
    distinct identifier, so a piece resolves exactly as the whole day would."""
    return clean_events(
        apply_identifier_rules(raw, sources), sources_frame(sources), rules, crosswalk
    )


def source_crosswalk(metadata: pl.DataFrame | None, sources: list[Source]) -> pl.DataFrame | None:
    """The cross-walk of the harvested records (`ITEM_METADATA_SCHEMA`) in which only the
    registry's repositories own items; None without records (nothing harvested yet: the day
    is cleaned exactly as before any harvest)."""
    if metadata is None or metadata.is_empty():
        return None
    return crosswalk_table(metadata, repositories=[s.site_id for s in sources if s.type == "R"])


@dataclass
class DayTally:
    """Per site: events in, kept and rejected by reason, added up piece by piece."""

    day: dt.date | None = None
    events_in: dict[int, int] = field(default_factory=dict)
    kept: dict[int, int] = field(default_factory=dict)
    rejected: dict[int, dict[str, int]] = field(default_factory=dict)

    def add(self, raw: pl.DataFrame, result: CleaningResult) -> None:
        if raw.is_empty():
            return
        self.day = self.day or raw.get_column("date")[0]
        if result.fates is None:
            fates = pl.concat(
                [
                    result.sessions.group_by("site_id")
                    .len()
                    .select("site_id", pl.lit(None, dtype=pl.String).alias("reason"), "len"),
                    result.rejected.group_by("site_id", "reason").len(),
                ],
                how="vertical_relaxed",
            )
        else:
            fates = result.fates
        # every row is kept or rejected once, so the fates add up to the rows in
        for site, reason, n in fates.iter_rows():
            self.events_in[site] = self.events_in.get(site, 0) + n
            if reason is None:
                self.kept[site] = self.kept.get(site, 0) + n
            else:
                reasons = self.rejected.setdefault(site, dict.fromkeys(REJECTION_REASONS, 0))
                reasons[reason] += n

    def statuses(
        self, active_sites: list[int], run_id: str, finished_at: dt.datetime
    ) -> list[DayStatus]:
        """One status per site that had events or is active (a quiet day is a processed
        day); none for a day without any event."""
        if self.day is None:
            return []
        sites = sorted({s for s in self.events_in if s is not None} | set(active_sites))
        return [
            DayStatus(
                site_id=site,
                day=self.day,
                events_in=self.events_in.get(site, 0),
                kept=self.kept.get(site, 0),
                rejected=sum(self.rejected.get(site, {}).values()),
                rejected_by_reason={k: v for k, v in self.rejected.get(site, {}).items() if v},
                run_id=run_id,
                finished_at=finished_at,
            )
            for site in sites
        ]
