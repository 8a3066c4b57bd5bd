"""The OpenSearch stats store: production indices behind aliases.

- Deltas go to yearly indices `<prefix>-deltas-<YYYY>`, snapshots to monthly indices
  `<prefix>-snapshots-<YYYY-MM>` (a snapshot holds every key every day, so they grow fastest);
  aliases `<prefix>-deltas` / `<prefix>-snapshots` are what readers query.
- The LA Referencia compatibility set `usage-stats-<idsite>`
  (`usage_stats.storage.lareferencia_index`) is written next to them, in the original
  processor's layout, so that the original service and its widgets read our figures
  unchanged: one index per site where the usage happened, one document per site, item and
  day (or month: `compat_granularity`). It needs the source registry (`sources`) for each
  item's country and owner; a store given none writes no compatibility set.

Requests and their retries are `client`'s, documents and templates `writes`', query bodies
`queries`'; this class says which index each table lives in and in what order a day is
written.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

import polars as pl
from opensearchpy import OpenSearch

from usage_stats.admin.sources import Source
from usage_stats.pipeline.metrics import METRICS
from usage_stats.pipeline.spikes import spike_frame
from usage_stats.storage import lareferencia_index as compat
from usage_stats.storage.opensearch import queries, stored_days, writes
from usage_stats.storage.opensearch.client import Connection
from usage_stats.storage.store import (
    RECORD_TABLES,
    STORE_TABLES,
    USAGE_SUBCOUNT_TABLES,
    DayWrite,
    RecordQuery,
    RowFilter,
    StatsStore,
    StatsStoreError,
    SubcountQuery,
    alias_frame,
    check_groups,
    checked_metrics,
    day_frames,
    metadata_frame,
    metadata_schema,
    record_day_frames,
    subcount_day_frames,
)

COMPAT_PREFIX = "usage-stats"
# The most hits one search returns (`index.max_result_window`, OpenSearch's default)
_MAX_HITS = 10_000
# Index creations in flight at once: the node applies them one by one but acknowledges each
# only once its shard has started, which several requests can wait for together.
_CREATING = 4


@dataclass
class OpenSearchStatsStore(StatsStore):
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
    # Copies of each shard on other nodes (0 on a single node: a replica is never assigned
    # there and the cluster stays yellow; 1 on a cluster of two nodes or more, so that one node
    # lost loses no data and reads go on) and primary shards of each index of ours (1 unless an
    # index grows past tens of GB; top-N lists are then OpenSearch's per-shard approximation).
    # Replicas also apply to existing indices at the next write; shards only to new indices.
    replicas: int = 0
    shards: int = 1
    timeout_seconds: float = 60.0
    # Called after every successful bulk batch; the fault tests use it to stop the server
    # mid-write, operators could use it for progress.
    on_batch: Callable[[int], None] | None = None
    _connection: Connection | None = field(default=None, repr=False)
    # `data_version` is a request to the node: the web cache asks it at most this often.
    version_check_seconds: ClassVar[float] = 1.0
    _templates_ready: bool = field(default=False, repr=False)
    # Indices this store has seen with their copies in place (`_ensure_indices`).
    _ready_indices: set[str] = field(default_factory=set, repr=False)
    _stored_days_ready: bool = field(default=False, repr=False)
    # How long a new index's shards are given to start all their copies before its first
    # document (a node that does not take its replica within this goes on without it).
    copies_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.compat_granularity not in compat.GRANULARITIES:
            raise ValueError(
                f"compat_granularity must be one of {compat.GRANULARITIES}, "
                f"not {self.compat_granularity!r}"
            )
        # The original service reads the regional network from `<compat_prefix>-*`: none of
        # our own indices may match it when the set is written (the compatibility set under
        # `<prefix>-compat`, as the tests keep it, is fine: `delete_all` then drops both).
        ours = [
            f"{self.prefix}-{name}"
            for name in (
                "deltas",
                "snapshots",
                "titles",
                "item-metadata",
                "item-aliases",
                "record-deltas",
                "record-snapshots",
                "usage-subcount-deltas",
                "usage-subcount-snapshots",
                "usage-spikes",
                "stored-days",
            )
        ]
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

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = Connection(
                self.url,
                timeout_seconds=self.timeout_seconds,
                max_retries=self.max_retries,
                backoff_seconds=self.backoff_seconds,
                batch_size=self.batch_size,
                parallel_requests=self.parallel_requests,
            )
        return self._connection

    @property
    def client(self) -> OpenSearch:
        """The underlying opensearch-py client (for operators' and tests' own requests)."""
        return self.connection.client

    def alias(self, table: str) -> str:
        return f"{self.prefix}-{'deltas' if table == 'usage_deltas' else 'snapshots'}"

    def record_alias(self, table: str) -> str:
        """Record statistics' aliases: `<prefix>-record-deltas` / `<prefix>-record-snapshots`,
        over yearly delta and monthly snapshot indices, as usage."""
        if table not in RECORD_TABLES:
            raise ValueError(f"unknown record table {table!r}")
        return f"{self.prefix}-{table.replace('_', '-')}"

    def subcount_alias(self, table: str) -> str:
        """Usage subcounts' aliases: `<prefix>-usage-subcount-deltas` / `-snapshots`, over
        yearly delta and monthly snapshot indices, as usage."""
        if table not in USAGE_SUBCOUNT_TABLES:
            raise ValueError(f"unknown subcount table {table!r}")
        return f"{self.prefix}-{table.replace('_', '-')}"

    def subcount_index_for(self, table: str, day: dt.date) -> str:
        if table == "usage_subcount_deltas":
            return f"{self.subcount_alias(table)}-{day.year}"
        return f"{self.subcount_alias(table)}-{day.year}-{day.month:02d}"

    def record_index_for(self, table: str, day: dt.date) -> str:
        if table == "record_deltas":
            return f"{self.record_alias(table)}-{day.year}"
        return f"{self.record_alias(table)}-{day.year}-{day.month:02d}"

    def index_for(self, table: str, day: dt.date) -> str:
        if table == "usage_deltas":
            return f"{self.prefix}-deltas-{day.year}"
        return f"{self.prefix}-snapshots-{day.year}-{day.month:02d}"

    def titles_index(self) -> str:
        return f"{self.prefix}-titles"

    def metadata_index(self) -> str:
        return f"{self.prefix}-item-metadata"

    def spikes_index(self) -> str:
        """Usage spikes: one small index (a few flags a day), documents by date, scope, key."""
        return f"{self.prefix}-usage-spikes"

    def aliases_index(self) -> str:
        return f"{self.prefix}-item-aliases"

    def stored_days_alias(self) -> str:
        """One document per table and stored day, written once the day's documents are all
        in: `days()` and its record and subcount kin read it instead of aggregating every
        snapshot document (a year of sparse snapshots is ~10^8 of them, and the web asks
        on every health check and cumulative series). An alias over one index, so a store
        from before it reads its snapshots until the registry is whole (see
        `_ensure_stored_days`)."""
        return f"{self.prefix}-stored-days"

    # --- setup ----------------------------------------------------------------------------

    def ensure_templates(self) -> None:
        if self._templates_ready:
            return
        con = self.connection
        for table in STORE_TABLES:
            alias = self.alias(table)
            body = writes.index_template(alias, self.replicas, shards=self.shards)
            con.call(
                "index template",
                lambda a=alias, b=body: con.client.indices.put_index_template(name=a, body=b),
            )
        for table in RECORD_TABLES:
            alias = self.record_alias(table)
            body = writes.index_template(
                alias, self.replicas, writes.record_mappings(), shards=self.shards
            )
            con.call(
                "index template",
                lambda a=alias, b=body: con.client.indices.put_index_template(name=a, body=b),
            )
            # Indices created before the template gained fields (files, data volume) get them
            # too: adding a field to a strict mapping is allowed, documents already indexed
            # simply lack it (they sum as 0 until their day is written again).
            fields = {"properties": writes.record_mappings()["properties"]}
            con.call(
                "record mappings",
                lambda a=alias, f=fields: con.client.indices.put_mapping(
                    index=f"{a}-*", body=f, allow_no_indices=True, ignore_unavailable=True
                ),
            )
        for table in USAGE_SUBCOUNT_TABLES:
            alias = self.subcount_alias(table)
            body = writes.index_template(
                alias, self.replicas, writes.subcount_mappings(), shards=self.shards
            )
            con.call(
                "index template",
                lambda a=alias, b=body: con.client.indices.put_index_template(name=a, body=b),
            )
            # indices from before unique visitors: the (strict) mapping gains the field
            con.call(
                "subcount visitors mapping",
                lambda a=alias: con.client.indices.put_mapping(
                    index=f"{a}-*",
                    body={"properties": writes.VISITOR_MAPPING},
                    allow_no_indices=True,
                    ignore_unavailable=True,
                ),
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
            con.call(
                "index template",
                lambda: con.client.indices.put_index_template(
                    name=self.compat_prefix, body=template
                ),
            )
        # Indices that exist already take the replicas set now (their shards stay).
        patterns = [f"{self.prefix}-*"] + (
            [f"{self.compat_prefix}-*"] if self.sources is not None else []
        )
        con.call(
            "replica settings",
            lambda: con.client.indices.put_settings(
                index=",".join(patterns),
                body={"index": {"number_of_replicas": self.replicas}},
                allow_no_indices=True,
                ignore_unavailable=True,
            ),
        )
        self._templates_ready = True

    def _check_compat_layout(self) -> None:
        """Refuse to write next to compatibility indices of another layout or granularity:
        daily and monthly documents in one set would be counted twice by every widget."""
        con = self.connection
        existing = con.call(
            "compatibility index mappings",
            lambda: con.client.indices.get_mapping(
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

    def data_version(self) -> tuple | None:
        """The store's indices' counters: documents, indexing and deletion totals and the
        refreshes that made writes visible (`_stats`, one request of a few milliseconds, no
        change to the writers). Any write a reader can see has been refreshed, so it changes
        the token; a node restart resets the counters, which changes it too. The web cache
        asks this at most every second (`web/cache.py`). None when the node cannot be asked:
        then nothing is served from the cache."""
        try:
            stats = self.client.indices.stats(
                index=f"{self.prefix}-*",
                metric="docs,indexing,refresh",
                filter_path="_all.primaries,_shards.total",
                params={"ignore_unavailable": "true", "allow_no_indices": "true"},
            )
        except Exception:  # an outage: the cache is bypassed, the query reports it
            return None
        primaries = stats.get("_all", {}).get("primaries", {})
        docs = primaries.get("docs", {})
        indexing = primaries.get("indexing", {})
        refresh = primaries.get("refresh", {})
        return (
            stats.get("_shards", {}).get("total"),
            docs.get("count"),
            docs.get("deleted"),
            indexing.get("index_total"),
            indexing.get("delete_total"),
            refresh.get("total"),
            refresh.get("external_total"),
        )

    def delete_all(self) -> None:
        """Drop every index and template of this store and its compatibility set."""
        con = self.connection
        for pattern in (f"{self.prefix}-*", f"{self.compat_prefix}-*"):
            con.call(
                "delete",
                lambda p=pattern: con.client.indices.delete(
                    index=p, ignore_unavailable=True, allow_no_indices=True
                ),
            )
        for name in (
            self.alias("usage_deltas"),
            self.alias("usage_snapshots"),
            *(self.record_alias(t) for t in RECORD_TABLES),
            *(self.subcount_alias(t) for t in USAGE_SUBCOUNT_TABLES),
            self.compat_prefix,
        ):
            con.call(
                "delete template",
                lambda n=name: con.client.indices.delete_index_template(name=n, ignore=[404]),
            )
        self._templates_ready = False
        self._ready_indices.clear()
        self._stored_days_ready = False

    def _day_tables(self) -> dict[str, str]:
        """The tables whose days are listed, and the alias of each one's documents."""
        return {
            "usage_snapshots": self.alias("usage_snapshots"),
            "record_snapshots": self.record_alias("record_snapshots"),
            "usage_subcount_snapshots": self.subcount_alias("usage_subcount_snapshots"),
        }

    def _register_day(self, table: str, day: dt.date, rows: int) -> None:
        """The last step of a day's write: the day is listed (or, with no rows, unlisted)."""
        alias = self.stored_days_alias()
        if not self._stored_days_ready:
            body = stored_days.index_body(self.replicas, self.shards)
            stored_days.ensure(
                self.connection,
                alias,
                self._day_tables(),
                body,
                lambda index: self._ensure_indices([index]),
            )
            self._stored_days_ready = True
        stored_days.register(self.connection, alias, table, day, rows)

    def _listed_days(self, table: str) -> list[dt.date]:
        """The registry's days of `table`, or, with no registry yet (a store from before it),
        the days its documents hold."""
        con, alias = self.connection, self.stored_days_alias()
        if not self._stored_days_ready:
            # once there, the registry stays until `delete_all`, which resets this
            self._stored_days_ready = stored_days.exists(con, alias)
        if self._stored_days_ready:
            return stored_days.registered(con, alias, table)
        return queries.stored_days(con, self._day_tables()[table])

    def _ensure_indices(self, names: list[str]) -> None:
        """Create the indices a write goes to before its first document, and wait (bounded)
        until every shard has all the copies the cluster's data nodes can hold. An index that
        a bulk request creates takes documents while its replicas are still initialising, and
        a node lost at that moment takes with it the only started copy of the primaries it
        held: the shard stays red and the day's write fails (or, worse, its documents are
        gone). With a node already down, the wait is for the copies the rest can hold."""
        missing = [name for name in dict.fromkeys(names) if name not in self._ready_indices]
        if not missing:
            return
        con = self.connection
        health = con.call(
            "cluster health",
            lambda: con.client.cluster.health(filter_path="number_of_data_nodes"),
        )
        nodes = int(health.get("number_of_data_nodes", 1))

        def create(index: str) -> None:
            # 400: it exists (an earlier day of the period, or another writer): the wait below
            # still covers its copies.
            con.call("index creation", lambda: con.client.indices.create(index=index, ignore=400))

        with ThreadPoolExecutor(max_workers=_CREATING) as pool:
            list(pool.map(create, missing))
        # green: every copy of these indices is started; yellow: their primaries are. A
        # timed-out wait answers 408 with the health as it is: the write goes on then (a node
        # lost meanwhile), with the copies there are.
        status = "green" if self.replicas + 1 <= nodes else "yellow"
        timeout = f"{max(1, round(self.copies_timeout_seconds))}s"
        for start in range(0, len(missing), 50):  # URLs of a bounded length
            part = ",".join(missing[start : start + 50])
            con.call(
                "waiting for shard copies",
                lambda p=part: con.client.cluster.health(
                    index=p,
                    wait_for_status=status,
                    # the server's wait; without `request_timeout` the client took it as its own
                    timeout=timeout,
                    request_timeout=self.copies_timeout_seconds + self.timeout_seconds,
                    ignore=408,
                ),
            )
        self._ready_indices.update(missing)

    # --- writing --------------------------------------------------------------------------

    def replace_day(
        self,
        day: dt.date,
        deltas: pl.DataFrame,
        snapshot: pl.DataFrame,
        *,
        period_items: pl.DataFrame | None = None,
    ) -> DayWrite:
        deltas, snapshot = day_frames(day, deltas, snapshot)
        self.ensure_templates()
        con = self.connection
        write_id = uuid.uuid4().hex
        # Both tables in one stream of requests: the node never waits between them.
        tables = (("usage_deltas", deltas), ("usage_snapshots", snapshot))
        lines = pl.concat(
            [
                writes.bulk_lines(
                    frame.with_columns(pl.col("date").cast(pl.String)),
                    self.index_for(table, day),
                    frame.select(writes.row_key_ids()).to_series(),
                    write_id,
                )
                for table, frame in tables
            ]
        )
        self._ensure_indices([self.index_for(table, day) for table, _ in tables])
        con.bulk(lines, f"indexing deltas and snapshots of {day}", self.on_batch)
        con.refresh(",".join(self.index_for(table, day) for table, _ in tables))
        for table, _ in tables:
            writes.delete_stale(con, self.alias(table), day, write_id)
        self._replace_compat(day, deltas, period_items)
        for table, frame in tables:
            stored = self.row_count(table, day)
            if stored != frame.height:
                raise StatsStoreError(
                    f"{self.alias(table)} for {day}: {stored} documents stored, "
                    f"{frame.height} expected"
                )
        self._register_day("usage_snapshots", day, snapshot.height)
        return DayWrite(day, deltas.height, snapshot.height)

    def replace_record_day(
        self, day: dt.date, deltas: pl.DataFrame, snapshot: pl.DataFrame
    ) -> DayWrite:
        """As `replace_day`: documents by row key overwrite the day's, then the day's
        documents of other writes are removed, and the stored counts are checked."""
        deltas, snapshot = record_day_frames(day, deltas, snapshot)
        self.ensure_templates()
        con = self.connection
        write_id = uuid.uuid4().hex
        for table, frame in zip(RECORD_TABLES, (deltas, snapshot), strict=True):
            alias = self.record_alias(table)
            if frame.height:
                encoded = frame.with_columns(pl.col("date").cast(pl.String))
                ids = frame.select(writes.record_key_ids()).to_series()
                index = self.record_index_for(table, day)
                lines = writes.bulk_lines(encoded, index, ids, write_id)
                self._ensure_indices([index])
                con.bulk(lines, f"indexing {table} of {day}", self.on_batch)
            con.refresh(alias)
            writes.delete_stale(con, alias, day, write_id)
        for table, frame in zip(RECORD_TABLES, (deltas, snapshot), strict=True):
            stored = self.record_row_count(table, day)
            if stored != frame.height:
                raise StatsStoreError(
                    f"{self.record_alias(table)} for {day}: {stored} documents stored, "
                    f"{frame.height} expected"
                )
        self._register_day("record_snapshots", day, snapshot.height)
        return DayWrite(day, deltas.height, snapshot.height)

    def record_row_count(self, table: str, day: dt.date) -> int:
        alias = self.record_alias(table)
        return self.connection.count(alias, {"term": {"date": day.isoformat()}})

    def subcount_days(self) -> list[dt.date]:
        return self._listed_days("usage_subcount_snapshots")

    def record_days(self) -> list[dt.date]:
        return self._listed_days("record_snapshots")

    def _record_totals(
        self,
        query: RecordQuery,
        start: dt.date,
        end: dt.date,
        by: tuple[str, ...],
        table: str = "record_deltas",
    ) -> pl.DataFrame:
        index = self.record_alias(table)
        return queries.record_sum_rows(self.connection, index, query, start, end, by)

    def _record_snapshot(self, query: RecordQuery, day: dt.date) -> pl.DataFrame:
        index = self.record_alias("record_snapshots")
        return queries.record_snapshot_rows(self.connection, index, query, day)

    def replace_subcount_day(
        self, day: dt.date, deltas: pl.DataFrame, snapshot: pl.DataFrame
    ) -> DayWrite:
        """As `replace_record_day`: documents by row key overwrite the day's, then the day's
        documents of other writes are removed, and the stored counts are checked."""
        deltas, snapshot = subcount_day_frames(day, deltas, snapshot)
        self.ensure_templates()
        con = self.connection
        write_id = uuid.uuid4().hex
        for table, frame in zip(USAGE_SUBCOUNT_TABLES, (deltas, snapshot), strict=True):
            alias = self.subcount_alias(table)
            if frame.height:
                encoded = frame.with_columns(pl.col("date").cast(pl.String))
                ids = frame.select(writes.subcount_key_ids()).to_series()
                index = self.subcount_index_for(table, day)
                lines = writes.bulk_lines(encoded, index, ids, write_id)
                self._ensure_indices([index])
                con.bulk(lines, f"indexing {table} of {day}", self.on_batch)
            con.refresh(alias)
            writes.delete_stale(con, alias, day, write_id)
        for table, frame in zip(USAGE_SUBCOUNT_TABLES, (deltas, snapshot), strict=True):
            stored = self.subcount_row_count(table, day)
            if stored != frame.height:
                raise StatsStoreError(
                    f"{self.subcount_alias(table)} for {day}: {stored} documents stored, "
                    f"{frame.height} expected"
                )
        self._register_day("usage_subcount_snapshots", day, snapshot.height)
        return DayWrite(day, deltas.height, snapshot.height)

    def subcount_row_count(self, table: str, day: dt.date) -> int:
        alias = self.subcount_alias(table)
        return self.connection.count(alias, {"term": {"date": day.isoformat()}})

    def _subcount_visitor_rows(
        self, query: SubcountQuery, start: dt.date, end: dt.date
    ) -> pl.DataFrame:
        alias = self.subcount_alias(USAGE_SUBCOUNT_TABLES[0])
        return queries.subcount_visitor_rows(self.connection, alias, query, start, end)

    def _subcount_sums(
        self, table: str, query: SubcountQuery, start: dt.date, end: dt.date
    ) -> pl.DataFrame:
        return queries.subcount_sum_rows(
            self.connection, self.subcount_alias(table), query, start, end
        )

    def compat_period(self, day: dt.date) -> tuple[dt.date, dt.date] | None:
        if self.sources is None or self.compat_granularity == "day":
            return None
        return compat.period_of(day, self.compat_granularity)

    def _replace_compat(
        self, day: dt.date, deltas: pl.DataFrame, period_items: pl.DataFrame | None
    ) -> None:
        """Replace the compatibility documents of the period holding `day`: that day's, or in
        `month` granularity its month's, rebuilt from the month's item deltas (a pure
        function of what is stored, so re-running any day of the month is idempotent). The
        day itself is taken from `deltas`, which are now its stored deltas; the month's other
        days from `period_items` when the caller has them (the stats_index asset sums them
        from the warehouse: reading them back was a quarter of a day's indexing by the 10th),
        else by composite aggregations over this store."""
        if self.sources is None:
            return
        sources = list(self.sources() if callable(self.sources) else self.sources)
        first, last = compat.period_of(day, self.compat_granularity)
        if self.compat_granularity == "day":
            items = deltas.filter(pl.col("scope") == "item")
        else:
            if period_items is None:
                index = self.alias("usage_deltas")
                period_items = queries.month_item_rows(
                    self.connection, index, first, last, except_day=day
                )
            schema = compat.PERIOD_ITEM_SCHEMA
            earlier = period_items.select(list(schema)).cast(schema)
            items = compat.month_items(pl.concat([earlier, compat.day_item_rows(deltas)]))
        docs = compat.documents(items, compat.SiteFacts.of(sources), first)
        ids = writes.document_ids_within_limit(compat.document_ids(docs))
        docs = docs.with_columns(ids.alias("id"))
        # `write_id` is here the document's digest: what is stored with the same digest
        # needs no rewrite (most of a month on its later days), what the period holds under
        # ids the new set lacks is stale.
        docs = docs.with_columns(writes.content_digests(docs))
        pattern = f"{self.compat_prefix}-*"
        self.connection.refresh(pattern)  # an interrupted write's documents count too
        stored = writes.stored_write_ids(self.connection, pattern, first)
        changed = docs.join(stored, on=["id", "write_id"], how="anti")
        stale = stored.join(docs, on="id", how="anti")
        if not changed.is_empty():
            sites = changed.get_column("idsite").unique().sort().to_list()
            self._create_compat_indices([f"{self.compat_prefix}-{site}" for site in sites])
            index = pl.concat_str(
                pl.lit(f"{self.compat_prefix}-"), pl.col("idsite").cast(pl.String)
            )
            lines = writes.bulk_lines(changed, index, changed.get_column("id"), None)
            what = f"indexing the compatibility set of {first}"
            self.connection.bulk(lines, what, self.on_batch)
        if not stale.is_empty():
            writes.delete_documents(self.connection, stale)
        if not (changed.is_empty() and stale.is_empty()):
            self.connection.refresh(pattern)

    def _create_compat_indices(self, indices: list[str]) -> None:
        """Create the missing ones a few at a time (`_ensure_indices`): a bulk request creates
        the indices it names one after another, and each costs the node a cluster state
        update (about a hundred on the first day of a store: most of that day's time)."""
        con = self.connection
        pattern = f"{self.compat_prefix}-*"
        existing = con.call(
            "compatibility indices",
            lambda: con.client.indices.get_alias(
                index=pattern, allow_no_indices=True, ignore_unavailable=True
            ),
        )
        self._ready_indices.update(index for index in indices if index in existing)
        self._ensure_indices(indices)

    def replace_spike_day(self, day: dt.date, spikes: pl.DataFrame) -> int:
        """As `replace_record_day`: documents by (date, scope, key) overwrite the day's, the
        day's documents of earlier writes are removed, and the stored count is checked."""
        try:
            frame = spike_frame(day, spikes)
        except ValueError as exc:
            raise StatsStoreError(str(exc)) from exc
        con = self.connection
        index = self.spikes_index()
        if not con.call("usage spikes index", lambda: con.client.indices.exists(index=index)):
            body = writes.spikes_index_body(self.replicas, self.shards)
            con.call(
                "usage spikes index",
                lambda: con.client.indices.create(index=index, body=body, ignore=[400]),
            )
        write_id = uuid.uuid4().hex
        if frame.height:
            encoded = frame.with_columns(pl.col("date").cast(pl.String))
            ids = frame.select(
                pl.concat_str(
                    [pl.col("date").cast(pl.String), "scope", "key"], separator="|"
                ).alias("_id")
            ).to_series()
            lines = writes.bulk_lines(encoded, index, ids, write_id)
            con.bulk(lines, f"indexing usage spikes of {day}", self.on_batch)
        con.refresh(index)
        writes.delete_stale(con, index, day, write_id)
        stored = con.count(index, {"term": {"date": day.isoformat()}})
        if stored != frame.height:
            raise StatsStoreError(
                f"{index} for {day}: {stored} documents stored, {frame.height} expected"
            )
        return frame.height

    def _spike_rows(
        self, start: dt.date, end: dt.date, owner_site_ids: tuple[int, ...] | None
    ) -> pl.DataFrame:
        return queries.spike_rows(self.connection, self.spikes_index(), start, end, owner_site_ids)

    def record_titles(self, day: dt.date, titles: pl.DataFrame) -> int:
        frame = titles.select(
            pl.col("key").cast(pl.String), pl.col("title").cast(pl.String)
        ).filter(pl.col("key").is_not_null() & pl.col("title").is_not_null())
        if frame.is_empty():
            return 0
        con = self.connection
        index = self.titles_index()
        if not con.call("titles index", lambda: con.client.indices.exists(index=index)):
            body = writes.titles_index_body(self.replicas, self.shards)
            con.call(
                "titles index",
                lambda: con.client.indices.create(index=index, body=body, ignore=[400]),
            )
        lines = writes.title_lines(frame, index, day)
        # 409: the item has a later day's title already
        con.bulk(lines, f"titles of {day}", expected=frozenset({409}))
        con.call("refresh", lambda: con.client.indices.refresh(index=index))
        return frame.height

    def record_item_metadata(self, metadata: pl.DataFrame) -> int:
        frame = metadata_frame(metadata)
        if frame.is_empty():
            return 0
        con = self.connection
        index = self.metadata_index()
        if not con.call("item metadata index", lambda: con.client.indices.exists(index=index)):
            body = writes.metadata_index_body(self.replicas, self.shards)
            con.call(
                "item metadata index",
                lambda: con.client.indices.create(index=index, body=body, ignore=[400]),
            )
        lines = writes.metadata_lines(frame, index)
        for start in range(0, lines.len(), self.batch_size):
            body = lines.slice(start, self.batch_size).str.join("\n").item() + "\n"
            result = con.call("item metadata", lambda b=body: con.client.bulk(body=b))
            refused = [
                item["index"]
                for item in result.get("items", [])
                if item["index"].get("error") and item["index"].get("status") != 409
            ]
            if refused:
                raise StatsStoreError(
                    f"OpenSearch refused {len(refused)} item metadata record(s): "
                    f"{refused[0]['error']}"
                )
        con.call("refresh", lambda: con.client.indices.refresh(index=index))
        return frame.height

    def record_aliases(self, crosswalk: pl.DataFrame) -> int:
        """One document per alias (its id), every one carrying this write's id; once all are
        indexed and visible, the documents of earlier writes are removed (scroll + bulk
        delete, as a day's stale rows): an alias no longer in the table stops resolving, and
        a failure midway leaves the earlier table resolving as before."""
        frame = alias_frame(crosswalk)
        con = self.connection
        index = self.aliases_index()
        if not con.call("item aliases index", lambda: con.client.indices.exists(index=index)):
            body = writes.aliases_index_body(self.replicas, self.shards)
            con.call(
                "item aliases index",
                lambda: con.client.indices.create(index=index, body=body, ignore=[400]),
            )
        write_id = uuid.uuid4().hex
        if not frame.is_empty():
            lines = writes.bulk_lines(frame, index, frame.get_column("alias"), write_id)
            con.bulk(lines, "indexing item aliases", self.on_batch)
        con.refresh(index)
        writes.delete_other_writes(con, index, write_id)
        return frame.height

    def resolve_aliases(self, keys: tuple[str, ...]) -> dict[str, str]:
        """`mget` by id (ids are the aliases), in pages of `batch_size`."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        con = self.connection
        index = self.aliases_index()
        ids = writes.document_ids_within_limit(pl.Series(unique, dtype=pl.String)).to_list()
        resolved: dict[str, str] = {}
        for start in range(0, len(ids), self.batch_size):
            page = ids[start : start + self.batch_size]
            try:
                result = con.call(
                    "item aliases", lambda p=page: con.client.mget(index=index, body={"ids": p})
                )
            except StatsStoreError as exc:
                if "index_not_found" in str(exc):  # no cross-walk recorded yet
                    return {}
                raise
            for doc in result.get("docs", []):
                if doc.get("found"):
                    resolved[doc["_source"]["alias"]] = doc["_source"]["item_key"]
        return {k: resolved[k] for k in unique if k in resolved}

    def item_metadata(
        self, keys: tuple[str, ...], columns: tuple[str, ...] | None = None
    ) -> pl.DataFrame:
        """A `terms` filter on `item_key` in pages of `batch_size` keys (one document per key,
        so a page's hits are at most its keys), of the asked columns only. `mget` of the same
        ids took 170 ms for a repository's month of 900 items, the search 14: a get per id
        against one query over the keyword's terms."""
        schema = metadata_schema(columns)
        source = list(schema) if columns is not None else True
        found = self._by_key("item metadata", self.metadata_index(), "item_key", keys, source)
        return writes.metadata_documents(found, schema).sort("item_key")

    def _by_key(
        self, what: str, index: str, field: str, keys: tuple[str, ...], source: list[str] | bool
    ) -> list[dict]:
        """The `_source` of the documents whose keyword `field` is one of `keys` (one document
        per key: an index keyed by it), by `terms` filters of at most `batch_size` keys (and a
        result window); none when the index does not exist yet."""
        unique = list(dict.fromkeys(keys))
        con = self.connection
        step = min(self.batch_size, _MAX_HITS)
        found: list[dict] = []
        for start in range(0, len(unique), step):
            page = unique[start : start + step]
            body = {
                "size": len(page),
                "track_total_hits": False,
                "query": {"bool": {"filter": {"terms": {field: page}}}},
                "_source": source,
            }
            try:
                result = con.call(what, lambda b=body: con.client.search(index=index, body=b))
            except StatsStoreError as exc:
                if "index_not_found" in str(exc):  # nothing written there yet
                    return []
                raise
            found += [hit["_source"] for hit in result.get("hits", {}).get("hits", [])]
        return found

    def optimize(self) -> float:
        """Nothing to arrange: OpenSearch merges segments by itself and every query is served
        by the inverted index on scope and key."""
        return 0.0

    # --- reading --------------------------------------------------------------------------

    def titles(self, keys: tuple[str, ...]) -> dict[str, str]:
        """As `item_metadata`, by a `terms` filter (an `mget` of an item report's 960 keys
        took ~170 ms)."""
        found = self._by_key("titles", self.titles_index(), "key", keys, ["key", "title"])
        return {doc["key"]: doc["title"] for doc in found}

    def row_count(self, table: str, day: dt.date) -> int:
        if table not in STORE_TABLES:
            raise ValueError(f"unknown table {table!r}")
        return self.connection.count(self.alias(table), {"term": {"date": day.isoformat()}})

    def days(self) -> list[dt.date]:
        return self._listed_days("usage_snapshots")

    def _snapshot_history(
        self, scope: str, end: dt.date, where: tuple[RowFilter, ...]
    ) -> pl.DataFrame:
        return queries.snapshot_history(
            self.connection, self.alias("usage_snapshots"), scope, end, where
        )

    def _sums_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        where: tuple[RowFilter, ...],
        by: tuple[str, ...],
        distinct: tuple[str, ...],
        table: str = "usage_deltas",
        *,
        metrics: tuple[str, ...] = METRICS,
        counted: bool = True,
    ) -> pl.DataFrame:
        index = self.alias(table)
        return queries.sum_rows(
            self.connection, index, scope, start, end, where, by, distinct, metrics
        )

    def sum_rows(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        *,
        keys: tuple[str, ...] | None = None,
        site_ids: tuple[int, ...] | None = None,
        owner_site_ids: tuple[int, ...] | None = None,
        by: tuple[str, ...] = (),
        metrics: tuple[str, ...] = METRICS,
    ) -> list[tuple]:
        """Grouped: the composite buckets straight to tuples, no frame built from them to be
        taken apart again."""
        if not by:
            return super().sum_rows(
                scope,
                start,
                end,
                keys=keys,
                site_ids=site_ids,
                owner_site_ids=owner_site_ids,
                by=by,
                metrics=metrics,
            )
        check_groups(by)
        where = (RowFilter(keys, site_ids, owner_site_ids),)
        index = self.alias("usage_deltas")
        return queries.sum_tuples(
            self.connection, index, scope, start, end, where, by, checked_metrics(metrics)
        )

    def _top_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        metric: str,
        limit: int,
        where: tuple[RowFilter, ...],
    ) -> pl.DataFrame:
        index = self.alias("usage_deltas")
        return queries.top_keys(self.connection, index, scope, start, end, metric, limit, where)
