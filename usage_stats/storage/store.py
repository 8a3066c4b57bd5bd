"""The stats store: where deltas and snapshots are indexed and queried.

One interface, two implementations: DuckDB (embedded default, a local file) and OpenSearch
(production). The pipeline writes through `replace_day`; the web services read through the
query methods; one contract test suite runs against both.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass

import polars as pl

from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS

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
    frames = []
    for name, frame in (("deltas", deltas), ("snapshot", snapshot)):
        frame = frame.select(list(DELTA_SCHEMA)).cast(DELTA_SCHEMA)
        other_days = frame.filter(pl.col("date") != day).height
        if other_days:
            raise StatsStoreError(f"{name} for {day} hold {other_days} row(s) of other days")
        frames.append(frame)
    return frames[0], frames[1]


class StatsStore(ABC):
    """The interface both stores implement, and the queries every store answers alike.

    A store implements the writes and two primitive reads, `sums_where` and `top_where`; the
    narrower reads (`totals`, `sums`, `top`) are those two with one filter, defined here once
    so that the stores cannot drift apart on them. Arguments are checked here too: a store
    sees only known metrics and groupable columns.
    """

    @abstractmethod
    def replace_day(self, day: dt.date, deltas: pl.DataFrame, snapshot: pl.DataFrame) -> DayWrite:
        """Atomically replace everything stored for `day` (deltas and snapshot)."""

    @abstractmethod
    def record_titles(self, day: dt.date, titles: pl.DataFrame) -> int:
        """Item titles (`key`, `title`) as seen on `day`: each replaces the stored title of its
        item unless that one was seen on a later day (re-running an old day does not bring an
        old title back). Returns how many titles were given."""

    @abstractmethod
    def titles(self, keys: tuple[str, ...]) -> dict[str, str]:
        """The known titles of `keys` (an untitled item is absent)."""

    @abstractmethod
    def optimize(self) -> float:
        """Arrange what is stored for fast reads after a run's writes; returns the seconds it
        took (DuckDB merges its small sorted runs; OpenSearch merges segments by itself:
        nothing to do)."""

    @abstractmethod
    def row_count(self, table: str, day: dt.date) -> int:
        """Rows of `table` (one of `STORE_TABLES`) stored for `day`."""

    @abstractmethod
    def days(self) -> list[dt.date]:
        """Every day with a stored snapshot, in order."""

    @abstractmethod
    def snapshot(self, scope: str, key: str, day: dt.date) -> pl.DataFrame:
        """The cumulative rows of one scope/key on `day`, ordered by site, level, country."""

    def sums_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        where: tuple[RowFilter, ...],
        by: tuple[str, ...] = (),
        distinct: tuple[str, ...] = (),
    ) -> pl.DataFrame:
        """Sums of the metrics of one scope over [start, end], over the rows matching any
        filter of `where` (none: no row), grouped by columns of `SUM_GROUPS` and ordered by
        them, plus `rows`: how many stored rows each line adds up, or with `distinct` (columns
        of `SUM_GROUPS`), how many distinct combinations of those columns. On the item scope
        by country: LA Referencia's nested per-country entries, one per site, item, day and
        country (`rows`), or per site, item, month and country (`distinct=("site_id", "key",
        "month")`), as its processor writes daily or monthly documents. Filters are values,
        never query text."""
        check_groups(by, distinct)
        return self._sums_where(scope, start, end, where, by, distinct)

    def top_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        metric: str,
        limit: int,
        where: tuple[RowFilter, ...],
    ) -> pl.DataFrame:
        """The `limit` keys with most `metric` (ties by key) over the rows matching any filter
        of `where`: columns `key` and the metric."""
        check_metric(metric)
        return self._top_where(scope, start, end, metric, limit, where)

    @abstractmethod
    def _sums_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        where: tuple[RowFilter, ...],
        by: tuple[str, ...],
        distinct: tuple[str, ...],
    ) -> pl.DataFrame:
        """`sums_where` with checked arguments."""

    @abstractmethod
    def _top_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        metric: str,
        limit: int,
        where: tuple[RowFilter, ...],
    ) -> pl.DataFrame:
        """`top_where` with checked arguments."""

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
        """Sums of the metrics of one scope over [start, end], filtered by keys, sites and
        owners at once (None = no filter, empty = nothing), grouped by columns of
        `SUM_GROUPS`: the web services' general query (SUSHI item reports: scope item, owners
        of a customer, by key and month)."""
        where = (RowFilter(keys, site_ids, owner_site_ids),)
        return self.sums_where(scope, start, end, where, by).drop("rows")

    def totals(
        self, scope: str, key: str, start: dt.date, end: dt.date, by: tuple[str, ...] = ()
    ) -> pl.DataFrame:
        """Sum of deltas of one scope/key over [start, end], optionally grouped by columns."""
        return self.sums(scope, start, end, keys=(key,), by=by)

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
        where = (RowFilter(None, site_ids, owner_site_ids),)
        return self.top_where(scope, start, end, metric, limit, where)


def check_groups(by: tuple[str, ...], distinct: tuple[str, ...] = ()) -> None:
    unknown = (set(by) | set(distinct)) - set(SUM_GROUPS)
    if unknown:
        raise ValueError(f"cannot group by {sorted(unknown)}")


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}")


def empty_sums(by: tuple[str, ...]) -> pl.DataFrame:
    """What `sums_where` grouped by `by` answers when no row matches."""
    schema = {c: pl.Date() if c == "month" else DELTA_SCHEMA[c] for c in by}
    return pl.DataFrame(schema=schema | {m: pl.Int64() for m in (*METRICS, "rows")})
