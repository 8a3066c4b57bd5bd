"""A day's raw events in the warehouse: the events' own columns in `raw_events` and their
visits in `raw_visits`, part for part (part N of one pairs with part N of the other).

The visit-level columns (visitor country, user agent, IP and user hashes, the behaviour
rule's times and count: `canonical.VISIT_COLUMNS`) are the same for every event of a visit,
a visit has about four events, and they made about half the bytes of raw_events: stored
once per visit they are encoded and decoded a quarter as often (bench/README.md, "Real
run"). Readers get the canonical frame back, joined part by part (`raw_parts`).

Days stored before (one table, every column on every event) are read as they are: a part
of raw_events that holds the visit columns is canonical already.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import polars as pl

from usage_stats.pipeline.canonical import VISIT_COLUMNS, join_visits, split_visits
from usage_stats.storage.lake import LakeReadError
from usage_stats.storage.warehouse import DayParts, Warehouse

RAW_EVENTS = "raw_events"
RAW_VISITS = "raw_visits"


def is_canonical(events: pl.DataFrame) -> bool:
    """A raw_events part of the old layout: it carries its visits' columns itself."""
    return all(c in events.columns for c in VISIT_COLUMNS)


def raw_parts(
    warehouse: Warehouse, day: dt.date, read_ahead: bool = False
) -> Iterator[pl.DataFrame]:
    """The day's canonical events part by part, whichever layout the day was stored in.

    With `read_ahead` the next parts of both tables are read while the caller works on the
    current one (`Warehouse.parts`).
    """
    visits: Iterator[pl.DataFrame] | None = None
    for n, events in enumerate(warehouse.parts(RAW_EVENTS, day, read_ahead=read_ahead)):
        if is_canonical(events):
            yield events
            continue
        if visits is None:
            if not warehouse.exists(RAW_VISITS, day):
                raise LakeReadError(
                    f"{warehouse.describe(RAW_EVENTS, day)}: the events have no visit columns "
                    f"and there is no '{RAW_VISITS}' for {day}; materialise raw_events again"
                )
            visits = iter(warehouse.parts(RAW_VISITS, day, read_ahead=read_ahead))
        part = next(visits, None)
        if part is None:
            raise LakeReadError(
                f"{warehouse.describe(RAW_VISITS, day)}: no part {n} for part {n} of "
                f"'{RAW_EVENTS}' of {day}; materialise raw_events again"
            )
        yield join_visits(events, part)


@dataclass
class RawDayParts:
    """The two tables of a day being written (`raw_day_parts`), one pair of parts at a time."""

    events: DayParts
    visits: DayParts

    def append(self, events: pl.DataFrame, visits: pl.DataFrame) -> None:
        """The next piece: its events (`canonical.EVENT_COLUMNS`) and their visits. A piece
        without events is left out, visits and all, so the parts stay paired."""
        if events.is_empty():
            self.events.append(events)
            self.visits.append(visits.clear())
            return
        self.events.append(events)
        self.visits.append(visits, keep_empty=True)

    def append_canonical(self, frame: pl.DataFrame) -> None:
        """A piece given as canonical events (kept rows of a stored day being re-written)."""
        self.append(*split_visits(frame))


@contextmanager
def raw_day_parts(warehouse: Warehouse, day: dt.date) -> Iterator[RawDayParts]:
    """Replace the day's raw_events and raw_visits, piece by piece (`Warehouse.day_parts`)."""
    with (
        warehouse.day_parts(RAW_EVENTS, day) as events,
        warehouse.day_parts(RAW_VISITS, day) as visits,
    ):
        yield RawDayParts(events, visits)


def kept_sites(stored: Iterable[pl.DataFrame], sites: list[int]) -> list[pl.DataFrame]:
    """The stored parts (canonical, `raw_parts`) without the rows of `sites` (those a
    restricted re-run re-reads).

    Read whole before anything is written, so a re-run that fails midway leaves the stored
    day as it was. Each part holds whole sites, so what is left of it still does.
    """
    kept = [part.filter(~pl.col("site_id").is_in(sites)) for part in stored]
    return [part for part in kept if not part.is_empty()]
