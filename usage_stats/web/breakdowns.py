"""What the breakdown endpoints share (`records_api` for record statistics, `subcounts_api`
for usage subcounts): the scopes a path names (a source, a national node's country or the
network), the last stored day on or before a range's end, and shares."""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass
from typing import Annotated

from fastapi import Query

from usage_stats.admin.sources import Source
from usage_stats.web.api import _node, _site
from usage_stats.web.common import ApiError, WebContext

Limit = Annotated[str | None, Query(description="how many values to list, 1..1000 (default 20)")]


@dataclass(frozen=True)
class Scope:
    """Whose figures: a scope (`source`, `national`, `global`) and key, the level read by
    default, and the registered source the path named (None: global)."""

    scope: str
    key: str
    label: str
    default_level: str
    source: Source | None = None


def source_scope(ctx: WebContext, site_id: str, default_level: str = "all") -> Scope:
    """A registered source (any type): its own records, or the use of the items it owns."""
    source = _site(ctx, site_id, ("R", "N", "L"), "source")
    return Scope("source", str(source.site_id), f"source-{source.site_id}", default_level, source)


def node_scope(ctx: WebContext, site_id: str, default_level: str) -> Scope:
    """A national node: its country's (the `national` scope, key the country upper case);
    the regional portal: the whole network's (`global`)."""
    source, _ = _node(ctx, site_id)
    if source.type == "L":
        return Scope("global", "global", f"node-{source.site_id}", default_level, source)
    country = (source.country or "").upper()
    if not country:
        raise ApiError(404, "site_id", f"national node {source.site_id} has no country")
    return Scope("national", country, f"node-{source.site_id}", default_level, source)


def global_scope(default_level: str) -> Scope:
    return Scope("global", "global", "global", default_level)


def last_on_or_before(days: list[dt.date], day: dt.date) -> dt.date | None:
    """The last of the ordered `days` on or before `day` (None: none is)."""
    at = bisect.bisect_right(days, day)
    return days[at - 1] if at else None


def share(part: int, whole: int) -> float | None:
    """`part` over `whole`, to six decimals (None: nothing to share)."""
    return round(part / whole, 6) if whole else None
