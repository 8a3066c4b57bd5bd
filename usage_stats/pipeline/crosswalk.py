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
  more different records (item key and site) make the alias **ambiguous**: it is kept with
  `ambiguous` true, no `item_key` and no owner, is never resolved (its use stays counted under
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
        "ambiguous": pl.Boolean(),  # several records claim the alias (in the winning kind)
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


def _records(metadata: pl.DataFrame, repositories: Collection[int] | None) -> pl.DataFrame:
    """The records that claim aliases, one row per record (item key and site): a record
    stored twice (a repository registered under two source keys) is one record, deleted only
    when every copy says so."""
    records = metadata.lazy().filter(pl.col("item_key").is_not_null())
    if repositories is not None:
        records = records.filter(pl.col("site_id").is_in(list(repositories)))
    records = records.select(
        "item_key",
        pl.col("site_id").cast(pl.Int32),
        pl.col("deleted").fill_null(False),
        "item_keys",
    ).collect()
    if records.select(pl.struct("item_key", "site_id").is_duplicated().any()).item():
        records = records.group_by("item_key", "site_id", maintain_order=True).agg(
            pl.col("deleted").all(),
            pl.col("item_keys").list.explode(keep_nulls=False, empty_as_null=False),
        )
    return records


def _claims(records: pl.DataFrame) -> pl.LazyFrame:
    """(alias, _kind, _record) of every claim, `_record` the claiming record's row."""
    indexed = records.lazy().with_row_index("_record")
    own = indexed.select(
        pl.col("item_key").alias("alias"), pl.lit(_OWN, pl.UInt64).alias("_kind"), "_record"
    )
    listed = (
        indexed.select("item_keys", "item_key", "deleted", "_record")
        .explode("item_keys")
        .filter(pl.col("item_keys").is_not_null() & (pl.col("item_keys") != pl.col("item_key")))
        .select(
            pl.col("item_keys").alias("alias"),
            pl.when(pl.col("deleted"))
            .then(_DELETED)
            .otherwise(_LIVE)
            .cast(pl.UInt64)
            .alias("_kind"),
            "_record",
        )
    )
    return pl.concat([own, listed])


_LOW = (1 << 32) - 1


def _best(claims: pl.LazyFrame) -> pl.LazyFrame:
    """Per alias: the kind of its best claims and the first and last record among them.

    One group-by with two integer minimums (a day's table is built from millions of
    aliases): kind and record packed as `kind << 32 | record` and as `kind << 32 | (2³² − 1 −
    record)`; the smallest of each names the best kind with its first and its last record,
    and the alias is ambiguous when they differ (a record listing an identifier twice, or as
    its own key too, is still one record).
    """
    kind = pl.col("_kind") * pl.lit(1 << 32, pl.UInt64)
    record = pl.col("_record").cast(pl.UInt64)
    return (
        claims.select(
            "alias",
            (kind + record).alias("_first"),
            (kind + (pl.lit(_LOW, pl.UInt64) - record)).alias("_last"),
        )
        .group_by("alias")
        .agg(pl.col("_first").min(), pl.col("_last").min())
        .select(
            "alias",
            (pl.col("_first") // (1 << 32)).alias("_kind"),
            (pl.col("_first") % (1 << 32)).cast(pl.UInt32).alias("_record"),
            (
                (pl.col("_first") % (1 << 32))
                != (pl.lit(_LOW, pl.UInt64) - pl.col("_last") % (1 << 32))
            ).alias("ambiguous"),
        )
    )


def _split(claims: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series, pl.DataFrame]:
    """The claims of aliases claimed once (with their hashes), and those of aliases claimed
    more than once.

    Nearly every alias has one claim, and a group-by over millions of strings is most of the
    cost of building the table. An alias whose hash occurs once is claimed once (equal strings
    have equal hashes), and finding the repeated hashes takes a sort of integers; only the
    claims under a repeated hash (an own key listed by another record, a shared DOI, a rare
    hash collision) are grouped on their strings.
    """
    hashes = claims.get_column("alias").hash()
    ordered = hashes.sort()
    repeated = ordered.filter(ordered == ordered.shift(1)).unique()
    if repeated.is_empty():
        return claims, hashes, claims.clear()
    shared = hashes.is_in(repeated.implode())
    return claims.filter(~shared), hashes.filter(~shared), claims.filter(shared)


def crosswalk_table(
    metadata: pl.DataFrame, repositories: Collection[int] | None = None
) -> pl.DataFrame:
    """alias → (item_key, owner_site_id) from harvested records (`ITEM_METADATA_SCHEMA`:
    `site_id`, `item_key`, `deleted`, `item_keys` are read), ambiguous aliases included with
    `ambiguous` true and no item (see the module's docstring for the rules).

    `repositories`: the site ids whose records own items (the registry's repositories); the
    records of other sites (aggregators) then claim nothing. None: every record claims.
    Rows are in no particular order.
    """
    records = _records(metadata, repositories)
    if records.is_empty():
        return empty_crosswalk()
    single, hashes, shared = _split(_claims(records).collect())
    best = _best(shared.lazy()).collect()
    winners = pl.concat(
        [
            single.select(
                "alias",
                hashes.alias("alias_hash"),
                "_record",
                pl.lit(False).alias("ambiguous"),
            ),
            best.select(
                "alias",
                pl.col("alias").hash().alias("alias_hash"),
                "_record",
                "ambiguous",
            ),
        ]
    )
    resolved = ~pl.col("ambiguous")
    record = pl.col("_record")
    table = winners.select(
        "alias",
        "alias_hash",
        pl.when(resolved)
        .then(pl.lit(records.get_column("item_key")).gather(record))
        .alias("item_key"),
        pl.when(resolved)
        .then(pl.lit(records.get_column("site_id")).gather(record))
        .alias("owner_site_id"),
        "ambiguous",
    )
    return table.cast(dict(CROSSWALK_SCHEMA))


def ambiguous_claims(
    metadata: pl.DataFrame, repositories: Collection[int] | None = None
) -> pl.DataFrame:
    """The records claiming each ambiguous alias (one row per alias and record), for a report
    an operator can act on (two repositories holding one DOI, a record listing another's)."""
    records = _records(metadata, repositories)
    if records.is_empty():
        return pl.DataFrame(schema=AMBIGUOUS_SCHEMA)
    _, _, shared = _split(_claims(records).collect())
    claims = shared.lazy()
    ambiguous = _best(claims).filter(pl.col("ambiguous")).select("alias", "_kind")
    return (
        claims.join(ambiguous, on=["alias", "_kind"])
        .select("alias", "_record")
        .unique()
        .join(records.lazy().with_row_index("_record"), on="_record")
        .select(list(AMBIGUOUS_SCHEMA))
        .sort("alias", "item_key", "site_id")
        .collect()
        .cast(dict(AMBIGUOUS_SCHEMA))
    )


def crosswalk_summary(table: pl.DataFrame) -> dict[str, int]:
    """How many aliases the table resolves and how many are ambiguous (for the run's
    metadata)."""
    ambiguous = int(table.get_column("ambiguous").sum())
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
    near = table.select("alias", "item_key", "owner_site_id", "ambiguous").filter(
        hashes.is_in(keys.drop_nulls().hash().implode())
    )
    if near.is_empty():
        return keys, owners, status
    key, record = pl.col("key"), pl.col("item_key")
    single = ~pl.col("ambiguous")
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
            .when(pl.col("ambiguous"))
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
