"""LA Referencia compatible widget endpoints (`/report/...`).

Same parameters and the same response shape as the original service, which returned raw
OpenSearch aggregations: `{views: {value}, …, level: {buckets}, time: {buckets: [{key_as_string,
key, doc_count, level}]}}` and, by country, `{…, country: {doc_count, views: {buckets: [{key,
doc_count, count: {value}}]}, …}}` — so existing widgets keep working. Differences, on
purpose: `time_unit` is honoured (the original bucketed by minute whatever it was asked), the
figures come from the stats store (DuckDB or OpenSearch alike), and `doc_count` is the number
of daily store rows (day × level, or day × country) behind a bucket.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import polars as pl
from fastapi import APIRouter, Query, Request

from usage_stats.metrics import LA_REFERENCIA_METRICS
from usage_stats.sources import Source
from usage_stats.web.common import (
    GRANULARITIES,
    ApiError,
    WebContext,
    date_range,
    parse_choice,
    parse_identifier,
    parse_int,
    period_end,
)

router = APIRouter(prefix="/report", tags=["LA Referencia widgets"])
M = LA_REFERENCIA_METRICS
_UNITS = {"1d": "day", "1w": "week", "1M": "month", "1q": "quarter", "1y": "year", "1m": "month"}

Identifier = Annotated[str | None, Query(description="item identifier, any spelling")]
SourceParam = Annotated[
    str | None, Query(description="source key (e.g. opendoar::1329), site id, or *")
]
StartDate = Annotated[str | None, Query(description="YYYY-MM-DD or now-1y (default)")]
EndDate = Annotated[str | None, Query(description="YYYY-MM-DD or now (default)")]
TimeUnit = Annotated[str | None, Query(description="day, week, month, quarter, year (default)")]
Limit = Annotated[str | None, Query(description="countries per metric, 1..250 (default 10)")]


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx


def _find_source(ctx: WebContext, value: str | None, parameter: str) -> Source | None:
    if value is None or value.strip() in ("", "*"):
        return None
    text = value.strip()
    for source in ctx.sources():
        if source.source_key == text or (text.isdigit() and int(text) == source.site_id):
            return source
    raise ApiError(404, parameter, f"the source {text[:80]!r} is not registered")


def _time_unit(value: str | None) -> str:
    if value is not None and value.strip() in _UNITS:
        return _UNITS[value.strip()]
    return parse_choice(value, "time_unit", GRANULARITIES, "year")


def _values(row: dict) -> dict:
    return {m: {"value": int(row.get(m, 0))} for m in M}


def _level_buckets(frame: pl.DataFrame) -> dict:
    buckets = []
    if not frame.is_empty():
        grouped = (
            frame.group_by("level")
            .agg(pl.len().alias("doc_count"), *[pl.col(m).sum() for m in M])
            .sort("level", descending=True)
        )
        for row in grouped.iter_rows(named=True):
            buckets.append({"key": row["level"], "doc_count": row["doc_count"], **_values(row)})
    return {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": buckets}


def widget(frame: pl.DataFrame, unit: str) -> dict:
    """`frame`: daily sums by date and level → the original widget aggregation shape."""
    totals = {m: int(frame.get_column(m).sum()) if frame.height else 0 for m in M}
    frame = frame.filter(pl.any_horizontal([pl.col(m) > 0 for m in M])) if frame.height else frame
    every = {"day": "1d", "week": "1w", "month": "1mo", "quarter": "1q", "year": "1y"}[unit]
    time_buckets = []
    if not frame.is_empty():
        bucketed = frame.with_columns(pl.col("date").dt.truncate(every).alias("_bucket"))
        for (start,), part in sorted(bucketed.partition_by("_bucket", as_dict=True).items()):
            moment = dt.datetime.combine(start, dt.time(), dt.UTC)
            time_buckets.append(
                {
                    "key_as_string": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "key": int(moment.timestamp() * 1000),
                    "end": period_end(start, unit).isoformat(),
                    "doc_count": part.height,
                    "level": _level_buckets(part),
                }
            )
    return {
        **{m: {"value": totals[m]} for m in M},
        "level": _level_buckets(frame),
        "time": {"buckets": time_buckets},
    }


def by_country(frame: pl.DataFrame, limit: int) -> dict:
    """`frame`: sums by date and country → totals and nested per-metric country buckets."""
    totals = {m: int(frame.get_column(m).sum()) if frame.height else 0 for m in M}
    country: dict = {"doc_count": 0}
    if frame.height:
        frame = frame.filter(pl.any_horizontal([pl.col(m) > 0 for m in M]))
        country["doc_count"] = frame.height
    for metric in M:
        buckets, other = [], 0
        if frame.height:
            grouped = (
                frame.filter(pl.col(metric) > 0)
                .group_by("country")
                .agg(pl.len().alias("doc_count"), pl.col(metric).sum())
                .sort([metric, "country"], descending=[True, False])
            )
            for i, row in enumerate(grouped.iter_rows(named=True)):
                if i < limit:
                    buckets.append(
                        {
                            "key": row["country"],
                            "doc_count": row["doc_count"],
                            "count": {"value": int(row[metric])},
                        }
                    )
                else:
                    other += row["doc_count"]
        country[metric] = {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": other,
            "buckets": buckets,
        }
    return {**{m: {"value": totals[m]} for m in M}, "country": country}


def _scope_of(source: Source) -> tuple[str, str]:
    """A repository: its items wherever used (R, N and L levels); a node or the portal: the
    usage that happened on that site."""
    return ("source" if source.type == "R" else "site"), str(source.site_id)


def _item_or_source(ctx: WebContext, identifier: str | None, source: str | None) -> tuple[str, str]:
    registered = _find_source(ctx, source, "source")
    if identifier is not None and identifier.strip() not in ("", "*"):
        return "item", parse_identifier(identifier)
    if registered is not None:
        return _scope_of(registered)
    raise ApiError(400, "identifier", "at least one of 'identifier' or 'source' is required")


def _require_usage(ctx: WebContext, scope: str, key: str) -> None:
    if scope != "item":
        return
    ever = ctx.store.sums("item", dt.date(1970, 1, 1), dt.date(9999, 12, 31), keys=(key,))
    if not any(ever.row(0)):
        raise ApiError(404, "identifier", f"the identifier {key!r} has no recorded usage")


@router.get("/itemWidget", summary="An item's (or a source's) totals, by level and over time")
def item_widget(
    request: Request,
    identifier: Identifier = None,
    source: SourceParam = None,
    start_date: StartDate = None,
    end_date: EndDate = None,
    time_unit: TimeUnit = None,
) -> dict:
    ctx = _ctx(request)
    scope, key = _item_or_source(ctx, identifier, source)
    first, last = date_range(start_date, end_date, start_name="start_date", end_name="end_date")
    unit = _time_unit(time_unit)
    frame = ctx.store.totals(scope, key, first, last, by=("date", "level"))
    if not any(frame.select(M).sum().row(0)):
        _require_usage(ctx, scope, key)  # usage in the window proves usage ever: no 2nd query
    return widget(frame, unit)


@router.get("/itemWidgetByCountry", summary="An item's (or a source's) totals by country")
def item_widget_by_country(
    request: Request,
    identifier: Identifier = None,
    source: SourceParam = None,
    start_date: StartDate = None,
    end_date: EndDate = None,
    limit: Limit = None,
) -> dict:
    ctx = _ctx(request)
    scope, key = _item_or_source(ctx, identifier, source)
    first, last = date_range(start_date, end_date, start_name="start_date", end_name="end_date")
    count = parse_int(limit, "limit", 10, 1, 250)
    _require_usage(ctx, scope, key)
    return by_country(ctx.store.totals(scope, key, first, last, by=("date", "country")), count)


def _repository(ctx: WebContext, source_id: str | None) -> tuple[str, str]:
    if source_id is None or source_id.strip() in ("", "*"):
        raise ApiError(400, "source_id", "source_id parameter is required")
    found = _find_source(ctx, source_id, "source_id")
    assert found is not None
    return _scope_of(found)


@router.get("/repositoryWidget", summary="A repository's (or node's) totals, levels, over time")
def repository_widget(
    request: Request,
    source_id: SourceParam = None,
    start_date: StartDate = None,
    end_date: EndDate = None,
    time_unit: TimeUnit = None,
) -> dict:
    ctx = _ctx(request)
    scope, key = _repository(ctx, source_id)
    first, last = date_range(start_date, end_date, start_name="start_date", end_name="end_date")
    unit = _time_unit(time_unit)
    return widget(ctx.store.totals(scope, key, first, last, by=("date", "level")), unit)


@router.get("/repositoryWidgetByCountry", summary="A repository's (or node's) totals by country")
def repository_widget_by_country(
    request: Request,
    source_id: SourceParam = None,
    start_date: StartDate = None,
    end_date: EndDate = None,
    limit: Limit = None,
) -> dict:
    ctx = _ctx(request)
    scope, key = _repository(ctx, source_id)
    first, last = date_range(start_date, end_date, start_name="start_date", end_name="end_date")
    count = parse_int(limit, "limit", 10, 1, 250)
    return by_country(ctx.store.totals(scope, key, first, last, by=("date", "country")), count)
