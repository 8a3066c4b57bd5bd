"""LA Referencia compatible widget endpoints (`/report/...`).

Same parameters and the same response shape as the original service, which returned raw
OpenSearch aggregations: `{views: {value}, …, level: {buckets}, time: {buckets: [{key_as_string,
key, doc_count, level}]}}` and, by country, `{…, country: {doc_count, views: {buckets: [{key,
doc_count, count: {value}}]}, …}}` — so the deployed widgets keep working unchanged.

What each endpoint counts (see `reach.py`): an item on every site; a repository's items
wherever used; a national node's country network (its repositories and the node, and its
repositories' items on the regional portal); the regional portal the whole network.

- **Time buckets**: calendar months, whatever `time_unit` says. The original ignored
  `time_unit` and bucketed by minute (`calendar_interval: 1m`), which on its monthly documents
  (dated the 1st) gave one bucket per month; the deployed widgets rely on that (the item
  widget sends `time_unit=year`, the repository widget `time_unit=day`, and both label the
  buckets as months). `time_unit` is still checked; a new client chooses other buckets with
  `interval` (day, week, month, quarter, year, or 1d, 1w, 1M, 1q, 1y).
- **By country**: as the original's nested `terms` aggregation: one ranking of countries, by
  their number of per-country entries (`doc_count`: one per site, item, document period and
  country with usage; the period is a month or a day as the compatibility set's documents,
  `document_granularity`), ties by code, cut at `limit`, the same list under every metric
  (zeros included), so that the widget, which builds its list from one metric's buckets,
  shows every country.
- `doc_count` of level and time buckets is the number of daily store rows (day × level)
  behind a bucket, not of the original's documents; no widget reads it.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
from fastapi import APIRouter, Request, Response

from usage_stats.admin.sources import Source
from usage_stats.pipeline.metrics import LA_REFERENCIA_METRICS
from usage_stats.web import reach as reaches
from usage_stats.web.common import (
    GRANULARITIES,
    ApiError,
    QueryParameter,
    WebContext,
    date_range,
    documented,
    parse_identifier,
    parse_int,
    period_end,
    query_values,
)

router = APIRouter(prefix="/report", tags=["LA Referencia widgets"])
M = LA_REFERENCIA_METRICS
# OpenSearch interval names (M: month; m is a minute there, our finest bucket is a day).
_INTERVALS = {"1d": "day", "1w": "week", "1M": "month", "1q": "quarter", "1y": "year"}
# What `time_unit` may say: LA Referencia's widgets send day, week, month or year; the
# original accepted anything and used none of it.
_TIME_UNITS = {*GRANULARITIES, *_INTERVALS, "1m"}

IDENTIFIER = QueryParameter("identifier", "item identifier, any spelling")
SOURCE = QueryParameter("source", "source key (e.g. opendoar::1329, any case), site id, or *")
SOURCE_ID = QueryParameter("source_id", SOURCE.description)
START_DATE = QueryParameter(
    "start_date", "YYYY-MM-DD, a date-time, or date math: now-1y (default), now-6M/M …"
)
END_DATE = QueryParameter("end_date", "same forms; now (default)")
TIME_UNIT = QueryParameter(
    "time_unit",
    "accepted for LA Referencia's widgets (day, week, month, year); the time buckets are "
    "calendar months whatever it says: use `interval` for others",
)
INTERVAL = QueryParameter(
    "interval", "time buckets: day, week, month (default), quarter, year or 1d…1y"
)
LIMIT = QueryParameter("limit", "countries, 1..250 (default 10)")
# The endpoints read their parameters themselves (`query_values`, documented for OpenAPI):
# every value is a string parsed here anyway, and the item widget, requested as often as
# item pages are viewed, spent ~0.5 ms of a ~4 ms miss in FastAPI's validation of them.
ITEM_WIDGET = (IDENTIFIER, SOURCE, START_DATE, END_DATE, TIME_UNIT, INTERVAL)
ITEM_BY_COUNTRY = (IDENTIFIER, SOURCE, START_DATE, END_DATE, LIMIT)
REPOSITORY_WIDGET = (SOURCE_ID, START_DATE, END_DATE, TIME_UNIT, INTERVAL)
REPOSITORY_BY_COUNTRY = (SOURCE_ID, START_DATE, END_DATE, LIMIT)


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx


def _wildcard(value: str | None) -> bool:
    return value is None or value.strip() in ("", "*")


def _find_source(ctx: WebContext, value: str, parameter: str) -> Source:
    found = ctx.find_source(value)
    if found is None:
        raise ApiError(404, parameter, f"the source {value.strip()[:80]!r} is not registered")
    return found


def _buckets(time_unit: str | None, interval: str | None) -> str:
    """The time buckets: `interval` if given, else calendar months (`time_unit` only checked)."""
    unit = (time_unit or "").strip()
    if unit and unit not in _TIME_UNITS and unit.lower() not in GRANULARITIES:
        raise ApiError(
            400,
            "time_unit",
            f"time_unit must be one of {', '.join(GRANULARITIES)} (buckets are months; choose "
            f"others with interval), got {time_unit[:60]!r}",
        )
    if interval is None or interval.strip() == "":
        return "month"
    text = interval.strip()
    if text in _INTERVALS:
        return _INTERVALS[text]
    if text.lower() in GRANULARITIES:
        return text.lower()
    raise ApiError(
        400,
        "interval",
        f"interval must be one of {', '.join(GRANULARITIES)} or 1d, 1w, 1M, 1q, 1y (a day is "
        f"the finest), got {interval[:60]!r}",
    )


def _truncate(day: dt.date, unit: str) -> dt.date:
    """The first day of `day`'s bucket, as Polars' `dt.truncate` (weeks start on Monday)."""
    if unit == "day":
        return day
    if unit == "week":
        return day - dt.timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if unit == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def _level_order(levels: list) -> list:
    """Levels key descending (R, N, L), a missing level first, as Polars sorts them."""
    return [level for level in levels if level is None] + sorted(
        (level for level in levels if level is not None), reverse=True
    )


def _level_bucket(level: object, sums: list[int]) -> dict:
    return {
        "key": level,
        "doc_count": sums[0],
        **{m: {"value": value} for m, value in zip(M, sums[1:], strict=True)},
    }


# Level sums: [rows with usage, *M]; buckets: first day -> level -> level sums.
_Sums = dict[object, list[int]]
_WidgetSums = tuple[list[int], _Sums, dict[dt.date, _Sums]]


def widget(frame: pl.DataFrame, unit: str) -> dict:
    """`frame`: daily sums by date and level → the original widget aggregation shape: totals,
    levels (R, N, L: key descending) and time buckets that have usage, each by level.
    `doc_count`: the daily rows behind a bucket (rows without usage: only in the totals)."""
    if frame.height > _PYTHON_ROWS:
        totals, levels, buckets = _sums_by_arrays(frame, unit)
    else:
        totals, levels, buckets = _sums_in_python(frame, unit)
    time_buckets = []
    for start in sorted(buckets):
        per_level = buckets[start]
        moment = dt.datetime.combine(start, dt.time(), dt.UTC)
        time_buckets.append(
            {
                "key_as_string": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "key": int(moment.timestamp() * 1000),
                "end": period_end(start, unit).isoformat(),
                "doc_count": sum(sums[0] for sums in per_level.values()),
                "level": {
                    "doc_count_error_upper_bound": 0,
                    "sum_other_doc_count": 0,
                    "buckets": [
                        _level_bucket(level, per_level[level])
                        for level in _level_order(list(per_level))
                    ],
                },
            }
        )
    return {
        **{m: {"value": total} for m, total in zip(M, totals, strict=True)},
        "level": {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": 0,
            "buckets": [
                _level_bucket(level, levels[level]) for level in _level_order(list(levels))
            ],
        },
        "time": {"buckets": time_buckets},
    }


# A frame of more daily rows is summed with numpy: plain Python costs an item's year (a few
# dozen rows) under 0.3 ms, but ~5 us a row, and a popular item's year is ~1,100 rows (365
# days by level): ~5 ms against ~0.9 with arrays (issue 16: the first answers for the most
# viewed items, which every worker computes, are the item widget's costliest misses).
_PYTHON_ROWS = 64


def _sums_in_python(frame: pl.DataFrame, unit: str) -> _WidgetSums:
    rows = zip(*(frame.get_column(c).to_list() for c in ("date", "level", *M)), strict=True)
    totals = [0] * len(M)
    levels: _Sums = {}
    buckets: dict[dt.date, _Sums] = {}
    for day, level, *values in rows:
        totals = [t + int(v or 0) for t, v in zip(totals, values, strict=True)]
        if not any(v and v > 0 for v in values):
            continue  # a row without usage (only other metrics, or corrections to zero)
        for sums in (
            levels.setdefault(level, [0] * (len(M) + 1)),
            buckets.setdefault(_truncate(day, unit), {}).setdefault(level, [0] * (len(M) + 1)),
        ):
            sums[0] += 1
            for i, value in enumerate(values, start=1):
                sums[i] += int(value or 0)
    return totals, levels, buckets


def _sums_by_arrays(frame: pl.DataFrame, unit: str) -> _WidgetSums:
    """What `_sums_in_python` sums, over the frame's columns as arrays: each row's level and
    bucket as a small integer (buckets from the distinct days, by `_truncate`), and the
    sums per level and per (bucket, level) cell by `bincount`."""
    values = np.column_stack([_integers(frame.get_column(m)) for m in M])
    totals = [int(v) for v in values.sum(axis=0)]
    used = (values > 0).any(axis=1)
    values = values[used]
    level_list = frame.get_column("level").to_list()
    kinds = list(dict.fromkeys(level_list))  # a missing level (None) is a level too
    code = {level: i for i, level in enumerate(kinds)}
    level_of_row = np.fromiter(
        (code[level] for level in level_list), dtype=np.int64, count=len(level_list)
    )[used]
    days, day_of_row = np.unique(frame.get_column("date").to_numpy()[used], return_inverse=True)
    starts = [_truncate(day, unit) for day in days.astype(dt.date)]
    ordered = sorted(set(starts))
    position = {start: i for i, start in enumerate(ordered)}
    start_of_row = np.array([position[start] for start in starts], dtype=np.int64)[day_of_row]
    levels = {kinds[cell]: sums for cell, sums in _cell_sums(level_of_row, values, len(kinds))}
    buckets: dict[dt.date, _Sums] = {}
    cells = start_of_row * len(kinds) + level_of_row
    for cell, sums in _cell_sums(cells, values, len(ordered) * len(kinds)):
        start, level = divmod(cell, len(kinds))
        buckets.setdefault(ordered[start], {})[kinds[level]] = sums
    return totals, levels, buckets


def _integers(column: pl.Series) -> np.ndarray:
    """A metric column as int64 (the store's sums have no null: no copy then)."""
    return (column if column.null_count() == 0 else column.fill_null(0)).to_numpy()


def _cell_sums(cells: np.ndarray, values: np.ndarray, size: int) -> list[tuple[int, list[int]]]:
    """[rows, *sums of each column of `values`] of each cell that has rows (float weights
    sum integers exactly below 2**53)."""
    counts = np.bincount(cells, minlength=size)
    sums = [np.bincount(cells, weights=values[:, i], minlength=size) for i in range(len(M))]
    return [
        (int(cell), [int(counts[cell]), *(int(column[cell]) for column in sums)])
        for cell in np.flatnonzero(counts)
    ]


def by_country(frame: pl.DataFrame, limit: int) -> dict:
    """`frame`: sums by country with `rows`, the per-country entries behind them (one per site,
    item, document period and country) → totals and the nested country buckets of the
    original: countries ranked once by entries (ties by code), the first `limit` under every
    metric, zeros included."""
    totals = {m: int(frame.get_column(m).sum()) if frame.height else 0 for m in M}
    entries = int(frame.get_column("rows").sum()) if frame.height else 0
    ranked = (
        frame.filter(pl.col("country").is_not_null() & (pl.col("rows") > 0))
        .sort(["rows", "country"], descending=[True, False])
        .to_dicts()
    )
    shown, rest = ranked[:limit], ranked[limit:]
    other = sum(int(r["rows"]) for r in rest)
    country: dict = {"doc_count": entries}
    for metric in M:
        country[metric] = {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": other,
            "buckets": [
                {
                    "key": r["country"],
                    "doc_count": int(r["rows"]),
                    "count": {"value": int(r[metric])},
                }
                for r in shown
            ],
        }
    return {**{m: {"value": totals[m]} for m in M}, "country": country}


def _item_reach(
    ctx: WebContext, identifier: str | None, source: str | None
) -> tuple[reaches.Reach, bool]:
    """The reach of the item widget's parameters, and whether an item without usage is known
    (its prefix is a registered repository's, or a registered source was named): then its
    answer is zeros, as the original's; an unknown one is 404."""
    if not _wildcard(identifier):
        key = ctx.item_key(parse_identifier(identifier))
        if ctx.owner_of(key) is not None:
            return reaches.item(key), True  # the original ignores `source` then
        named = None if _wildcard(source) else _find_source(ctx, source or "", "source")
        return reaches.item(key), named is not None
    if not _wildcard(source):
        found = _find_source(ctx, source or "", "source")
        return reaches.of_source(found, ctx.all_sources()), True
    raise ApiError(400, "identifier", "at least one of 'identifier' or 'source' is required")


def _require_usage(ctx: WebContext, reach: reaches.Reach, known: bool) -> None:
    if known or reach.kind != "item":
        return
    key = reach.items[0].keys[0] if reach.items[0].keys else ""
    ever = ctx.store.sums("item", dt.date(1970, 1, 1), dt.date(9999, 12, 31), keys=(key,))
    if not any(ever.row(0)):
        raise ApiError(
            404,
            "identifier",
            f"the identifier {key!r} has no recorded usage and no registered repository's prefix",
        )


def _countries(
    ctx: WebContext, reach: reaches.Reach, first: dt.date, last: dt.date
) -> pl.DataFrame:
    """Sums by visitor country, with `rows`: the original's nested entries, one per site, item,
    document period (day or month, `document_granularity`) and country."""
    per_month = ("site_id", "key", "month") if ctx.document_granularity == "month" else ()
    return ctx.store.sums_where(
        "item", first, last, reach.items, by=("country",), distinct=per_month
    )


@router.get(
    "/itemWidget",
    summary="An item's (or a source's) totals, by level and over time",
    openapi_extra=documented(*ITEM_WIDGET),
)
async def item_widget(request: Request) -> Response:
    ctx = _ctx(request)
    identifier, source, start_date, end_date, time_unit, interval = query_values(
        request, *ITEM_WIDGET
    )

    def compute() -> dict:
        reach, known = _item_reach(ctx, identifier, source)
        first, last = date_range(start_date, end_date, start_name="start_date", end_name="end_date")
        unit = _buckets(time_unit, interval)
        body = widget(reach.sums(ctx.store, first, last, by=("date", "level")), unit)
        if not any(body[m]["value"] for m in M):
            _require_usage(ctx, reach, known)  # usage in the window proves usage ever
        return body

    return await ctx.answer(compute, lookup=not _wildcard(identifier))


@router.get(
    "/itemWidgetByCountry",
    summary="An item's (or a source's) totals by country",
    openapi_extra=documented(*ITEM_BY_COUNTRY),
)
async def item_widget_by_country(request: Request) -> Response:
    ctx = _ctx(request)
    identifier, source, start_date, end_date, limit = query_values(request, *ITEM_BY_COUNTRY)

    def compute() -> dict:
        reach, known = _item_reach(ctx, identifier, source)
        first, last = date_range(start_date, end_date, start_name="start_date", end_name="end_date")
        count = parse_int(limit, "limit", 10, 1, 250)
        frame = _countries(ctx, reach, first, last)
        if not any(frame.select(M).sum().row(0)):
            _require_usage(ctx, reach, known)
        return by_country(frame, count)

    return await ctx.answer(compute, lookup=False)  # by country: a distinct count, a query


def _repository(ctx: WebContext, source_id: str | None) -> reaches.Reach:
    if _wildcard(source_id):
        raise ApiError(400, "source_id", "source_id parameter is required")
    found = _find_source(ctx, source_id or "", "source_id")
    return reaches.of_source(found, ctx.all_sources())


@router.get(
    "/repositoryWidget",
    summary="A repository's, national node's or the network's totals, levels, over time",
    openapi_extra=documented(*REPOSITORY_WIDGET),
)
async def repository_widget(request: Request) -> Response:
    ctx = _ctx(request)
    source_id, start_date, end_date, time_unit, interval = query_values(request, *REPOSITORY_WIDGET)

    def compute() -> dict:
        reach = _repository(ctx, source_id)
        first, last = date_range(start_date, end_date, start_name="start_date", end_name="end_date")
        unit = _buckets(time_unit, interval)
        return widget(reach.sums(ctx.store, first, last, by=("date", "level")), unit)

    return await ctx.answer(compute, lookup=False)


@router.get(
    "/repositoryWidgetByCountry",
    summary="A repository's, national node's or the network's totals by visitor country",
    openapi_extra=documented(*REPOSITORY_BY_COUNTRY),
)
async def repository_widget_by_country(request: Request) -> Response:
    ctx = _ctx(request)
    source_id, start_date, end_date, limit = query_values(request, *REPOSITORY_BY_COUNTRY)

    def compute() -> dict:
        reach = _repository(ctx, source_id)
        first, last = date_range(start_date, end_date, start_name="start_date", end_name="end_date")
        count = parse_int(limit, "limit", 10, 1, 250)
        return by_country(_countries(ctx, reach, first, last), count)

    return await ctx.answer(compute, lookup=False)
