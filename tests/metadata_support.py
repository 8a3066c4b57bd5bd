"""Harvested item metadata for tests: rows of `ITEM_METADATA_SCHEMA` with planted values."""

from __future__ import annotations

import datetime as dt

import polars as pl

from usage_stats.metadata.schema import ITEM_METADATA_SCHEMA
from usage_stats.storage.store import STORED_METADATA_SCHEMA

COAR_TYPE = "http://purl.org/coar/resource_type/"
COAR_ACCESS = "http://purl.org/coar/access_right/"
ARTICLE = COAR_TYPE + "c_6501"  # journal article: Data_Type Article
THESIS = COAR_TYPE + "c_46ec"  # Thesis_or_Dissertation
BOOK = COAR_TYPE + "c_2f33"  # Book_Segment
OPEN = COAR_ACCESS + "c_abf2"
EMBARGOED = COAR_ACCESS + "c_f1cf"
RESTRICTED = COAR_ACCESS + "c_16ec"
HARVESTED = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def record(item_key: str, **fields: object) -> dict:
    """One harvested record of `item_key`: every column of `ITEM_METADATA_SCHEMA`, empty unless
    given (a datestamp of 2026-01-01 by default)."""
    row: dict = dict.fromkeys(ITEM_METADATA_SCHEMA)
    row |= {
        "source_key": "opendoar::1",
        "site_id": 1,
        "oai_identifier": item_key,
        "item_key": item_key,
        "datestamp": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "deleted": False,
        "metadata_format": "oai_dc",
        "harvested_at": HARVESTED,
    }
    for column in ("sets", "creators", "subjects", "funders", "projects", "affiliations"):
        row[column] = []
    row |= {"formats": [], "identifiers": [item_key], "item_keys": [item_key], "urls": []}
    row["problems"] = []
    unknown = set(fields) - set(ITEM_METADATA_SCHEMA)
    assert not unknown, unknown
    return row | fields


def frame(*records: dict) -> pl.DataFrame:
    return pl.DataFrame(list(records), schema=ITEM_METADATA_SCHEMA, orient="row")


def stored(*records: dict) -> pl.DataFrame:
    """What the store gives back for these records, ordered by key."""
    return frame(*records).select(list(STORED_METADATA_SCHEMA)).sort("item_key")
