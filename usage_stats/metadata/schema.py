"""The columns of harvested item metadata: the shared contract of harvesting, the identifier
cross-walk, titles and SUSHI item reports.

One row per record and source (`ITEM_METADATA_SCHEMA`), the current state after the latest
harvest; deleted records stay as rows with `deleted` true and their last known fields, so a
report on past usage still names the item. Every harvest appends what changed to the change
log (`METADATA_CHANGES_SCHEMA`).

Vocabulary values are normalised (`usage_stats.metadata.vocabularies`): a value that could
not be read (an unparseable date, an unknown resource type) leaves its field empty and is
named in `problems` as `field: value`, so it is counted, never guessed.
"""

from __future__ import annotations

import polars as pl

_TEXTS = pl.List(pl.String())

ITEM_METADATA_SCHEMA = pl.Schema(
    {
        "source_key": pl.String(),  # the admin DB's source that exposes the record
        "site_id": pl.Int32(),  # that source's Matomo site
        "oai_identifier": pl.String(),  # the OAI-PMH header identifier, as the source spells it
        "item_key": pl.String(),  # normalize_identifier(oai_identifier): the usage key
        "datestamp": pl.Datetime("us", "UTC"),  # the header's datestamp
        "deleted": pl.Boolean(),
        "sets": _TEXTS,  # setSpec values of the header
        "metadata_format": pl.String(),  # the richest metadataPrefix the fields came from
        "title": pl.String(),
        "creators": _TEXTS,
        "publication_date": pl.Date(),  # the first day of the period when only year/month known
        "publication_year": pl.Int32(),
        "resource_type": pl.String(),  # COAR resource type URI
        "access_rights": pl.String(),  # COAR access right URI
        "embargo_end": pl.Date(),
        "language": pl.String(),  # ISO 639-3
        "subjects": _TEXTS,
        "publisher": pl.String(),
        "funders": _TEXTS,
        "projects": _TEXTS,  # info:eu-repo/grantAgreement/... as written
        "affiliations": _TEXTS,
        "formats": _TEXTS,  # MIME types
        # The record's files and their bytes where its format says (xoai bitstreams of the
        # ORIGINAL bundle, dim `dc.format.extent` sizes, oai_openaire `oaire:file` and
        # `datacite:size`); null when it does not, or (bytes) when a size cannot be read.
        "file_count": pl.Int32(),
        "file_bytes": pl.Int64(),
        "identifiers": _TEXTS,  # every identifier the record carries, as written
        "item_keys": _TEXTS,  # each of them normalised (DOI, handle, OAI id, URL): the cross-walk
        "doi": pl.String(),  # normalised, the first DOI of the record
        "handle": pl.String(),  # normalised (hdl:...), the first handle
        "urls": _TEXTS,
        "article_version": pl.String(),  # JAV/COAR version label where the record says
        "problems": _TEXTS,  # "field: value" for each value that could not be read
        "harvested_at": pl.Datetime("us", "UTC"),
    }
)

CHANGES = ("added", "updated", "deleted")


def conform_metadata(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` in `ITEM_METADATA_SCHEMA`: columns it lacks (a state file harvested before
    they existed, such as `file_count` and `file_bytes`) are null, so old Parquet files stay
    readable and the record counts as "does not say" until it is harvested again."""
    missing = [
        pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in ITEM_METADATA_SCHEMA.items()
        if name not in frame.columns
    ]
    return frame.with_columns(missing).select(list(ITEM_METADATA_SCHEMA)).cast(ITEM_METADATA_SCHEMA)


METADATA_CHANGES_SCHEMA = pl.Schema(
    {
        "source_key": pl.String(),
        "oai_identifier": pl.String(),
        "item_key": pl.String(),
        "change": pl.Enum(CHANGES),
        "datestamp": pl.Datetime("us", "UTC"),
        "harvested_at": pl.Datetime("us", "UTC"),
    }
)
