"""The stats store: where deltas and snapshots are indexed and queried.

One interface, two implementations: DuckDB (embedded default, a local file) and OpenSearch
(production). The pipeline writes through `replace_day`; the web services read through the
query methods; one contract test suite runs against both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

import polars as pl

STORE_TABLES = ("usage_deltas", "usage_snapshots")
# Columns `sums` can group by; `month` is the first day of the calendar month of `date`, computed
# in the store so a year of daily rows per item is not shipped to the caller to be re-bucketed.
SUM_GROUPS = ("date", "month", "site_id", "level", "country", "owner_site_id", "key")


@dataclass(frozen=True)
class RowFilter:
    """Rows whose columns hold one of the given values, every given column at once (None = any
    value, empty = no row; None among `owner_site_ids`: no owner). `sums_where` / `top_where`
    read the rows matching any of several filters: a national node's usage is "of these
    owners' items on these sites, or of nobody's on those"."""

    keys: tuple[str, ...] | None = None
    site_ids: tuple[int, ...] | None = None
    owner_site_ids: tuple[int | None, ...] | None = None

    def restricted(self, keys: tuple[str, ...]) -> RowFilter:
        """The same rows, only of `keys`."""
        within = keys if self.keys is None else tuple(k for k in keys if k in set(self.keys))
        return RowFilter(within, self.site_ids, self.owner_site_ids)


class StatsStoreError(RuntimeError):
    """The store refused or could not complete a write; nothing of that day was changed."""


@dataclass(frozen=True)
class DayWrite:
    day: dt.date
    delta_rows: int
    snapshot_rows: int


def day_frames(
    day: dt.date, deltas: pl.DataFrame, snapshot: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Both frames in the store's schema, refused if they hold rows of another day (a day's
    write replaces that day only)."""
    from usage_stats.pipeline.metrics import DELTA_SCHEMA

    frames = []
    for name, frame in (("deltas", deltas), ("snapshot", snapshot)):
        frame = frame.select(list(DELTA_SCHEMA)).cast(DELTA_SCHEMA)
        other_days = frame.filter(pl.col("date") != day).height
        if other_days:
            raise StatsStoreError(f"{name} for {day} hold {other_days} row(s) of other days")
        frames.append(frame)
    return frames[0], frames[1]


class StatsStore(Protocol):
    def replace_day(self, day: dt.date, deltas: pl.DataFrame, snapshot: pl.DataFrame) -> DayWrite:
        """Atomically replace everything stored for `day` (deltas and snapshot)."""
        ...

    def record_titles(self, day: dt.date, titles: pl.DataFrame) -> int:
        """Item titles (`key`, `title`) as seen on `day`: each replaces the stored title of its
        item unless that one was seen on a later day (re-running an old day does not bring an
        old title back). Returns how many titles were given."""
        ...

    def titles(self, keys: tuple[str, ...]) -> dict[str, str]:
        """The known titles of `keys` (an untitled item is absent)."""
        ...

    def optimize(self) -> float:
        """Arrange what is stored for fast reads after a run's writes; returns the seconds it
        took (DuckDB sorts its tables; OpenSearch merges segments by itself: nothing to do)."""
        ...

    def row_count(self, table: str, day: dt.date) -> int: ...

    def days(self) -> list[dt.date]: ...

    def totals(
        self,
        scope: str,
        key: str,
        start: dt.date,
        end: dt.date,
        by: tuple[str, ...] = (),
    ) -> pl.DataFrame:
        """Sum of deltas of one scope/key over [start, end], optionally grouped by columns."""
        ...

    def snapshot(self, scope: str, key: str, day: dt.date) -> pl.DataFrame: ...

    def top(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        metric: str,
        limit: int,
        *,
        site_ids: tuple[int, ...] | None = None,
        owner_site_ids: tuple[int, ...] | None = None,
    ) -> pl.DataFrame:
        """The `limit` keys with most `metric`; optionally only usage on `site_ids` (a node's
        top items) or of items owned by `owner_site_ids` (a repository's top items)."""
        ...

    def sums(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        *,
        keys: tuple[str, ...] | None = None,
        site_ids: tuple[int, ...] | None = None,
        owner_site_ids: tuple[int, ...] | None = None,
        by: tuple[str, ...] = (),
    ) -> pl.DataFrame:
        """Sums of the metrics of one scope over [start, end], filtered by any of keys / sites /
        owners (None = no filter, empty = nothing), grouped by columns of `SUM_GROUPS`.

        The web services' general query (SUSHI item reports: scope item, owners of a customer,
        by key and month); filters are values, never query text."""
        ...

    def sums_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        where: tuple[RowFilter, ...],
        by: tuple[str, ...] = (),
        distinct: tuple[str, ...] = (),
    ) -> pl.DataFrame:
        """Like `sums`, over the rows of one scope matching any filter of `where` (none: no
        row), plus `rows`: how many stored rows each line adds up, or with `distinct` (columns
        of `SUM_GROUPS`), how many distinct combinations of those columns. On the item scope
        by country: LA Referencia's nested per-country entries, one per site, item, day and
        country (`rows`), or per site, item, month and country (`distinct=("site_id", "key",
        "month")`), as its processor writes daily or monthly documents."""
        ...

    def top_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        metric: str,
        limit: int,
        where: tuple[RowFilter, ...],
    ) -> pl.DataFrame:
        """Like `top`, over the rows matching any filter of `where`: the `limit` keys with most
        `metric` (ties by key), columns `key` and the metric."""
        ...
