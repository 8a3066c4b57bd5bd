"""What the store writes: mappings, index templates, bulk lines and document ids.

Bulk requests are built as NDJSON by Polars (no per-row Python). Document ids are the row's
key, so re-indexing a day overwrites the same documents; each write also tags its documents
with a write id and finally deletes that day's documents with any other write id, so a day
that lost keys leaves nothing stale behind. The compatibility set's `write_id` is instead each
document's digest (`content_digests`): a month's documents are rebuilt on every day's write,
and most of them come out the same, so the store sends only those whose digest changed and
deletes what the period holds under ids the new set lacks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import polars as pl
import pyarrow as pa

from usage_stats.pipeline.metrics import METRICS
from usage_stats.pipeline.records import RECORD_COUNTS, RECORD_KEYS
from usage_stats.pipeline.spikes import SPIKE_SCHEMA
from usage_stats.pipeline.usage_subcounts import USAGE_SUBCOUNT_KEYS
from usage_stats.storage.opensearch.client import Connection

_KEYWORDS = ("scope", "key", "level", "country")
_INTEGERS = ("site_id", "owner_site_id")
# Every write ends with an explicit refresh, so periodic refreshes would only slow bulk
# indexing down.
_REFRESH_INTERVAL = "30s"


def mappings() -> dict[str, Any]:
    """Deltas' and snapshots' fields, all explicit: nothing is left to dynamic mapping."""
    properties: dict[str, Any] = {"date": {"type": "date", "format": "yyyy-MM-dd"}}
    properties |= {k: {"type": "keyword"} for k in _KEYWORDS}
    properties |= {k: {"type": "integer"} for k in _INTEGERS}
    properties |= {m: {"type": "long"} for m in METRICS}
    properties["write_id"] = {"type": "keyword"}
    return {"dynamic": "strict", "properties": properties}


def record_mappings() -> dict[str, Any]:
    """Record statistics' fields (`RECORD_SCHEMA`), all explicit."""
    properties: dict[str, Any] = {"date": {"type": "date", "format": "yyyy-MM-dd"}}
    properties |= {k: {"type": "keyword"} for k in RECORD_KEYS if k != "date"}
    properties |= {c: {"type": "long"} for c in RECORD_COUNTS}
    properties["write_id"] = {"type": "keyword"}
    return {"dynamic": "strict", "properties": properties}


def subcount_mappings() -> dict[str, Any]:
    """Usage subcounts' fields (`USAGE_SUBCOUNT_SCHEMA`), all explicit."""
    properties: dict[str, Any] = {"date": {"type": "date", "format": "yyyy-MM-dd"}}
    properties |= {k: {"type": "keyword"} for k in USAGE_SUBCOUNT_KEYS if k != "date"}
    properties |= {m: {"type": "long"} for m in METRICS}
    properties |= VISITOR_MAPPING
    properties["write_id"] = {"type": "keyword"}
    return {"dynamic": "strict", "properties": properties}


# Distinct visitors on the subcount deltas' total rows (absent elsewhere); also put on indices
# created before the field existed (`OpenSearchStatsStore.ensure_templates`).
VISITOR_MAPPING: dict[str, Any] = {"visitors": {"type": "long"}}


def subcount_key_ids() -> pl.Expr:
    """A subcount row's key as its document id (a missing level as `-`; a value too long for
    an id is hashed by `document_ids_within_limit`)."""
    parts = [pl.col("date").cast(pl.String)] + [
        pl.col(c).cast(pl.String).fill_null("-") for c in USAGE_SUBCOUNT_KEYS if c != "date"
    ]
    return pl.concat_str(parts, separator="|").alias("_id")


def record_key_ids() -> pl.Expr:
    """A record row's key as its document id (a missing level as `-`)."""
    parts = [pl.col("date").cast(pl.String)] + [
        pl.col(c).cast(pl.String).fill_null("-") for c in RECORD_KEYS if c != "date"
    ]
    return pl.concat_str(parts, separator="|").alias("_id")


def index_settings(shards: int, replicas: int) -> dict[str, Any]:
    """Shards and replicas of an index of ours (README: Production, OpenSearch cluster)."""
    if shards < 1 or replicas < 0:
        raise ValueError(f"an index needs shards >= 1 and replicas >= 0, not {shards}/{replicas}")
    return {"number_of_shards": shards, "number_of_replicas": replicas}


def index_template(
    alias: str, replicas: int, mapping: dict[str, Any] | None = None, shards: int = 1
) -> dict[str, Any]:
    """The template of the dated indices behind `alias`, which puts each new one under it
    (usage mappings unless `mapping` is given)."""
    settings = {**index_settings(shards, replicas), "refresh_interval": _REFRESH_INTERVAL}
    return {
        "index_patterns": [f"{alias}-*"],
        "template": {
            "settings": settings,
            "mappings": mapping or mappings(),
            "aliases": {alias: {}},
        },
        "priority": 100,
    }


def delete_other_writes(connection: Connection, index: str, write_id: str) -> None:
    """Delete the documents of `index` that the write `write_id` did not touch (a table
    replaced whole, such as the item aliases); scroll + bulk delete, as `delete_stale`."""
    body = {
        "query": {"bool": {"must_not": [{"term": {"write_id": write_id}}]}},
        "_source": False,
        "size": connection.batch_size,
    }
    for hits in connection.scroll("search for replaced documents", index, body):
        actions = [
            json.dumps({"delete": {"_index": hit["_index"], "_id": hit["_id"]}}) for hit in hits
        ]
        lines = "\n".join(actions) + "\n"
        connection.call(
            "removal of replaced documents", lambda b=lines: connection.client.bulk(body=b)
        )
    connection.refresh(index)


def spikes_index_body(replicas: int, shards: int = 1) -> dict[str, Any]:
    """Usage spikes' fields (`SPIKE_SCHEMA`), all explicit."""
    types = {pl.String(): "keyword", pl.Int32(): "integer", pl.Int64(): "long"}
    types[pl.Float64()] = "double"
    properties: dict[str, Any] = {"date": {"type": "date", "format": "yyyy-MM-dd"}}
    properties |= {
        name: {"type": types[dtype]} for name, dtype in SPIKE_SCHEMA.items() if name != "date"
    }
    properties["write_id"] = {"type": "keyword"}
    return {
        "settings": index_settings(shards, replicas),
        "mappings": {"dynamic": "strict", "properties": properties},
    }


def aliases_index_body(replicas: int, shards: int = 1) -> dict[str, Any]:
    """Aliases are read by id only; `write_id` is searched to drop a replaced table's rows."""
    return {
        "settings": index_settings(shards, replicas),
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "alias": {"type": "keyword"},
                "item_key": {"type": "keyword", "index": False},
                "write_id": {"type": "keyword"},
            },
        },
    }


def titles_index_body(replicas: int, shards: int = 1) -> dict[str, Any]:
    return {
        "settings": index_settings(shards, replicas),
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "key": {"type": "keyword"},
                "title": {"type": "text", "index": False},
                "date": {"type": "date", "format": "strict_date"},
            },
        },
    }


# Harvested metadata (`STORED_METADATA_SCHEMA`) as documents: read back by id only, so nothing
# but the key is searchable; dates travel as ISO strings.
_METADATA_FIELDS: dict[str, dict[str, Any]] = {
    "item_key": {"type": "keyword"},
    "source_key": {"type": "keyword"},
    "datestamp": {"type": "date", "format": "strict_date_optional_time"},
    "deleted": {"type": "boolean"},
    "title": {"type": "text", "index": False},
    "creators": {"type": "keyword", "index": False},
    "publication_date": {"type": "date", "format": "strict_date"},
    "publication_year": {"type": "integer"},
    "resource_type": {"type": "keyword"},
    "access_rights": {"type": "keyword"},
    "embargo_end": {"type": "date", "format": "strict_date"},
    "publisher": {"type": "keyword", "index": False},
    "doi": {"type": "keyword"},
    "handle": {"type": "keyword"},
    "urls": {"type": "keyword", "index": False},
    "article_version": {"type": "keyword"},
}


def metadata_index_body(replicas: int, shards: int = 1) -> dict[str, Any]:
    return {
        "settings": index_settings(shards, replicas),
        "mappings": {"dynamic": "strict", "properties": _METADATA_FIELDS},
    }


def metadata_lines(metadata: pl.DataFrame, index: str) -> pl.Series:
    """One document per item whose external version is its datestamp in microseconds: an
    older record is refused (409, expected), the same datestamp replaces (`external_gte`),
    as titles are versioned by day."""
    ids = document_ids_within_limit(metadata.get_column("item_key"))
    version = pl.col("datestamp").dt.epoch("us").fill_null(0).clip(lower_bound=0)
    encoded = metadata.with_columns(
        version.alias("_version"),
        pl.col("datestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
        *(pl.col(c).cast(pl.String) for c in ("publication_date", "embargo_end")),
    )
    action = pl.struct(
        pl.struct(
            pl.lit(index).alias("_index"),
            pl.lit(ids).alias("_id"),
            pl.col("_version").alias("version"),
            pl.lit("external_gte").alias("version_type"),
        ).alias("index")
    ).struct.json_encode()
    document = pl.struct(*_METADATA_FIELDS).struct.json_encode()
    lines = encoded.select(pl.concat_str([action, pl.lit("\n"), document]).alias("line"))
    return lines.get_column("line")


def metadata_documents(sources: list[dict[str, Any]], schema: pl.Schema) -> pl.DataFrame:
    """Documents read back as a frame of `schema` (the ISO strings parsed again)."""
    text = {
        name: pl.String() if name in ("datestamp", "publication_date", "embargo_end") else dtype
        for name, dtype in schema.items()
    }
    frame = pl.DataFrame(
        [_column(name, dtype, [s.get(name) for s in sources]) for name, dtype in text.items()]
    )
    parsed = {
        "datestamp": pl.col("datestamp").str.to_datetime(
            "%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC"
        ),
        "publication_date": pl.col("publication_date").str.to_date("%Y-%m-%d"),
        "embargo_end": pl.col("embargo_end").str.to_date("%Y-%m-%d"),
    }
    return frame.with_columns(e for name, e in parsed.items() if name in schema).cast(schema)


def _column(name: str, dtype: pl.DataType, values: list[Any]) -> pl.Series:
    """One column of documents' values; a list column through Arrow (Polars built a list of
    strings per record from Python at ~6 µs a record, half of a one-month IR's record read
    on OpenSearch; Arrow at 0.2 µs)."""
    if isinstance(dtype, pl.List):
        return pl.Series(name, pa.array(values, type=pa.list_(pa.large_string()))).cast(dtype)
    return pl.Series(name, values, dtype=dtype)


def row_key_ids() -> pl.Expr:
    """The row key as document id: stable across versions and readable in the UI."""
    parts = [pl.col("date").cast(pl.String)] + [
        pl.col(c).cast(pl.String).fill_null("-")
        for c in ("scope", "key", "site_id", "level", "country")
    ]
    return pl.concat_str(parts, separator="|").alias("_id")


def document_ids_within_limit(ids: pl.Series) -> pl.Series:
    """OpenSearch ids are at most 512 bytes; the rare longer key becomes its SHA-1."""
    too_long = ids.str.len_bytes() > 512
    if not too_long.any():
        return ids
    positions = too_long.arg_true()
    digests = [
        "sha1:" + hashlib.sha1(value.encode()).hexdigest() for value in ids.gather(positions)
    ]
    return ids.scatter(positions, digests)


def bulk_lines(
    frame: pl.DataFrame, index: str | pl.Expr, ids: pl.Series, write_id: str | None
) -> pl.Series:
    """`{"index": …}` and document lines, JSON-encoded by Polars in one vectorised pass; each
    document carries `write_id` (None: `frame` has its own column). `index` may be an
    expression of `frame`'s columns (one stream of requests to many indices)."""
    ids = document_ids_within_limit(ids)
    documents = (
        frame if write_id is None else frame.with_columns(pl.lit(write_id).alias("write_id"))
    )
    target = pl.lit(index) if isinstance(index, str) else index
    action = pl.struct(
        pl.struct(target.alias("_index"), pl.lit(ids).alias("_id")).alias("index")
    ).struct.json_encode()
    document = pl.struct(pl.all()).struct.json_encode()
    return documents.select(
        pl.concat_str([action, pl.lit("\n"), document]).alias("line")
    ).get_column("line")


def title_lines(titles: pl.DataFrame, index: str, day: dt.date) -> pl.Series:
    """One document per item whose external version is the day: an older day's title is
    refused (409, expected) and the same day's re-run replaces it (`external_gte`)."""
    ids = document_ids_within_limit(titles.get_column("key"))
    action = pl.struct(
        pl.struct(
            pl.lit(index).alias("_index"),
            pl.lit(ids).alias("_id"),
            pl.lit(day.toordinal()).alias("version"),
            pl.lit("external_gte").alias("version_type"),
        ).alias("index")
    ).struct.json_encode()
    document = pl.struct("key", "title", pl.lit(day.isoformat()).alias("date")).struct.json_encode()
    return titles.select(pl.concat_str([action, pl.lit("\n"), document]).alias("line")).get_column(
        "line"
    )


def delete_stale(connection: Connection, index: str, day: dt.date, write_id: str) -> int:
    """Delete the day's documents that the write `write_id` did not touch.

    Done with scroll + bulk delete rather than `_delete_by_query`, which lives in the reindex
    module that minimal distributions (and some managed services) lack.
    """
    query = {
        "bool": {
            "filter": [{"term": {"date": day.isoformat()}}],
            "must_not": [{"term": {"write_id": write_id}}],
        }
    }
    # a scroll page is at most `index.max_result_window` (10,000) hits
    body = {"query": query, "_source": False, "size": min(connection.batch_size, 10_000)}
    deleted = 0
    for hits in connection.scroll("search for stale documents", index, body):
        actions = [
            json.dumps({"delete": {"_index": hit["_index"], "_id": hit["_id"]}}) for hit in hits
        ]
        lines = "\n".join(actions) + "\n"
        connection.call(
            "removal of stale documents",
            lambda b=lines: connection.client.bulk(body=b, filter_path="errors"),
        )
        deleted += len(hits)
    if deleted:  # a fresh day has nothing stale, and its write was refreshed already
        connection.refresh(index)
    return deleted


def content_digests(frame: pl.DataFrame) -> pl.Series:
    """A digest of each row's document, for `write_id` where an unchanged document need not
    be sent again. Polars' hash may change between its versions: then every document differs
    once and is rewritten, which is only slower."""
    encoded = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series()
    return encoded.hash(seed=0x5EED).cast(pl.String).alias("write_id")


def stored_write_ids(connection: Connection, index: str, day: dt.date) -> pl.DataFrame:
    """Index, id and `write_id` of every document of `day` in `index`, from doc values."""
    body = {
        "query": {"term": {"date": day.isoformat()}},
        "_source": False,
        "docvalue_fields": ["write_id"],
        "size": 10_000,
    }
    indices: list[str] = []
    ids: list[str] = []
    write_ids: list[str | None] = []
    for hits in connection.scroll("search for stored documents", index, body):
        for hit in hits:
            indices.append(hit["_index"])
            ids.append(hit["_id"])
            write_ids.append(hit.get("fields", {}).get("write_id", [None])[0])
    return pl.DataFrame(
        {"_index": indices, "id": ids, "write_id": write_ids},
        schema={"_index": pl.String, "id": pl.String, "write_id": pl.String},
    )


def delete_documents(connection: Connection, documents: pl.DataFrame) -> None:
    """Delete the documents `_index`, `id` of `documents`, in batches."""
    lines = documents.select(
        pl.struct(pl.struct("_index", pl.col("id").alias("_id")).alias("delete"))
        .struct.json_encode()
        .alias("line")
    ).to_series()
    for start, length in connection.batches(lines):
        body = lines.slice(start, length).str.join("\n").item() + "\n"
        connection.call(
            "removal of stale documents",
            lambda b=body: connection.client.bulk(body=b, filter_path="errors"),
        )
