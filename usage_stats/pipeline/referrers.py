"""Where a visit came from: Matomo's referrer columns of `log_visit`, classified per visit.

The Matomo export copies the whole `log_visit` row into the lake's per-site-per-day
`visits` files (`usage_stats.ingest.matomo._visits_query`), so the referrer is already
there: `referer_type`, `referer_name`, `referer_url`. This module reads only those columns
(and the site, visit and visitor ids) of a day's visits files, and turns each visit's
referrer into one short value, as Matomo's Referrers reports group them. Matomo's
`Common::REFERRER_TYPE_*` codes:

- 1 direct entry            → `direct`
- 2 search engine           → `search:<engine>`   (`referer_name`, e.g. `search:google`)
- 3 website                 → `website:<host>`    (host of `referer_url`)
- 6 campaign                → `campaign:<name>`   (`referer_name`, lower case, as Matomo
                                                   stores campaign names by default)
- 7 social network          → `social:<network>`  (`referer_name`, e.g. `social:facebook`)

Names are lower-cased and their white space collapsed. A host is lower case, without
scheme, user info, port or trailing dot; a leading `www.` is dropped (`www.scielo.org` and
`scielo.org` are one referrer; other sub-domains are kept: `scholar.google.com` is not
`google.com`). Only the host is ever kept, never the path or the query (which can hold
search terms or tokens). A search engine, social network or campaign without a name falls
back on its URL's host; a type whose name and host are both missing or unparsable keeps the
bare kind (`website`, `search`, ...).

Missing type (null, or Matomo's 0): the referrer is unknown, `UNKNOWN` (`""`), as a missing
metadata field in the usage subcounts. A type code Matomo does not define counts as unknown
too. Such rows, and URLs whose host cannot be read, are counted (`ReferrerProblems`), never
raised on: a referrer is a description of the use, not a condition of counting it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from usage_stats.pipeline.canonical import visitor_key
from usage_stats.storage.lake import Lake, LakeReadError, raw_files_for_day, scan_parquet_file

DIRECT_ENTRY, SEARCH_ENGINE, WEBSITE, CAMPAIGN, SOCIAL_NETWORK = 1, 2, 3, 6, 7
REFERRER_KINDS = {
    DIRECT_ENTRY: "direct",
    SEARCH_ENGINE: "search",
    WEBSITE: "website",
    CAMPAIGN: "campaign",
    SOCIAL_NETWORK: "social",
}
UNKNOWN = ""
# The visits columns read: only these are decoded from the (wide) log_visit export.
VISIT_COLUMNS = ("idsite", "idvisit", "idvisitor", "referer_type", "referer_name", "referer_url")
VISIT_REFERRER_SCHEMA = pl.Schema(
    {
        "site_id": pl.Int32(),
        "visit_id": pl.Int64(),
        "visitor_id": pl.UInt64(),
        "referrer": pl.String(),
    }
)
# A referrer value is a key of stored rows (and of OpenSearch document ids): names are cut.
MAX_NAME = 100
# scheme://[userinfo@]host[:port][/?#...]; an IPv6 literal keeps its brackets.
_HOST = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?(\[[0-9A-Fa-f:.]+\]|[^:/?#\[\]@]*)"
# Letters, digits, `_`, `-` and dots not at either end nor doubled (or an IPv6 literal):
# checked as two simple patterns, which cost far less per row than one nested one.
_HOST_CHARACTERS = r"^(?:\[[0-9a-f:.]+\]|[a-z0-9_\-.]+)$"
_BAD_DOTS = r"^\.|\.\.|\.$"


@dataclass
class ReferrerProblems:
    """Rows whose referrer could not be classified as given, per kind of problem: a type
    code Matomo does not define (counted as unknown), or a URL without a readable host."""

    unknown_type: int = 0
    unreadable_url: int = 0
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"unknown_type": self.unknown_type, "unreadable_url": self.unreadable_url}


def referrer_host(url: pl.Expr) -> pl.Expr:
    """The host of a referrer URL: lower case, no user info, port or trailing dot, a leading
    `www.` dropped; null when the URL has none that is a valid host name or IP literal."""
    host = (
        url.str.strip_chars()
        .str.extract(_HOST, 1)
        .str.to_lowercase()
        .str.strip_suffix(".")
        .str.strip_prefix("www.")
    )
    valid = host.str.contains(_HOST_CHARACTERS) & ~host.str.contains(_BAD_DOTS)
    return pl.when(valid).then(host)


def _name(name: pl.Expr) -> pl.Expr:
    cleaned = (
        name.cast(pl.String)
        .str.strip_chars()
        .str.replace_all(r"\s+", " ")
        .str.to_lowercase()
        .str.slice(0, MAX_NAME)
    )
    return pl.when(cleaned != "").then(cleaned)


def referrer_value(
    kind: pl.Expr, name: pl.Expr, url: pl.Expr, host: pl.Expr | None = None
) -> pl.Expr:
    """Each row's referrer value (see the module docstring) from Matomo's three columns;
    `host`: `referrer_host(url)` when the caller has it already (it is the costly part)."""
    kind = kind.cast(pl.Int64)
    host = referrer_host(url.cast(pl.String)) if host is None else host
    named = _name(name).fill_null(host)
    value = pl.when(kind == DIRECT_ENTRY).then(pl.lit("direct"))
    for code in (SEARCH_ENGINE, CAMPAIGN, SOCIAL_NETWORK):
        label = REFERRER_KINDS[code]
        value = value.when(kind == code).then(
            pl.concat_str(pl.lit(f"{label}:"), named).fill_null(pl.lit(label))
        )
    website = pl.concat_str(pl.lit("website:"), host.fill_null(_name(name)))
    return (
        value.when(kind == WEBSITE)
        .then(website.fill_null(pl.lit("website")))
        .otherwise(pl.lit(UNKNOWN))
    )


def _problem_flags(kind: pl.Expr, url: pl.Expr, host: pl.Expr) -> list[pl.Expr]:
    """Per row: an undefined type code; a non-empty URL without a readable host."""
    kind = kind.cast(pl.Int64)
    url = url.cast(pl.String).str.strip_chars()
    undefined = kind.is_not_null() & (kind != 0) & ~kind.is_in(list(REFERRER_KINDS))
    unreadable = (
        kind.is_in([SEARCH_ENGINE, WEBSITE, CAMPAIGN, SOCIAL_NETWORK])
        & (url != "")
        & host.is_null()
    )
    return [
        undefined.fill_null(False).alias("unknown_type"),
        unreadable.fill_null(False).alias("unreadable_url"),
    ]


def classify_visits(visits: pl.DataFrame | pl.LazyFrame) -> tuple[pl.DataFrame, ReferrerProblems]:
    """`VISIT_REFERRER_SCHEMA` rows of raw visits (Matomo's column names; any of the referrer
    columns and `idvisitor` may be missing; a `visitor_id` column is taken as already keyed
    by `canonical.visitor_key`) and the classification problems. A visit listed
    twice keeps its first row, as the canonical events do."""
    frame = visits.lazy()
    schema = frame.collect_schema()
    missing_string = pl.lit(None, dtype=pl.String)
    kind = pl.col("referer_type") if "referer_type" in schema else pl.lit(None, dtype=pl.Int64)
    name = pl.col("referer_name") if "referer_name" in schema else missing_string
    url = pl.col("referer_url") if "referer_url" in schema else missing_string
    if "visitor_id" in schema:  # already keyed (`read_visit_referrers`)
        visitor = pl.col("visitor_id")
    elif "idvisitor" in schema:
        visitor = visitor_key(pl.col("idvisitor"), schema["idvisitor"])
    else:
        visitor = pl.lit(None, dtype=pl.UInt64)
    # A day's visits repeat few referrers (direct entries, a few search engines and sites):
    # each distinct (type, name, URL) is classified once, its host read once, and the visits
    # take its value by a join instead of a pattern match each.
    given = frame.select(
        pl.col("idsite").cast(pl.Int32).alias("site_id"),
        pl.col("idvisit").cast(pl.Int64).alias("visit_id"),
        visitor.cast(pl.UInt64).alias("visitor_id"),
        kind.cast(pl.Int64).alias("_kind"),
        name.cast(pl.String).alias("_name"),
        url.cast(pl.String).alias("_url"),
    ).collect()
    host = pl.col("_host")
    given = given.with_columns(_referrer_hash().alias("_hash"))
    distinct = (
        given.lazy()
        .group_by("_kind", "_name", "_url")
        .agg(pl.len().alias("_visits"), pl.col("_hash").first())
        .with_columns(referrer_host(pl.col("_url")).alias("_host"))
        .with_columns(
            referrer_value(pl.col("_kind"), pl.col("_name"), pl.col("_url"), host).alias("referrer")
        )
        .collect()
    )
    # The first row of each visit, in order. Matomo numbers visits with one counter for all
    # its sites, so a day's visit ids are normally all distinct, and one count of them
    # (0.05 s for a 10M-event day's 2.6M visits) spares the pass over (site, visit) pairs
    # that finds the duplicates (0.25 s) when there are none.
    firsts = given.lazy()
    if given.get_column("visit_id").n_unique() != given.height:
        firsts = firsts.filter(pl.struct("site_id", "visit_id").is_first_distinct())
    # Joined on one hash of the three columns where no two distinct referrers share it
    # (then equal hashes are equal referrers): 0.11 instead of 0.31 s on 2.6M visits.
    on = ["_hash"] if distinct.get_column("_hash").is_unique().all() else ["_kind", "_name", "_url"]
    classified = (
        firsts.join(
            distinct.lazy().select(*on, "referrer"),
            on=on,
            how="left",
            nulls_equal=True,
            maintain_order="left",
        )
        .select("site_id", "visit_id", "visitor_id", "referrer")
        .collect()
    )
    # problems per visit row (as given, duplicates included): each distinct referrer's
    # problems weighted by how many visits carried it
    counts = distinct.select(
        (flag.cast(pl.Int64) * pl.col("_visits")).sum().alias(flag.meta.output_name())
        for flag in _problem_flags(pl.col("_kind"), pl.col("_url"), host)
    )
    problems = ReferrerProblems(
        unknown_type=int(counts.item(0, "unknown_type") or 0),
        unreadable_url=int(counts.item(0, "unreadable_url") or 0),
    )
    return classified.cast(VISIT_REFERRER_SCHEMA), problems


def read_visit_referrers(
    lake: Lake, day: dt.date, sites: list[int] | None = None
) -> tuple[pl.DataFrame, ReferrerProblems]:
    """Every visit of `day`'s visits files (day leaves and month-level leaves, as the
    canonical events read them) with its visitor id and referrer value; only the columns
    needed are decoded. A file without `idsite`/`idvisit` stops with its name."""
    frames: list[pl.LazyFrame] = []
    names: list[str] = []
    for raw in raw_files_for_day(lake, "visits", day, sites):
        source, schema = scan_parquet_file(lake, raw.key, VISIT_COLUMNS)
        missing = [c for c in ("idsite", "idvisit") if c not in schema]
        if missing:
            raise LakeReadError(
                f"{lake.describe(raw.key)}: missing required column(s) {', '.join(missing)}"
            )
        frames.append(_normalised(source, schema))
        names.append(raw.key)
    if not frames:
        return pl.DataFrame(schema=VISIT_REFERRER_SCHEMA), ReferrerProblems()
    visits, problems = classify_visits(pl.concat(frames, how="vertical"))
    problems.files = names
    return visits, problems


def _referrer_hash() -> pl.Expr:
    """One integer per (type, name, URL) of a visit: what the visits are joined to their
    classified referrer on, when it tells every distinct referrer of the day apart."""
    return pl.struct("_kind", "_name", "_url").hash(seed=11)


def _normalised(source: pl.LazyFrame, schema: pl.Schema) -> pl.LazyFrame:
    """One file's columns in types every file shares (files of one day differ: a site's
    export may hold a binary visitor id, another's a string), so they can be concatenated."""
    columns = [
        pl.col("idsite").cast(pl.Int64),
        pl.col("idvisit").cast(pl.Int64),
        (
            visitor_key(pl.col("idvisitor"), schema["idvisitor"])
            if "idvisitor" in schema
            else pl.lit(None, dtype=pl.UInt64)
        ).cast(pl.UInt64),
    ]
    for name, dtype in (("referer_type", pl.Int64), ("referer_name", pl.String)):
        columns.append(pl.col(name).cast(dtype) if name in schema else pl.lit(None, dtype=dtype))
    url = pl.col("referer_url").cast(pl.String) if "referer_url" in schema else None
    columns.append(url if url is not None else pl.lit(None, dtype=pl.String).alias("referer_url"))
    names = ("idsite", "idvisit", "visitor_id", *VISIT_COLUMNS[3:])
    return source.select([c.alias(n) for c, n in zip(columns, names, strict=True)])
