"""How the store reads: query bodies and the frames made of their answers.

Only `term`/`terms`/`range`/`exists` filters: user values are compared, never parsed as query
syntax. Groupings are composite aggregations paged to the end, so no bucket is ever cut off.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from operator import itemgetter
from typing import Any

import polars as pl

from usage_stats.pipeline.metrics import DELTA_SCHEMA, LA_REFERENCIA_METRICS, METRICS
from usage_stats.pipeline.records import RECORD_COUNTS, RECORD_SCHEMA
from usage_stats.pipeline.spikes import SPIKE_SCHEMA
from usage_stats.storage.lareferencia_index import PERIOD_ITEM_SCHEMA
from usage_stats.storage.opensearch.client import Connection
from usage_stats.storage.store import (
    RecordQuery,
    RowFilter,
    SubcountQuery,
    empty_record_sums,
    empty_sums,
)


def _scope_and_dates(scope: str, start: dt.date, end: dt.date) -> list[dict[str, Any]]:
    return [
        {"term": {"scope": scope}},
        {"range": {"date": {"gte": start.isoformat(), "lte": end.isoformat()}}},
    ]


def where_query(
    scope: str, start: dt.date, end: dt.date, where: tuple[RowFilter, ...]
) -> dict[str, Any]:
    """Scope and dates, and any of the filters (each `terms` on its columns; None among the
    values: the field is absent)."""
    alternatives = []
    for row_filter in where:
        columns = (
            ("key", row_filter.keys),
            ("site_id", row_filter.site_ids),
            ("owner_site_id", row_filter.owner_site_ids),
        )
        if any(values is not None and not values for _, values in columns):
            continue  # an empty list of values: this alternative matches no row
        terms: list[dict[str, Any]] = []
        for column, values in columns:
            if values is None:
                continue
            present = [v for v in values if v is not None]
            tests: list[dict[str, Any]] = [{"terms": {column: present}}] if present else []
            if len(present) < len(values):  # None: no value (an item nobody owns)
                tests.append({"bool": {"must_not": [{"exists": {"field": column}}]}})
            terms.append(tests[0] if len(tests) == 1 else {"bool": {"should": tests}})
        alternatives.append({"bool": {"filter": terms}})
    filters = _scope_and_dates(scope, start, end)
    if not alternatives:
        return {"bool": {"filter": filters, "must_not": [{"match_all": {}}]}}
    if alternatives == [{"bool": {"filter": []}}]:  # one filter on nothing: every row
        return {"bool": {"filter": filters}}
    filters.append({"bool": {"should": alternatives, "minimum_should_match": 1}})
    return {"bool": {"filter": filters}}


def _group_sources(columns: list[str]) -> list[dict[str, Any]]:
    """Composite sources of `columns`; `month` buckets `date` by calendar month, a missing
    value is a bucket of its own."""
    sources = []
    for column in columns:
        if column == "month":
            source = {"date_histogram": {"field": "date", "calendar_interval": "month"}}
        else:
            source = {"terms": {"field": column, "missing_bucket": True}}
        sources.append({column: source})
    return sources


def _epoch_day(millis: int) -> dt.date:
    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC).date()


def sum_rows(
    connection: Connection,
    index: str,
    scope: str,
    start: dt.date,
    end: dt.date,
    where: tuple[RowFilter, ...],
    by: tuple[str, ...],
    distinct: tuple[str, ...],
    metrics: tuple[str, ...] = METRICS,
) -> pl.DataFrame:
    """The store's `sums_where` (the `metrics` asked only), with each bucket's `rows`
    (documents, or with `distinct`, the distinct combinations of those columns: exact, by
    composite buckets of `by` + `distinct`, so it costs one bucket per combination)."""
    query = where_query(scope, start, end, where)
    sums = {m: {"sum": {"field": m}} for m in metrics}
    counts = (*metrics, "rows")
    if not by and not distinct:
        body = {"size": 0, "query": query, "aggs": sums, "track_total_hits": True}
        result = connection.search(index, body)
        aggs = result.get("aggregations", {})
        values = {m: [int(aggs.get(m, {}).get("value") or 0)] for m in metrics}
        values["rows"] = [int(result.get("hits", {}).get("total", {}).get("value") or 0)]
        return pl.DataFrame(values, schema={m: pl.Int64 for m in counts})
    group = list(dict.fromkeys([*by, *distinct]))
    rows = list(_buckets(connection, index, query, group, metrics))
    schema = dict(empty_sums(tuple(group), metrics).schema)
    frame = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    if distinct:
        totals = [*(pl.col(m).sum() for m in metrics), pl.len().cast(pl.Int64).alias("rows")]
        if not by:
            if frame.is_empty():
                return pl.DataFrame(
                    {c: [0] for c in counts}, schema=dict.fromkeys(counts, pl.Int64)
                )
            return frame.select(totals)
        frame = frame.group_by(list(by)).agg(totals).select([*by, *counts])
    return frame.sort(list(by), nulls_last=True)


def sum_tuples(
    connection: Connection,
    index: str,
    scope: str,
    start: dt.date,
    end: dt.date,
    where: tuple[RowFilter, ...],
    by: tuple[str, ...],
    metrics: tuple[str, ...] = METRICS,
) -> list[tuple]:
    """The store's `sum_rows` grouped by `by` (not empty): each composite bucket as a tuple
    of its `by` values and the `metrics`' sums, in the order `sum_rows`' frame has them
    (by `by`, a missing value last)."""
    query = where_query(scope, start, end, where)
    values = itemgetter(*by, *metrics)  # two or more names: a tuple
    found = [values(row) for row in _buckets(connection, index, query, list(by), metrics)]
    n = len(by)
    if any(v is None for row in found for v in row[:n]):  # composite buckets put them first
        found.sort(key=lambda row: tuple((v is None, "" if v is None else v) for v in row[:n]))
    else:  # in the buckets' order already, as a rule: a pass that checks it
        found.sort(key=itemgetter(*range(n)))
    return found


def _buckets(
    connection: Connection,
    index: str,
    query: dict[str, Any],
    group: list[str],
    metrics: tuple[str, ...],
) -> Iterator[dict[str, Any]]:
    """Each composite bucket of `group` as a dict: its `group` values (days as dates), its
    sums of `metrics` and its documents (`rows`)."""
    sums = {m: {"sum": {"field": m}} for m in metrics}
    for bucket in connection.composite(index, query, _group_sources(group), sums):
        row = dict(bucket["key"])
        for column in ("date", "month"):
            if row.get(column) is not None:
                row[column] = _epoch_day(row[column])
        row |= {m: int(bucket[m]["value"] or 0) for m in metrics}
        row["rows"] = int(bucket["doc_count"])
        yield row


def top_keys(
    connection: Connection,
    index: str,
    scope: str,
    start: dt.date,
    end: dt.date,
    metric: str,
    limit: int,
    where: tuple[RowFilter, ...],
) -> pl.DataFrame:
    """The store's `top_where`: a terms aggregation ordered by the metric, then the key."""
    body = {
        "size": 0,
        "query": where_query(scope, start, end, where),
        "aggs": {
            "top": {
                "terms": {
                    "field": "key",
                    "size": limit,
                    "order": [{"total": "desc"}, {"_key": "asc"}],
                },
                "aggs": {"total": {"sum": {"field": metric}}},
            }
        },
    }
    buckets = connection.search(index, body).get("aggregations", {}).get("top", {})
    return pl.DataFrame(
        [(b["key"], int(b["total"]["value"])) for b in buckets.get("buckets", [])],
        schema={"key": pl.String, metric: pl.Int64},
        orient="row",
    )


def snapshot_history(
    connection: Connection, index: str, scope: str, end: dt.date, where: tuple[RowFilter, ...]
) -> pl.DataFrame:
    """The store's `_snapshot_history`: the matching snapshot documents up to `end`, read as
    they are (a scroll: the rows in force are chosen from them, nothing is summed here)."""
    body = {
        "query": where_query(scope, dt.date.min, end, where),
        "_source": list(DELTA_SCHEMA),
        "size": connection.batch_size,
    }
    rows = [hit["_source"] for hits in connection.scroll("snapshots", index, body) for hit in hits]
    if not rows:
        return pl.DataFrame(schema=DELTA_SCHEMA)
    return (
        pl.DataFrame(
            rows,
            schema={c: pl.String() if c == "date" else t for c, t in DELTA_SCHEMA.items()},
            orient="row",
        )
        .with_columns(pl.col("date").str.to_date())
        .select(list(DELTA_SCHEMA))
    )


def day_counts(
    connection: Connection, index: str, query: dict[str, Any] | None = None
) -> dict[dt.date, int]:
    """Documents per day of `index` matching `query` (all by default), in date order."""
    query = query or {"match_all": {}}
    buckets = connection.composite(index, query, _group_sources(["date"]), {})
    return {_epoch_day(bucket["key"]["date"]): int(bucket["doc_count"]) for bucket in buckets}


def stored_days(
    connection: Connection, index: str, query: dict[str, Any] | None = None
) -> list[dt.date]:
    return list(day_counts(connection, index, query))


def month_item_rows(
    connection: Connection,
    index: str,
    first: dt.date,
    last: dt.date,
    except_day: dt.date | None = None,
) -> pl.DataFrame:
    """Item deltas of [first, last] summed per site, item, level, owner and visitor country,
    with the last day each was seen (the compatibility set's monthly documents); one composite
    aggregation per site, so each page scans one site's documents rather than the month's.

    `except_day` leaves out a day the caller holds in memory: the day being written, whose
    documents need not be searchable yet (and on the 1st nothing is left to read)."""
    dates = {"range": {"date": {"gte": first.isoformat(), "lte": last.isoformat()}}}
    filters: list[dict[str, Any]] = [{"term": {"scope": "item"}}, dates]
    query: dict[str, Any] = {"filter": filters}
    if except_day is not None:
        query["must_not"] = [{"term": {"date": except_day.isoformat()}}]
    found = connection.search(
        index,
        {
            "size": 0,
            "query": {"bool": query},
            "aggs": {"sites": {"terms": {"field": "site_id", "size": 65_535}}},
        },
    )
    buckets = found.get("aggregations", {}).get("sites", {}).get("buckets", [])
    sources = _group_sources(["key", "level", "owner_site_id", "country"])
    aggs: dict[str, Any] = {m: {"sum": {"field": m}} for m in LA_REFERENCIA_METRICS}
    aggs["last_date"] = {"max": {"field": "date"}}

    def site_rows(site: int) -> list[dict[str, Any]]:
        site_query = {"bool": {**query, "filter": [*filters, {"term": {"site_id": site}}]}}
        rows = []
        for bucket in connection.composite(index, site_query, sources, aggs):
            row = {"site_id": site, **bucket["key"]}
            row |= {m: int(bucket[m]["value"] or 0) for m in LA_REFERENCIA_METRICS}
            row["last_date"] = int(bucket["last_date"]["value"] or 0)
            rows.append(row)
        return rows

    # Sites side by side: the node aggregates one while the client reads another's answer.
    with ThreadPoolExecutor(max_workers=connection.parallel_requests) as pool:
        rows = list(chain.from_iterable(pool.map(site_rows, sorted(b["key"] for b in buckets))))
    return pl.DataFrame(rows, schema=PERIOD_ITEM_SCHEMA, orient="row")


def _record_filters(query: RecordQuery) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = [
        {"term": {"scope": query.scope}},
        {"term": {"key": query.key}},
        {"term": {"basis": query.basis}},
        {"term": {"field": query.field}},
    ]
    if query.level is not None:
        filters.append({"term": {"level": query.level}})
    return filters


def record_sum_rows(
    connection: Connection,
    index: str,
    query: RecordQuery,
    start: dt.date,
    end: dt.date,
    by: tuple[str, ...],
) -> pl.DataFrame:
    """The store's `record_totals`: sums, or a composite aggregation paged to the end."""
    dates = {"range": {"date": {"gte": start.isoformat(), "lte": end.isoformat()}}}
    body_query = {"bool": {"filter": [*_record_filters(query), dates]}}
    sums = {c: {"sum": {"field": c}} for c in RECORD_COUNTS}
    if not by:
        result = connection.search(index, {"size": 0, "query": body_query, "aggs": sums})
        aggs = result.get("aggregations", {})
        values = {c: [int(aggs.get(c, {}).get("value") or 0)] for c in RECORD_COUNTS}
        return pl.DataFrame(values, schema=dict.fromkeys(RECORD_COUNTS, pl.Int64))
    rows = []
    for bucket in connection.composite(index, body_query, _group_sources(list(by)), sums):
        row = dict(bucket["key"])
        for column in ("date", "month"):
            if row.get(column) is not None:
                row[column] = _epoch_day(row[column])
        row |= {c: int(bucket[c]["value"] or 0) for c in RECORD_COUNTS}
        rows.append(row)
    schema = dict(empty_record_sums(by).schema)
    frame = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    return frame.sort(list(by), nulls_last=True)


def record_snapshot_rows(
    connection: Connection, index: str, query: RecordQuery, day: dt.date
) -> pl.DataFrame:
    """The store's `record_snapshot`: every matching document, paged by scroll."""
    filters = [*_record_filters(query), {"term": {"date": day.isoformat()}}]
    fields = ["level", "value", *RECORD_COUNTS]
    body = {
        "query": {"bool": {"filter": filters}},
        "_source": fields,
        "size": connection.batch_size,
    }
    rows = [
        {f: hit["_source"].get(f) for f in fields}
        for hits in connection.scroll("record snapshot", index, body)
        for hit in hits
    ]
    schema = {f: RECORD_SCHEMA[f] for f in fields}
    frame = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    return frame.sort(["level", "value"], nulls_last=True)


def subcount_sum_rows(
    connection: Connection, index: str, query: SubcountQuery, start: dt.date, end: dt.date
) -> pl.DataFrame:
    """The store's `_subcount_sums`: a composite aggregation on `value`, paged to the end."""
    filters: list[dict[str, Any]] = [
        {"term": {"scope": query.scope}},
        {"term": {"key": query.key}},
        {"term": {"field": query.field}},
        {"range": {"date": {"gte": start.isoformat(), "lte": end.isoformat()}}},
    ]
    if query.level is not None:
        filters.append({"term": {"level": query.level}})
    sums = {m: {"sum": {"field": m}} for m in METRICS}
    rows = [
        {"value": bucket["key"]["value"], **{m: int(bucket[m]["value"] or 0) for m in METRICS}}
        for bucket in connection.composite(
            index, {"bool": {"filter": filters}}, _group_sources(["value"]), sums
        )
    ]
    schema = {"value": pl.String()} | {m: pl.Int64() for m in METRICS}
    return pl.DataFrame(rows, schema=schema, orient="row")


def subcount_visitor_rows(
    connection: Connection, index: str, query: SubcountQuery, start: dt.date, end: dt.date
) -> pl.DataFrame:
    """The store's `_subcount_visitor_rows`: the `total` documents holding `visitors`, read
    as they are (one per day and level: a scroll, no aggregation, as nothing is summed)."""
    filters: list[dict[str, Any]] = [
        {"term": {"scope": query.scope}},
        {"term": {"key": query.key}},
        {"term": {"field": "total"}},
        {"exists": {"field": "visitors"}},
        {"range": {"date": {"gte": start.isoformat(), "lte": end.isoformat()}}},
    ]
    if query.level is not None:
        filters.append({"term": {"level": query.level}})
    body = {
        "query": {"bool": {"filter": filters}},
        "_source": ["date", "level", "visitors"],
        "size": connection.batch_size,
    }
    rows = [
        (
            dt.date.fromisoformat(hit["_source"]["date"]),
            hit["_source"].get("level"),
            int(hit["_source"]["visitors"]),
        )
        for hits in connection.scroll("subcount visitors", index, body)
        for hit in hits
    ]
    schema = {"date": pl.Date(), "level": pl.String(), "visitors": pl.Int64()}
    return pl.DataFrame(rows, schema=schema, orient="row")


def spike_rows(
    connection: Connection,
    index: str,
    start: dt.date,
    end: dt.date,
    owner_site_ids: tuple[int, ...] | None,
) -> pl.DataFrame:
    """The store's `_spike_rows`: the flags of [start, end], read as they are (a scroll; a
    store that never flagged anything has no index and answers no row)."""
    filters: list[dict[str, Any]] = [
        {"range": {"date": {"gte": start.isoformat(), "lte": end.isoformat()}}}
    ]
    if owner_site_ids is not None:
        filters.append({"terms": {"owner_site_id": list(owner_site_ids)}})
    body = {
        "query": {"bool": {"filter": filters}},
        "_source": list(SPIKE_SCHEMA),
        "size": min(connection.batch_size, 10_000),
    }
    exists = connection.call(
        "usage spikes index", lambda: connection.client.indices.exists(index=index)
    )
    if not exists:
        return pl.DataFrame(schema=SPIKE_SCHEMA)
    scroll = connection.scroll("usage spikes", index, body)
    rows = [hit["_source"] for hits in scroll for hit in hits]
    if not rows:
        return pl.DataFrame(schema=SPIKE_SCHEMA)
    frame = pl.DataFrame(rows, schema_overrides={"date": pl.String()}, infer_schema_length=None)
    return (
        frame.with_columns(pl.col("date").str.to_date())
        .select(list(SPIKE_SCHEMA))
        .cast(SPIKE_SCHEMA)
    )
