"""Which usage a view of the network counts: an item, a repository, a national node, the
regional network or one Matomo site, as sets of stats-store rows.

The meanings of LA Referencia's widget service (`lareferencia-usage-stats-service`), which
sums documents of per-site indices `usage-stats-<idsite>` (see
`usage_stats.storage.lareferencia_index`: a document is one item's use on one site, `level`
the site's type, root `country` the item's country, that is its repository's):

- **repository**: the use of its items (by OAI, handle or DOI prefix) wherever it happened:
  on the repository (level R), on national nodes (N) and on the regional portal (L). The
  original searched its repository's, national node's and portal's indices for its OAI prefix.
- **national node** of country C: the use of the items of C's repositories on C's
  repositories (R), on the node (N) and on the regional portal (L); and the use of items no
  registered repository claims on C's repositories and node (their country is the site's).
  The original summed the indices of the node, of C's repositories and of the portal, filtered
  on `country = C`.
- **regional network**: every use on every site, all levels (the original: every index).
- **site**: what was used on one Matomo site (this project's own, `/api/v1/sites/…`).
- **item**: one item on every site.

A `Reach` gives the figures as a few signed reads of the rollup scopes (cheap: a national
node's unclaimed items are its sites' rollup minus their owned part) and the same usage as item
(or source) scope rows matching any of a few filters, for top lists and per-country counts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import pycountry

from usage_stats.admin.sources import Source
from usage_stats.pipeline.metrics import METRICS
from usage_stats.storage.store import RowFilter, StatsStore


@dataclass(frozen=True)
class Reach:
    kind: str  # item, repository, national, network, site
    label: str  # what the figures count, in a sentence (shown by the dashboard)
    figures: tuple[tuple[int, str, RowFilter], ...]  # (+1 / -1, scope, rows) reads of rollups
    items: tuple[RowFilter, ...]  # the same usage as rows of the item (or source) scope
    sites: tuple[int, ...] | None = None  # the sites whose processing the figures wait for

    def sums(
        self, store: StatsStore, start: dt.date, end: dt.date, by: tuple[str, ...]
    ) -> pl.DataFrame:
        """The figures grouped by `by` (signed parts added up)."""
        parts = []
        for sign, scope, where in self.figures:
            part = store.sums(
                scope,
                start,
                end,
                keys=where.keys,
                site_ids=where.site_ids,
                owner_site_ids=where.owner_site_ids,  # type: ignore[arg-type]
                by=by,
            )
            parts.append(
                part if sign == 1 else part.with_columns(pl.col(m) * sign for m in METRICS)
            )
        if len(parts) == 1:
            return parts[0]
        frame = pl.concat(parts)
        if not by:
            return frame.select(pl.col(m).sum() for m in METRICS)
        return (
            frame.group_by(list(by))
            .agg(pl.col(m).sum() for m in METRICS)
            .filter(pl.any_horizontal(pl.col(m) != 0 for m in METRICS))
            .sort(list(by), nulls_last=True)
        )

    def cumulative(self, store: StatsStore, start: dt.date, end: dt.date) -> pl.DataFrame:
        """The cumulative figures (all use up to each day) per stored snapshot day of
        [start, end]: the same signed parts as `sums`, read from the snapshots. A day where
        the reach has no row is absent (its cumulative is 0 if that day is stored)."""
        parts = [
            store.snapshot_sums_where(scope, start, end, (where,)).with_columns(
                pl.col(m) * sign for m in METRICS
            )
            for sign, scope, where in self.figures
        ]
        return pl.concat(parts).group_by("date").agg(pl.col(m).sum() for m in METRICS).sort("date")


def country_name(code: str | None) -> str:
    if not code:
        return "an unknown country"
    country = pycountry.countries.get(alpha_2=code.upper())
    return getattr(country, "common_name", None) or (country.name if country else code)


def item(key: str, sites: tuple[int, ...] | None = None) -> Reach:
    where = RowFilter(keys=(key,))
    return Reach("item", "Use of this item on every site.", ((1, "item", where),), (where,), sites)


def repository(source: Source) -> Reach:
    where = RowFilter(owner_site_ids=(source.site_id,))
    return Reach(
        "repository",
        f"Use of the items of {source.name}, wherever it happened: on the repository, on "
        "national nodes and on the regional portal.",
        ((1, "source", RowFilter(keys=(str(source.site_id),))),),
        (where,),
        (source.site_id,),
    )


def national(node: Source, everyone: list[Source]) -> Reach:
    """`everyone`: every registered source, inactive ones too (their history counts)."""
    country = (node.country or "").upper()
    repositories = tuple(
        s.site_id
        for s in everyone
        if s.type == "R" and country and (s.country or "").upper() == country
    )
    portals = tuple(s.site_id for s in everyone if s.type == "L")
    local = tuple(sorted({*repositories, node.site_id}))
    owned = RowFilter(site_ids=tuple(sorted({*local, *portals})), owner_site_ids=repositories)
    on_local = RowFilter(site_ids=local)
    figures = (
        (1, "source", owned),
        # items nobody claims, used on the country's own sites: all use there minus the owned
        (1, "site", RowFilter(keys=tuple(str(s) for s in local))),
        (-1, "source", on_local),
    )
    items = (owned, RowFilter(site_ids=local, owner_site_ids=(None,)))
    name = country_name(node.country)
    count = len(repositories)
    return Reach(
        "national",
        f"Use of the items of {name}'s {count} "
        f"repositor{'y' if count == 1 else 'ies'}, wherever it happened in the network: on "
        f"the repositories, on {node.name} and on the regional portal (and of items no "
        f"registered repository claims, used on {name}'s own sites).",
        figures,
        items,
        tuple(sorted({*local, *portals})),
    )


def network() -> Reach:
    everything = RowFilter()
    return Reach(
        "network",
        "The whole network: every use on every site (repositories, national nodes and the "
        "regional portal).",
        ((1, "global", everything),),
        (everything,),
    )


def site(source: Source) -> Reach:
    where = RowFilter(site_ids=(source.site_id,))
    return Reach(
        "site",
        f"What was used on {source.name}'s own site (Matomo site {source.site_id}) only.",
        ((1, "site", RowFilter(keys=(str(source.site_id),))),),
        (where,),
        (source.site_id,),
    )


def of_source(source: Source, everyone: list[Source]) -> Reach:
    """A registered source's own reading: a repository's items, a node's country network, the
    portal's whole network."""
    if source.type == "R":
        return repository(source)
    if source.type == "N":
        return national(source, everyone)
    return network()
