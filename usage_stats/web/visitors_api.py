"""`/api/v1/…/visitors`: the distinct visitors of a repository's items, of a national
node's country or of the whole network, per day and level.

Read from the `visitors` of the stored usage-subcount deltas' total rows
(`usage_stats.pipeline.referrer_subcounts.unique_visitors`). Served per day and per level,
never added up: a visitor who comes back on two days, or uses a repository and the portal,
is one visitor of the period, so a sum of days or levels would overstate it and there is no
honest period or cumulative figure to give from daily counts.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from usage_stats.web.api import End, Format, Start, _ctx, _source_info
from usage_stats.web.breakdowns import Scope, global_scope, node_scope, source_scope
from usage_stats.web.common import date_range, parse_choice
from usage_stats.web.exports import file_name, negotiate, respond

router = APIRouter(prefix="/api/v1", tags=["usage breakdowns"])
LEVEL_CHOICES = ("R", "N", "L", "all")
VISITORS_NOTE = (
    "Distinct visitors (Matomo's visitor id) of the scope's kept use, per day and level "
    "(R: on repositories, N: national nodes, L: the regional portal). Not additive: a "
    "visitor of two days or two levels is counted on each, so the rows are never summed "
    "into a period figure. Days before unique visitors were counted have no row. CSV and "
    "XLSX hold the `days` rows."
)
Level = Annotated[
    str | None, Query(description="R, N, L or all (default): every level its own rows")
]


def visitors_payload(request: Request, scope: Scope, query: dict) -> tuple[dict, list[dict]]:
    """The answer and its rows: one per day and level with a stored count."""
    first, last = date_range(query["start"], query["end"])
    level = parse_choice(query["level"], "level", LEVEL_CHOICES, "all")
    frame = _ctx(request).store.subcount_visitors(
        scope.scope, scope.key, first, last, level=None if level == "all" else level
    )
    rows = [
        {"date": day.isoformat(), "level": lv, "visitors": n} for day, lv, n in frame.iter_rows()
    ]
    payload = {
        "scope": scope.scope,
        "key": scope.key,
        "source": _source_info(scope.source) if scope.source else None,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "level": level,
        "days": rows,
    }
    return payload, rows


def _answer(request: Request, scope: Scope, **query: str | None) -> Response:
    chosen = negotiate(request, query.pop("format"))
    payload, rows = visitors_payload(request, scope, query)
    name = file_name("visitors", scope.label, payload["start"], payload["end"])
    return respond(payload, rows, chosen, name)


@router.get(
    "/sources/{site_id}/visitors",
    summary="Distinct visitors of a repository's items per day and level",
    description=VISITORS_NOTE,
)
def source_visitors(
    request: Request,
    site_id: str,
    start: Start = None,
    end: End = None,
    level: Level = None,
    format: Format = None,
) -> Response:
    scope = source_scope(_ctx(request), site_id)
    return _answer(request, scope, start=start, end=end, level=level, format=format)


@router.get(
    "/nodes/{site_id}/visitors",
    summary="Distinct visitors of a national node's country's items (the portal: of all "
    "use) per day and level",
    description=VISITORS_NOTE,
)
def node_visitors(
    request: Request,
    site_id: str,
    start: Start = None,
    end: End = None,
    level: Level = None,
    format: Format = None,
) -> Response:
    scope = node_scope(_ctx(request), site_id, "all")
    return _answer(request, scope, start=start, end=end, level=level, format=format)


@router.get(
    "/global/visitors",
    summary="Distinct visitors of the network per day and level",
    description=VISITORS_NOTE,
)
def global_visitors(
    request: Request,
    start: Start = None,
    end: End = None,
    level: Level = None,
    format: Format = None,
) -> Response:
    return _answer(request, global_scope("all"), start=start, end=end, level=level, format=format)
