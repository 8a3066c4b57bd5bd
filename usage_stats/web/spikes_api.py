"""`/api/v1/sources/{site_id}/spikes`: the days on which a repository's usage, or one of its
items', was flagged as a spike (`usage_spikes`, COUNTER R5.1's unusual usage), for its
operator to review. The flags are read from the stats store as the pipeline stored them;
nothing was dropped from the figures."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from usage_stats.web.api import End, Start, _ctx, _source_info
from usage_stats.web.breakdowns import source_scope
from usage_stats.web.common import date_range

router = APIRouter(prefix="/api/v1", tags=["usage"])
SPIKES_NOTE = (
    "Days flagged for review: the repository's (`scope` source) or one of its items' "
    "(`scope` item) COUNTER investigations far above their baseline (the median of the "
    "stored days before), most of the excess from few network blocks or countries "
    "(`reason`: blocks, countries or both). `top_blocks_share`: the top blocks' usage over "
    "the excess; `top_countries`, `top_countries_share`: the countries that gave most of "
    "the excess and their share of it. Flagged, not dropped: the figures still count them."
)


def spike_payload(request: Request, site_id: str, start: str | None, end: str | None) -> dict:
    """The flags of one source's usage and its items' over [start, end] (default: a year)."""
    scope = source_scope(_ctx(request), site_id)
    first, last = date_range(start, end)
    owner = scope.source.site_id if scope.source else int(scope.key)
    frame = _ctx(request).store.spikes(first, last, owner_site_ids=(owner,))
    rows = [
        {
            **row,
            "date": row["date"].isoformat(),
            "baseline": round(row["baseline"], 2),
            "factor": None if row["factor"] is None else round(row["factor"], 2),
        }
        for row in frame.drop("owner_site_id").to_dicts()
    ]
    return {
        "source": _source_info(scope.source) if scope.source else None,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "days": sorted({r["date"] for r in rows}),
        "spikes": rows,
    }


@router.get(
    "/sources/{site_id}/spikes",
    summary="Usage spikes flagged on a repository and its items, per day",
    description=SPIKES_NOTE,
)
def source_spikes(
    request: Request, site_id: str, start: Start = None, end: End = None
) -> JSONResponse:
    return JSONResponse(spike_payload(request, site_id, start, end))
