"""LA Referencia parity: the original service's queries, and what they must answer.

Three independent sources of the same figures:

- `OriginalService` sends the aggregation bodies of LA Referencia's usage statistics service
  (`lareferencia-usage-stats-service`, `main.py`: `parametrize_query` and
  `parametrize_bycountry_query`), written here from reading that code, to the indices it picks
  (`lareferenciastatsdb.UsageStatsDatabaseHelper.get_indices_from_*`), on our compatibility
  set in the real OpenSearch;
- `Truth` computes what those queries must sum from the generator's manifest (the planted
  usage per day, site, item and visitor country) and the source list, with plain Python and
  none of the pipeline's code;
- our `/report/*` endpoints, compared through `time_figures` / `country_figures`, which reduce
  either response to its figures.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch

METRICS = ("views", "downloads", "outlinks", "conversions")
LEVELS = ("R", "N", "L")

# --- the original service's request bodies ---------------------------------------------------


def _sums(prefix: str = "") -> dict[str, Any]:
    return {m: {"sum": {"field": f"{prefix}{m}"}} for m in METRICS}


def original_time_body(
    identifier: str | None, start: str, end: str, country: str | None = None
) -> dict[str, Any]:
    """The body `parametrize_query` builds: root sums, sums per level (terms on `level`, keys
    descending, 5 buckets), and a `date_histogram` on `date` with `calendar_interval` "1m" —
    one *minute* in OpenSearch, so in effect one bucket per document date — holding the same
    per-level sums; the range in `strict_date_optional_time`; `match_phrase` on `identifier`
    for an item or a repository (`<oai prefix>*`), `match` on the root `country` for a node."""
    by_level = {"terms": {"field": "level", "order": {"_key": "desc"}, "size": 5}, "aggs": _sums()}
    must: list[dict[str, Any]] = []
    if identifier is not None:
        must.append({"match_phrase": {"identifier": identifier}})
    if country is not None:
        must.append({"match": {"country": country}})
    return {
        "aggs": {
            **_sums(),
            "level": by_level,
            "time": {
                "date_histogram": {"field": "date", "calendar_interval": "1m", "min_doc_count": 1},
                "aggs": {"level": by_level},
            },
        },
        "size": 0,
        "query": {
            "bool": {
                "must": must,
                "filter": [
                    {
                        "range": {
                            "date": {
                                "gte": start,
                                "lte": end,
                                "format": "strict_date_optional_time",
                            }
                        }
                    }
                ],
            }
        },
        "track_total_hits": "false",
    }


def original_country_body(
    identifier: str | None, start: str, end: str, limit: int, country: str | None = None
) -> dict[str, Any]:
    """The body `parametrize_bycountry_query` builds: root sums, and inside a `nested`
    aggregation on `stats_by_country` one `terms` on the visitor country per metric, each of
    `limit` buckets in the default order (nested document count, then key) with the metric's
    sum as `count`. The service never passes `country` here; the parameter exists to ask what
    the national widget's by-country call would answer with the filter its time call has."""
    body = original_time_body(identifier, start, end, country)
    per_metric = {
        m: {
            "terms": {"field": "stats_by_country.country", "size": limit},
            "aggs": {"count": {"sum": {"field": f"stats_by_country.{m}"}}},
        }
        for m in METRICS
    }
    body["aggs"] = {
        **_sums(),
        "country": {"nested": {"path": "stats_by_country"}, "aggs": per_metric},
    }
    return body


# --- the original service's index selection -------------------------------------------------

_OAI_PREFIX = re.compile(r"^(oai:)(?:https?://)?([^/:]+)")


def oai_host_prefix(text: str | None) -> str | None:
    """`oai:<host>` of an identifier or a declared prefix, as the original extracts it (it is
    case-sensitive there: `OAI:…` finds no repository)."""
    if not text:
        return None
    found = _OAI_PREFIX.match(text)
    return found.group(1) + found.group(2) if found else None


@dataclass(frozen=True)
class Site:
    site_id: int
    source_key: str
    type: str
    country: str | None
    identifier_prefix: str | None
    national_site_id: int | None
    regional_site_id: int | None


def sites_of(manifest: dict) -> list[Site]:
    return [
        Site(
            s["site_id"],
            s["source_key"],
            s["type"],
            s["country"],
            s["identifier_prefix"],
            s["national_site_id"],
            s["regional_site_id"],
        )
        for s in manifest["sources"]
    ]


@dataclass
class IndexSelection:
    """The sites whose indices the original service reads for each widget.

    The original hard-codes the regional portal as Matomo site 1 (`DEFAULT_REGIONAL_SITE_ID`),
    which it is in LA Referencia's deployment; here it is the registered portal's site id (the
    generator numbers the portal last).
    """

    sites: list[Site]

    @property
    def portal(self) -> int:
        return next(s.site_id for s in self.sites if s.type == "L")

    def source(self, key: str) -> Site:
        """By source id, case-insensitively, as the original's helper looks them up."""
        return next(s for s in self.sites if s.source_key.lower() == key.lower())

    def repository_of(self, identifier: str) -> Site:
        prefix = oai_host_prefix(identifier)
        return next(
            s
            for s in self.sites
            if s.type == "R" and oai_host_prefix(s.identifier_prefix) == prefix
        )

    def for_repository(self, repository: Site) -> list[int]:
        """`get_indices_from_identifier`: the repository's, its national node's and its
        portal's sites (the portal defaulting to the regional site)."""
        regional = repository.regional_site_id or self.portal
        return [repository.site_id, repository.national_site_id, regional]

    def for_national(self, node: Site) -> list[int]:
        """`get_indices_from_national_source`: the node, its country's repositories, the
        portal."""
        repositories = [
            s.site_id
            for s in self.sites
            if s.type == "R" and (s.country or "").lower() == (node.country or "").lower()
        ]
        return sorted({node.site_id, *repositories, self.portal})


class OriginalService:
    """The original service's four widget calls, answered from our compatibility indices."""

    def __init__(self, client: OpenSearch, index_prefix: str, selection: IndexSelection) -> None:
        self.client = client
        self.index_prefix = index_prefix
        self.selection = selection

    def _search(self, sites: Iterable[int] | None, body: dict[str, Any]) -> dict[str, Any]:
        if sites is None:  # get_indices_from_regional_source
            indices = f"{self.index_prefix}-*"
        else:
            indices = ",".join(f"{self.index_prefix}-{site}" for site in sites)
        result = self.client.search(
            body=body, index=indices, allow_no_indices=True, ignore_unavailable=True
        )
        return result["aggregations"]

    def item(self, identifier: str, start: str, end: str, limit: int | None = None) -> dict:
        """`/report/itemWidget` (limit None) or `/report/itemWidgetByCountry`."""
        sites = self.selection.for_repository(self.selection.repository_of(identifier))
        if limit is None:
            return self._search(sites, original_time_body(identifier, start, end))
        return self._search(sites, original_country_body(identifier, start, end, limit))

    def source(
        self,
        source_id: str,
        start: str,
        end: str,
        limit: int | None = None,
        *,
        country_filter_by_country: bool = False,
    ) -> dict:
        """`/report/repositoryWidget` (limit None) or `/report/repositoryWidgetByCountry`,
        for a repository, a national node or the regional portal."""
        site = self.selection.source(source_id)
        identifier: str | None = None
        country: str | None = None
        if site.type == "R":
            identifier = f"{oai_host_prefix(site.identifier_prefix)}*"
            sites: list[int] | None = self.selection.for_repository(site)
        elif site.type == "N":
            sites = self.selection.for_national(site)
            country = site.country
        else:
            sites = None
        if limit is None:
            return self._search(sites, original_time_body(identifier, start, end, country))
        by_country = country if country_filter_by_country else None
        return self._search(sites, original_country_body(identifier, start, end, limit, by_country))


# --- figures of a response ----------------------------------------------------------------------


def _values(bucket: dict) -> dict[str, int]:
    return {m: int(bucket[m]["value"]) for m in METRICS}


def time_figures(aggs: dict, with_counts: bool = False) -> dict:
    """Totals, per-level sums and per-bucket per-level sums of a time response (the original's
    or `/report`'s), keyed by bucket start in epoch milliseconds; with the document counts
    when asked (they are the original's, and say how many documents each figure sums)."""

    def levels(agg: dict) -> dict:
        out = {}
        for b in agg["buckets"]:
            out[b["key"]] = _values(b) | ({"doc_count": b["doc_count"]} if with_counts else {})
        return out

    figures: dict[str, Any] = {
        "totals": _values(aggs),
        "levels": levels(aggs["level"]),
        "level_order": [b["key"] for b in aggs["level"]["buckets"]],
        "time": {},
    }
    for bucket in aggs["time"]["buckets"]:
        entry: dict[str, Any] = {"levels": levels(bucket["level"])}
        if with_counts:
            entry["doc_count"] = bucket["doc_count"]
        figures["time"][int(bucket["key"])] = entry
    return figures


def country_figures(aggs: dict, with_counts: bool = False) -> dict:
    """Totals and, per metric, the country list in order with each country's sum (and the
    nested document counts when asked)."""
    figures: dict[str, Any] = {"totals": _values(aggs), "lists": {}}
    for m in METRICS:
        rows = []
        for b in aggs["country"][m]["buckets"]:
            row: tuple = (b["key"], int(b["count"]["value"]))
            if with_counts:
                row += (b["doc_count"],)
            rows.append(row)
        figures["lists"][m] = rows
    if with_counts:
        figures["nested_doc_count"] = aggs["country"]["doc_count"]
        figures["sum_other_doc_count"] = {
            m: aggs["country"][m]["sum_other_doc_count"] for m in METRICS
        }
    return figures


# --- the planted truth --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One manifest row: a day's usage of an item on a site by visitors of one country."""

    date: dt.date
    site_id: int
    item: str
    country: str
    values: tuple[int, int, int, int]


class Truth:
    """What the original's queries must answer on a set of documents written the way its
    processor writes them (one per site, item and day or month), computed from the manifest."""

    def __init__(self, manifest: dict, granularity: str) -> None:
        self.selection = IndexSelection(sites_of(manifest))
        self.granularity = granularity
        self.level = {s.site_id: s.type for s in self.selection.sites}
        self.rows = [
            Row(
                dt.date.fromisoformat(r["date"]),
                r["site_id"],
                r["item_id"],
                r["country"],
                tuple(r[m] for m in METRICS),
            )
            for r in manifest["items"]
        ]

    def period(self, day: dt.date) -> dt.date:
        return day if self.granularity == "day" else day.replace(day=1)

    def owner(self, item: str) -> Site | None:
        """The repository whose declared OAI prefix starts the item's identifier."""
        owners = [
            s
            for s in self.selection.sites
            if s.type == "R" and s.identifier_prefix and item.startswith(s.identifier_prefix)
        ]
        return max(owners, key=lambda s: len(s.identifier_prefix or ""), default=None)

    def item_country(self, row: Row) -> str:
        """The owner's country; an item nobody owns takes its repository's or node's."""
        owner = self.owner(row.item)
        if owner is not None:
            return owner.country or "XX"
        site = next(s for s in self.selection.sites if s.site_id == row.site_id)
        return (site.country if site.type in ("R", "N") else None) or "XX"

    def select(self, keep: Callable[[Row], bool], start: dt.date, end: dt.date) -> list[Row]:
        """Rows whose document falls in [start, end] (a monthly document is dated the 1st)."""
        return [r for r in self.rows if start <= self.period(r.date) <= end and keep(r)]

    # the widgets' row sets -------------------------------------------------------------------

    def item_rows(self, identifier: str, start: dt.date, end: dt.date) -> list[Row]:
        owner = self.owner(identifier)
        assert owner is not None
        sites = set(self.selection.for_repository(owner))
        return self.select(lambda r: r.item == identifier and r.site_id in sites, start, end)

    def source_rows(
        self, source_id: str, start: dt.date, end: dt.date, *, by_country: bool = False
    ) -> list[Row]:
        """A repository: its items on its own, its node's and the portal's sites. A node: its
        own, its country's repositories' and the portal's sites, items of its country only —
        except by country, where the original sends no country filter. The network: all."""
        site = self.selection.source(source_id)
        if site.type == "R":
            sites = set(self.selection.for_repository(site))
            return self.select(
                lambda r: r.site_id in sites and self.owner(r.item) == site, start, end
            )
        if site.type == "N":
            sites = set(self.selection.for_national(site))
            if by_country:
                return self.select(lambda r: r.site_id in sites, start, end)
            return self.select(
                lambda r: r.site_id in sites and self.item_country(r) == site.country, start, end
            )
        return self.select(lambda r: True, start, end)

    # the figures ------------------------------------------------------------------------------

    def time(self, rows: list[Row]) -> dict:
        """`time_figures` of the original's answer over `rows`, document counts included."""
        totals = dict.fromkeys(METRICS, 0)
        levels: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(METRICS, 0))
        level_docs: dict[str, set] = defaultdict(set)
        buckets: dict[dt.date, dict[str, dict[str, int]]] = defaultdict(
            lambda: defaultdict(lambda: dict.fromkeys(METRICS, 0))
        )
        bucket_docs: dict[dt.date, set] = defaultdict(set)
        bucket_level_docs: dict[tuple, set] = defaultdict(set)
        for r in rows:
            period = self.period(r.date)
            level = self.level[r.site_id]
            doc = (r.site_id, r.item, period)
            level_docs[level].add(doc)
            bucket_docs[period].add(doc)
            bucket_level_docs[(period, level)].add(doc)
            for m, v in zip(METRICS, r.values, strict=True):
                totals[m] += v
                levels[level][m] += v
                buckets[period][level][m] += v
        order = sorted(levels, reverse=True)
        figures: dict[str, Any] = {
            "totals": totals,
            "levels": {k: levels[k] | {"doc_count": len(level_docs[k])} for k in order},
            "level_order": order,
            "time": {},
        }
        for period in sorted(buckets):
            key = int(dt.datetime.combine(period, dt.time(), dt.UTC).timestamp() * 1000)
            figures["time"][key] = {
                "levels": {
                    k: buckets[period][k] | {"doc_count": len(bucket_level_docs[(period, k)])}
                    for k in sorted(buckets[period], reverse=True)
                },
                "doc_count": len(bucket_docs[period]),
            }
        return figures

    def by_country(self, rows: list[Row], limit: int) -> dict:
        """`country_figures` of the original's answer over `rows`: every metric lists the same
        countries — the `limit` with most nested documents (site × item × period entries),
        ties by code — with that metric's sum, zeros kept."""
        totals = dict.fromkeys(METRICS, 0)
        sums: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(METRICS, 0))
        entries: dict[str, set] = defaultdict(set)
        for r in rows:
            entries[r.country].add((r.site_id, r.item, self.period(r.date)))
            for m, v in zip(METRICS, r.values, strict=True):
                totals[m] += v
                sums[r.country][m] += v
        ranked = sorted(entries, key=lambda c: (-len(entries[c]), c))
        shown = ranked[:limit]
        nested = sum(len(e) for e in entries.values())
        return {
            "totals": totals,
            "lists": {m: [(c, sums[c][m], len(entries[c])) for c in shown] for m in METRICS},
            "nested_doc_count": nested,
            "sum_other_doc_count": dict.fromkeys(
                METRICS, nested - sum(len(entries[c]) for c in shown)
            ),
        }


def without_counts(figures: dict) -> dict:
    """The figures alone: document counts are the original's bookkeeping, not usage."""
    if "lists" in figures:
        return {
            "totals": figures["totals"],
            "lists": {m: [row[:2] for row in rows] for m, rows in figures["lists"].items()},
        }
    strip = lambda levels: {k: {m: v[m] for m in METRICS} for k, v in levels.items()}  # noqa: E731
    return {
        "totals": figures["totals"],
        "levels": strip(figures["levels"]),
        "level_order": figures["level_order"],
        "time": {k: {"levels": strip(v["levels"])} for k, v in figures["time"].items()},
    }
