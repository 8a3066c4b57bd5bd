"""`/api/v1/…/breakdown/<field>`: the usage of a repository's items, of a national node's
country or of the whole network by one subcount field (resource type, access status,
language, subject, publisher, funder, affiliation, file format, visitor country, the
visit's referrer, item).

Read from the usage subcounts the pipeline stores (`usage_stats.pipeline.usage_subcounts`):
the period figures are the subcount deltas of [start, end] added up; the cumulative ones the
subcount snapshot of `as_of`, the last day on or before `end` with one stored. Both rank the
values by one metric, list the first `limit` and fold the rest into an "other" remainder
(with the stored top-N's own remainder), so the rows add up to what the field counts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated

import polars as pl
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from usage_stats.pipeline.metrics import METRICS
from usage_stats.pipeline.records import LIST_FIELDS, TOTAL
from usage_stats.pipeline.usage_subcounts import OTHER, UNKNOWN, USAGE_SUBCOUNT_FIELDS
from usage_stats.web.api import End, Format, Start, _ctx, _source_info
from usage_stats.web.breakdowns import (
    Limit,
    Scope,
    global_scope,
    last_on_or_before,
    node_scope,
    share,
    source_scope,
)
from usage_stats.web.common import WebContext, date_range, parse_choice, parse_int
from usage_stats.web.exports import file_name, negotiate, respond

router = APIRouter(prefix="/api/v1", tags=["usage breakdowns"])
LEVEL_CHOICES = ("R", "N", "L", "all")
TABLES = ("period", "cumulative")
DEFAULT_METRIC = "views"  # as the rankings (`/top`) of the usage API

BREAKDOWN_NOTE = (
    "Usage by the values of one subcount field. `period`: the use within [start, end] (the "
    "daily subcount deltas added up); `cumulative`: all use up to `as_of`, the last day on or "
    "before `end` with a stored subcount snapshot (null: none). Each lists the first `limit` "
    "values by `metric` with every metric and its `share` of the scope's `whole` (the "
    "`metric` figure of the scope's usage), the use of items without the field (`unknown`, "
    'value `""`) and the rest folded into `other` (value `(other)`; also what the stored '
    "top-N per day already folded), so that `values`, `unknown` and `other` add up to the "
    "field's sums. "
    "Single-valued fields (resource_type, access_status, language, publisher, country, "
    "referrer, item) add up to the whole; an item's use counts under each of its subjects, "
    "funders, affiliations and file formats (`multi_valued`), so those shares can add up to more "
    "than 1. Scopes: a source is the use of the items it owns, anywhere; a national node's "
    "that of its country's repositories' items (the regional portal's: every use). CSV and "
    "XLSX hold the `table` rows (period by default): values, then unknown and other."
)

FieldName = Annotated[
    str, Path(description=f"the subcount field: {', '.join(USAGE_SUBCOUNT_FIELDS)}")
]
Metric = Annotated[
    str | None,
    Query(description=f"metric to rank by: {', '.join(METRICS)} (default {DEFAULT_METRIC})"),
]
Level = Annotated[
    str | None,
    Query(
        description="R, N, L or all (default): the use on repositories, national nodes or "
        "the regional portal, or every use added up"
    ),
]
Table = Annotated[
    str | None, Query(description="for csv/xlsx: period (default) or cumulative rows")
]


@dataclass(frozen=True)
class BreakdownQuery:
    """The query parameters of a usage breakdown, as sent (checked in `_checked`)."""

    start: str | None
    end: str | None
    metric: str | None
    level: str | None
    limit: str | None
    table: str | None
    format: str | None


def breakdown_query(
    start: Start = None,
    end: End = None,
    metric: Metric = None,
    level: Level = None,
    limit: Limit = None,
    table: Table = None,
    format: Format = None,
) -> BreakdownQuery:
    return BreakdownQuery(start, end, metric, level, limit, table, format)


Breakdown = Annotated[BreakdownQuery, Depends(breakdown_query)]


@dataclass(frozen=True)
class Checked:
    first: dt.date
    last: dt.date
    field: str
    metric: str
    level: str | None  # None: every level added up
    limit: int
    table: str


def _checked(query: BreakdownQuery, field: str) -> Checked:
    first, last = date_range(query.start, query.end)
    chosen = parse_choice(field, "field", USAGE_SUBCOUNT_FIELDS, "")
    metric = parse_choice(query.metric, "metric", METRICS, DEFAULT_METRIC)
    level = parse_choice(query.level, "level", LEVEL_CHOICES, "all")
    limit = parse_int(query.limit, "limit", 20, 1, 1000)
    table = parse_choice(query.table, "table", TABLES, "period")
    return Checked(first, last, chosen, metric, None if level == "all" else level, limit, table)


def _metrics(row: dict | None) -> dict[str, int]:
    return {m: int(row[m]) if row else 0 for m in METRICS}


def _ranked(rows: pl.DataFrame, whole: dict[str, int], metric: str) -> dict:
    """`ranked_subcounts` rows (named values first, then `""` and `OTHER`) as the answer's
    `whole`, `values`, `unknown` and `other`."""
    listed = list(rows.iter_rows(named=True))
    named = [r for r in listed if r["value"] not in (UNKNOWN, OTHER)]
    by_value = {r["value"]: r for r in listed}

    def row(rank: int | None, value: str | None, counts: dict[str, int]) -> dict:
        return (
            {"rank": rank, "value": value}
            | counts
            | {"share": share(counts[metric], whole[metric])}
        )

    return {
        "whole": whole,
        "values": [row(i, r["value"], _metrics(r)) for i, r in enumerate(named, start=1)],
        "unknown": row(None, UNKNOWN, _metrics(by_value.get(UNKNOWN))),
        "other": row(None, OTHER, _metrics(by_value.get(OTHER))),
    }


def usage_breakdown(ctx: WebContext, scope: Scope, checked: Checked) -> dict:
    """The period and cumulative usage of `scope` by `checked.field`, each ranked."""
    store = ctx.store
    where = {"metric": checked.metric, "level": checked.level}
    first, last = checked.first, checked.last
    period_total = store.subcounts(scope.scope, scope.key, first, last, field=TOTAL, **where)
    period = store.subcounts(
        scope.scope, scope.key, first, last, field=checked.field, limit=checked.limit, **where
    )
    as_of = last_on_or_before(store.subcount_days(), last)
    cumulative = {"as_of": as_of.isoformat() if as_of else None}
    if as_of is None:
        empty = pl.DataFrame(schema={"value": pl.String} | {m: pl.Int64 for m in METRICS})
        cumulative |= _ranked(empty, _metrics(None), checked.metric)
    else:
        held_total = store.subcount_snapshot(scope.scope, scope.key, as_of, field=TOTAL, **where)
        held = store.subcount_snapshot(
            scope.scope, scope.key, as_of, field=checked.field, limit=checked.limit, **where
        )
        whole = _metrics(held_total.row(0, named=True) if held_total.height else None)
        cumulative |= _ranked(held, whole, checked.metric)
    period_whole = _metrics(period_total.row(0, named=True) if period_total.height else None)
    return {
        "scope": scope.scope,
        "key": scope.key,
        "source": _source_info(scope.source) if scope.source else None,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "level": checked.level or "all",
        "field": checked.field,
        "multi_valued": checked.field in LIST_FIELDS,
        "metric": checked.metric,
        "limit": checked.limit,
        "period": _ranked(period, period_whole, checked.metric),
        "cumulative": cumulative,
    }


def _answer(request: Request, scope: Scope, field: str, query: BreakdownQuery) -> Response:
    checked = _checked(query, field)
    chosen = negotiate(request, query.format)
    payload = usage_breakdown(_ctx(request), scope, checked)
    part = payload[checked.table]
    rows = [*part["values"], part["unknown"], part["other"]]
    name = file_name(
        "usage",
        scope.label,
        checked.field,
        checked.metric,
        checked.table,
        payload["start"],
        payload["end"],
    )
    return respond(payload, rows, chosen, name)


@router.get(
    "/sources/{site_id}/breakdown/{field}",
    summary="Use of a repository's items by one field (type, access, subject, country…): "
    "top N and other",
    description=BREAKDOWN_NOTE,
)
def source_usage_breakdown(
    request: Request, site_id: str, field: FieldName, query: Breakdown
) -> Response:
    return _answer(request, source_scope(_ctx(request), site_id), field, query)


@router.get(
    "/nodes/{site_id}/breakdown/{field}",
    summary="Use of a national node's country's items (the portal: all use) by one field: "
    "top N and other",
    description=BREAKDOWN_NOTE,
)
def node_usage_breakdown(
    request: Request, site_id: str, field: FieldName, query: Breakdown
) -> Response:
    return _answer(request, node_scope(_ctx(request), site_id, "all"), field, query)


@router.get(
    "/global/breakdown/{field}",
    summary="The network's use by one field: top N and other",
    description=BREAKDOWN_NOTE,
)
def global_usage_breakdown(request: Request, field: FieldName, query: Breakdown) -> Response:
    return _answer(request, global_scope("all"), field, query)
