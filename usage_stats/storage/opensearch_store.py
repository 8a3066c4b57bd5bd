"""The OpenSearch stats store: production indices behind aliases.

- Deltas go to yearly indices `<prefix>-deltas-<YYYY>`, snapshots to monthly indices
  `<prefix>-snapshots-<YYYY-MM>` (a snapshot holds every key every day, so they grow fastest);
  aliases `<prefix>-deltas` / `<prefix>-snapshots` are what readers query.
- Index templates carry explicit mappings: identifiers and codes `keyword`, `date` a date,
  counts `long`; nothing is left to dynamic mapping.
- Document ids are the row's key, so re-indexing a day overwrites the same documents; each
  write also tags its documents with a write id and finally deletes that day's documents with
  any other write id, so a day that lost keys leaves nothing stale behind.
- Bulk requests are built as NDJSON by Polars (no per-row Python) in batches of bounded size;
  429/5xx/connection errors are retried with exponential backoff, then fail with a message
  that says OpenSearch is unreachable or refusing, and where.
- The LA Referencia compatibility set `usage-stats-<idsite>`
  (`usage_stats.storage.lareferencia_index`) is written next to them, in the original
  processor's layout, so that the original service and its widgets read our figures
  unchanged: one index per site where the usage happened, one document per site, item and
  day (or month: `compat_granularity`). It needs the source registry (`sources`) for each
  item's country and owner; a store given none writes no compatibility set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import ConnectionTimeout, TransportError

from usage_stats.admin.sources import Source
from usage_stats.pipeline.metrics import DELTA_SCHEMA, LA_REFERENCIA_METRICS, METRICS
from usage_stats.storage import lareferencia_index as compat
from usage_stats.storage.store import SUM_GROUPS, DayWrite, RowFilter, StatsStoreError, day_frames

_KEYWORDS = ("scope", "key", "level", "country")
_INTEGERS = ("site_id", "owner_site_id")
_GROUPABLE = {"date", "site_id", "level", "country", "owner_site_id", "key"}
_RETRYABLE_STATUS = {429, 500, 502, 503, 504}
COMPAT_PREFIX = "usage-stats"


def _mappings() -> dict[str, Any]:
    properties: dict[str, Any] = {"date": {"type": "date", "format": "yyyy-MM-dd"}}
    properties |= {k: {"type": "keyword"} for k in _KEYWORDS}
    properties |= {k: {"type": "integer"} for k in _INTEGERS}
    properties |= {m: {"type": "long"} for m in METRICS}
    properties["write_id"] = {"type": "keyword"}
    return {"dynamic": "strict", "properties": properties}


@dataclass
class OpenSearchStatsStore:
    url: str
    prefix: str = "usagestats"
    compat_prefix: str = COMPAT_PREFIX
    # The compatibility set's documents: per site, item and "day" or "month" (the original
    # processor's two modes; its deployed widgets show monthly bars from monthly documents).
    compat_granularity: str = "month"
    # The source registry, or a callable returning it (called at every write, so a source
    # changed between runs is used by the next one). None: no compatibility set is written.
    sources: Iterable[Source] | Callable[[], Iterable[Source]] | None = None
    batch_size: int = 5_000
    parallel_requests: int = 2
    max_retries: int = 5
    backoff_seconds: float = 0.5
    replicas: int = 0
    timeout_seconds: float = 60.0
    # Called after every successful bulk batch; the fault tests use it to stop the server
    # mid-write, operators could use it for progress.
    on_batch: Callable[[int], None] | None = None
    _client: OpenSearch | None = field(default=None, repr=False)
    _templates_ready: bool = field(default=False, repr=False)
    _write_id: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.compat_granularity not in compat.GRANULARITIES:
            raise ValueError(
                f"compat_granularity must be one of {compat.GRANULARITIES}, "
                f"not {self.compat_granularity!r}"
            )
        # The original service reads the regional network from `<compat_prefix>-*`: none of
        # our own indices may match it when the set is written (the compatibility set under
        # `<prefix>-compat`, as the tests keep it, is fine: `delete_all` then drops both).
        ours = [f"{self.prefix}-{name}" for name in ("deltas", "snapshots", "titles")]
        if self.sources is not None and (
            self.prefix == self.compat_prefix
            or any(
                own.startswith(f"{self.compat_prefix}-") or self.compat_prefix.startswith(own)
                for own in ours
            )
        ):
            raise ValueError(
                f"index prefixes {self.prefix!r} and {self.compat_prefix!r} overlap: "
                f"'{self.compat_prefix}-*' would match the store's own indices"
            )

    # --- plumbing -----------------------------------------------------------------------

    @property
    def client(self) -> OpenSearch:
        if self._client is None:
            self._client = OpenSearch(
                hosts=[self.url],
                timeout=self.timeout_seconds,
                max_retries=0,
                retry_on_timeout=False,
                http_compress=False,
                pool_maxsize=max(4, self.parallel_requests + 1),
            )
        return self._client

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one request with exponential backoff on overload, 5xx and lost connections."""
        delay = self.backoff_seconds
        for attempt in range(1, self.max_retries + 1):
            try:
                return fn()
            except (OSConnectionError, ConnectionTimeout) as exc:
                last: Exception = exc
                reason = f"OpenSearch at {self.url} is unreachable"
            except TransportError as exc:
                status = exc.status_code if isinstance(exc.status_code, int) else 0
                if status not in _RETRYABLE_STATUS:
                    raise StatsStoreError(f"OpenSearch {what} failed: {exc}") from exc
                last, reason = exc, f"OpenSearch at {self.url} answered {status}"
            if attempt < self.max_retries:
                time.sleep(delay)
                delay *= 2
        raise StatsStoreError(
            f"{reason} during {what} after {self.max_retries} attempts: {last}"
        ) from last

    def alias(self, table: str) -> str:
        return f"{self.prefix}-{'deltas' if table == 'usage_deltas' else 'snapshots'}"

    def index_for(self, table: str, day: dt.date) -> str:
        if table == "usage_deltas":
            return f"{self.prefix}-deltas-{day.year}"
        return f"{self.prefix}-snapshots-{day.year}-{day.month:02d}"

    def ensure_templates(self) -> None:
        if self._templates_ready:
            return
        # Every write ends with an explicit refresh, so periodic refreshes would only slow bulk
        # indexing down.
        settings = {
            "number_of_shards": 1,
            "number_of_replicas": self.replicas,
            "refresh_interval": "30s",
        }
        for table in ("usage_deltas", "usage_snapshots"):
            alias = self.alias(table)
            body = {
                "index_patterns": [f"{alias}-*"],
                "template": {
                    "settings": settings,
                    "mappings": _mappings(),
                    "aliases": {alias: {}},
                },
                "priority": 100,
            }
            self._call(
                "index template",
                lambda a=alias, b=body: self.client.indices.put_index_template(name=a, body=b),
            )
        if self.sources is not None:
            self._check_compat_layout()
            template = {
                "index_patterns": [f"{self.compat_prefix}-*"],
                "template": {
                    "settings": compat.index_settings(self.replicas),
                    "mappings": compat.mappings(self.compat_granularity),
                },
                "priority": 90,
            }
            self._call(
                "index template",
                lambda: self.client.indices.put_index_template(
                    name=self.compat_prefix, body=template
                ),
            )
        self._templates_ready = True

    def _check_compat_layout(self) -> None:
        """Refuse to write next to compatibility indices of another layout or granularity:
        daily and monthly documents in one set would be counted twice by every widget."""
        existing = self._call(
            "compatibility index mappings",
            lambda: self.client.indices.get_mapping(
                index=f"{self.compat_prefix}-*", allow_no_indices=True, ignore_unavailable=True
            ),
        )
        expected = {"layout": compat.LAYOUT, "granularity": self.compat_granularity}
        for index, body in sorted(existing.items()):
            meta = body.get("mappings", {}).get("_meta", {})
            found = {k: meta.get(k) for k in expected}
            if found != expected:
                raise StatsStoreError(
                    f"compatibility index {index} was written with {found}, this store writes "
                    f"{expected}: delete the {self.compat_prefix}-* indices (re-running the "
                    f"days rebuilds them from the stats store) or configure the same granularity"
                )

    # --- writing --------------------------------------------------------------------------

    def _bulk_lines(self, frame: pl.DataFrame, index: str, ids: pl.Series) -> pl.Series:
        """`{"index": …}` and document lines, JSON-encoded by Polars in one vectorised pass."""
        ids = document_ids_within_limit(ids)
        documents = frame.with_columns(pl.lit(self._write_id).alias("write_id"))
        action = pl.struct(
            pl.struct(pl.lit(index).alias("_index"), pl.lit(ids).alias("_id")).alias("index")
        ).struct.json_encode()
        document = pl.struct(pl.all()).struct.json_encode()
        return documents.select(
            pl.concat_str([action, pl.lit("\n"), document]).alias("line")
        ).get_column("line")

    def _send(self, body: str, what: str) -> None:
        """One bulk request; documents refused with 429/5xx are sent again, with backoff."""
        delay = self.backoff_seconds
        for attempt in range(1, self.max_retries + 1):
            result = self._call(what, lambda b=body: self.client.bulk(body=b))
            if not result.get("errors"):
                return
            lines = body.splitlines()
            failed = [
                (i, item["index"])
                for i, item in enumerate(result["items"])
                if item["index"].get("error")
            ]
            statuses = {f.get("status") for _, f in failed}
            if not statuses <= _RETRYABLE_STATUS or attempt == self.max_retries:
                raise StatsStoreError(
                    f"OpenSearch refused {len(failed)} document(s) during {what}: "
                    f"{failed[0][1].get('error')}"
                )
            body = "\n".join(line for i, _ in failed for line in lines[2 * i : 2 * i + 2]) + "\n"
            time.sleep(delay)
            delay *= 2

    def _bulk(self, lines: pl.Series, what: str) -> int:
        """Send `lines` in batches, `parallel_requests` at a time so OpenSearch indexes one
        batch while the next is on its way."""
        written = 0
        pending: list[tuple[Future[None], int]] = []
        with ThreadPoolExecutor(max_workers=self.parallel_requests) as pool:

            def settle(done: tuple[Future[None], int]) -> None:
                nonlocal written
                done[0].result()  # re-raises the request's failure
                written += done[1]
                if self.on_batch is not None:
                    self.on_batch(written)

            try:
                for start in range(0, lines.len(), self.batch_size):
                    chunk = lines.slice(start, self.batch_size)
                    body = chunk.str.join("\n").item() + "\n"
                    pending.append((pool.submit(self._send, body, what), chunk.len()))
                    if len(pending) >= self.parallel_requests:
                        settle(pending.pop(0))
                while pending:
                    settle(pending.pop(0))
            except BaseException:
                for future, _ in pending:
                    future.cancel()
                raise
        return written

    def replace_day(self, day: dt.date, deltas: pl.DataFrame, snapshot: pl.DataFrame) -> DayWrite:
        deltas, snapshot = day_frames(day, deltas, snapshot)
        self.ensure_templates()
        self._write_id = uuid.uuid4().hex
        for table, frame in (("usage_deltas", deltas), ("usage_snapshots", snapshot)):
            encoded = frame.with_columns(pl.col("date").cast(pl.String))
            ids = frame.select(row_key_ids()).to_series()
            lines = self._bulk_lines(encoded, self.index_for(table, day), ids)
            self._bulk(lines, f"indexing {table} of {day}")
            self._call("refresh", lambda t=table: self.client.indices.refresh(index=self.alias(t)))
            self._delete_day(self.alias(table), day)
        self._replace_compat(day, deltas)
        for table, frame in (("usage_deltas", deltas), ("usage_snapshots", snapshot)):
            stored = self.row_count(table, day)
            if stored != frame.height:
                raise StatsStoreError(
                    f"{self.alias(table)} for {day}: {stored} documents stored, "
                    f"{frame.height} expected"
                )
        return DayWrite(day, deltas.height, snapshot.height)

    def _compat_sources(self) -> list[Source] | None:
        if self.sources is None:
            return None
        return list(self.sources() if callable(self.sources) else self.sources)

    def _replace_compat(self, day: dt.date, deltas: pl.DataFrame) -> None:
        """Replace the compatibility documents of the period holding `day`: that day's, or in
        `month` granularity its month's, rebuilt from the month's item deltas in this store (a
        pure function of what is stored, so re-running any day of the month is idempotent)."""
        sources = self._compat_sources()
        if sources is None:
            return
        first, last = compat.period_of(day, self.compat_granularity)
        if self.compat_granularity == "day":
            items = deltas.filter(pl.col("scope") == "item")
        else:
            items = compat.month_items(self._month_item_rows(first, last))
        docs = compat.documents(items, compat.SiteFacts.of(sources), first)
        ids = document_ids_within_limit(compat.document_ids(docs))
        docs = docs.with_columns(ids.alias("id"))
        for (site,), part in docs.partition_by("idsite", as_dict=True).items():
            index = f"{self.compat_prefix}-{site}"
            lines = self._bulk_lines(part, index, part.get_column("id"))
            self._bulk(lines, f"indexing {index} of {first}")
        pattern = f"{self.compat_prefix}-*"
        self._call(
            "refresh",
            lambda: self.client.indices.refresh(
                index=pattern, ignore_unavailable=True, allow_no_indices=True
            ),
        )
        self._delete_day(pattern, first)

    def _month_item_rows(self, first: dt.date, last: dt.date) -> pl.DataFrame:
        """Item deltas of [first, last] summed per site, item, level, owner and visitor country,
        with the last day each was seen; one composite aggregation per site, so each page scans
        one site's documents rather than the whole month's."""
        query = {
            "bool": {
                "filter": [
                    {"term": {"scope": "item"}},
                    {"range": {"date": {"gte": first.isoformat(), "lte": last.isoformat()}}},
                ]
            }
        }
        found = self._search(
            "usage_deltas",
            {
                "size": 0,
                "query": query,
                "aggs": {"sites": {"terms": {"field": "site_id", "size": 65_535}}},
            },
        )
        buckets = found.get("aggregations", {}).get("sites", {}).get("buckets", [])
        sites = [b["key"] for b in buckets]
        sources = [
            {c: {"terms": {"field": c, "missing_bucket": True}}}
            for c in ("key", "level", "owner_site_id", "country")
        ]
        aggs: dict[str, Any] = {m: {"sum": {"field": m}} for m in LA_REFERENCIA_METRICS}
        aggs["last_date"] = {"max": {"field": "date"}}
        rows = []
        for site in sorted(sites):
            filters = [*query["bool"]["filter"], {"term": {"site_id": site}}]
            site_query = {"bool": {"filter": filters}}
            for bucket in self._composite_sources("usage_deltas", site_query, sources, aggs):
                row = {"site_id": site, **bucket["key"]}
                row |= {m: int(bucket[m]["value"] or 0) for m in LA_REFERENCIA_METRICS}
                row["last_date"] = int(bucket["last_date"]["value"] or 0)
                rows.append(row)
        schema = {
            "site_id": pl.Int32(),
            "key": pl.String(),
            "level": pl.String(),
            "owner_site_id": pl.Int32(),
            "country": pl.String(),
            **{m: pl.Int64() for m in LA_REFERENCIA_METRICS},
            "last_date": pl.Int64(),
        }
        return pl.DataFrame(rows, schema=schema, orient="row")

    def _delete_day(self, index: str, day: dt.date) -> None:
        """Delete the day's documents that this write did not touch.

        Done with scroll + bulk delete rather than `_delete_by_query`, which lives in the
        reindex module that minimal distributions (and some managed services) lack.
        """
        query = {
            "bool": {
                "filter": [{"term": {"date": day.isoformat()}}],
                "must_not": [{"term": {"write_id": self._write_id}}],
            }
        }
        page = self._call(
            "search for stale documents",
            lambda: self.client.search(
                index=index,
                body={"query": query, "_source": False, "size": self.batch_size},
                scroll="2m",
                ignore_unavailable=True,
                allow_no_indices=True,
            ),
        )
        scroll_id = page.get("_scroll_id")
        try:
            while page["hits"]["hits"]:
                actions = [
                    json.dumps({"delete": {"_index": hit["_index"], "_id": hit["_id"]}})
                    for hit in page["hits"]["hits"]
                ]
                body = "\n".join(actions) + "\n"
                self._call("removal of stale documents", lambda b=body: self.client.bulk(body=b))
                page = self._call(
                    "search for stale documents",
                    lambda sid=scroll_id: self.client.scroll(scroll_id=sid, scroll="2m"),
                )
                scroll_id = page.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                self.client.clear_scroll(scroll_id=scroll_id, ignore=[404])
        self._call(
            "refresh",
            lambda: self.client.indices.refresh(
                index=index, ignore_unavailable=True, allow_no_indices=True
            ),
        )

    # --- reading --------------------------------------------------------------------------

    def _search(self, table: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            "search",
            lambda: self.client.search(
                index=self.alias(table), body=body, ignore_unavailable=True, allow_no_indices=True
            ),
        )

    def row_count(self, table: str, day: dt.date) -> int:
        if table not in ("usage_deltas", "usage_snapshots"):
            raise ValueError(f"unknown table {table!r}")
        result = self._call(
            "count",
            lambda: self.client.count(
                index=self.alias(table),
                body={"query": {"term": {"date": day.isoformat()}}},
                ignore_unavailable=True,
                allow_no_indices=True,
            ),
        )
        return int(result["count"])

    def days(self) -> list[dt.date]:
        days = [
            bucket["key"]["date"]
            for bucket in self._composite("usage_snapshots", {"match_all": {}}, ("date",), {})
        ]
        return [dt.datetime.fromtimestamp(d / 1000, dt.UTC).date() for d in days]

    def _composite(
        self, table: str, query: dict[str, Any], by: tuple[str, ...], aggs: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Buckets grouped by the fields `by` (a missing value is a bucket of its own)."""
        sources = [{c: {"terms": {"field": c, "missing_bucket": True}}} for c in by]
        return self._composite_sources(table, query, sources, aggs)

    @staticmethod
    def _range_query(scope: str, key: str | None, start: dt.date, end: dt.date) -> dict[str, Any]:
        filters: list[dict[str, Any]] = [
            {"term": {"scope": scope}},
            {"range": {"date": {"gte": start.isoformat(), "lte": end.isoformat()}}},
        ]
        if key is not None:
            filters.append({"term": {"key": key}})
        return {"bool": {"filter": filters}}

    def totals(
        self, scope: str, key: str, start: dt.date, end: dt.date, by: tuple[str, ...] = ()
    ) -> pl.DataFrame:
        unknown = set(by) - _GROUPABLE
        if unknown:
            raise ValueError(f"cannot group by {sorted(unknown)}")
        sums = {m: {"sum": {"field": m}} for m in METRICS}
        query = self._range_query(scope, key, start, end)
        if not by:
            result = self._search("usage_deltas", {"size": 0, "query": query, "aggs": sums})
            aggs = result.get("aggregations", {})
            return pl.DataFrame(
                {m: [int(aggs.get(m, {}).get("value") or 0)] for m in METRICS},
                schema={m: pl.Int64 for m in METRICS},
            )
        rows = []
        for bucket in self._composite("usage_deltas", query, by, sums):
            row = dict(bucket["key"])
            if "date" in row and row["date"] is not None:
                row["date"] = dt.datetime.fromtimestamp(row["date"] / 1000, dt.UTC).date()
            row |= {m: int(bucket[m]["value"] or 0) for m in METRICS}
            rows.append(row)
        schema = {c: DELTA_SCHEMA[c] for c in by} | {m: pl.Int64() for m in METRICS}
        frame = (
            pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
        )
        return frame.sort(list(by), nulls_last=True)

    def snapshot(self, scope: str, key: str, day: dt.date) -> pl.DataFrame:
        query = {
            "bool": {
                "filter": [
                    {"term": {"scope": scope}},
                    {"term": {"key": key}},
                    {"term": {"date": day.isoformat()}},
                ]
            }
        }
        result = self._search("usage_snapshots", {"size": 10_000, "query": query})
        rows = [hit["_source"] for hit in result["hits"]["hits"]]
        for row in rows:
            row.pop("write_id", None)
            row["date"] = dt.date.fromisoformat(row["date"])
        frame = (
            pl.DataFrame(rows, schema=DELTA_SCHEMA, orient="row")
            if rows
            else pl.DataFrame(schema=DELTA_SCHEMA)
        )
        return frame.sort(["site_id", "level", "country"], nulls_last=True)

    def top(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        metric: str,
        limit: int,
        *,
        site_ids: tuple[int, ...] | None = None,
        owner_site_ids: tuple[int, ...] | None = None,
    ) -> pl.DataFrame:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}")
        body = {
            "size": 0,
            "query": _filter_query(scope, start, end, None, site_ids, owner_site_ids),
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
        buckets = (
            self._search("usage_deltas", body)
            .get("aggregations", {})
            .get("top", {})
            .get("buckets", [])
        )
        return pl.DataFrame(
            [(b["key"], int(b["total"]["value"])) for b in buckets],
            schema={"key": pl.String, metric: pl.Int64},
            orient="row",
        )

    def sums(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        *,
        keys: tuple[str, ...] | None = None,
        site_ids: tuple[int, ...] | None = None,
        owner_site_ids: tuple[int, ...] | None = None,
        by: tuple[str, ...] = (),
    ) -> pl.DataFrame:
        unknown = set(by) - set(SUM_GROUPS)
        if unknown:
            raise ValueError(f"cannot group by {sorted(unknown)}")
        query = _filter_query(scope, start, end, keys, site_ids, owner_site_ids)
        sums = {m: {"sum": {"field": m}} for m in METRICS}
        if not by:
            result = self._search("usage_deltas", {"size": 0, "query": query, "aggs": sums})
            aggs = result.get("aggregations", {})
            return pl.DataFrame(
                {m: [int(aggs.get(m, {}).get("value") or 0)] for m in METRICS},
                schema={m: pl.Int64 for m in METRICS},
            )
        sources = []
        for column in by:
            if column == "month":
                source = {"date_histogram": {"field": "date", "calendar_interval": "month"}}
            else:
                source = {"terms": {"field": column, "missing_bucket": True}}
            sources.append({column: source})
        rows = []
        for bucket in self._composite_sources("usage_deltas", query, sources, sums):
            row = dict(bucket["key"])
            for column in ("date", "month"):
                if row.get(column) is not None:
                    row[column] = dt.datetime.fromtimestamp(row[column] / 1000, dt.UTC).date()
            row |= {m: int(bucket[m]["value"] or 0) for m in METRICS}
            rows.append(row)
        schema = {c: pl.Date() if c == "month" else DELTA_SCHEMA[c] for c in by}
        schema |= {m: pl.Int64() for m in METRICS}
        frame = (
            pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
        )
        return frame.sort(list(by), nulls_last=True)

    def _composite_sources(
        self, table: str, query: dict[str, Any], sources: list[dict[str, Any]], aggs: dict
    ) -> Iterator[dict[str, Any]]:
        """Every bucket of a composite aggregation, paged with `after_key` in large pages."""
        after = None
        while True:
            composite: dict[str, Any] = {"size": 10_000, "sources": sources}
            if after:
                composite["after"] = after
            body = {
                "size": 0,
                "query": query,
                "aggs": {"g": {"composite": composite, "aggs": aggs}},
            }
            agg = self._search(table, body).get("aggregations", {}).get("g")
            if not agg:
                return
            yield from agg["buckets"]
            after = agg.get("after_key")
            if not after or not agg["buckets"]:
                return

    # --- item titles ----------------------------------------------------------------------

    def titles_index(self) -> str:
        return f"{self.prefix}-titles"

    def _ensure_titles_index(self) -> None:
        index = self.titles_index()
        if self._call("titles index", lambda: self.client.indices.exists(index=index)):
            return
        body = {
            "settings": {"number_of_shards": 1, "number_of_replicas": self.replicas},
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "key": {"type": "keyword"},
                    "title": {"type": "text", "index": False},
                    "date": {"type": "date", "format": "strict_date"},
                },
            },
        }
        self._call(
            "titles index",
            lambda: self.client.indices.create(index=index, body=body, ignore=[400]),
        )

    def record_titles(self, day: dt.date, titles: pl.DataFrame) -> int:
        """One document per item; its version is the day, so an older day's title is refused
        (409, expected) and the same day's re-run replaces (external_gte)."""
        frame = titles.select(
            pl.col("key").cast(pl.String), pl.col("title").cast(pl.String)
        ).filter(pl.col("key").is_not_null() & pl.col("title").is_not_null())
        if frame.is_empty():
            return 0
        self._ensure_titles_index()
        index = self.titles_index()
        ids = document_ids_within_limit(frame.get_column("key"))
        version = day.toordinal()
        action = pl.struct(
            pl.struct(
                pl.lit(index).alias("_index"),
                pl.lit(ids).alias("_id"),
                pl.lit(version).alias("version"),
                pl.lit("external_gte").alias("version_type"),
            ).alias("index")
        ).struct.json_encode()
        document = pl.struct(
            "key", "title", pl.lit(day.isoformat()).alias("date")
        ).struct.json_encode()
        lines = frame.select(pl.concat_str([action, pl.lit("\n"), document]).alias("line"))
        lines = lines.get_column("line")
        for start in range(0, lines.len(), self.batch_size):
            body = lines.slice(start, self.batch_size).str.join("\n").item() + "\n"
            result = self._call("titles", lambda b=body: self.client.bulk(body=b))
            refused = [
                item["index"]
                for item in result.get("items", [])
                if item["index"].get("error") and item["index"].get("status") != 409
            ]
            if refused:
                raise StatsStoreError(
                    f"OpenSearch refused {len(refused)} title(s) of {day}: {refused[0]['error']}"
                )
        self._call("refresh", lambda: self.client.indices.refresh(index=index))
        return frame.height

    def titles(self, keys: tuple[str, ...]) -> dict[str, str]:
        if not keys:
            return {}
        ids = document_ids_within_limit(pl.Series(list(keys), dtype=pl.String)).to_list()
        try:
            result = self._call(
                "titles",
                lambda: self.client.mget(index=self.titles_index(), body={"ids": ids}),
            )
        except StatsStoreError as exc:
            if "index_not_found" in str(exc):  # nothing titled yet
                return {}
            raise
        return {
            doc["_source"]["key"]: doc["_source"]["title"]
            for doc in result.get("docs", [])
            if doc.get("found")
        }

    def optimize(self) -> float:
        """Nothing to arrange: OpenSearch merges segments by itself and every query is served
        by the inverted index on scope and key."""
        return 0.0

    def delete_all(self) -> None:
        """Drop every index and template of this store and its compatibility set."""
        for pattern in (f"{self.prefix}-*", f"{self.compat_prefix}-*"):
            self._call(
                "delete",
                lambda p=pattern: self.client.indices.delete(
                    index=p, ignore_unavailable=True, allow_no_indices=True
                ),
            )
        for name in (self.alias("usage_deltas"), self.alias("usage_snapshots"), self.compat_prefix):
            self._call(
                "delete template",
                lambda n=name: self.client.indices.delete_index_template(name=n, ignore=[404]),
            )
        self._templates_ready = False

    # --- reads over several row sets at once (the web services' national node) -----------

    def sums_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        where: tuple[RowFilter, ...],
        by: tuple[str, ...] = (),
        distinct: tuple[str, ...] = (),
    ) -> pl.DataFrame:
        """`sums` over the rows matching any filter of `where`, with each bucket's `rows`
        (documents, or with `distinct`, the distinct combinations of those columns: exact, by
        composite buckets of `by` + `distinct`, so it costs one bucket per combination)."""
        unknown = (set(by) | set(distinct)) - set(SUM_GROUPS)
        if unknown:
            raise ValueError(f"cannot group by {sorted(unknown)}")
        query = _where_query(scope, start, end, where)
        sums = {m: {"sum": {"field": m}} for m in METRICS}
        counts = (*METRICS, "rows")
        if not by and not distinct:
            body = {"size": 0, "query": query, "aggs": sums, "track_total_hits": True}
            result = self._search("usage_deltas", body)
            aggs = result.get("aggregations", {})
            values = {m: [int(aggs.get(m, {}).get("value") or 0)] for m in METRICS}
            values["rows"] = [int(result.get("hits", {}).get("total", {}).get("value") or 0)]
            return pl.DataFrame(values, schema={m: pl.Int64 for m in counts})
        group = list(dict.fromkeys([*by, *distinct]))
        sources = []
        for column in group:
            if column == "month":
                source = {"date_histogram": {"field": "date", "calendar_interval": "month"}}
            else:
                source = {"terms": {"field": column, "missing_bucket": True}}
            sources.append({column: source})
        rows = []
        for bucket in self._composite_sources("usage_deltas", query, sources, sums):
            row = dict(bucket["key"])
            for column in ("date", "month"):
                if row.get(column) is not None:
                    row[column] = dt.datetime.fromtimestamp(row[column] / 1000, dt.UTC).date()
            row |= {m: int(bucket[m]["value"] or 0) for m in METRICS}
            row["rows"] = int(bucket["doc_count"])
            rows.append(row)
        schema = {c: pl.Date() if c == "month" else DELTA_SCHEMA[c] for c in group}
        schema |= {m: pl.Int64() for m in counts}
        frame = (
            pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
        )
        if distinct:
            totals = [*(pl.col(m).sum() for m in METRICS), pl.len().cast(pl.Int64).alias("rows")]
            if not by:
                if frame.is_empty():
                    return pl.DataFrame(
                        {c: [0] for c in counts}, schema=dict.fromkeys(counts, pl.Int64)
                    )
                return frame.select(totals)
            frame = frame.group_by(list(by)).agg(totals).select([*by, *counts])
        return frame.sort(list(by), nulls_last=True)

    def top_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        metric: str,
        limit: int,
        where: tuple[RowFilter, ...],
    ) -> pl.DataFrame:
        """`top` over the rows matching any filter of `where`."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}")
        body = {
            "size": 0,
            "query": _where_query(scope, start, end, where),
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
        buckets = (
            self._search("usage_deltas", body)
            .get("aggregations", {})
            .get("top", {})
            .get("buckets", [])
        )
        return pl.DataFrame(
            [(b["key"], int(b["total"]["value"])) for b in buckets],
            schema={"key": pl.String, metric: pl.Int64},
            orient="row",
        )


def _filter_query(
    scope: str,
    start: dt.date,
    end: dt.date,
    keys: tuple[str, ...] | None,
    site_ids: tuple[int, ...] | None,
    owner_site_ids: tuple[int, ...] | None,
) -> dict[str, Any]:
    """Only `term`/`terms`/`range` filters: user values are compared, never parsed as syntax."""
    filters: list[dict[str, Any]] = [
        {"term": {"scope": scope}},
        {"range": {"date": {"gte": start.isoformat(), "lte": end.isoformat()}}},
    ]
    for column, values in (("key", keys), ("site_id", site_ids), ("owner_site_id", owner_site_ids)):
        if values is not None:
            filters.append({"terms": {column: list(values)}})
    return {"bool": {"filter": filters}}


def _where_query(
    scope: str, start: dt.date, end: dt.date, where: tuple[RowFilter, ...]
) -> dict[str, Any]:
    """Scope and dates, and any of the filters (each `terms` on its columns; None among the
    values: the field is absent): values only. (For `sums_where` / `top_where`.)"""
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
    filters: list[dict[str, Any]] = [
        {"term": {"scope": scope}},
        {"range": {"date": {"gte": start.isoformat(), "lte": end.isoformat()}}},
    ]
    if not alternatives:
        return {"bool": {"filter": filters, "must_not": [{"match_all": {}}]}}
    filters.append({"bool": {"should": alternatives, "minimum_should_match": 1}})
    return {"bool": {"filter": filters}}


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
