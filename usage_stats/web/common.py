"""What every router shares: the app context, parameter parsing and 4xx errors.

Parameters are taken as strings and parsed here so that every rejection names the parameter
and says what is wrong (FastAPI's generic 422 does not), and so that no user text goes further
than a parsed value: dates, ints, normalised identifiers and fixed vocabularies.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from usage_stats.admin.db import ensure_current, session_scope
from usage_stats.admin.models import ProcessingStatus
from usage_stats.admin.registry import complete_through, list_sources
from usage_stats.admin.sources import Source
from usage_stats.pipeline.identifiers import normalize_identifier
from usage_stats.pipeline.metrics import METRICS
from usage_stats.pipeline.ownership import OwnerIndex, owner_index, owner_of
from usage_stats.storage.store import StatsStore
from usage_stats.web.keyed_cache import KeyedCache

GRANULARITIES = ("day", "week", "month", "quarter", "year")
MAX_BUCKETS = 4000
MAX_IDENTIFIER_LENGTH = 1000
# Dates the API accepts. Usage cannot predate the web, and a bound well inside the calendar keeps
# every later step (a year's default window, the last bucket's end + 1 day) away from
# `date.min` / `date.max`, whose arithmetic overflows into a 500 instead of a named 400.
MIN_DATE = dt.date(1900, 1, 1)
MAX_DATE = dt.date(2999, 12, 31)
MAX_DATE_TEXT = 100
# ASCII digits only: `\d` would let other scripts' digits through to `int()`.
_DAY = re.compile(
    r"(?P<day>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?P<time>[T ][0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?)?"
    r"(?P<zone>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)
_PARTIAL = re.compile(r"(?P<year>[0-9]{4})(?:-(?P<month>[0-9]{2}))?")
# OpenSearch date math as LA Referencia's clients send it: an anchor (`now`, or a date followed
# by `||`) and any number of `+N<unit>`, `-N<unit>` and `/<unit>` (rounding) operations; units
# y M w d h H m s (M months, m minutes, as in OpenSearch).
_MATH = re.compile(r"(?P<anchor>now|.+?\|\|)(?P<ops>(?:[+-][0-9]{1,4}[yMwdhHms]|/[yMwdhHms])*)")
_OPERATION = re.compile(r"(?P<sign>[+-])(?P<amount>[0-9]{1,4})(?P<unit>[yMwdhHms])|/(?P<round>.)")


class ApiError(Exception):
    """A request we refuse: HTTP status, the parameter at fault and why."""

    def __init__(self, status: int, parameter: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.parameter = parameter
        self.message = message


@dataclass
class WebContext:
    """The store and admin DB the app reads; the source list is cached briefly so a widget
    request does not cost an admin DB round trip, yet an operator's change shows within
    `cache_seconds`."""

    store: StatsStore
    admin_db_url: str
    cache_seconds: float = 30.0
    platform: str = "usage-stats"
    # LA Referencia's documents are per site, item and "day" or "month": the widgets' country
    # ranking counts entries at this granularity (see web/lareferencia.py)
    document_granularity: str = "month"
    _sources: list[Source] = field(default_factory=list)
    _sources_at: float = -1e9
    _everyone: list[Source] = field(default_factory=list)
    _everyone_at: float = -1e9
    _complete: dict[int | None, tuple[float, dt.date | None]] = field(default_factory=dict)
    _first: dict[int, tuple[float, dt.date | None]] = field(default_factory=dict)
    _coverage: tuple[float, tuple[dt.date | None, dt.date | None]] | None = None
    # the owner index of the cached source list (rebuilt when the list is read again)
    _owner_index: tuple[list[Source], OwnerIndex] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # how SUSHI item reports describe each item (`sushi.ReportedItem`), kept per worker until
    # the store's data version changes: at most this many items (0: none kept)
    reported_item_keys: int = 100_000
    reported_items: KeyedCache = field(init=False)

    def __post_init__(self) -> None:
        self.reported_items = KeyedCache(
            lambda: self.store.data_version(),
            max_keys=self.reported_item_keys,
            version_seconds=getattr(self.store, "version_check_seconds", 0.0),
        )

    def sources(self) -> list[Source]:
        with self._lock:
            if time.monotonic() - self._sources_at > self.cache_seconds:
                self._sources = list_sources(self.admin_db_url)
                self._sources_at = time.monotonic()
            return self._sources

    def all_sources(self) -> list[Source]:
        """Every registered source, inactive ones too: a node's figures count the history of
        its country's repositories, also of those no longer tracked (cached like `sources`)."""
        with self._lock:
            if time.monotonic() - self._everyone_at > self.cache_seconds:
                self._everyone = list_sources(self.admin_db_url, include_inactive=True)
                self._everyone_at = time.monotonic()
            return self._everyone

    def find_source(self, value: str) -> Source | None:
        """A source by its key, compared without regard to case (`OPENDOAR::1001` is
        `opendoar::1001`, as LA Referencia's service reads it), or by its site id."""
        text = value.strip()
        for source in self.sources():
            if source.source_key.lower() == text.lower():
                return source
        if text.isascii() and text.isdigit() and len(text) <= 10:
            return self.source(int(text))
        return None

    def complete_through_all(self, site_ids: tuple[int, ...] | None) -> dt.date | None:
        """The last day through which every one of `site_ids` is processed (None: any site)."""
        if site_ids is None:
            return self.complete_through(None)
        days = [self.complete_through(s) for s in site_ids]
        known = [d for d in days if d is not None]
        return min(known) if known else None

    def source(self, site_id: int) -> Source | None:
        return next((s for s in self.sources() if s.site_id == site_id), None)

    def complete_through(self, site_id: int | None = None) -> dt.date | None:
        """Processing status: the last day up to which data is complete (cached briefly)."""
        with self._lock:
            cached = self._complete.get(site_id)
            if cached and time.monotonic() - cached[0] <= self.cache_seconds:
                return cached[1]
        value = complete_through(self.admin_db_url, site_id)
        with self._lock:
            self._complete[site_id] = (time.monotonic(), value)
        return value

    def first_processed(self, site_id: int) -> dt.date | None:
        """The first day processed for a site: COUNTER's "first month available" starts there
        (cached briefly, like `complete_through`)."""
        with self._lock:
            cached = self._first.get(site_id)
            if cached and time.monotonic() - cached[0] <= self.cache_seconds:
                return cached[1]
        value = first_processed_day(self.admin_db_url, site_id)
        with self._lock:
            self._first[site_id] = (time.monotonic(), value)
        return value

    def coverage(self) -> tuple[dt.date | None, dt.date | None]:
        """First and last day with any usage, from the global scope (a few rows per day, so
        cheap on both stores; cached briefly like the rest)."""
        with self._lock:
            cached = self._coverage
            if cached and time.monotonic() - cached[0] <= self.cache_seconds:
                return cached[1]
        daily = self.store.sums(
            "global", dt.date(1970, 1, 1), dt.date(9999, 12, 31), by=("date",)
        ).filter(pl.sum_horizontal(METRICS) > 0)
        value = (
            (daily.get_column("date").min(), daily.get_column("date").max())
            if daily.height
            else (None, None)
        )
        with self._lock:
            self._coverage = (time.monotonic(), value)
        return value

    def item_key(self, identifier: str) -> str:
        """The key the pipeline counts a normalised identifier's use under: a DOI, handle or
        URL a harvested record carries is the record's OAI item after the cross-walk
        (`StatsStore.resolve_aliases`, recorded by `item_metadata_index`), anything else
        (an own key, an ambiguous alias, an unknown key) is its own key, as the cleaning left
        it. Asked per request, not cached: a new harvest's aliases show at once, and one
        lookup by key is cheap on both stores."""
        return self.store.resolve_aliases((identifier,)).get(identifier, identifier)

    async def answer(self, compute: Callable[[], object], *, lookup: bool) -> JSONResponse:
        """`compute`'s body as JSON. A `lookup` (one item's rows: bounded, a few
        milliseconds) on a store read in this process runs on the event loop; anything else,
        and every read of a remote store, in the thread pool, so that the loop keeps serving
        while it waits. The hop to a thread and back cost ~0.4 ms of an item widget's ~4 ms
        miss (issue 16), and on two cores a worker gains nothing from waiting in a thread
        for its own CPU."""
        if lookup and self.store.reads_in_process:
            body = compute()
        else:
            body = await run_in_threadpool(compute)
        return JSONResponse(body)

    def owner_of(self, identifier: str) -> Source | None:
        """The repository owning a normalised key (OAI, handle or DOI prefix), by the same rule
        as the pipeline's attribution, so the widget names the repository the figures count
        under."""
        sources = self.sources()
        with self._lock:
            cached = self._owner_index
        if cached is None or cached[0] is not sources:
            cached = (sources, owner_index(sources))
            with self._lock:
                self._owner_index = cached
        return owner_of(identifier, sources, cached[1])


@dataclass(frozen=True)
class QueryParameter:
    """A query parameter an endpoint reads itself (`query_values`): a string, optional."""

    name: str
    description: str


def documented(*parameters: QueryParameter) -> dict:
    """`openapi_extra` documenting `parameters`, for an endpoint that reads them itself
    (`query_values`) and so declares none in its signature: FastAPI's per-parameter
    validation cost ~0.5 ms of an item widget's miss (issue 16) for values that are strings
    anyway and parsed here, each rejection naming its parameter."""
    return {
        "parameters": [
            {
                "name": p.name,
                "in": "query",
                "required": False,
                "description": p.description,
                "schema": {"type": "string"},
            }
            for p in parameters
        ]
    }


def query_values(request: Request, *parameters: QueryParameter) -> list[str | None]:
    """The values of `parameters` in `request`'s query (the last of a repeated one, as
    FastAPI takes it), None where absent."""
    query = request.query_params
    return [query.get(p.name) for p in parameters]


def first_processed_day(url: str, site_id: int) -> dt.date | None:
    """One aggregate row, not the site's status rows: asked for every SUSHI request."""
    ensure_current(url)
    with session_scope(url) as session:
        return session.scalar(
            select(func.min(ProcessingStatus.day)).where(ProcessingStatus.site_id == site_id)
        )


def now() -> dt.datetime:
    """The current instant, UTC (OpenSearch's `now`)."""
    return dt.datetime.now(dt.UTC)


def today() -> dt.date:
    return now().date()


def parse_date(value: str | None, parameter: str, *, end: bool, default: dt.date) -> dt.date:
    """The day a start or end parameter means.

    - `YYYY-MM-DD`, optionally with a time and zone (`2025-01-01T03:00:00.000Z`, what a browser
      sends for a `Date`): that day, in UTC;
    - `YYYY-MM` or `YYYY`: the first day of the month or year as a start, the last as an end;
    - OpenSearch date math, the subset LA Referencia's clients use: `now`, `now-1h`, `now-30d`,
      `now-2w`, `now-6M`, `now-1y`, `now-1y/y`, `now/M`, `2024-01-01||+1M/M`: the day of the
      instant it names. Rounding (`/y`, `/M`, `/w`, `/d`, …) goes to the first instant of the
      unit for a start and to its last for an end, as OpenSearch rounds `gte` and `lte`.

    Anything else, and days outside MIN_DATE..MAX_DATE, are refused here, naming the parameter.
    """
    if value is None or value.strip() == "":
        return default
    text = value.strip()
    parsed: dt.date | None = None
    if len(text) <= MAX_DATE_TEXT:
        try:
            parsed = _parse_day(text, end)
        except (ValueError, OverflowError):
            parsed = None
    if parsed is None:
        raise ApiError(
            400,
            parameter,
            f"{parameter} must be a date YYYY-MM-DD, YYYY-MM, YYYY or date math such as now, "
            f"now-1y, now-6M/M, now-1h or 2024-01-01||+1M; got {text[:60]!r}",
        )
    if not MIN_DATE <= parsed <= MAX_DATE:
        raise ApiError(
            400,
            parameter,
            f"{parameter} must be between {MIN_DATE.isoformat()} and {MAX_DATE.isoformat()}, "
            f"got {text[:60]!r}",
        )
    return parsed


def _parse_day(text: str, end: bool) -> dt.date | None:
    """The day of a date or date-math expression (None: not one); ValueError / OverflowError
    for one that names no representable instant."""
    if _DAY.fullmatch(text) or _PARTIAL.fullmatch(text):
        return _plain_day(text, end)
    math = _MATH.fullmatch(text)
    if not math:
        return None
    anchor = math.group("anchor")
    if anchor == "now":
        instant = now()
    else:
        anchor = anchor[:-2]
        if not (_DAY.fullmatch(anchor) or _PARTIAL.fullmatch(anchor)):
            return None
        instant = _instant(anchor)
    for operation in _OPERATION.finditer(math.group("ops")):
        if operation.group("round"):
            instant = _round(instant, operation.group("round"), up=end)
        else:
            amount = int(operation.group("amount"))
            sign = -1 if operation.group("sign") == "-" else 1
            instant = _add(instant, sign * amount, operation.group("unit"))
    return instant.date()


def _plain_day(text: str, end: bool) -> dt.date:
    day = _DAY.fullmatch(text)
    if day:
        if day.group("zone") and day.group("zone") != "Z":
            return _instant(text).date()  # a time in another zone may be another day in UTC
        if day.group("time"):
            _instant(text)  # the time must be a time (refuses 25:99)
        return dt.date.fromisoformat(day.group("day"))
    partial = _PARTIAL.fullmatch(text)
    assert partial is not None
    year = int(partial.group("year"))
    if partial.group("month") is None:
        return dt.date(year, 12, 31) if end else dt.date(year, 1, 1)
    month = int(partial.group("month"))
    last = calendar.monthrange(year, month)[1] if 1 <= month <= 12 else 1
    return dt.date(year, month, last if end else 1)


def _instant(text: str) -> dt.datetime:
    """A date or date-time (UTC unless it says otherwise) as an aware UTC instant; a bare year
    or month is its first instant, as OpenSearch fills missing components."""
    partial = _PARTIAL.fullmatch(text)
    if partial:
        return dt.datetime(
            int(partial.group("year")), int(partial.group("month") or 1), 1, tzinfo=dt.UTC
        )
    moment = dt.datetime.fromisoformat(text.replace(",", ".").replace(" ", "T"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _add(instant: dt.datetime, amount: int, unit: str) -> dt.datetime:
    if unit in "yM":
        day = _shift(instant.date(), amount, unit)
        return dt.datetime.combine(day, instant.timetz())
    seconds = {"w": 604800, "d": 86400, "h": 3600, "H": 3600, "m": 60, "s": 1}[unit]
    return instant + dt.timedelta(seconds=amount * seconds)


def _round(instant: dt.datetime, unit: str, *, up: bool) -> dt.datetime:
    """Down to the first instant of the unit, or (an end) up to its last millisecond."""
    day = instant.date()
    if unit == "y":
        first, following = dt.date(day.year, 1, 1), dt.date(day.year + 1, 1, 1)
    elif unit == "M":
        first = day.replace(day=1)
        following = _shift(first, 1, "M")
    elif unit == "w":
        first = day - dt.timedelta(days=day.weekday())  # ISO weeks start on Monday
        following = first + dt.timedelta(weeks=1)
    elif unit == "d":
        first, following = day, day + dt.timedelta(days=1)
    else:
        size = {"h": 3600, "H": 3600, "m": 60, "s": 1}.get(unit)
        if size is None:
            raise ValueError(f"unknown rounding unit {unit!r}")
        seconds = instant.hour * 3600 + instant.minute * 60 + instant.second
        start = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(
            seconds=seconds - seconds % size
        )
        return start + dt.timedelta(seconds=size, milliseconds=-1) if up else start
    start = dt.datetime.combine(first, dt.time(), dt.UTC)
    if not up:
        return start
    return dt.datetime.combine(following, dt.time(), dt.UTC) - dt.timedelta(milliseconds=1)


def _shift(day: dt.date, amount: int, unit: str) -> dt.date:
    """`day` moved by `amount` days, weeks, months or years (a month's last day clamps)."""
    if unit == "d":
        return day + dt.timedelta(days=amount)
    if unit == "w":
        return day + dt.timedelta(weeks=amount)
    months = amount * (12 if unit == "y" else 1)
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def date_range(
    start: str | None,
    end: str | None,
    *,
    start_name: str = "start",
    end_name: str = "end",
    default_days: int = 365,
) -> tuple[dt.date, dt.date]:
    last = parse_date(end, end_name, end=True, default=today())
    first = parse_date(
        start,
        start_name,
        end=False,
        default=max(MIN_DATE, last - dt.timedelta(days=default_days - 1)),
    )
    if last < first:
        raise ApiError(400, end_name, f"{end_name} ({last}) is before {start_name} ({first})")
    if (last - first).days > 366 * 50:
        raise ApiError(400, start_name, f"{start_name}: the date range is limited to 50 years")
    return first, last


def parse_choice(value: str | None, parameter: str, allowed: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    text = value.strip().lower()
    lookup = {a.lower(): a for a in allowed}
    if text not in lookup:
        raise ApiError(
            400, parameter, f"{parameter} must be one of {', '.join(allowed)}, got {value[:60]!r}"
        )
    return lookup[text]


def parse_int(value: str | None, parameter: str, default: int, minimum: int, maximum: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise ApiError(
            400, parameter, f"{parameter} must be an integer, got {value[:60]!r}"
        ) from None
    if not minimum <= number <= maximum:
        raise ApiError(
            400, parameter, f"{parameter} must be between {minimum} and {maximum}, got {number}"
        )
    return number


def parse_identifier(value: str | None, parameter: str = "identifier") -> str:
    """Any spelling of an identifier (OAI with URL host, DOI URL, handle…), normalised."""
    if value is None or not value.strip():
        raise ApiError(400, parameter, f"{parameter} is required")
    if len(value) > MAX_IDENTIFIER_LENGTH or "\x00" in value:
        raise ApiError(400, parameter, f"{parameter} is not a valid identifier")
    normalised = normalize_identifier(value.strip())
    if not normalised:
        raise ApiError(400, parameter, f"{parameter} is not a valid identifier: {value[:60]!r}")
    return normalised


def bucket_start(day: pl.Expr, granularity: str) -> pl.Expr:
    every = {"day": "1d", "week": "1w", "month": "1mo", "quarter": "1q", "year": "1y"}
    return day.dt.truncate(every[granularity])


def period_label(start: dt.date, granularity: str) -> str:
    if granularity == "day":
        return start.isoformat()
    if granularity == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if granularity == "month":
        return f"{start.year}-{start.month:02d}"
    if granularity == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    return str(start.year)


def period_end(start: dt.date, granularity: str) -> dt.date:
    if granularity == "day":
        return start
    if granularity == "week":
        return start + dt.timedelta(days=6)
    months = {"month": 1, "quarter": 3, "year": 12}[granularity]
    return _shift(start, months, "M") - dt.timedelta(days=1)


def periods(first: dt.date, last: dt.date, granularity: str) -> list[dt.date]:
    """Every bucket start touching [first, last], calendar-aligned (weeks start on Monday)."""
    starts = pl.select(bucket_start(pl.lit(first), granularity).alias("s")).item()
    out = []
    current = starts
    while current <= last:
        out.append(current)
        current = period_end(current, granularity) + dt.timedelta(days=1)
        if len(out) > MAX_BUCKETS:
            raise ApiError(
                400, "granularity", f"too many {granularity} buckets; use a coarser granularity"
            )
    return out


def series(
    daily: pl.DataFrame, first: dt.date, last: dt.date, granularity: str, metrics=METRICS
) -> list[dict]:
    """Daily sums (column `date`) into calendar buckets clipped to [first, last]; empty
    buckets are listed with zeros so a chart's time axis has no holes."""
    starts = periods(first, last, granularity)
    sums: dict[dt.date, dict[str, int]] = {}
    if not daily.is_empty():
        grouped = (
            daily.with_columns(bucket_start(pl.col("date"), granularity).alias("_bucket"))
            .group_by("_bucket")
            .agg(*[pl.col(m).sum() for m in metrics])
        )
        sums = {r["_bucket"]: r for r in grouped.iter_rows(named=True)}
    out = []
    for start in starts:
        row = sums.get(start, {})
        out.append(
            {
                "period": period_label(start, granularity),
                "start": max(start, first).isoformat(),
                "end": min(period_end(start, granularity), last).isoformat(),
                **{m: int(row.get(m, 0)) for m in metrics},
            }
        )
    return out


def cumulative_series(
    daily: pl.DataFrame,
    stored: list[dt.date],
    first: dt.date,
    last: dt.date,
    granularity: str,
    columns: tuple[str, ...],
) -> list[dict]:
    """Cumulative figures per calendar bucket of [first, last]: each bucket shows the figures
    (`daily`, per `date`) of the last stored snapshot day (`stored`) within it, as `as_of`. A
    stored day with no row of `daily` counts 0 (nothing yet); a bucket with no stored day
    (not processed) has `as_of` and every figure null, so a chart can tell "no data" from
    zero, and cumulative figures are never summed over days."""
    values = {row["date"]: row for row in daily.iter_rows(named=True)} if daily.height else {}
    days = sorted(d for d in stored if first <= d <= last)
    out = []
    for start in periods(first, last, granularity):
        low, high = max(start, first), min(period_end(start, granularity), last)
        at = bisect.bisect_right(days, high)
        as_of = days[at - 1] if at and days[at - 1] >= low else None
        row = values.get(as_of, {}) if as_of else {}
        out.append(
            {
                "period": period_label(start, granularity),
                "start": low.isoformat(),
                "end": high.isoformat(),
                "as_of": as_of.isoformat() if as_of else None,
                **{c: (int(row.get(c) or 0) if as_of else None) for c in columns},
            }
        )
    return out
