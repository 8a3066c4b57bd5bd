"""The identifier cross-walk: every identifier a harvested record carries names that record.

A repository's item is tracked under its OAI identifier on the repository itself, but a
national node or the regional portal may record it as its DOI, its handle or its landing
page's URL. Declared prefixes (`usage_stats.pipeline.ownership`) attribute such a spelling to
a repository only when the repository declares the DOI or handle prefix, and even then the
use stays counted under the DOI, apart from the item's OAI key. The harvested records
(`usage_stats.metadata.schema.ITEM_METADATA_SCHEMA`) say exactly which record a DOI, handle
or URL belongs to, so the cross-walk counts that use on the record's own item:
`item_id` = the record's `item_key`, `owner_site_id` = the record's `site_id`.

The table (`crosswalk_table`) has one row per alias, a normalised key (`item_keys` are
normalised as usage is, so a key matches whatever spelling the tracker recorded):

- **What claims an alias.** Every record of a repository (deleted ones too: usage recorded
  under a withdrawn record's DOI is still that record's use) claims its own `item_key` and
  each of its `item_keys`. Records exposed by national nodes or the portal (aggregators that
  republish the repositories' records) claim nothing when the repositories are named: their
  items are the repositories'.
- **Which claim wins.** A record's own OAI key beats any other record listing it among its
  identifiers (a relation, a copy); a live record's identifier beats a deleted record's (a
  DOI re-deposited under a new record resolves to the new one). Within the best kind, two or
  more different records (item key and site) make the alias **ambiguous**: it keeps
  `claims` > 1, no `item_key` and no owner, is never resolved (its use stays counted under
  the alias, owned as the declared prefixes say) and is counted and reported: by
  `crosswalk_summary`, `ambiguous_claims`, and per day by the cleaning asset (events kept
  under an ambiguous alias).

Applied (`resolve_keys`) to a day's distinct item keys after identifier normalisation and
the per-source rules, beside the owner the declared prefixes give, before the rows read their
item and owner (`usage_stats.pipeline.cleaning`), so the double-click rule, the session
tables and the deltas all see the record's key:

- an alias of another record's item (a DOI, handle, URL): `item_id` becomes the record's
  `item_key` and `owner_site_id` the record's site, whatever the prefixes say: the record is
  the more specific knowledge;
- the record's own key (its OAI identifier): the item is unchanged; its owner is the one the
  declared prefixes give, else the record's site, and only when neither names one the site
  the use happened on if that is a repository (the cleaning's last fallback);
- an ambiguous alias or a key no record has: unchanged.

Work is per distinct key, never per row: a day has about 10⁵ distinct items, a network's
records several 10⁶ aliases. The table carries each alias's 64-bit hash (Polars' hash,
computed where the table is built: the table lives in memory for a run and is never
stored), so a piece picks out the few rows of the table its keys can match with one integer
membership test, and only those are joined on their strings (the join checks equality, so a
hash collision cannot give a wrong match).
"""

from __future__ import annotations

from collections.abc import Collection

import polars as pl

CROSSWALK_SCHEMA = pl.Schema(
    {
        "alias": pl.String(),  # a normalised key: DOI, handle, OAI id, URL
        "alias_hash": pl.UInt64(),  # alias.hash(), for the membership test of a piece's keys
        "item_key": pl.String(),  # the record's key (null when ambiguous)
        "owner_site_id": pl.Int32(),  # the record's source's site (null when ambiguous)
        "claims": pl.UInt32(),  # different records claiming the alias in the winning kind
    }
)

AMBIGUOUS_SCHEMA = pl.Schema(
    {
        "alias": pl.String(),
        "item_key": pl.String(),
        "site_id": pl.Int32(),
        "deleted": pl.Boolean(),
    }
)

# What resolve_keys did with each key (`status`).
UNMATCHED, OWN_KEY, REKEYED, AMBIGUOUS = 0, 1, 2, 3

# Kinds of claim, best first.
_OWN, _LIVE, _DELETED = 0, 1, 2


def empty_crosswalk() -> pl.DataFrame:
    return pl.DataFrame(schema=CROSSWALK_SCHEMA)


def _claims(metadata: pl.DataFrame, repositories: Collection[int] | None) -> pl.DataFrame:
    """(alias, item_key, site_id, deleted, kind) of every claim in the winning kind of its
    alias: one row per claiming record."""
    records = metadata.lazy().filter(pl.col("item_key").is_not_null())
    if repositories is not None:
        records = records.filter(pl.col("site_id").is_in(list(repositories)))
    records = records.select(
        "item_key",
        pl.col("site_id").cast(pl.Int32),
        pl.col("deleted").fill_null(False),
        "item_keys",
    )
    own = records.select(
        pl.col("item_key").alias("alias"),
        "item_key",
        "site_id",
        "deleted",
        pl.lit(_OWN).alias("kind"),
    )
    listed = (
        records.explode("item_keys")
        .filter(pl.col("item_keys").is_not_null() & (pl.col("item_keys") != pl.col("item_key")))
        .select(
            pl.col("item_keys").alias("alias"),
            "item_key",
            "site_id",
            "deleted",
            pl.when(pl.col("deleted")).then(_DELETED).otherwise(_LIVE).alias("kind"),
        )
    )
    record = ["alias", "item_key", "site_id"]
    return (
        pl.concat([own, listed])
        .with_columns(pl.col("kind").cast(pl.UInt8))
        # a record listing one identifier twice (or as its own key too) claims it once
        .group_by(record)
        .agg(pl.col("kind").min(), pl.col("deleted").first())
        .filter(pl.col("kind") == pl.col("kind").min().over("alias"))
        .collect()
    )


def crosswalk_table(
    metadata: pl.DataFrame, repositories: Collection[int] | None = None
) -> pl.DataFrame:
    """alias → (item_key, owner_site_id) from harvested records (`ITEM_METADATA_SCHEMA`:
    `site_id`, `item_key`, `deleted`, `item_keys` are read), ambiguous aliases included with
    `claims` > 1 and no item (see the module's docstring for the rules).

    `repositories`: the site ids whose records own items (the registry's repositories); the
    records of other sites (aggregators) then claim nothing. None: every record claims.
    """
    if metadata.is_empty():
        return empty_crosswalk()
    single = pl.col("claims") == 1
    table = (
        _claims(metadata, repositories)
        .group_by("alias")
        .agg(
            pl.len().cast(pl.UInt32).alias("claims"),
            pl.col("item_key").first(),
            pl.col("site_id").first().alias("owner_site_id"),
        )
        .select(
            "alias",
            pl.col("alias").hash().alias("alias_hash"),
            pl.when(single).then(pl.col("item_key")).alias("item_key"),
            pl.when(single).then(pl.col("owner_site_id")).alias("owner_site_id"),
            "claims",
        )
        .sort("alias")
    )
    return table.cast(dict(CROSSWALK_SCHEMA))


def ambiguous_claims(
    metadata: pl.DataFrame, repositories: Collection[int] | None = None
) -> pl.DataFrame:
    """The records claiming each ambiguous alias (one row per alias and record), for a report
    an operator can act on (two repositories holding one DOI, a record listing another's)."""
    if metadata.is_empty():
        return pl.DataFrame(schema=AMBIGUOUS_SCHEMA)
    claims = _claims(metadata, repositories)
    return (
        claims.filter(pl.len().over("alias") > 1)
        .select(list(AMBIGUOUS_SCHEMA))
        .sort("alias", "item_key", "site_id")
        .cast(dict(AMBIGUOUS_SCHEMA))
    )


def crosswalk_summary(table: pl.DataFrame) -> dict[str, int]:
    """How many aliases the table resolves and how many are ambiguous (for the run's
    metadata)."""
    ambiguous = int((table.get_column("claims") > 1).sum())
    return {"crosswalk_aliases": table.height - ambiguous, "crosswalk_ambiguous_aliases": ambiguous}


def resolve_keys(
    keys: pl.Series, owners: pl.Series, table: pl.DataFrame | None
) -> tuple[pl.Series, pl.Series, pl.Series]:
    """The item key, owner and `status` (UNMATCHED, OWN_KEY, REKEYED, AMBIGUOUS: UInt8) of
    each key, given the owner the declared prefixes give it (`owners`, null for none).

    Meant for a day's or a piece's distinct normalised keys (strings, null allowed): the
    table's rows are picked by the hash of the keys first, so the cost follows the keys, not
    the size of the table.
    """
    keys = keys.cast(pl.String)
    status = pl.repeat(UNMATCHED, keys.len(), dtype=pl.UInt8, eager=True)
    if table is None or table.is_empty() or keys.is_empty():
        return keys, owners, status
    hashes = table.get_column("alias_hash") if "alias_hash" in table.columns else None
    if hashes is None:
        hashes = table.get_column("alias").hash()
    near = table.select("alias", "item_key", "owner_site_id", "claims").filter(
        hashes.is_in(keys.drop_nulls().hash().implode())
    )
    if near.is_empty():
        return keys, owners, status
    key, record = pl.col("key"), pl.col("item_key")
    single = pl.col("claims") == 1
    rekey = single & (record != key)
    own = single & (record == key)
    resolved = (
        pl.DataFrame([keys.alias("key"), owners.cast(pl.Int32).alias("owner")])
        .join(near, left_on="key", right_on="alias", how="left", maintain_order="left")
        .select(
            pl.when(rekey).then(record).otherwise(key).alias("item_id"),
            pl.when(rekey)
            .then(pl.col("owner_site_id"))
            .when(own)
            .then(pl.coalesce("owner", "owner_site_id"))
            .otherwise(pl.col("owner"))
            .alias("owner"),
            pl.when(rekey)
            .then(REKEYED)
            .when(own)
            .then(OWN_KEY)
            .when(pl.col("claims") > 1)
            .then(AMBIGUOUS)
            .otherwise(UNMATCHED)
            .cast(pl.UInt8)
            .alias("status"),
        )
    )
    return (
        resolved.get_column("item_id").alias(keys.name),
        resolved.get_column("owner").alias(owners.name),
        resolved.get_column("status").alias("status"),
    )
