"""The registry of stored days: one document per table and day that holds rows.

Which days a table holds was a composite aggregation over every document of its alias. With
sparse snapshots a year of 10M-event days is ~10^8 snapshot documents, and `days()` is asked
by every stats_index run, every health check and every cumulative series. The registry
answers from one document per day instead, and says more than the aggregation did: a day is
listed once all its documents are written and checked (the write registers it last), so a
write that failed half-way leaves its day out rather than listing it with half its rows.

The registry is an alias over one index. A store written before the registry existed gets it
at its next write: the index is created and filled from the aggregation, then the alias is
added, so a reader never sees a half-filled registry; until then readers aggregate the
documents as before.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from usage_stats.storage.opensearch import queries
from usage_stats.storage.opensearch.client import Connection
from usage_stats.storage.opensearch.writes import index_settings


def index_body(replicas: int, shards: int = 1) -> dict[str, Any]:
    return {
        "settings": index_settings(shards, replicas),
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "table": {"type": "keyword"},
                "date": {"type": "date", "format": "yyyy-MM-dd"},
                "rows": {"type": "long"},
            },
        },
    }


def _document_id(table: str, day: dt.date) -> str:
    return f"{table}|{day.isoformat()}"


def exists(connection: Connection, alias: str) -> bool:
    """Whether the registry is there: a search that no shard answers has nothing to search.
    A search, not `exists_alias`: a cluster that lost its elected master still serves
    searches, but not cluster-state requests (503), and readers must go on then."""
    found = connection.search(alias, {"size": 0, "query": {"match_none": {}}})
    return bool(found.get("_shards", {}).get("total"))


def ensure(
    connection: Connection,
    alias: str,
    tables: dict[str, str],
    body: dict[str, Any],
    copies_ready: Callable[[str], None],
) -> None:
    """The registry exists; if not, it is built from each table's documents (`tables`: table
    name → the alias of its documents) before it becomes visible under `alias`.
    `copies_ready(index)` waits for the new index's shard copies before its first document
    (the store's `_ensure_indices`)."""
    client = connection.client
    if exists(connection, alias):
        return
    index = f"{alias}-1"
    connection.call(
        "stored days index",
        lambda: client.indices.create(index=index, body=body, ignore=[400]),
    )
    copies_ready(index)
    lines = []
    for table, source in tables.items():
        for day, rows in sorted(queries.day_counts(connection, source).items()):
            lines.append(json.dumps({"index": {"_index": index, "_id": _document_id(table, day)}}))
            lines.append(json.dumps({"table": table, "date": day.isoformat(), "rows": rows}))
    if lines:
        connection.send("\n".join(lines) + "\n", "filling the stored days")
    connection.refresh(index)
    connection.call(
        "stored days alias",
        lambda: client.indices.put_alias(index=index, name=alias),
    )


def register(connection: Connection, alias: str, table: str, day: dt.date, rows: int) -> None:
    """`day` of `table` holds `rows` rows: listed if any, taken off the list if none."""
    client = connection.client
    doc_id = _document_id(table, day)
    if rows:
        body = {"table": table, "date": day.isoformat(), "rows": rows}
        connection.call(
            "registering a stored day",
            lambda: client.index(index=alias, id=doc_id, body=body, refresh="true"),
        )
    else:
        connection.call(
            "unregistering a stored day",
            lambda: client.delete(index=alias, id=doc_id, refresh="true", ignore=[404]),
        )


def registered(connection: Connection, alias: str, table: str) -> list[dt.date]:
    """The days the registry lists for `table`, in order."""
    return queries.stored_days(connection, alias, {"term": {"table": table}})
