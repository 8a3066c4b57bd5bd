"""The LA Referencia compatibility index set `<prefix>-<idsite>`, as the original reads it.

LA Referencia's usage statistics service (`lareferencia-usage-stats-service`) answers its
widgets with OpenSearch aggregations over the indices its processor
(`lareferencia-usage-stats-processor`) writes. So that the original service — and anything
else that reads those indices — keeps working unchanged on our data, this set has the
processor's layout:

- **One index per Matomo site where the usage happened**, `<prefix>-<idsite>`: a repository's,
  a national node's and the regional portal's usage are in their own sites' indices, and
  `level` is that site's type (R, N, L). The service picks indices by site: for an item or a
  repository, its repository's, national node's and portal's; for a national node, the node's,
  its country's repositories' and the portal's, filtered on the root `country`; for the
  regional network, `<prefix>-*`.
- **One document per site, item and period**: a day (`date` that day) or, in `month`
  granularity, a calendar month (`date` its first day, `day` 1) — the processor's two modes
  (run for a date, or for a month). The root metrics `views`, `downloads`, `outlinks`,
  `conversions` and the nested `stats_by_country` (visitor country, same metrics) are what
  the service sums.
- Fields and types as the processor maps them: `identifier` text, `idsite`/`year`/`month`/
  `day` long, `level` and `country` keyword, `date` a date in the default format (so
  `date_histogram` keys read `2026-04-01T00:00:00.000Z`, as there), metrics long,
  `stats_by_country` nested.
- Root `country` is the item's country, which the national widget filters on: the country of
  the repository that owns the item (by OAI, handle or DOI prefix); an item nobody owns takes
  the country of the repository or national node it was used on (as the processor does), and
  `XX` on the portal.

Where we deliberately do better than the processor's index (the service's queries are
unchanged, they just find the right documents):

- The repository widget's query (`match_phrase` of `<oai prefix>*` on `identifier`, text with
  the standard analyser as the processor maps it) finds a repository's items by *owner*: each
  document also indexes its owning repository's OAI prefix (`oai:<host>`, as the service
  derives it) into `identifier` through `owner_prefix` (`copy_to`; `_source.identifier` stays
  the item's identifier). On the processor's index it missed items whose local part starts
  with a letter (`oai:host:article/5` is the single word `oai:host:article` to the standard
  analyser, `oai:host` is another) and items the repository owns by handle or DOI. The item
  widget's query (`match_phrase` of the identifier) is the processor's: case-insensitive, and
  also matching identifiers that contain the item's words in sequence (`…:10669/5/1`).
- Re-writing a period replaces it: documents of the period that the new write did not touch
  are deleted (the processor only overwrote by id, leaving identifiers that disappeared).

Only analysers of OpenSearch's minimal distribution are used (`standard`), as elsewhere in the
store.

Writing (`OpenSearchStatsStore`): the store needs the source registry (items' countries and
owners' prefixes); a month's documents are rebuilt from the month's item deltas the store
holds whenever one of its days is written, so they are a function of what is stored and any
day can be re-run; indices record their layout and granularity in `_meta`, and a store
refuses to write next to indices of another (daily and monthly documents together would be
counted twice by every widget; indices of the earlier, per-owner layout must be deleted and
their days re-run).

What the original's own queries then answer, and where that differs from `/report`, is
checked in `tests/test_lareferencia_parity.py` (e.g. its national by-country call sends no
country filter, so it also sums other countries' items used on the node and the portal).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import polars as pl

from usage_stats.admin.sources import Source
from usage_stats.pipeline.metrics import LA_REFERENCIA_METRICS
from usage_stats.storage.warehouse import Warehouse

GRANULARITIES = ("day", "month")
# Bumped when the set's mapping changes in a way that old indices cannot take: a store refuses
# to write next to indices of another layout (they are rebuilt by re-running their days).
LAYOUT = "lareferencia-1"
UNKNOWN_ITEM_COUNTRY = "XX"
_OAI_HOST = re.compile(r"^oai:(?:https?://)?([^/:]+)", re.IGNORECASE)


def oai_prefix_token(identifier_prefix: str | None) -> str | None:
    """`oai:<host>`, lower-cased: the part of a repository's OAI prefix that the original
    service puts before `*` in its repository query (`oai:host:10669/` → `oai:host`)."""
    if not identifier_prefix:
        return None
    found = _OAI_HOST.match(identifier_prefix.strip())
    return f"oai:{found.group(1)}".lower() if found else None


def index_settings(replicas: int) -> dict[str, Any]:
    """One shard, as the processor creates them; refreshed explicitly after each write."""
    return {"number_of_shards": 1, "number_of_replicas": replicas, "refresh_interval": "30s"}


def mappings(granularity: str) -> dict[str, Any]:
    """The processor's fields and types, plus our bookkeeping (`owner_idsite`, `owner_prefix`,
    `write_id`: the document's digest, so that an unchanged document is not sent again);
    `_meta` records the layout and granularity the indices were written with."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    counts = {m: {"type": "long"} for m in LA_REFERENCIA_METRICS}
    return {
        "dynamic": "strict",
        "_meta": {"layout": LAYOUT, "granularity": granularity},
        "properties": {
            "id": {"type": "keyword"},
            "identifier": {"type": "text"},
            "idsite": {"type": "long"},
            "date": {"type": "date"},
            "year": {"type": "long"},
            "month": {"type": "long"},
            "day": {"type": "long"},
            "level": {"type": "keyword"},
            "country": {"type": "keyword"},
            **counts,
            "stats_by_country": {
                "type": "nested",
                "properties": {"country": {"type": "keyword"}, **counts},
            },
            "owner_idsite": {"type": "long"},
            "owner_prefix": {"type": "keyword", "copy_to": "identifier"},
            "write_id": {"type": "keyword"},
        },
    }


def period_of(day: dt.date, granularity: str) -> tuple[dt.date, dt.date]:
    """First and last day of the period a document of `day` covers."""
    if granularity == "day":
        return day, day
    first = day.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return first, following - dt.timedelta(days=1)


@dataclass(frozen=True)
class SiteFacts:
    """What the documents need to know about the registered sources."""

    site_country: Mapping[int, str]
    site_type: Mapping[int, str]
    owner_prefix: Mapping[int, str]

    @classmethod
    def of(cls, sources: Iterable[Source]) -> SiteFacts:
        sources = list(sources)
        return cls(
            {s.site_id: s.country.upper() for s in sources if s.country},
            {s.site_id: s.type for s in sources},
            {
                s.site_id: token
                for s in sources
                if s.type == "R" and (token := oai_prefix_token(s.identifier_prefix))
            },
        )

    def frame(self) -> pl.DataFrame:
        ids = sorted(set(self.site_country) | set(self.site_type) | set(self.owner_prefix))
        return pl.DataFrame(
            {
                "site_id": ids,
                "site_country": [self.site_country.get(i) for i in ids],
                "site_type": [self.site_type.get(i) for i in ids],
                "owner_prefix": [self.owner_prefix.get(i) for i in ids],
            },
            schema={
                "site_id": pl.Int32(),
                "site_country": pl.String(),
                "site_type": pl.String(),
                "owner_prefix": pl.String(),
            },
        )


def documents(items: pl.DataFrame, facts: SiteFacts, period_start: dt.date) -> pl.DataFrame:
    """One document per site and item of the period starting `period_start`.

    `items`: item usage rows (`site_id`, `key`, `level`, `owner_site_id`, visitor `country`
    and the LA Referencia metrics) of the period, several rows per site and item allowed
    (days of a month; they are added up). Every row must share one owner and level per site
    and item (`month_items` resolves changes within a month).
    """
    metrics = list(LA_REFERENCIA_METRICS)
    per_country = items.group_by("site_id", "key", "level", "owner_site_id", "country").agg(
        *[pl.col(m).sum() for m in metrics]
    )
    facts_frame = facts.frame()
    owners = facts_frame.select(
        pl.col("site_id").alias("owner_site_id"),
        pl.col("site_country").alias("owner_country"),
        "owner_prefix",
    )
    sites = facts_frame.select("site_id", "site_country", "site_type")
    grouped = per_country.group_by("site_id", "key", "level", "owner_site_id").agg(
        *[pl.col(m).sum() for m in metrics],
        pl.struct("country", *metrics).sort_by("country").alias("stats_by_country"),
    )
    item_country = (
        pl.when(pl.col("owner_site_id").is_not_null())
        .then(pl.col("owner_country"))
        .when(pl.col("site_type").is_in(["R", "N"]))
        .then(pl.col("site_country"))
    )
    return (
        grouped.join(owners, on="owner_site_id", how="left")
        .join(sites, on="site_id", how="left")
        .select(
            pl.col("key").alias("identifier"),
            pl.col("site_id").cast(pl.Int64).alias("idsite"),
            pl.lit(period_start.isoformat()).alias("date"),
            pl.lit(period_start.year, dtype=pl.Int64).alias("year"),
            pl.lit(period_start.month, dtype=pl.Int64).alias("month"),
            pl.lit(period_start.day, dtype=pl.Int64).alias("day"),
            "level",
            item_country.fill_null(UNKNOWN_ITEM_COUNTRY).alias("country"),
            *metrics,
            "stats_by_country",
            pl.col("owner_site_id").cast(pl.Int64).alias("owner_idsite"),
            "owner_prefix",
        )
        .sort("idsite", "identifier")
    )


def document_ids(docs: pl.DataFrame) -> pl.Series:
    """`<date>|<idsite>|<identifier>`: one id per site, item and period, readable."""
    return docs.select(
        pl.concat_str(
            [pl.col("date"), pl.col("idsite").cast(pl.String), pl.col("identifier")],
            separator="|",
        )
    ).to_series()


PERIOD_ITEM_SCHEMA: dict[str, pl.DataType] = {
    "site_id": pl.Int32(),
    "key": pl.String(),
    "level": pl.String(),
    "owner_site_id": pl.Int32(),
    "country": pl.String(),
    **{m: pl.Int64() for m in LA_REFERENCIA_METRICS},
    "last_date": pl.Int64(),
}
"""Item deltas of a period summed per site, item, level, owner and visitor country, with the
last day each was seen in epoch milliseconds (as a `max` of OpenSearch's `date` reads)."""

PERIOD_ITEM_COLUMNS = (
    "date",
    "scope",
    "key",
    "site_id",
    "level",
    "owner_site_id",
    "country",
    *LA_REFERENCIA_METRICS,
)
"""The columns of a day's deltas that `day_item_rows` reads."""

_PERIOD_GROUP = ["site_id", "key", "level", "owner_site_id", "country"]
# rows gathered before they are summed: a month of network days is never held whole
_PERIOD_REDUCE_ROWS = 2_000_000


def day_item_rows(deltas: pl.DataFrame) -> pl.DataFrame:
    """A day's item deltas (in the store's schema, or its `PERIOD_ITEM_COLUMNS`) as
    `PERIOD_ITEM_SCHEMA` rows: `last_date` the day."""
    return (
        deltas.filter(pl.col("scope") == "item")
        .with_columns(pl.col("date").cast(pl.Datetime("ms")).cast(pl.Int64).alias("last_date"))
        .select(list(PERIOD_ITEM_SCHEMA))
        .cast(PERIOD_ITEM_SCHEMA)
    )


def period_item_rows(days: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Days' item deltas summed as `PERIOD_ITEM_SCHEMA`: what the OpenSearch store's
    read-back of a period answers for those days (one composite bucket a row), from frames
    instead (the warehouse's `item_daily_deltas`), summed a few days at a time."""
    total = pl.DataFrame(schema=PERIOD_ITEM_SCHEMA)
    pending: list[pl.DataFrame] = []
    for deltas in days:
        pending.append(day_item_rows(deltas))
        if sum(frame.height for frame in pending) >= _PERIOD_REDUCE_ROWS:
            total, pending = _summed_period([total, *pending]), []
    return _summed_period([total, *pending]) if pending else total


def _summed_period(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return (
        pl.concat(frames)
        .group_by(_PERIOD_GROUP)
        .agg(*[pl.col(m).sum() for m in LA_REFERENCIA_METRICS], pl.col("last_date").max())
        .select(list(PERIOD_ITEM_SCHEMA))
        .cast(PERIOD_ITEM_SCHEMA)
    )


def warehouse_period_items(
    warehouse: Warehouse,
    period: tuple[dt.date, dt.date],
    stored_days: Iterable[dt.date],
    day: dt.date,
) -> pl.DataFrame | None:
    """`period_item_rows` of the days of `period` other than `day` that the store holds
    (`stored_days`), read from the warehouse's `item_daily_deltas` (`PERIOD_ITEM_COLUMNS`
    only); None when one of them is not there, and the store reads them back itself.

    Equal to the store's read-back while the store holds what the warehouse holds for those
    days (the stats_index asset's check); a day the warehouse has re-processed since is
    counted as re-processed, and its own stats_index run rebuilds the month again."""
    first, last = period
    others = sorted(d for d in set(stored_days) if first <= d <= last and d != day)
    if not all(warehouse.exists("item_daily_deltas", d) for d in others):
        return None
    return period_item_rows(
        chain.from_iterable(
            warehouse.parts("item_daily_deltas", d, columns=PERIOD_ITEM_COLUMNS) for d in others
        )
    )


def month_items(rows: pl.DataFrame) -> pl.DataFrame:
    """A month of item usage summed per site, item, level, owner and visitor country, from
    rows that also carry `last_date` (the last day each combination was seen).

    Should an item's owner (a prefix registered mid-month) or a site's level change within the
    month, the month's document takes the latest day's: one document per site and item, as
    the processor writes.
    """
    latest = (
        rows.sort("last_date", "owner_site_id", "level", nulls_last=False)
        .group_by("site_id", "key")
        .agg(pl.col("owner_site_id").last(), pl.col("level").last())
    )
    metrics = list(LA_REFERENCIA_METRICS)
    return (
        rows.drop("owner_site_id", "level")
        .join(latest, on=["site_id", "key"], how="left")
        .group_by("site_id", "key", "level", "owner_site_id", "country")
        .agg(*[pl.col(m).sum() for m in metrics])
    )
