"""Item titles, from the page titles Matomo records with every page view.

The statistics need no title, but a person reading a top-items list does. Matomo stores the
page title (`log_action` of type 4, referenced by `idaction_name`) with each view; the export
writes it as `action_name`. A title is metadata, not a count: it is taken from every view of
an item on a registered site, whoever the reader was, and the title seen last wins, so a
renamed item shows its new name. Views without a title (older exports, an empty title)
leave the item's title unknown rather than blank.
"""

from __future__ import annotations

import polars as pl

from usage_stats.admin.sources import Source
from usage_stats.pipeline.identifier_rules import apply_identifier_rules
from usage_stats.pipeline.identifiers import normalize_identifier_expr

# Per day: the last title each raw identifier was seen with, and when.
PAGE_TITLE_SCHEMA: dict[str, pl.DataType] = {
    "site_id": pl.Int32(),
    "raw_identifier": pl.String(),
    "page_title": pl.String(),
    "seen": pl.Datetime("us", "UTC"),
}
# Per day: the item's title at the end of that day.
ITEM_TITLE_SCHEMA: dict[str, pl.DataType] = {
    "key": pl.String(),
    "title": pl.String(),
    "seen": pl.Datetime("us", "UTC"),
}
MAX_TITLE_LENGTH = 500


def page_titles(events: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per site and raw identifier, the title of its last view with a title and when that was
    (a tie goes to the greatest title); a day of millions of views folds into one row per
    spelling of an item, so the title column need not travel with the events."""
    return (
        events.lazy()
        .select("site_id", "raw_identifier", "page_title", "event_time")
        .filter(
            (pl.col("page_title").str.len_bytes() > 0)
            & pl.col("raw_identifier").is_not_null()
            & pl.col("event_time").is_not_null()
        )
        .group_by("site_id", "raw_identifier")
        .agg(
            pl.col("page_title").sort_by("event_time", "page_title").last(),
            pl.col("event_time").max().alias("seen"),
        )
        # Stripped only now, on one title per spelling instead of one per view; a title of
        # blanks seen last leaves the spelling untitled that day.
        .with_columns(pl.col("page_title").str.strip_chars())
        .filter(pl.col("page_title") != "")
        .select(list(PAGE_TITLE_SCHEMA))
        .cast(PAGE_TITLE_SCHEMA)
        .collect()
    )


def empty_page_titles() -> pl.DataFrame:
    return pl.DataFrame(schema=PAGE_TITLE_SCHEMA)


def latest_item_titles(titles: pl.DataFrame, sources: list[Source]) -> pl.DataFrame:
    """One title per normalised item key: the one seen last (the greatest title on a tie, so
    re-runs agree). Identifiers go through the same source rules and normalisation as the
    events, so the key is the one the statistics use; sites not in the registry count for
    nothing, as their events do."""
    registered = [s.site_id for s in sources if s.active]
    known = titles.filter(pl.col("site_id").is_in(registered))
    if known.is_empty():
        return pl.DataFrame(schema=ITEM_TITLE_SCHEMA)
    ruled = apply_identifier_rules(known, sources)
    return (
        ruled.lazy()
        .with_columns(normalize_identifier_expr(pl.col("raw_identifier")).alias("key"))
        .filter(pl.col("key").is_not_null())
        .sort("key", "seen", "page_title")
        .group_by("key", maintain_order=True)
        .agg(pl.col("page_title").last().alias("title"), pl.col("seen").last())
        .with_columns(pl.col("title").str.slice(0, MAX_TITLE_LENGTH))
        .select(list(ITEM_TITLE_SCHEMA))
        .cast(ITEM_TITLE_SCHEMA)
        .collect()
    )
