"""`/api/v1`: item, source, node (national or regional), site and global statistics.

One response shape for every scope: totals, a calendar-bucketed series, per-level and
per-country breakdowns of both the LA Referencia and the COUNTER metrics, and the day up to
which the data is complete, so a client can tell "no usage" from "not processed yet".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated

import polars as pl
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from usage_stats.admin.sources import Source
from usage_stats.pipeline.metrics import COUNTER_METRICS, LA_REFERENCIA_METRICS, METRICS
from usage_stats.storage.store import RowFilter
from usage_stats.web import reach as reaches
from usage_stats.web.common import (
    GRANULARITIES,
    ApiError,
    WebContext,
    cumulative_series,
    date_range,
    parse_choice,
    parse_identifier,
    parse_int,
    series,
)
from usage_stats.web.exports import file_name, negotiate, respond

router = APIRouter(prefix="/api/v1", tags=["statistics"])
TABLES = ("series", "country", "level")
LEVELS = ("R", "N", "L")

Start = Annotated[
    str | None, Query(description="first day: YYYY-MM-DD, YYYY-MM, YYYY or now-1y (default)")
]
End = Annotated[str | None, Query(description="last day, same forms (default: today)")]
Granularity = Annotated[str | None, Query(description="day, week, month (default), quarter, year")]
Format = Annotated[str | None, Query(description="json (default), csv or xlsx; or use Accept")]
Table = Annotated[
    str | None, Query(description="for csv/xlsx: series (default), country or level rows")
]


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx


def _site(ctx: WebContext, raw: str, types: tuple[str, ...], what: str) -> Source:
    site_id = parse_int(raw, "site_id", 0, 1, 2**31 - 1)
    source = ctx.source(site_id)
    if source is None:
        raise ApiError(404, "site_id", f"no {what} with site_id {site_id}")
    if source.type not in types:
        raise ApiError(404, "site_id", f"site_id {site_id} is of type {source.type}, not a {what}")
    return source


def _rows(frame: pl.DataFrame, column: str) -> list[dict]:
    if frame.is_empty():
        return []
    grouped = frame.group_by(column).agg(*[pl.col(m).sum() for m in METRICS]).sort(column)
    return [
        {column: r[column], **{m: int(r[m]) for m in METRICS}}
        for r in grouped.iter_rows(named=True)
    ]


_SCOPE_NAMES = {
    "item": "item",
    "repository": "source",
    "national": "national",
    "network": "global",
    "site": "site",
}


def statistics(
    ctx: WebContext,
    reach: reaches.Reach,
    key: str,
    first: dt.date,
    last: dt.date,
    granularity: str,
) -> dict:
    """The full payload of one reach: its rollup reads grouped by date (by month for
    buckets of months: a month's first day stands for its days, as buckets of a month or more
    add them up anyway, and a year is 12 groups a level and country instead of 365; a
    national node's year, three reads of 570,000 rollup rows, took 95 instead of 140 ms),
    level and country, folded here into totals, series and breakdowns."""
    if granularity in _BY_MONTH:
        frame = reach.sums(ctx.store, first, last, by=("month", "level", "country"))
        frame = frame.rename({"month": "date"})
    else:
        frame = reach.sums(ctx.store, first, last, by=("date", "level", "country"))
    daily = frame.group_by("date").agg(*[pl.col(m).sum() for m in METRICS])
    by_level_daily = frame.group_by("level", "date").agg(*[pl.col(m).sum() for m in METRICS])
    totals = {m: int(frame.get_column(m).sum()) if frame.height else 0 for m in METRICS}
    complete = ctx.complete_through_all(reach.sites)
    return {
        "scope": _SCOPE_NAMES[reach.kind],
        "key": key,
        "reach": {"kind": reach.kind, "label": reach.label},
        "start": first.isoformat(),
        "end": last.isoformat(),
        "granularity": granularity,
        "complete_through": complete.isoformat() if complete else None,
        "metrics": {
            "la_referencia": list(LA_REFERENCIA_METRICS),
            "counter": list(COUNTER_METRICS),
        },
        "totals": totals,
        "by_level": _rows(frame, "level"),
        "by_country": _rows(frame, "country"),
        "series": series(daily, first, last, granularity),
        "series_by_level": [
            {
                "level": level,
                "series": series(
                    by_level_daily.filter(pl.col("level") == level), first, last, granularity
                ),
            }
            for level in _levels(by_level_daily)
        ],
    }


# Granularities whose buckets are whole months (a range's first and last months clipped)
_BY_MONTH = ("month", "quarter", "year")


def _levels(frame: pl.DataFrame) -> list[str]:
    """Levels present, repository first, then national, then regional (a stacking order)."""
    present = set(frame.get_column("level").drop_nulls().to_list()) if frame.height else set()
    return [lvl for lvl in LEVELS if lvl in present] + sorted(present - set(LEVELS))


def _answer(
    request: Request,
    payload: dict,
    fmt: str | None,
    table: str | None,
    label: str,
) -> Response:
    chosen = negotiate(request, fmt)
    which = parse_choice(table, "table", TABLES, "series")
    rows = {"series": payload["series"], "country": payload["by_country"]}.get(
        which, payload["by_level"]
    )
    name = file_name(
        label,
        payload["start"],
        payload["end"],
        payload["granularity"] if which == "series" else which,
    )
    return respond(payload, rows, chosen, name)


@router.get("/items", summary="Statistics of one item (any spelling of its identifier)")
def item_statistics(
    request: Request,
    identifier: Annotated[str | None, Query(description="OAI id, DOI, handle…")] = None,
    start: Start = None,
    end: End = None,
    granularity: Granularity = None,
    format: Format = None,
    table: Table = None,
) -> Response:
    ctx = _ctx(request)
    key = ctx.item_key(parse_identifier(identifier))
    first, last = date_range(start, end)
    grain = parse_choice(granularity, "granularity", GRANULARITIES, "month")
    owner = ctx.owner_of(key)
    item = reaches.item(key, (owner.site_id,) if owner else None)
    payload = statistics(ctx, item, key, first, last, grain)
    if not any(payload["totals"].values()):
        ever = ctx.store.sums("item", dt.date(1970, 1, 1), dt.date(9999, 12, 31), keys=(key,))
        if not any(ever.row(0)):
            raise ApiError(404, "identifier", f"no usage is recorded for identifier {key!r}")
    payload["title"] = ctx.store.report_titles((key,)).get(key)
    payload["owner"] = _source_info(owner) if owner else None
    return _answer(request, payload, format, table, f"item-{key}")


def _source_info(source: Source) -> dict:
    return {
        "site_id": source.site_id,
        "source_key": source.source_key,
        "name": source.name,
        "type": source.type,
        "country": source.country,
    }


@router.get("/sources", summary="The registered sources (repositories, nodes, portal)")
def sources(request: Request) -> list[dict]:
    return [_source_info(s) for s in _ctx(request).sources()]


@router.get(
    "/sources/{site_id}",
    summary="A repository's items, on every level (repository, national node, portal)",
)
def source_statistics(
    request: Request,
    site_id: str,
    start: Start = None,
    end: End = None,
    granularity: Granularity = None,
    format: Format = None,
    table: Table = None,
) -> Response:
    ctx = _ctx(request)
    source = _site(ctx, site_id, ("R",), "repository")
    first, last = date_range(start, end)
    grain = parse_choice(granularity, "granularity", GRANULARITIES, "month")
    payload = statistics(ctx, reaches.repository(source), str(source.site_id), first, last, grain)
    payload["source"] = _source_info(source)
    return _answer(request, payload, format, table, f"source-{source.site_id}")


NODE_NOTE = (
    "A national node (type N): its country's network, that is everything used on the "
    "country's repositories (level R) and on the node (N), and the use of the country's "
    "repositories' items on the regional portal (L), as LA Referencia's widgets count it. The "
    "regional portal (type L): the whole network, as `/global`. For what was used on one site "
    "alone, see `/sites/{site_id}`."
)


def _node(ctx: WebContext, site_id: str) -> tuple[Source, reaches.Reach]:
    source = ctx.source(parse_int(site_id, "site_id", 0, 1, 2**31 - 1))
    if source is not None and source.type == "R":
        raise ApiError(
            404,
            "site_id",
            f"site_id {source.site_id} is a repository, not a national node or the regional "
            f"portal: see /api/v1/sources/{source.site_id} (its items) or "
            f"/api/v1/sites/{source.site_id} (its site)",
        )
    source = _site(ctx, site_id, ("N", "L"), "national node or regional portal")
    return source, reaches.of_source(source, ctx.all_sources())


@router.get(
    "/nodes/{site_id}",
    summary="A national node's country network, or the regional network",
    description=NODE_NOTE,
)
def node_statistics(
    request: Request,
    site_id: str,
    start: Start = None,
    end: End = None,
    granularity: Granularity = None,
    format: Format = None,
    table: Table = None,
) -> Response:
    ctx = _ctx(request)
    source, reach = _node(ctx, site_id)
    first, last = date_range(start, end)
    grain = parse_choice(granularity, "granularity", GRANULARITIES, "month")
    payload = statistics(ctx, reach, str(source.site_id), first, last, grain)
    payload["source"] = _source_info(source)
    return _answer(request, payload, format, table, f"node-{source.site_id}")


@router.get("/sites/{site_id}", summary="What was used on one Matomo site (any type) alone")
def site_statistics(
    request: Request,
    site_id: str,
    start: Start = None,
    end: End = None,
    granularity: Granularity = None,
    format: Format = None,
    table: Table = None,
) -> Response:
    ctx = _ctx(request)
    source = _site(ctx, site_id, ("R", "N", "L"), "site")
    first, last = date_range(start, end)
    grain = parse_choice(granularity, "granularity", GRANULARITIES, "month")
    payload = statistics(ctx, reaches.site(source), str(source.site_id), first, last, grain)
    payload["source"] = _source_info(source)
    return _answer(request, payload, format, table, f"site-{source.site_id}")


@router.get("/global", summary="Everything, on every site")
def global_statistics(
    request: Request,
    start: Start = None,
    end: End = None,
    granularity: Granularity = None,
    format: Format = None,
    table: Table = None,
) -> Response:
    ctx = _ctx(request)
    first, last = date_range(start, end)
    grain = parse_choice(granularity, "granularity", GRANULARITIES, "month")
    payload = statistics(ctx, reaches.network(), "global", first, last, grain)
    return _answer(request, payload, format, table, "global")


def _ranked(
    ctx: WebContext,
    scope: str,
    first: dt.date,
    last: dt.date,
    metric: str,
    count: int,
    where: tuple[RowFilter, ...],
) -> list[tuple[str, dict[str, int]]]:
    """The `count` keys of `scope` with most `metric` among the rows of `where`, each with all
    its metrics over the same rows, so a table can show views and downloads side by side
    whatever it is ranked by."""
    top = ctx.store.top_where(scope, first, last, metric, count, where)
    ranked = [key for key, _ in top.rows()]
    if not ranked:
        return []
    only = tuple(w.restricted(tuple(ranked)) for w in where)
    sums = ctx.store.sums_where(scope, first, last, only, by=("key",))
    metrics = {row["key"]: {m: int(row[m]) for m in METRICS} for row in sums.iter_rows(named=True)}
    return [(key, metrics.get(key, dict.fromkeys(METRICS, 0))) for key in ranked]


@dataclass(frozen=True)
class RankingQuery:
    """The query parameters every top list takes, as sent (each is checked where it is read)."""

    start: str | None
    end: str | None
    metric: str | None
    limit: str | None
    format: str | None


Metric = Annotated[str | None, Query(description="metric to rank by (default views)")]
Limit = Annotated[str | None, Query(description="how many items, 1..1000 (default 10)")]


def ranking_query(
    start: Start = None,
    end: End = None,
    metric: Metric = None,
    limit: Limit = None,
    format: Format = None,
) -> RankingQuery:
    return RankingQuery(start, end, metric, limit, format)


Ranking = Annotated[RankingQuery, Depends(ranking_query)]


def _ranking(
    request: Request, what: str, label: str, query: RankingQuery, reach: reaches.Reach
) -> Response:
    """Top items (`what` = "items") or top repositories (`what` = "sources") of a reach."""
    ctx = _ctx(request)
    first, last = date_range(query.start, query.end)
    chosen_metric = parse_choice(query.metric, "metric", METRICS, "views")
    count = parse_int(query.limit, "limit", 10, 1, 1000)
    scope = "item" if what == "items" else "source"
    ranked = _ranked(ctx, scope, first, last, chosen_metric, count, reach.items)
    titles = ctx.store.report_titles(tuple(key for key, _ in ranked)) if what == "items" else {}
    rows = []
    for rank, (key, metrics) in enumerate(ranked, start=1):
        if what == "items":
            described: dict = {"identifier": key, "title": titles.get(key)}
        else:
            source = ctx.source(int(key))
            described = {
                "site_id": int(key),
                "source_key": source.source_key if source else None,
                "name": source.name if source else None,
                "country": source.country if source else None,
            }
        rows.append({"rank": rank, **described, **metrics})
    complete = ctx.complete_through_all(reach.sites)
    payload = {
        "reach": {"kind": reach.kind, "label": reach.label},
        "start": first.isoformat(),
        "end": last.isoformat(),
        "metric": chosen_metric,
        "limit": count,
        "complete_through": complete.isoformat() if complete else None,
        what: rows,
    }
    name = file_name(label, "top", what, chosen_metric, first.isoformat(), last.isoformat())
    return respond(payload, rows, negotiate(request, query.format), name)


@router.get("/sources/{site_id}/top", summary="Top items of a repository (usage everywhere)")
def source_top(
    request: Request,
    site_id: str,
    query: Ranking,
) -> Response:
    source = _site(_ctx(request), site_id, ("R",), "repository")
    reach = reaches.repository(source)
    label = f"source-{source.site_id}"
    return _ranking(request, "items", label, query, reach)


@router.get(
    "/nodes/{site_id}/top",
    summary="Top items of a national node's country network, or of the regional network",
    description=NODE_NOTE,
)
def node_top(
    request: Request,
    site_id: str,
    query: Ranking,
) -> Response:
    source, reach = _node(_ctx(request), site_id)
    label = f"node-{source.site_id}"
    return _ranking(request, "items", label, query, reach)


@router.get(
    "/nodes/{site_id}/top-sources",
    summary="Top repositories of a national node's country network, or of the regional network",
    description=NODE_NOTE,
)
def node_top_sources(
    request: Request,
    site_id: str,
    query: Ranking,
) -> Response:
    source, reach = _node(_ctx(request), site_id)
    label = f"node-{source.site_id}"
    return _ranking(request, "sources", label, query, reach)


@router.get("/sites/{site_id}/top", summary="Top items used on one Matomo site")
def site_top(
    request: Request,
    site_id: str,
    query: Ranking,
) -> Response:
    source = _site(_ctx(request), site_id, ("R", "N", "L"), "site")
    reach = reaches.site(source)
    label = f"site-{source.site_id}"
    return _ranking(request, "items", label, query, reach)


@router.get(
    "/sites/{site_id}/top-sources",
    summary="Top repositories by the use of their items on one Matomo site",
)
def site_top_sources(
    request: Request,
    site_id: str,
    query: Ranking,
) -> Response:
    source = _site(_ctx(request), site_id, ("R", "N", "L"), "site")
    reach = reaches.site(source)
    label = f"site-{source.site_id}"
    return _ranking(request, "sources", label, query, reach)


@router.get("/global/top", summary="Top items overall")
def global_top(
    request: Request,
    query: Ranking,
) -> Response:
    reach = reaches.network()
    return _ranking(request, "items", "global", query, reach)


@router.get("/global/top-sources", summary="Top repositories overall (usage of their items)")
def global_top_sources(
    request: Request,
    query: Ranking,
) -> Response:
    reach = reaches.network()
    return _ranking(request, "sources", "global", query, reach)


CUMULATIVE_NOTE = (
    "All use up to and including each bucket's `as_of` day, the last day of the bucket with a "
    "stored snapshot (the cumulative tables the pipeline keeps): not a sum over the range. A "
    "bucket with no processed day has `as_of` and every metric null. The reach is that of the "
    "same path without `/cumulative`."
)


def cumulative(
    ctx: WebContext,
    reach: reaches.Reach,
    key: str,
    first: dt.date,
    last: dt.date,
    granularity: str,
) -> dict:
    """The cumulative series of a reach: its snapshots' figures at the end of each bucket."""
    frame = reach.cumulative(ctx.store, first, last)
    complete = ctx.complete_through_all(reach.sites)
    return {
        "scope": _SCOPE_NAMES[reach.kind],
        "key": key,
        "reach": {"kind": reach.kind, "label": reach.label},
        "start": first.isoformat(),
        "end": last.isoformat(),
        "granularity": granularity,
        "complete_through": complete.isoformat() if complete else None,
        "series": cumulative_series(frame, ctx.store.days(), first, last, granularity, METRICS),
    }


def _cumulative_answer(
    request: Request,
    reach: reaches.Reach,
    key: str,
    label: str,
    query: CumulativeQuery,
    extra: dict | None = None,
) -> Response:
    ctx = _ctx(request)
    first, last = date_range(query.start, query.end)
    grain = parse_choice(query.granularity, "granularity", GRANULARITIES, "month")
    chosen = negotiate(request, query.format)
    payload = cumulative(ctx, reach, key, first, last, grain) | (extra or {})
    name = file_name(label, "cumulative", payload["start"], payload["end"], grain)
    return respond(payload, payload["series"], chosen, name)


@dataclass(frozen=True)
class CumulativeQuery:
    """The query parameters of every cumulative series, as sent."""

    start: str | None
    end: str | None
    granularity: str | None
    format: str | None


def cumulative_query(
    start: Start = None,
    end: End = None,
    granularity: Granularity = None,
    format: Format = None,
) -> CumulativeQuery:
    return CumulativeQuery(start, end, granularity, format)


Cumulative = Annotated[CumulativeQuery, Depends(cumulative_query)]


@router.get(
    "/items/cumulative",
    summary="Cumulative use of one item per day, week, month… (from the snapshots)",
    description=CUMULATIVE_NOTE,
)
def item_cumulative(
    request: Request,
    query: Cumulative,
    identifier: Annotated[str | None, Query(description="OAI id, DOI, handle…")] = None,
) -> Response:
    ctx = _ctx(request)
    key = ctx.item_key(parse_identifier(identifier))
    owner = ctx.owner_of(key)
    reach = reaches.item(key, (owner.site_id,) if owner else None)
    return _cumulative_answer(request, reach, key, f"item-{key}", query)


@router.get(
    "/sources/{site_id}/cumulative",
    summary="Cumulative use of a repository's items (from the snapshots)",
    description=CUMULATIVE_NOTE,
)
def source_cumulative(request: Request, site_id: str, query: Cumulative) -> Response:
    source = _site(_ctx(request), site_id, ("R",), "repository")
    extra = {"source": _source_info(source)}
    label = f"source-{source.site_id}"
    reach = reaches.repository(source)
    return _cumulative_answer(request, reach, str(source.site_id), label, query, extra)


@router.get(
    "/nodes/{site_id}/cumulative",
    summary="Cumulative use of a national node's country network, or of the regional network",
    description=f"{CUMULATIVE_NOTE} {NODE_NOTE}",
)
def node_cumulative(request: Request, site_id: str, query: Cumulative) -> Response:
    source, reach = _node(_ctx(request), site_id)
    extra = {"source": _source_info(source)}
    label = f"node-{source.site_id}"
    return _cumulative_answer(request, reach, str(source.site_id), label, query, extra)


@router.get(
    "/sites/{site_id}/cumulative",
    summary="Cumulative use on one Matomo site alone (from the snapshots)",
    description=CUMULATIVE_NOTE,
)
def site_cumulative(request: Request, site_id: str, query: Cumulative) -> Response:
    source = _site(_ctx(request), site_id, ("R", "N", "L"), "site")
    extra = {"source": _source_info(source)}
    label = f"site-{source.site_id}"
    reach = reaches.site(source)
    return _cumulative_answer(request, reach, str(source.site_id), label, query, extra)


@router.get(
    "/global/cumulative",
    summary="Cumulative use of the whole network (from the snapshots)",
    description=CUMULATIVE_NOTE,
)
def global_cumulative(request: Request, query: Cumulative) -> Response:
    return _cumulative_answer(request, reaches.network(), "global", "global", query)


@router.get("/coverage", summary="The days with statistics and how far data is complete")
def coverage(request: Request) -> dict:
    """What a dashboard needs to offer "all time" and to say how fresh the figures are."""
    ctx = _ctx(request)
    first, last = ctx.coverage()
    complete = ctx.complete_through(None)
    return {
        "first_day": first.isoformat() if first else None,
        "last_day": last.isoformat() if last else None,
        "complete_through": complete.isoformat() if complete else None,
    }
