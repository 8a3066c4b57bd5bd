"""`/api/v1/records`: how many harvested records a repository, a national node or the whole
network gained, lost and holds, and what they are (type, access, language, subject...).

Read from the record statistics the pipeline stores (`usage_stats.pipeline.records`): the
figures of a period are its deltas added up; cumulative figures are the stored snapshot of the
last processed day (never deltas added up: the first snapshot holds every record harvested
before the first processed day). Breakdowns rank the values of one subcount field and fold
the rest into an "other" remainder, so the rows always add up to what the field counts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated

import polars as pl
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from usage_stats.pipeline.records import BASES, LIST_FIELDS, SUBCOUNT_FIELDS
from usage_stats.web.api import End, Format, Granularity, Start, _ctx, _source_info
from usage_stats.web.breakdowns import (
    Limit,
    Scope,
    global_scope,
    last_on_or_before,
    node_scope,
    share,
    source_scope,
)
from usage_stats.web.common import (
    GRANULARITIES,
    WebContext,
    cumulative_series,
    date_range,
    parse_choice,
    parse_int,
    series,
)
from usage_stats.web.exports import file_name, negotiate, respond

router = APIRouter(prefix="/api/v1/records", tags=["records"])
LEVEL_CHOICES = ("R", "N", "L", "all")
RANK_BY = ("total", "added", "removed", "net", "files", "data_volume")
# Period counts as the API names them: the stores' `total` of deltas is the net change.
PERIOD = ("added", "removed", "net")
# What the records hold (files, bytes, and how many records do not say), as of a day; a
# period's change of each is `net_<name>`.
HOLDINGS = ("files", "data_volume", "files_unknown", "volume_unknown")
PERIOD_HOLDINGS = tuple(f"net_{c}" for c in HOLDINGS)
HELD = ("added", "removed", "total", *HOLDINGS)

RECORDS_NOTE = (
    "`period`: records added and removed within [start, end] and the net change; "
    "`cumulative`: the records held (`total`), and ever added and removed, as of `as_of`, the "
    "last processed day on or before `end`. Series buckets carry both: the bucket's period "
    "counts and the cumulative total at its own `as_of` (null: no day of the bucket is "
    "processed). `basis=datestamp` dates a record by the OAI datestamp of its appearance and "
    "deletion; `basis=publication` by its publication date (live records only, so nothing is "
    "removed). Files and data volume (bytes): `cumulative` and each bucket hold `files`, "
    "`data_volume` and how many of the records held do not state their file count "
    "(`files_unknown`) or their size (`volume_unknown`): a volume covers only the records "
    "that state it. `period` and the buckets' `net_files`, `net_data_volume`, "
    "`net_files_unknown`, `net_volume_unknown` are the change within the period (the "
    "records added bring theirs, the records removed take theirs away)."
)
BREAKDOWN_NOTE = (
    "The values of one subcount field ranked by `rank_by` (the cumulative `total` by "
    "default), the first `limit` listed and the rest folded into `other`, so that `values` "
    "and `other` add up to the field's sums. `share`: the row's `rank_by` figure over the "
    "scope's (the `whole`); a missing value is listed as the empty string. Single-valued "
    "fields (resource_type, access_status, language, publisher) add up to the whole; a record "
    "counts once under each of its subjects, funders, affiliations and file formats, so "
    "those shares can add up to more than 1 (and a record's whole volume counts under each "
    "of its file formats). Each row also holds the value's `files`, `data_volume`, "
    "`files_unknown`, `volume_unknown` as of `as_of` and their `net_` change in the period; "
    "`rank_by=files` or `data_volume` ranks by the files or bytes held."
)

Basis = Annotated[
    str | None,
    Query(
        description="datestamp (default: OAI datestamps of appearance and deletion) or "
        "publication (publication dates)"
    ),
]
Level = Annotated[
    str | None,
    Query(
        description="R, N, L or all: the records harvested from repositories, national nodes "
        "or the regional portal (a node re-exposing its country's records would count them "
        "twice). Default: R for nodes and global, all for a source."
    ),
]
FieldName = Annotated[str, Path(description=f"the subcount field: {', '.join(SUBCOUNT_FIELDS)}")]
RankBy = Annotated[
    str | None,
    Query(
        description="total (cumulative, default), added, removed or net (period), files or "
        "data_volume (held as of as_of)"
    ),
]


GLOBAL = global_scope("R")


@dataclass(frozen=True)
class RecordsQuery:
    """The query parameters every record statistic takes, as sent (checked in `_checked`)."""

    start: str | None
    end: str | None
    basis: str | None
    level: str | None
    format: str | None


def records_query(
    start: Start = None,
    end: End = None,
    basis: Basis = None,
    level: Level = None,
    format: Format = None,
) -> RecordsQuery:
    return RecordsQuery(start, end, basis, level, format)


Records = Annotated[RecordsQuery, Depends(records_query)]


@dataclass(frozen=True)
class Checked:
    first: dt.date
    last: dt.date
    basis: str
    level: str | None  # None: every level added up


def _checked(query: RecordsQuery, scope: Scope) -> Checked:
    first, last = date_range(query.start, query.end)
    basis = parse_choice(query.basis, "basis", BASES, "datestamp")
    level = parse_choice(query.level, "level", LEVEL_CHOICES, scope.default_level)
    return Checked(first, last, basis, None if level == "all" else level)


def _as_of(ctx: WebContext, day: dt.date) -> dt.date | None:
    """The last day on or before `day` with a stored record snapshot."""
    return last_on_or_before(ctx.store.record_days(), day)


def _head(scope: Scope, checked: Checked, as_of: dt.date | None) -> dict:
    return {
        "scope": scope.scope,
        "key": scope.key,
        "source": _source_info(scope.source) if scope.source else None,
        "start": checked.first.isoformat(),
        "end": checked.last.isoformat(),
        "basis": checked.basis,
        "level": checked.level or "all",
        "as_of": as_of.isoformat() if as_of else None,
    }


def _period(frame: pl.DataFrame) -> pl.DataFrame:
    """Summed deltas as the API names them: `total` is the net change, so is each holding."""
    names = {"total": "net"} | {c: f"net_{c}" for c in HOLDINGS if c in frame.columns}
    return frame.rename(names)


def record_statistics(ctx: WebContext, scope: Scope, checked: Checked, granularity: str) -> dict:
    """Period and cumulative figures of one scope, and both per calendar bucket."""
    store, where = ctx.store, {"basis": checked.basis, "level": checked.level}
    first, last = checked.first, checked.last
    as_of = _as_of(ctx, last)
    period = _period(store.record_totals(scope.scope, scope.key, first, last, **where))
    held = dict.fromkeys(HELD, 0)
    if as_of is not None:
        snapshot = store.record_snapshot(scope.scope, scope.key, as_of, **where)
        held = {c: int(snapshot.get_column(c).sum()) for c in held}
    daily = _period(store.record_totals(scope.scope, scope.key, first, last, by=("date",), **where))
    cumulative = store.record_cumulative(scope.scope, scope.key, first, last, **where)
    buckets = cumulative_series(
        cumulative.select("date", "total", *HOLDINGS),
        store.record_days(),
        first,
        last,
        granularity,
        ("total", *HOLDINGS),
    )
    counts = series(daily, first, last, granularity, (*PERIOD, *PERIOD_HOLDINGS))
    return _head(scope, checked, as_of) | {
        "granularity": granularity,
        "period": {c: int(period.item(0, c)) for c in (*PERIOD, *PERIOD_HOLDINGS)},
        "cumulative": held,
        "series": [c | b for c, b in zip(counts, buckets, strict=True)],
    }


def breakdown(
    ctx: WebContext,
    scope: Scope,
    checked: Checked,
    field: str,
    limit: int,
    rank_by: str,
) -> dict:
    """The values of `field`: period counts (deltas of [start, end] by value) and cumulative
    ones (the snapshot at `as_of` by value, levels added up), the top `limit` by `rank_by`,
    the rest as one remainder row, each with its share of the scope's figure."""
    store, where = ctx.store, {"basis": checked.basis, "level": checked.level}
    first, last = checked.first, checked.last
    as_of = _as_of(ctx, last)
    held_columns = ("total", *HOLDINGS)
    columns = (*PERIOD, "total", *HOLDINGS, *PERIOD_HOLDINGS)
    period = _period(
        store.record_totals(
            scope.scope, scope.key, first, last, field=field, by=("value",), **where
        )
    ).select("value", *PERIOD, *PERIOD_HOLDINGS)
    total_of = _period(store.record_totals(scope.scope, scope.key, first, last, **where))
    whole = {c: int(total_of.item(0, c)) for c in (*PERIOD, *PERIOD_HOLDINGS)}
    whole |= dict.fromkeys(held_columns, 0)
    held = pl.DataFrame(schema={"value": pl.String} | dict.fromkeys(held_columns, pl.Int64))
    if as_of is not None:
        snapshot = store.record_snapshot(scope.scope, scope.key, as_of, field=field, **where)
        held = snapshot.group_by("value").agg(pl.col(c).sum() for c in held_columns)
        scope_held = store.record_snapshot(scope.scope, scope.key, as_of, **where)
        whole |= {c: int(scope_held.get_column(c).sum()) for c in held_columns}
    merged = (
        period.join(held, on="value", how="full", coalesce=True)
        .with_columns(pl.col(c).fill_null(0).cast(pl.Int64) for c in columns)
        .filter(pl.any_horizontal(pl.col(c) != 0 for c in columns))
        .sort([rank_by, "value"], descending=[True, False])
    )
    top, rest = merged.head(limit), merged.slice(limit)
    values = [
        {"rank": rank, "value": row["value"], "values": 1}
        | {c: int(row[c]) for c in columns}
        | {"share": share(int(row[rank_by]), whole[rank_by])}
        for rank, row in enumerate(top.iter_rows(named=True), start=1)
    ]
    other_counts = {c: int(rest.get_column(c).sum()) for c in columns}
    other = {"rank": None, "value": None, "values": rest.height} | other_counts
    other["share"] = share(other_counts[rank_by], whole[rank_by])
    return _head(scope, checked, as_of) | {
        "field": field,
        "multi_valued": field in LIST_FIELDS,
        "rank_by": rank_by,
        "limit": limit,
        "whole": whole,
        "values": values,
        "other": other,
    }


def _records_answer(
    request: Request, scope: Scope, query: RecordsQuery, granularity: str | None
) -> Response:
    checked = _checked(query, scope)
    grain = parse_choice(granularity, "granularity", GRANULARITIES, "month")
    chosen = negotiate(request, query.format)
    payload = record_statistics(_ctx(request), scope, checked, grain)
    name = file_name("records", scope.label, checked.basis, payload["start"], payload["end"], grain)
    return respond(payload, payload["series"], chosen, name)


def _breakdown_answer(
    request: Request,
    scope: Scope,
    field: str,
    query: RecordsQuery,
    limit: str | None,
    rank_by: str | None,
) -> Response:
    checked = _checked(query, scope)
    chosen_field = parse_choice(field, "field", SUBCOUNT_FIELDS, "")
    count = parse_int(limit, "limit", 20, 1, 1000)
    ranked_by = parse_choice(rank_by, "rank_by", RANK_BY, "total")
    chosen = negotiate(request, query.format)
    payload = breakdown(_ctx(request), scope, checked, chosen_field, count, ranked_by)
    name = file_name(
        "records", scope.label, chosen_field, checked.basis, payload["start"], payload["end"]
    )
    return respond(payload, [*payload["values"], payload["other"]], chosen, name)


@router.get(
    "/sources/{site_id}",
    summary="Records of one harvested source: added, removed and held, per period",
    description=RECORDS_NOTE,
)
def source_records(
    request: Request, site_id: str, query: Records, granularity: Granularity = None
) -> Response:
    return _records_answer(request, source_scope(_ctx(request), site_id), query, granularity)


@router.get(
    "/nodes/{site_id}",
    summary="Records of a national node's country (or, for the portal, of the network)",
    description=RECORDS_NOTE,
)
def node_records(
    request: Request, site_id: str, query: Records, granularity: Granularity = None
) -> Response:
    return _records_answer(request, node_scope(_ctx(request), site_id, "R"), query, granularity)


@router.get(
    "/global",
    summary="Records of the whole network: added, removed and held, per period",
    description=RECORDS_NOTE,
)
def global_records(request: Request, query: Records, granularity: Granularity = None) -> Response:
    return _records_answer(request, GLOBAL, query, granularity)


@router.get(
    "/sources/{site_id}/breakdown/{field}",
    summary="A source's records by one field (type, access, language…): top N and other",
    description=BREAKDOWN_NOTE,
)
def source_breakdown(
    request: Request,
    site_id: str,
    field: FieldName,
    query: Records,
    limit: Limit = None,
    rank_by: RankBy = None,
) -> Response:
    scope = source_scope(_ctx(request), site_id)
    return _breakdown_answer(request, scope, field, query, limit, rank_by)


@router.get(
    "/nodes/{site_id}/breakdown/{field}",
    summary="A national node's (or the network's) records by one field: top N and other",
    description=BREAKDOWN_NOTE,
)
def node_breakdown(
    request: Request,
    site_id: str,
    field: FieldName,
    query: Records,
    limit: Limit = None,
    rank_by: RankBy = None,
) -> Response:
    scope = node_scope(_ctx(request), site_id, "R")
    return _breakdown_answer(request, scope, field, query, limit, rank_by)


@router.get(
    "/global/breakdown/{field}",
    summary="The network's records by one field: top N and other",
    description=BREAKDOWN_NOTE,
)
def global_breakdown(
    request: Request,
    field: FieldName,
    query: Records,
    limit: Limit = None,
    rank_by: RankBy = None,
) -> Response:
    return _breakdown_answer(request, GLOBAL, field, query, limit, rank_by)
