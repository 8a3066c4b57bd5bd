"""The DuckDB stats store: the embedded default, one local file.

DuckDB allows one writing process per file; Dagster runs of different days are separate
processes, so connections are opened per operation and a locked file is retried for a while
before the write fails with a clear message.

Reads are fast when rows of one scope and key sit together: DuckDB skips row groups (122,880
rows) and column segments by their min/max, so a query for one item reads a few of them
instead of the whole table. Sorting the whole table after every run gave that, at a cost
growing with history (14 s a night at 30 days of a 10M-event day, minutes after a year). The
tables are therefore kept as sorted *runs* instead, each a set of days whose rows were
written together, ordered by scope, key (its code, below) and date, and listed in `store_runs`:

- `replace_day` deletes the day and appends it sorted, as runs of its own (sorting one day
  costs what the day costs); the runs it came from stay sorted, only smaller;
- a day's item rows and its rollups (source, site, global: a few thousand rows) are separate
  runs, so the rollups of many large days still merge into few runs and a repository's or
  the network's year reads a few row groups even when each day's items are a run alone;
- `optimize` merges the runs smaller than `run_rows` (default four row groups) *of the open
  month* (the latest stored day's) into one sorted run. A day's stats_index run merges at
  most the month's open run and the new day, so its cost is bounded by a month of small
  rows whatever the history; a day of half `run_rows` or more is already a good run alone
  and is not merged (merging two such days rewrites a run's worth of rows every other
  night, 1–2 s at 10M-event days, to save one run of the month that `compact` rewrites
  anyway). Merging across months up to `run_rows` is `compact`'s (below): nightly, the
  rollups of 10M-event days (2,870 rows a day) grew one run for ~170 days, and re-sorting
  it cost a day's stats_index up to 1.5 s of its 3 (bench/README.md, "Store maintenance").
  A query reads about one row group or segment per run: a year of small days is a handful
  of runs, a year of million-row days is a run per day.
- DuckDB (2.0) compacts row groups emptied by deletes at each checkpoint and reuses the freed
  blocks, so re-written and merged days grow the file by about one merged run, not more.

Measured (bench/README.md, "Store maintenance"): a year of 9,000-row days is 7 runs, a day's
maintenance at most 2 s and reads 1.1-1.6× the fully sorted table; 1.5M-row days are a run
each, maintained in under 0.5 s where sorting the whole took 36-130 s at 30 days, and read
1.8-5.6× slower than sorted whole (an item's history reads a row group per day).

Coarser merges are periodic, not nightly: `compact` (the `store_compaction` job, its schedule
monthly and stopped by default; never part of stats_index) rewrites each *closed* period of
each table and part as one sorted run:

- a period (`week`, `month` by default, `year`) is closed when it ends before the period of
  the latest stored day (or a given `before`); the open one stays to the nightly merges;
- only periods of at least `run_rows` rows are rewritten: smaller ones (a month of 9,000-row
  days, a month of rollups) are merged with their neighbours into size-bounded runs, which
  read as well, by the merge of every small run that ends each `compact` (what `optimize`
  does for the open month); a compacted run being at least `run_rows`, neither merges it
  again;
- `max_run_rows` (unset: no bound) cuts a large period into runs of consecutive days of about
  that size (none below `run_rows`: a short tail joins the run before it), for a store whose
  months are too large to sort at once;
- each period is one transaction (rows read must be the rows `store_runs` lists, as in a
  merge), followed by a checkpoint, on a connection of its own: a writer or reader waiting on
  the file lock gets in between two periods. Re-running finds every closed period one run
  holding exactly its days and moves nothing; a day re-written later (`replace_day`) leaves
  its compacted run, which stays sorted, and the next `compact` rewrites that period again.
  What a rewrite leaves of the runs it took days from (each below `run_rows`) is merged at
  its end with the other small runs.

Rewriting a closed period also empties the row groups its days were first written to; DuckDB
drops emptied row groups at the checkpoint, and with them the stale min/max of the rollups
that `optimize` moved out of them (a row group keeps its statistics after a delete), which
made global and repository reads touch a row group per day. Only row groups shared with a day
outside the period keep them. Measured on 32 days of 530,000-row days (bench/README.md,
"Periodic compaction"): reads 0.9-1.5× the store sorted whole after compacting January, where
the runs read 2.1-5.0×; a global query's unskippable row groups 59 → 2; the month took 140 s
on a heavily loaded machine, and the next nightly day costs what it cost before.

**Key codes.** DuckDB's statistics keep the first 8 bytes of a string: real OAI identifiers
(`oai:repositorio.institucional.…`) share far more than that, so `key = ?` could skip no row
group and read every one (31.8 ms of CPU for an item's year where a key that differs early
took ~10). The usage tables therefore carry `key_code`, a 64-bit integer of the key, and
sort by it: its high half is a digest of the OAI namespace (`oai:<namespace>:…`; none for
other keys), so a repository's items stay together (and its owner's row groups with them),
its low half the key's last 4 bytes, where a repository's identifiers differ, so within a
repository the codes spread over the row groups' ranges. A lookup asks `key_code IN (…) AND
key IN (…)`: the code skips every row group but the item's, the key settles a shared code.
A store from before key codes is read by key alone, and its first write adds them and sorts
it once (`_prepare`).

**Shared reads** (`shared_reads=True`, what the web service uses): opening the file costs
20-30 ms, more than most queries, so a reading process keeps one read-only connection open
and gives each query a cursor of it (`_SharedReader`). DuckDB lets no process write while
another holds the file open, so a writer announces itself first: a file in
`<file>.writers/` for as long as it writes. A shared reader that sees one stops using its
connection, closes it as soon as its last query ends (a watcher thread checks every 0.2 s,
also when no request comes) and reads with a connection per operation, as before, until the
writer is gone; it also closes after `idle_seconds` without a query. A writer killed
without removing its file is recognised by its process id being gone. Every writable
connection replaces `<file>.version` when it closes (`data_version`).

`sort_fully` still rewrites everything as one run, the old nightly arrangement: it is what a
store written before `store_runs` existed gets once, at its first write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import polars as pl

from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS
from usage_stats.pipeline.records import RECORD_COUNTS, RECORD_SCHEMA, TOTAL
from usage_stats.pipeline.spikes import SPIKE_SCHEMA, spike_frame
from usage_stats.pipeline.usage_subcounts import USAGE_SUBCOUNT_SCHEMA
from usage_stats.storage.store import (
    RECORD_TABLES,
    STORE_TABLES,
    STORED_METADATA_SCHEMA,
    USAGE_SUBCOUNT_TABLES,
    CompactionReport,
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
    empty_record_sums,
    empty_sums,
    metadata_frame,
    metadata_schema,
    record_day_frames,
    subcount_day_frames,
    sums_schema,
)

if TYPE_CHECKING:
    import pyarrow as pa

_SQL_TYPES = {
    pl.Date(): "DATE",
    pl.String(): "VARCHAR",
    pl.Int32(): "INTEGER",
    pl.Int64(): "BIGINT",
}


_CREATE_TITLES = (
    "CREATE TABLE IF NOT EXISTS item_titles (key VARCHAR PRIMARY KEY, title VARCHAR NOT NULL, "
    "date DATE NOT NULL)"
)


# Harvested metadata, one row per item (`STORED_METADATA_SCHEMA`); datestamps are stored as UTC
# without a zone, so no session time zone can shift them. No primary key: `record_item_metadata`
# keeps keys unique itself, in one transaction, because DuckDB's ON CONFLICT DO UPDATE rewrites
# 50,000 rows with list columns in about 10 s, where delete-and-insert takes well under one.
_METADATA_SQL_TYPES = {
    pl.String(): "VARCHAR",
    pl.Boolean(): "BOOLEAN",
    pl.Date(): "DATE",
    pl.Int32(): "INTEGER",
    pl.Datetime("us", "UTC"): "TIMESTAMP",
    pl.List(pl.String()): "VARCHAR[]",
}
_METADATA_COLUMNS = ", ".join(STORED_METADATA_SCHEMA)
_CREATE_METADATA = (
    "CREATE TABLE IF NOT EXISTS item_metadata ("
    + ", ".join(
        f"{name} {_METADATA_SQL_TYPES[dtype]}" for name, dtype in STORED_METADATA_SCHEMA.items()
    )
    + ", key_code UBIGINT)"
)
# Sorted by the alias's key code (see "Key codes"), asked by it: DOIs, handles and URLs share
# their first bytes as OAI identifiers do (an alias asked by `alias = ?` alone read every row
# group: 25 ms of CPU at 3 million aliases, for every item widget)
_CREATE_ALIASES = (
    "CREATE TABLE IF NOT EXISTS item_aliases (alias VARCHAR, item_key VARCHAR, alias_code UBIGINT)"
)
_NAIVE_UTC = [
    name for name, dtype in STORED_METADATA_SCHEMA.items() if dtype == pl.Datetime("us", "UTC")
]


_CREATE_SPIKES = "CREATE TABLE IF NOT EXISTS usage_spikes ({})".format(
    ", ".join(
        f"{name} {'DOUBLE' if dtype == pl.Float64() else _SQL_TYPES[dtype]}"
        for name, dtype in SPIKE_SCHEMA.items()
    )
)


def _create_record_table_sql(table: str) -> str:
    columns = ", ".join(f"{name} {_SQL_TYPES[dtype]}" for name, dtype in RECORD_SCHEMA.items())
    return f"CREATE TABLE IF NOT EXISTS {table} ({columns})"


def _add_record_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Columns `RECORD_SCHEMA` gained since a record table was created (files and data
    volume), added null: the days stored before answer 0 files until re-materialised."""
    found = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_name IN ('record_deltas', 'record_snapshots')"
    ).fetchall()
    have = {(t, c) for t, c in found}
    for table in RECORD_TABLES:
        for name, dtype in RECORD_SCHEMA.items():
            if (table, name) not in have:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {_SQL_TYPES[dtype]}")


def _create_subcount_table_sql(table: str) -> str:
    columns = ", ".join(
        f"{name} {_SQL_TYPES[dtype]}" for name, dtype in USAGE_SUBCOUNT_SCHEMA.items()
    )
    return f"CREATE TABLE IF NOT EXISTS {table} ({columns})"


# Which run each part (item rows, rollups) of each day of each table belongs to, and its row
# count, so run sizes are known without scanning the tables. An empty part has no entry; a
# run id belongs to one table and part.
_CREATE_RUNS = (
    "CREATE TABLE IF NOT EXISTS store_runs (tbl VARCHAR NOT NULL, date DATE NOT NULL, "
    "part VARCHAR NOT NULL, run BIGINT NOT NULL, rows BIGINT NOT NULL)"
)
_PARTS = {"item": "scope = 'item'", "rollup": "scope <> 'item'"}
ROW_GROUP_ROWS = 122_880
# Runs below this size are merged at each `optimize`: four row groups keep a day's merge under
# a second and leave about seven runs for a year of 9,000-row days (bench/store_bench.py).
RUN_ROWS = 4 * ROW_GROUP_ROWS
# A lookup of at most this many item keys (an item and its aliases) reads its rows as stored,
# at most `LOOKUP_ROWS` of them (more: the grouped query), and sums them in Python: DuckDB's
# planning of ten aggregates and the Arrow result took 8-10 ms of an item widget's 18 (issue 16)
LOOKUP_KEYS = 16
LOOKUP_ROWS = 2048
_RUN_ORDER = "scope, key_code, key, date, site_id, level, country"
# `key_code` (see the module's docstring, "Key codes"): the high 32 bits a digest of the OAI
# namespace (MD5, which DuckDB and Python compute alike, computed once per namespace: DuckDB's
# `hash` may change between versions, and the codes are stored), the low 32 the key's last 4
# bytes, where identifiers differ (`…:123456789/1234`). Written by Polars (`with_key_codes`),
# asked by Python (`key_code`), and in SQL only for a store from before them (its one sort).
# The stored codes must be the ones the queries compute: a different definition needs a new
# column name, so that stores with the old codes get the new ones as those without any do.


def _key_code_sql(column: str) -> str:
    namespace = f"CASE WHEN {column} LIKE 'oai:%:%' THEN split_part({column}, ':', 2) ELSE '' END"
    return (
        f"((md5_number_lower({namespace}) >> 32) << 32) | "
        f"CASE WHEN {column} = '' THEN CAST(0 AS UBIGINT) "
        f"ELSE CAST('0x' || right(hex({column}), 8) AS UBIGINT) END"
    )


_KEY_CODE = _key_code_sql("key")
_CODE_ALIASES = (  # a store from before alias codes
    "CREATE OR REPLACE TABLE item_aliases AS SELECT alias, item_key, "
    f"{_key_code_sql('alias')} AS alias_code FROM item_aliases ORDER BY alias_code, alias"
)
# Harvested records are asked by the key codes of their items too, and written in their order
# (see `item_metadata`); a store from before gets the codes and that order once.
_CODE_METADATA = (
    f"CREATE OR REPLACE TABLE item_metadata AS SELECT {_METADATA_COLUMNS}, "
    f"{_key_code_sql('item_key')} AS key_code FROM item_metadata ORDER BY key_code, item_key"
)
# More item namespaces than this in one metadata read: the key codes are asked as a list only
_MAX_CODE_RANGES = 16


def key_code(key: str) -> int:
    """The key code of one key, as the queries ask for it."""
    namespace = key.split(":", 2)[1] if key.startswith("oai:") and key.count(":") >= 2 else ""
    return _high_half(namespace) | int.from_bytes(key.encode()[-4:], "big")


@functools.lru_cache(maxsize=4096)
def _high_half(namespace: str) -> int:
    """A namespace's half of its keys' codes (a repository's many keys ask it again)."""
    return (_md5_lower(namespace) >> 32) << 32


def with_key_codes(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` and its rows' key codes, vectorised: a digest per distinct namespace (a few),
    the last 4 bytes of each key by Polars. (MD5 of every key in DuckDB cost 1.1 s per
    900,000 keys.)"""
    key = pl.col("key").fill_null("")
    parts = key.str.splitn(":", 3)
    oai = (parts.struct.field("field_0") == "oai") & parts.struct.field("field_2").is_not_null()
    namespaces = frame.select(
        pl.when(oai).then(parts.struct.field("field_1")).otherwise(pl.lit("")).alias("ns"),
        key.str.tail(4)
        .str.encode("hex")
        .str.tail(8)
        .str.to_integer(base=16, strict=False)
        .fill_null(0)
        .cast(pl.UInt64)
        .alias("tail"),
    )
    if frame.is_empty():  # no namespace to map: Polars would refuse the untyped mapping
        return frame.with_columns(pl.lit(0, pl.UInt64).alias("key_code"))
    high = {name: _md5_lower(name) >> 32 for name in namespaces.get_column("ns").unique()}
    high_half = pl.col("ns").replace_strict(high, return_dtype=pl.UInt64) * (1 << 32)
    code = high_half + pl.col("tail")
    return frame.with_columns(namespaces.select(code.alias("key_code")).to_series())


def _md5_lower(text: str) -> int:
    """DuckDB's `md5_number_lower`: the digest's last 8 bytes, little-endian."""
    digest = hashlib.md5(text.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "little")


def _create_table_sql(table: str, coded: bool = True) -> str:
    """The usage table; `coded=False`: as stores before key codes had it."""
    columns = ", ".join(f"{name} {_SQL_TYPES[dtype]}" for name, dtype in DELTA_SCHEMA.items())
    return f"CREATE TABLE IF NOT EXISTS {table} ({columns}{', key_code UBIGINT' if coded else ''})"


ALL_TABLES = frozenset((*STORE_TABLES, *RECORD_TABLES, *USAGE_SUBCOUNT_TABLES)) | {
    "item_titles",
    "item_metadata",
    "item_aliases",
    "store_runs",
}


class _SharedReader:
    """One read-only connection of a process, shared by its queries (see the module's
    docstring, "Shared reads")."""

    POLL_SECONDS = 0.2

    def __init__(self, store: DuckDBStatsStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._users = 0
        self._last_used = 0.0
        self._prepared = False
        self._watcher: threading.Thread | None = None
        self.opened = 0  # connections opened, for tests and curiosity
        # which connection this thread's current cursor belongs to (`opened` at its opening;
        # None: an own connection), and the alias codes read through that connection
        self._local = threading.local()
        self._alias_codes: tuple[int, Hashable, np.ndarray] | None = None

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self._acquire()
        if con is None:  # a writer is waiting or writing: a connection of our own, as before
            self._local.connection = None
            with self.store._connect(read_only=True) as own:
                yield own
            return
        try:
            cursor = con.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
                self._local.connection = None
        finally:
            with self._lock:
                self._users -= 1
                self._last_used = time.monotonic()

    def _prepare(self) -> None:
        """Before this process's first read: a store lacking tables (new, or older than this
        code) gets them from a writable connection, while no other connection of this
        process is open (DuckDB refuses two configurations of one file in a process), so
        under the lock every reader takes first."""
        if self.store.path.exists():
            con = self.store._open(read_only=True)
            try:
                present = {
                    row[0]
                    for row in con.execute(
                        "SELECT table_name FROM information_schema.tables"
                    ).fetchall()
                }
                coded = _has_column(con, "item_aliases", "alias_code") and _has_column(
                    con, "item_metadata", "key_code"
                )
            finally:
                con.close()
            if present >= ALL_TABLES and coded:
                return
        with self.store._connect():
            pass

    def _acquire(self) -> duckdb.DuckDBPyConnection | None:
        with self._lock:
            if not self._prepared:
                self._prepare()
                self._prepared = True
        if self.store.writers_waiting():
            return None
        with self._lock:
            if self._con is None:
                try:
                    self._con = duckdb.connect(str(self.store.path), read_only=True)
                except duckdb.IOException:
                    return None  # locked by a writer that has not announced itself
                self.opened += 1
                if self._watcher is None:
                    self._watcher = threading.Thread(
                        target=self._watch, name="duckdb-shared-reader", daemon=True
                    )
                    self._watcher.start()
            self._users += 1
            self._last_used = time.monotonic()
            self._local.connection = self.opened
            return self._con

    def alias_codes(self, cursor: duckdb.DuckDBPyConnection) -> np.ndarray | None:
        """The codes of every stored alias, sorted, as this thread's current cursor of the
        shared connection sees them (`cursor`). None for an own connection.

        Most identifiers a widget asks for are no alias (an item page sends its own OAI
        key), and DuckDB's lookup of one costs ~0.6 ms even when nothing matches; a binary
        search of this array takes microseconds, so only a key whose code is stored is
        looked up. 8 bytes per alias in each reading process (40 MB for 5 million).

        Read once per connection (while it is open nobody writes, so the set cannot change
        under it), and kept by a reopened one while the data version is the one they were
        read at: a worker's connection closes after `idle_seconds` without a query, and a
        network's millions of aliases take a good part of a second to read again. A
        writer replaces the version only after closing, so a set read in between is
        newer than its version says, never older: at worst read once more."""
        generation = getattr(self._local, "connection", None)
        if generation is None:
            return None
        cached = self._alias_codes
        if cached is not None and cached[0] == generation:
            return cached[2]
        version = self.store.data_version()
        if cached is not None and cached[1] == version:
            codes = cached[2]
        else:
            codes = np.asarray(
                cursor.execute(
                    "SELECT DISTINCT alias_code FROM item_aliases WHERE alias_code IS NOT NULL "
                    "ORDER BY alias_code"
                ).fetchnumpy()["alias_code"],
                dtype=np.uint64,
            )
        with self._lock:
            if self.opened == generation:
                self._alias_codes = (generation, version, codes)
        return codes

    def _watch(self) -> None:
        """Closes the connection once unused when a writer waits or it has been idle."""
        while True:
            time.sleep(self.POLL_SECONDS)
            waiting = self.store.writers_waiting()
            with self._lock:
                if self._con is None:
                    self._watcher = None
                    return
                idle = time.monotonic() - self._last_used > self.store.idle_seconds
                if self._users == 0 and (waiting or idle):
                    self._con.close()
                    self._con = None

    def close(self) -> None:
        with self._lock:
            if self._con is not None and self._users == 0:
                self._con.close()
                self._con = None


@dataclass(frozen=True)
class DuckDBStatsStore(StatsStore):
    path: Path
    lock_timeout_seconds: float = 120.0
    run_rows: int = RUN_ROWS
    # keep one read-only connection for this process's reads (the web service)
    shared_reads: bool = False
    # a shared connection unused this long is closed
    idle_seconds: float = 30.0
    _shared: _SharedReader | None = field(default=None, init=False, repr=False, compare=False)
    # [True] once the usage tables are seen with key codes (they never lose them)
    _coded: list[bool] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.shared_reads:
            object.__setattr__(self, "_shared", _SharedReader(self))

    @property
    def writers_path(self) -> Path:
        return self.path.with_name(self.path.name + ".writers")

    def writers_waiting(self) -> bool:
        """Whether a process is writing or waiting to (its file in `writers_path`, its
        process alive). A scan of a small folder: cheap enough for every query."""
        try:
            entries = list(os.scandir(self.writers_path))
        except FileNotFoundError:
            return False
        for entry in entries:
            pid = entry.name.partition(".")[0]
            try:
                os.kill(int(pid), 0)
                return True
            except ProcessLookupError:
                Path(entry.path).unlink(missing_ok=True)  # a writer that died writing
            except (ValueError, PermissionError):
                return True
        return False

    @contextmanager
    def _announced(self) -> Iterator[None]:
        """A writer's file in `writers_path` while it connects and writes."""
        self.writers_path.mkdir(parents=True, exist_ok=True)
        mark = self.writers_path / f"{os.getpid()}.{uuid.uuid4().hex}"
        mark.touch()
        try:
            yield
        finally:
            mark.unlink(missing_ok=True)

    @contextmanager
    def _read(self, prepared: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for reading: the shared one's cursor, or one of its own (writable
        when the read needs tables an older store may lack: `prepared`)."""
        if self._shared is not None:
            with self._shared.cursor() as con:
                yield con
        else:
            with self._connect(read_only=not prepared) as con:
                yield con

    def _where(
        self,
        con: duckdb.DuckDBPyConnection,
        scope: str,
        start: dt.date,
        end: dt.date,
        where: tuple[RowFilter, ...],
    ) -> tuple[str, list]:
        """`_any_of` on this store's usage tables: by key code where they have them; a store
        from before key codes is read by key alone until its next write adds them."""
        if not self._coded and not _lacks_key_codes(con):
            self._coded.append(True)
        return _any_of(scope, start, end, where, coded=bool(self._coded))

    @contextmanager
    def _connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A reader of a store nobody has written yet opens it writable, so the tables exist and
        # an empty store answers zeros instead of a missing-table error.
        read_only = read_only and self.path.exists()
        with contextlib.ExitStack() as stack:
            if not read_only:
                stack.enter_context(self._announced())
            con = self._open(read_only)
            try:
                if not read_only:
                    self._prepare(con)
                yield con
            finally:
                con.close()
                if not read_only:
                    self._bump_version()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """A connection, waiting up to `lock_timeout_seconds` for a lock another process
        holds."""
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise StatsStoreError(f"DuckDB stats store {self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except duckdb.ConnectionException as exc:
                # This process has the file open in the other mode (a read-only reader beside
                # a writable one, as concurrent web requests do): wait until it is closed.
                if "different configuration" not in str(exc) or time.monotonic() > deadline:
                    raise StatsStoreError(f"DuckDB stats store {self.path}: {exc}") from exc
                time.sleep(0.005)

    @property
    def version_path(self) -> Path:
        """`<file>.version`: replaced after every writable connection closes (see
        `data_version`)."""
        return self.path.with_name(self.path.name + ".version")

    def _bump_version(self) -> None:
        """A new version file (new inode, new content), written aside and renamed, so a reader
        never sees it half written. After the close: a reader that sees the new version sees
        the written data. A failure here must not fail the write: the file's own size and
        time still change (see `data_version`)."""
        try:
            aside = self.version_path.with_name(f"{self.version_path.name}.{uuid.uuid4().hex}")
            aside.write_text(f"{time.time_ns()} {os.getpid()}\n")
            os.replace(aside, self.version_path)
        except OSError:
            pass

    @property
    def reads_in_process(self) -> bool:
        """With shared reads: a query is CPU in this process on a connection kept open
        (without, each opens the file: 20-30 ms of I/O)."""
        return self._shared is not None

    def data_version(self) -> tuple:
        """Two `stat` calls, a few microseconds: the version file every write replaces
        (`_bump_version`) and the database file's size and modification time (a checkpoint
        rewrites it), so a write by any process, even one that could not replace the version
        file, changes the token."""
        token: list = []
        for path in (self.version_path, self.path):
            try:
                info = path.stat()
                token.append((info.st_ino, info.st_size, info.st_mtime_ns))
            except FileNotFoundError:
                token.append(None)
        return tuple(token)

    def _prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create what is missing; a store from before `store_runs` is sorted and registered
        as one run, once (its rows were sorted by the old nightly rewrite anyway), and so is
        one from before key codes, which gets them."""
        had_runs = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'store_runs'"
        ).fetchone()[0]
        uncoded = _lacks_key_codes(con)
        for table in STORE_TABLES:
            con.execute(_create_table_sql(table))
        con.execute(_CREATE_TITLES)
        con.execute(_CREATE_METADATA)
        con.execute(_CREATE_ALIASES)
        if not _has_column(con, "item_aliases", "alias_code"):
            con.execute(_CODE_ALIASES)
        if not _has_column(con, "item_metadata", "key_code"):
            con.execute(_CODE_METADATA)
        con.execute(_CREATE_SPIKES)
        for table in RECORD_TABLES:
            con.execute(_create_record_table_sql(table))
        _add_record_columns(con)
        for table in USAGE_SUBCOUNT_TABLES:
            con.execute(_create_subcount_table_sql(table))
            # a store from before unique visitors: the column added, null on its old rows
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS visitors BIGINT")
        if had_runs and not uncoded:
            return
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(_CREATE_RUNS)
            stored = any(con.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in STORE_TABLES)
            if stored or uncoded:
                _sort_fully(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def replace_day(
        self,
        day: dt.date,
        deltas: pl.DataFrame,
        snapshot: pl.DataFrame,
        *,
        period_items: pl.DataFrame | None = None,  # no compatibility set here
    ) -> DayWrite:
        deltas, snapshot = day_frames(day, deltas, snapshot)
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for table, frame in (("usage_deltas", deltas), ("usage_snapshots", snapshot)):
                    con.execute(f"DELETE FROM {table} WHERE date = ?", [day])
                    con.register("incoming", with_key_codes(frame).to_arrow())
                    con.execute(
                        f"INSERT INTO {table} SELECT {', '.join(DELTA_SCHEMA)}, key_code "
                        f"FROM incoming ORDER BY {_RUN_ORDER}"
                    )
                    con.unregister("incoming")
                    stored = con.execute(
                        f"SELECT count(*) FROM {table} WHERE date = ?", [day]
                    ).fetchone()[0]
                    if stored != frame.height:
                        raise StatsStoreError(
                            f"{table} for {day}: {stored} rows stored, {frame.height} expected"
                        )
                    con.execute("DELETE FROM store_runs WHERE tbl = ? AND date = ?", [table, day])
                    items = int(frame.get_column("scope").eq("item").sum())
                    for part, rows in (("item", items), ("rollup", frame.height - items)):
                        if rows:
                            con.execute(
                                "INSERT INTO store_runs VALUES (?, ?, ?, ?, ?)",
                                [table, day, part, _next_run(con), rows],
                            )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return DayWrite(day, deltas.height, snapshot.height)

    def replace_record_day(
        self, day: dt.date, deltas: pl.DataFrame, snapshot: pl.DataFrame
    ) -> DayWrite:
        """Delete the day's rows of both record tables and insert the new ones in one
        transaction: readers see the old day or the new, never half."""
        deltas, snapshot = record_day_frames(day, deltas, snapshot)
        names = ", ".join(RECORD_SCHEMA)
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for table, frame in zip(RECORD_TABLES, (deltas, snapshot), strict=True):
                    con.execute(f"DELETE FROM {table} WHERE date = ?", [day])
                    con.register("incoming_records", frame.to_arrow())
                    con.execute(f"INSERT INTO {table} SELECT {names} FROM incoming_records")
                    con.unregister("incoming_records")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return DayWrite(day, deltas.height, snapshot.height)

    def record_row_count(self, table: str, day: dt.date) -> int:
        if table not in RECORD_TABLES:
            raise ValueError(f"unknown record table {table!r}")
        with self._read(prepared=True) as con:
            return con.execute(f"SELECT count(*) FROM {table} WHERE date = ?", [day]).fetchone()[0]

    def record_days(self) -> list[dt.date]:
        # Writable: a store that never saw a record day still has its (empty) tables.
        with self._read(prepared=True) as con:
            rows = con.execute("SELECT DISTINCT date FROM record_snapshots ORDER BY date")
            return [r[0] for r in rows.fetchall()]

    def _record_totals(
        self,
        query: RecordQuery,
        start: dt.date,
        end: dt.date,
        by: tuple[str, ...],
        table: str = "record_deltas",
    ) -> pl.DataFrame:
        if table not in RECORD_TABLES:
            raise ValueError(f"unknown record table {table!r}")
        month = "CAST(date_trunc('month', date) AS DATE)"
        columns = [f"{month} AS month" if c == "month" else c for c in by]
        sums = ", ".join(f"CAST(coalesce(sum({c}), 0) AS BIGINT) AS {c}" for c in RECORD_COUNTS)
        clause, params = _record_clause(query)
        sql = (
            f"SELECT {', '.join([*columns, sums])} FROM {table} "
            f"WHERE {clause} AND date BETWEEN ? AND ?"
        )
        if by:
            sql += f" GROUP BY {', '.join(by)} ORDER BY {', '.join(by)}"
        # Writable: a store that never saw a record day still has its (empty) tables.
        with self._read(prepared=True) as con:
            frame = pl.from_arrow(con.sql(sql, params=[*params, start, end]).to_arrow_table())
        assert isinstance(frame, pl.DataFrame)
        if by and frame.is_empty():
            return empty_record_sums(by)
        return frame

    def replace_subcount_day(
        self, day: dt.date, deltas: pl.DataFrame, snapshot: pl.DataFrame
    ) -> DayWrite:
        """Delete the day's rows of both subcount tables and insert the new ones in one
        transaction: readers see the old day or the new, never half."""
        deltas, snapshot = subcount_day_frames(day, deltas, snapshot)
        names = ", ".join(USAGE_SUBCOUNT_SCHEMA)
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for table, frame in zip(USAGE_SUBCOUNT_TABLES, (deltas, snapshot), strict=True):
                    con.execute(f"DELETE FROM {table} WHERE date = ?", [day])
                    con.register("incoming_subcounts", frame.to_arrow())
                    con.execute(
                        f"INSERT INTO {table} ({names}) SELECT {names} FROM incoming_subcounts"
                    )
                    con.unregister("incoming_subcounts")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return DayWrite(day, deltas.height, snapshot.height)

    def subcount_days(self) -> list[dt.date]:
        with self._read(prepared=True) as con:
            rows = con.execute("SELECT DISTINCT date FROM usage_subcount_snapshots ORDER BY date")
            return [r[0] for r in rows.fetchall()]

    def subcount_row_count(self, table: str, day: dt.date) -> int:
        if table not in USAGE_SUBCOUNT_TABLES:
            raise ValueError(f"unknown subcount table {table!r}")
        with self._read(prepared=True) as con:
            return con.execute(f"SELECT count(*) FROM {table} WHERE date = ?", [day]).fetchone()[0]

    def _subcount_sums(
        self, table: str, query: SubcountQuery, start: dt.date, end: dt.date
    ) -> pl.DataFrame:
        sums = ", ".join(f"CAST(sum({m}) AS BIGINT) AS {m}" for m in METRICS)
        clause = "scope = ? AND key = ? AND field = ? AND date BETWEEN ? AND ?"
        params: list = [query.scope, query.key, query.field, start, end]
        if query.level is not None:
            clause += " AND level = ?"
            params.append(query.level)
        # Writable: a store that never saw a subcount day still has its (empty) tables.
        with self._read(prepared=True) as con:
            frame = pl.from_arrow(
                con.sql(
                    f"SELECT value, {sums} FROM {table} WHERE {clause} GROUP BY value",
                    params=params,
                ).to_arrow_table()
            )
        assert isinstance(frame, pl.DataFrame)
        return frame

    def _subcount_visitor_rows(
        self, query: SubcountQuery, start: dt.date, end: dt.date
    ) -> pl.DataFrame:
        clause = "scope = ? AND key = ? AND field = ? AND visitors IS NOT NULL"
        clause += " AND date BETWEEN ? AND ?"
        params: list = [query.scope, query.key, TOTAL, start, end]
        if query.level is not None:
            clause += " AND level = ?"
            params.append(query.level)
        # a reader like the others (the shared connection when serving): a writable one of
        # its own waited for every read-only reader of the process to close first
        with self._read(prepared=True) as con:
            frame = pl.from_arrow(
                con.sql(
                    f"SELECT date, level, visitors FROM {USAGE_SUBCOUNT_TABLES[0]} WHERE {clause}",
                    params=params,
                ).to_arrow_table()
            )
        assert isinstance(frame, pl.DataFrame)
        return frame

    def _record_snapshot(self, query: RecordQuery, day: dt.date) -> pl.DataFrame:
        clause, params = _record_clause(query)
        counts = ", ".join(RECORD_COUNTS)
        with self._read(prepared=True) as con:
            table = con.sql(
                f"SELECT level, value, {counts} FROM record_snapshots "
                f"WHERE {clause} AND date = ? ORDER BY level NULLS LAST, value",
                params=[*params, day],
            ).to_arrow_table()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame.cast({c: RECORD_SCHEMA[c] for c in frame.columns})

    def replace_spike_day(self, day: dt.date, spikes: pl.DataFrame) -> int:
        """Delete the day's flags and insert the new ones in one transaction."""
        try:
            frame = spike_frame(day, spikes)
        except ValueError as exc:
            raise StatsStoreError(str(exc)) from exc
        names = ", ".join(SPIKE_SCHEMA)
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute("DELETE FROM usage_spikes WHERE date = ?", [day])
                if frame.height:
                    con.register("incoming_spikes", frame.to_arrow())
                    con.execute(
                        f"INSERT INTO usage_spikes ({names}) SELECT {names} FROM incoming_spikes"
                    )
                    con.unregister("incoming_spikes")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return frame.height

    def _spike_rows(
        self, start: dt.date, end: dt.date, owner_site_ids: tuple[int, ...] | None
    ) -> pl.DataFrame:
        clause, params = "date BETWEEN ? AND ?", [start, end]
        if owner_site_ids is not None:
            clause += " AND owner_site_id IN (SELECT unnest(?::INTEGER[]))"
            params.append(list(owner_site_ids))
        names = ", ".join(SPIKE_SCHEMA)
        with self._read(prepared=True) as con:
            frame = pl.from_arrow(
                con.sql(
                    f"SELECT {names} FROM usage_spikes WHERE {clause}", params=params
                ).to_arrow_table()
            )
        assert isinstance(frame, pl.DataFrame)
        return frame

    def record_titles(self, day: dt.date, titles: pl.DataFrame) -> int:
        frame = titles.select(
            pl.col("key").cast(pl.String),
            pl.col("title").cast(pl.String),
            pl.lit(day).alias("date"),
        ).filter(pl.col("key").is_not_null() & pl.col("title").is_not_null())
        if frame.is_empty():
            return 0
        with self._connect() as con:
            con.register("incoming_titles", frame.to_arrow())
            con.execute("BEGIN TRANSACTION")
            try:
                # New keys first, as a plain insert: an upsert whose batch mixes new keys with
                # known ones took DuckDB 18 s for a day's 250k titles, half of them new (the
                # same rows in two steps: 1.3 s; bench/README.md, Store maintenance).
                con.execute(
                    "INSERT INTO item_titles SELECT key, title, date FROM incoming_titles "
                    "WHERE key NOT IN (SELECT key FROM item_titles)"
                )
                # The known keys: a later (or the same) day's title replaces the stored one.
                con.execute(
                    "INSERT INTO item_titles SELECT key, title, date FROM incoming_titles "
                    "ON CONFLICT (key) DO UPDATE SET title = excluded.title, "
                    "date = excluded.date WHERE excluded.date >= item_titles.date"
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("incoming_titles")
        return frame.height

    def titles(self, keys: tuple[str, ...]) -> dict[str, str]:
        if not keys:
            return {}
        with self._read() as con:
            # a store written before titles were kept (the shared reader created the table;
            # the check costs ~3 ms of CPU, more than the lookup)
            if self._shared is None and not _has_table(con, "item_titles"):
                return {}
            # the keys as one list parameter: binding a parameter per key cost an item report
            # of 1,000 items 70-170 ms, the list 2-30 ms
            rows = con.execute(
                "SELECT key, title FROM item_titles WHERE key IN (SELECT unnest(?::VARCHAR[]))",
                [list(keys)],
            ).fetchall()
        return dict(rows)

    def record_item_metadata(self, metadata: pl.DataFrame) -> int:
        """In one transaction: delete the stored rows the incoming ones replace (an equal or
        later datestamp), then insert the incoming rows whose item has no stored row left
        (those of an older datestamp find theirs and are dropped)."""
        frame = metadata_frame(metadata).with_columns(
            pl.col(c).dt.replace_time_zone(None) for c in _NAIVE_UTC
        )
        if frame.is_empty():
            return 0
        oldest = "TIMESTAMP '-infinity'"
        with self._connect() as con:
            con.register("incoming_metadata", frame.to_arrow())
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(
                    "DELETE FROM item_metadata USING incoming_metadata i "
                    "WHERE item_metadata.item_key = i.item_key "
                    f"AND coalesce(i.datestamp, {oldest}) "
                    f">= coalesce(item_metadata.datestamp, {oldest})"
                )
                con.execute(
                    f"INSERT INTO item_metadata ({_METADATA_COLUMNS}, key_code) "
                    f"SELECT {_METADATA_COLUMNS}, {_key_code_sql('item_key')} AS key_code "
                    "FROM incoming_metadata i WHERE NOT EXISTS "
                    "(SELECT 1 FROM item_metadata m WHERE m.item_key = i.item_key) "
                    "ORDER BY key_code, item_key"
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("incoming_metadata")
        return frame.height

    def item_metadata(
        self, keys: tuple[str, ...], columns: tuple[str, ...] | None = None
    ) -> pl.DataFrame:
        """By the keys' codes, within the code range of each of their namespaces: rows are
        written in code order, so a repository's records lie together and DuckDB reads only
        the rows of those ranges. Asked by key, the lookup read every record of the store
        (its statistics keep 8 bytes of a key, which OAI identifiers share): 22 of an item
        report's ~80 ms of CPU for a month of 960 items among 89,000 records, 7 by code. Codes
        can be shared, so the rows read are kept by key."""
        schema = metadata_schema(columns)
        if not keys:
            return pl.DataFrame(schema=schema)
        wanted = list(dict.fromkeys(keys))
        with self._read() as con:
            # a store written before metadata was kept (see `titles`), or before its codes
            if self._shared is None and not _has_column(con, "item_metadata", "key_code"):
                return self._item_metadata_by_key(con, wanted, schema)
            codes = (
                # a repository's month (~1,000 keys): faster in Python than a frame's queries
                np.array([key_code(k) for k in wanted], dtype=np.uint64)
                if len(wanted) <= 4096
                else with_key_codes(pl.DataFrame({"key": wanted}, schema={"key": pl.String}))
                .get_column("key_code")
                .to_numpy()
            )
            namespaces = codes >> np.uint64(32)
            spans = [
                (int(codes[namespaces == n].min()), int(codes[namespaces == n].max()))
                for n in np.unique(namespaces)
            ]
            # the ranges only: asking for the codes too (a list of them, or a join) made
            # DuckDB bind and probe them and decode as many rows (3-5 ms more for 960 keys)
            within, params = "TRUE", []
            if len(spans) <= _MAX_CODE_RANGES:
                between = "key_code BETWEEN CAST(? AS UBIGINT) AND CAST(? AS UBIGINT)"
                within = " OR ".join([between] * len(spans))
                params = [bound for span in spans for bound in span]
            table = con.sql(
                f"SELECT {', '.join(schema)} FROM item_metadata WHERE {within}", params=params
            ).to_arrow_table()
        return _stored_metadata(table, schema, keep=wanted)

    def _item_metadata_by_key(
        self, con: duckdb.DuckDBPyConnection, wanted: list[str], schema: pl.Schema
    ) -> pl.DataFrame:
        """A store from before key codes (read-only until its next write adds them)."""
        if not _has_table(con, "item_metadata"):
            return pl.DataFrame(schema=schema)
        con.register("wanted_keys", pl.DataFrame({"item_key": wanted}).to_arrow())
        try:
            table = con.sql(
                f"SELECT {', '.join(f'm.{c}' for c in schema)} FROM item_metadata m "
                "JOIN wanted_keys w USING (item_key) ORDER BY m.item_key"
            ).to_arrow_table()
        finally:
            con.unregister("wanted_keys")
        return _stored_metadata(table, schema)

    def record_aliases(self, crosswalk: pl.DataFrame) -> int:
        """Delete everything and insert the new table in one transaction: readers see the old
        cross-walk or the new one, never a mix."""
        frame = alias_frame(crosswalk)
        coded = with_key_codes(frame.select("alias", "item_key", key="alias"))
        with self._connect() as con:
            con.register("incoming_aliases", coded.to_arrow())
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute("DELETE FROM item_aliases")
                con.execute(
                    "INSERT INTO item_aliases SELECT alias, item_key, key_code "
                    "FROM incoming_aliases ORDER BY key_code, alias"
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("incoming_aliases")
        return frame.height

    def resolve_aliases(self, keys: tuple[str, ...]) -> dict[str, str]:
        if not keys:
            return {}
        with self._read() as con:
            # the shared reader made every table exist before its first read; an own
            # connection may face a store written before the cross-walk was kept
            if self._shared is None and not _has_table(con, "item_aliases"):
                return {}
            stored = self._shared.alias_codes(con) if self._shared is not None else None
            if stored is not None:
                keys = tuple(k for k in keys if _holds(stored, key_code(k)))
                if not keys:
                    return {}
            # the shared reader's store has alias codes (its `_prepare`); an own connection
            # may face a store from before them, until its next write
            by_code = self._shared is not None or _has_column(con, "item_aliases", "alias_code")
            code = "alias_code = CAST(? AS UBIGINT) AND " if by_code else ""
            if len(keys) == 1:  # the web services' case: a plain equality, no list to unnest
                rows = con.execute(
                    f"SELECT alias, item_key FROM item_aliases WHERE {code}alias = ?",
                    [key_code(keys[0]), keys[0]] if by_code else [keys[0]],
                ).fetchall()
            else:
                rows = con.execute(  # one list parameter, as in `titles`
                    "SELECT alias, item_key FROM item_aliases "
                    "WHERE alias IN (SELECT unnest(?::VARCHAR[]))"
                    + (" AND alias_code IN (SELECT unnest(?::UBIGINT[]))" if by_code else ""),
                    [list(keys), [key_code(k) for k in keys]] if by_code else [list(keys)],
                ).fetchall()
        return dict(rows)

    def optimize(self) -> float:
        """Merge the runs smaller than `run_rows` of the open month (the month of the latest
        stored day) into one sorted run per table and part, in one transaction, then
        checkpoint (which also compacts what deletes emptied). After a one-day run that is
        the month's open run and the new day: bounded by a month of small rows, not by
        history, nor by `run_rows` (see the module docstring). A run of one day of at least
        half `run_rows` is left alone. Returns the seconds it took."""
        return self._merge_small_runs(open_month_only=True)

    def _merge_small_runs(self, *, open_month_only: bool) -> float:
        """`optimize`, or (`open_month_only=False`, `compact`'s last step) every small run
        whatever its days."""
        started = time.perf_counter()
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for table in STORE_TABLES:
                    since = dt.date.min
                    if open_month_only:
                        latest = con.execute(
                            "SELECT max(date) FROM store_runs WHERE tbl = ?", [table]
                        ).fetchone()[0]
                        since = latest.replace(day=1) if latest is not None else since
                    for part in _PARTS:
                        # A day of half a run or more stays a run alone: merging it would
                        # rewrite a run's worth of rows every other night to save one run
                        # until the month's compaction (a 10M-event day is 0.8 of a run).
                        small = [
                            run
                            for (run,) in con.execute(
                                "SELECT run FROM store_runs WHERE tbl = ? AND part = ? "
                                "GROUP BY run HAVING sum(rows) < ? "
                                "AND NOT (count(*) = 1 AND sum(rows) >= ?) "
                                "AND min(date) >= ? ORDER BY run",
                                [table, part, self.run_rows, self.run_rows // 2, since],
                            ).fetchall()
                        ]
                        if len(small) > 1:
                            _merge_runs(con, table, part, small)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("CHECKPOINT")
        return time.perf_counter() - started

    def sort_fully(self) -> float:
        """Rewrite both tables as one sorted run each: the fastest layout to read, at a cost
        growing with history (the nightly arrangement before runs; kept for comparison in
        bench/store_bench.py and for an operator who wants it). Returns the seconds it took."""
        started = time.perf_counter()
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                _sort_fully(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("CHECKPOINT")
        return time.perf_counter() - started

    def compact(
        self, period: str = "month", before: dt.date | None = None, max_run_rows: int | None = None
    ) -> CompactionReport:
        """Rewrite each closed `period` (`week`, ISO; `month`; `year`) of each table and part
        as one sorted run, when its rows are at least `run_rows` and not one run already:
        periodic maintenance, not part of stats_index (see the module docstring for the
        policy). A period is closed when it ends before `before`, by default the first day of
        the period of the latest stored day. `max_run_rows` bounds a rewritten run: a larger
        period becomes runs of consecutive days of about that size (none below `run_rows`).

        Each rewrite is one transaction on a connection of its own, followed by a checkpoint,
        so a writer or reader waiting for the file gets it between two; a period re-written
        meanwhile is planned again from `store_runs`. Idempotent: a second call finds every
        closed period compact and moves nothing."""
        if period not in _PERIODS:
            raise ValueError(f"period must be one of {', '.join(_PERIODS)}, not {period!r}")
        if max_run_rows is not None and max_run_rows < self.run_rows:
            raise ValueError(f"max_run_rows {max_run_rows} is below run_rows {self.run_rows}")
        started = time.perf_counter()
        with self._connect() as con:
            runs_before = _run_count(con)
            if before is None:
                latest = con.execute("SELECT max(date) FROM store_runs").fetchone()[0]
                before = _period_start(period, latest) if latest is not None else None
        rewritten = compact_already = moved = 0
        done: set[tuple[str, str, tuple[dt.date, ...]]] = set()
        while before is not None:
            with self._connect() as con:
                pending = [
                    chunk
                    for chunk in _compaction_plan(con, period, before, self.run_rows, max_run_rows)
                    if chunk[:3] not in done
                ]
                for table, part, days, _, compact in pending:
                    if compact:
                        done.add((table, part, days))
                        compact_already += 1
                todo = [chunk for chunk in pending if not chunk[4]]
                if not todo:
                    break
                table, part, days, rows, _ = todo[0]
                done.add((table, part, days))
                con.execute("BEGIN TRANSACTION")
                try:
                    _rewrite_days(con, table, part, list(days), rows)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("CHECKPOINT")
                rewritten += 1
                moved += rows
        # The small runs of every month, closed ones too, merged up to `run_rows` (nightly
        # `optimize` merges within the open month only), and what a rewrite left of the
        # runs it took days from (each piece below `run_rows`): so a closed month below
        # `run_rows` (a small repository's, or a month of rollups) joins its neighbours.
        self._merge_small_runs(open_month_only=False)
        with self._connect() as con:
            runs_after = _run_count(con)
        return CompactionReport(
            period=period,
            before=before,
            runs_before=runs_before,
            runs_after=runs_after,
            rewritten=rewritten,
            already_compact=compact_already,
            rows_moved=moved,
            seconds=time.perf_counter() - started,
        )

    def runs(self) -> dict[tuple[str, str], list[tuple[int, int, int]]]:
        """Per table and part (`item`, `rollup`), each run as (run, days, rows), in run order:
        how the store is arranged."""
        with self._read(prepared=True) as con:
            rows = con.execute(
                "SELECT tbl, part, run, count(*), sum(rows) FROM store_runs "
                "GROUP BY tbl, part, run ORDER BY tbl, part, run"
            ).fetchall()
        out: dict[tuple[str, str], list[tuple[int, int, int]]] = {
            (t, p): [] for t in STORE_TABLES for p in _PARTS
        }
        for table, part, run, days, count in rows:
            out[(table, part)].append((run, days, int(count)))
        return out

    def row_count(self, table: str, day: dt.date) -> int:
        if table not in STORE_TABLES:
            raise ValueError(f"unknown table {table!r}")
        with self._read() as con:
            return con.execute(f"SELECT count(*) FROM {table} WHERE date = ?", [day]).fetchone()[0]

    def days(self) -> list[dt.date]:
        with self._read() as con:
            # from the run list, a row per stored day and part: the table itself is hundreds
            # of millions of rows after a year of large days (1.3 s to scan for its dates)
            # (a store from before the run list, not written since: the table)
            sql = (
                "SELECT DISTINCT date FROM store_runs WHERE tbl = 'usage_snapshots' ORDER BY date"
                if _has_table(con, "store_runs")
                else "SELECT DISTINCT date FROM usage_snapshots ORDER BY date"
            )
            rows = con.execute(sql).fetchall()
        return [r[0] for r in rows]

    def _snapshot_history(
        self, scope: str, end: dt.date, where: tuple[RowFilter, ...]
    ) -> pl.DataFrame:
        with self._read() as con:
            clause, params = self._where(con, scope, dt.date.min, end, where)
            table = con.sql(
                f"SELECT {', '.join(DELTA_SCHEMA)} FROM usage_snapshots WHERE {clause}",
                params=params,
            ).to_arrow_table()
        return pl.from_arrow(table).cast(DELTA_SCHEMA)

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
        """Only the sums asked, and `rows` only when counted (`counted=False` and 4 of the 8
        metrics: a month of a repository's 960 items summed in ~6 instead of ~10 ms)."""
        if table not in STORE_TABLES:
            raise ValueError(f"unknown table {table!r}")
        month = "CAST(date_trunc('month', date) AS DATE)"
        columns = [f"{month} AS month" if c == "month" else c for c in by]
        if scope == "item" and table == "usage_deltas" and _is_lookup(where, by, distinct):
            with self._read() as con:
                clause, params = self._where(con, scope, start, end, where)
                found = con.execute(
                    f"SELECT {', '.join([*columns, *metrics])} FROM usage_deltas WHERE {clause} "
                    f"LIMIT {LOOKUP_ROWS + 1}",
                    params,
                ).fetchall()
            if len(found) <= LOOKUP_ROWS:
                return _summed_rows(found, by, metrics)
        with self._read() as con:
            clause, params = self._where(con, scope, start, end, where)
            sql = _sums_sql(table, clause, by, distinct, metrics, counted)
            frame = pl.from_arrow(con.sql(sql, params=params).to_arrow_table())
        if by and frame.is_empty():
            return empty_sums(by, metrics)
        return frame

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
        """The grouped query's rows as DuckDB fetches them, no Arrow table or frame between:
        a repository's month of item sums (960 rows) in ~4.0 instead of ~5.0 ms of wall
        time (bench/README.md, "Item report rows as fetched"); a few items' lookup as `sums`."""
        where = (RowFilter(keys, site_ids, owner_site_ids),)
        if not by or _is_lookup(where, by, ()):
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
        metrics = checked_metrics(metrics)
        with self._read() as con:
            clause, params = self._where(con, scope, start, end, where)
            sql = _sums_sql("usage_deltas", clause, by, (), metrics, counted=False)
            return con.execute(sql, params).fetchall()

    def _top_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        metric: str,
        limit: int,
        where: tuple[RowFilter, ...],
    ) -> pl.DataFrame:
        with self._read() as con:
            clause, params = self._where(con, scope, start, end, where)
            table = con.sql(
                f"SELECT key, CAST(sum({metric}) AS BIGINT) AS {metric} FROM usage_deltas "
                f"WHERE {clause} GROUP BY key ORDER BY {metric} DESC, key LIMIT ?",
                params=[*params, limit],
            ).to_arrow_table()
        return pl.from_arrow(table)


def _sums_sql(
    table: str,
    clause: str,
    by: tuple[str, ...],
    distinct: tuple[str, ...],
    metrics: tuple[str, ...],
    counted: bool,
) -> str:
    """The sums of `metrics` over the rows of `clause`, grouped and ordered by `by`, with
    `rows` when counted (or the distinct `distinct` combinations)."""
    month = "CAST(date_trunc('month', date) AS DATE)"
    columns = [f"{month} AS month" if c == "month" else c for c in by]
    sums = ", ".join(f"CAST(coalesce(sum({m}), 0) AS BIGINT) AS {m}" for m in metrics)
    kinds = ", ".join(month if c == "month" else c for c in distinct)
    rows = f"count(DISTINCT ({kinds}))" if distinct else "count(*)"
    rows = f', CAST({rows} AS BIGINT) AS "rows"' if counted or distinct else ""
    sql = f"SELECT {', '.join([*columns, sums])}{rows} FROM {table} WHERE {clause}"
    if by:
        sql += f" GROUP BY {', '.join(by)} ORDER BY {', '.join(by)}"
    return sql


def _is_lookup(
    where: tuple[RowFilter, ...], by: tuple[str, ...], distinct: tuple[str, ...]
) -> bool:
    """Sums of a few items (an item widget's year by day or month and level): their rows
    are summed here (`_summed_rows`), not by the query."""
    return (
        bool(where)
        and not distinct
        and all(
            f.keys is not None and f.site_ids is None and f.owner_site_ids is None for f in where
        )
        and sum(len(f.keys or ()) for f in where) <= LOOKUP_KEYS
    )


def _stored_metadata(
    table: pa.Table, schema: pl.Schema, keep: list[str] | None = None
) -> pl.DataFrame:
    """Rows of `item_metadata` as `schema` (its datestamps UTC again), those of the `keep`
    keys only, ordered by key: one lazy query (each eager step costs ~0.4 ms)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    rows = frame.lazy()
    if keep is not None:
        rows = rows.filter(pl.col("item_key").is_in(keep))
    return (
        rows.with_columns(pl.col(c).dt.replace_time_zone("UTC") for c in _NAIVE_UTC if c in schema)
        .cast(dict(schema))
        .sort("item_key")
        .collect()
    )


def _holds(codes: np.ndarray, code: int) -> bool:
    """Whether sorted `codes` hold `code`."""
    at = int(np.searchsorted(codes, np.uint64(code)))
    return at < len(codes) and int(codes[at]) == code


def _summed_rows(
    rows: list[tuple], by: tuple[str, ...], metrics: tuple[str, ...] = METRICS
) -> pl.DataFrame:
    """`rows` (the `by` columns, then `metrics`) summed per distinct `by`, with their count,
    ordered as `ORDER BY` orders them (nulls last): what the grouped query answers."""
    width = len(by)
    groups: dict[tuple, list[int]] = {}
    for row in rows:
        sums = groups.get(row[:width])
        if sums is None:
            sums = groups[row[:width]] = [0] * (len(metrics) + 1)
        for i, value in enumerate(row[width:]):
            if value:
                sums[i] += value
        sums[-1] += 1
    if not by:
        return pl.DataFrame(
            [groups.get((), [0] * (len(metrics) + 1))],
            schema=sums_schema((), metrics),
            orient="row",
        )
    ordered = sorted(groups.items(), key=lambda item: [(v is None, v) for v in item[0]])
    return pl.DataFrame(
        [(*group, *sums) for group, sums in ordered], schema=sums_schema(by, metrics), orient="row"
    )


def _lacks_key_codes(con: duckdb.DuckDBPyConnection) -> bool:
    """The usage tables exist without `key_code` (a store from before key codes)."""
    columns = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'usage_deltas'"
    ).fetchall()
    return bool(columns) and ("key_code",) not in columns


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = ? AND column_name = ?",
            [table, column],
        ).fetchall()[0][0]
    )


def _has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    # fetchall: a `fetchone` leaves the result open, and the connection refuses a `register`
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchall()[0][0]
    )


def _record_clause(query: RecordQuery) -> tuple[str, list]:
    clause = "scope = ? AND key = ? AND basis = ? AND field = ?"
    params: list = [query.scope, query.key, query.basis, query.field]
    if query.level is not None:
        clause += " AND level = ?"
        params.append(query.level)
    return clause, params


def _next_run(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT coalesce(max(run), 0) + 1 FROM store_runs").fetchone()[0]


def _merge_runs(con: duckdb.DuckDBPyConnection, table: str, part: str, runs: list[int]) -> None:
    """Rewrite `part` of the days of `runs` as one run sorted by scope, key and date, appended
    at the end of the table; refused if the rows read are not the rows the runs list (nothing
    lost or doubled). Inside the caller's transaction."""
    marks = ", ".join("?" for _ in runs)
    days = [
        d
        for (d,) in con.execute(
            f"SELECT date FROM store_runs WHERE tbl = ? AND run IN ({marks}) ORDER BY date",
            [table, *runs],
        ).fetchall()
    ]
    expected = con.execute(
        f"SELECT sum(rows) FROM store_runs WHERE tbl = ? AND run IN ({marks})", [table, *runs]
    ).fetchone()[0]
    # The range lets the scan skip row groups by their dates before testing the list.
    where = f"date BETWEEN ? AND ? AND date IN ({', '.join('?' for _ in days)}) AND {_PARTS[part]}"
    params = [days[0], days[-1], *days]
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE merging AS SELECT * FROM {table} WHERE {where}", params
    )
    read = con.execute("SELECT count(*) FROM merging").fetchone()[0]
    if read != expected:
        raise StatsStoreError(f"{table}: runs {runs} hold {read} rows, {expected} registered")
    deleted = con.execute(f"DELETE FROM {table} WHERE {where}", params).fetchone()[0]
    inserted = con.execute(
        f"INSERT INTO {table} SELECT * FROM merging ORDER BY {_RUN_ORDER}"
    ).fetchone()[0]
    con.execute("DROP TABLE merging")
    if deleted != read or inserted != read:
        raise StatsStoreError(f"{table}: merging {read} rows deleted {deleted}, wrote {inserted}")
    con.execute(
        f"UPDATE store_runs SET run = ? WHERE tbl = ? AND run IN ({marks})",
        [_next_run(con), table, *runs],
    )


# --- Compaction of closed periods (`DuckDBStatsStore.compact`) --------------------------------

_PERIODS = ("week", "month", "year")


def _period_start(period: str, day: dt.date) -> dt.date:
    if period == "week":
        return day - dt.timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def _run_count(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT count(DISTINCT (tbl, part, run)) FROM store_runs").fetchone()[0]


def _compaction_plan(
    con: duckdb.DuckDBPyConnection,
    period: str,
    before: dt.date,
    run_rows: int,
    max_run_rows: int | None,
) -> list[tuple[str, str, tuple[dt.date, ...], int, bool]]:
    """Per table and part, the closed periods of at least `run_rows` rows, each as chunks of
    consecutive stored days (one chunk unless `max_run_rows` cuts it): (table, part, days,
    rows, already one run holding exactly those days). Smaller periods are left to
    `optimize`, whose runs of `run_rows` already hold many such days; a compacted run is at
    least `run_rows`, so `optimize` never merges it again."""
    rows = con.execute(
        "SELECT tbl, part, date, run, rows FROM store_runs WHERE date < ? ORDER BY tbl, part, date",
        [before],
    ).fetchall()
    days_of_run: dict[tuple[str, str, int], set[dt.date]] = {}
    for table, part, day, run, _ in con.execute(
        "SELECT tbl, part, date, run, rows FROM store_runs"
    ).fetchall():
        days_of_run.setdefault((table, part, run), set()).add(day)
    periods: dict[tuple[str, str, dt.date], list[tuple[dt.date, int, int]]] = {}
    for table, part, day, run, count in rows:
        start = _period_start(period, day)
        periods.setdefault((table, part, start), []).append((day, run, count))
    plan = []
    for (table, part, _), days in periods.items():
        if sum(count for _, _, count in days) < run_rows:
            continue
        chunks: list[list[tuple[dt.date, int, int]]] = [[]]
        for entry in days:
            size = sum(count for _, _, count in chunks[-1])
            if max_run_rows is not None and size >= run_rows and size + entry[2] > max_run_rows:
                chunks.append([])
            chunks[-1].append(entry)
        if len(chunks) > 1 and sum(count for _, _, count in chunks[-1]) < run_rows:
            chunks[-2].extend(chunks.pop())
        for chunk in chunks:
            chunk_days = tuple(day for day, _, _ in chunk)
            chunk_runs = {run for _, run, _ in chunk}
            compact = len(chunk_runs) == 1 and days_of_run[
                (table, part, next(iter(chunk_runs)))
            ] == set(chunk_days)
            plan.append((table, part, chunk_days, sum(c for _, _, c in chunk), compact))
    return plan


def _rewrite_days(
    con: duckdb.DuckDBPyConnection, table: str, part: str, days: list[dt.date], expected: int
) -> None:
    """Rewrite `part` of `days` as one new run sorted by scope, key and date, appended at the
    end of the table; the runs they came from keep their other days, still sorted. Refused if
    the rows read are not the rows `store_runs` lists. Inside the caller's transaction."""
    registered = con.execute(
        f"SELECT coalesce(sum(rows), 0) FROM store_runs WHERE tbl = ? AND part = ? "
        f"AND date IN ({', '.join('?' for _ in days)})",
        [table, part, *days],
    ).fetchone()[0]
    where = f"date BETWEEN ? AND ? AND date IN ({', '.join('?' for _ in days)}) AND {_PARTS[part]}"
    params = [min(days), max(days), *days]
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE compacting AS SELECT * FROM {table} WHERE {where}", params
    )
    read = con.execute("SELECT count(*) FROM compacting").fetchone()[0]
    if read != registered or read != expected:
        raise StatsStoreError(
            f"{table}: {part} rows of {days[0]}..{days[-1]}: {read} read, {registered} "
            f"registered, {expected} planned"
        )
    deleted = con.execute(f"DELETE FROM {table} WHERE {where}", params).fetchone()[0]
    inserted = con.execute(
        f"INSERT INTO {table} SELECT * FROM compacting ORDER BY {_RUN_ORDER}"
    ).fetchone()[0]
    con.execute("DROP TABLE compacting")
    if deleted != read or inserted != read:
        raise StatsStoreError(
            f"{table}: compacting {read} rows deleted {deleted}, wrote {inserted}"
        )
    con.execute(
        f"UPDATE store_runs SET run = ? WHERE tbl = ? AND part = ? "
        f"AND date IN ({', '.join('?' for _ in days)})",
        [_next_run(con), table, part, *days],
    )


def _sort_fully(con: duckdb.DuckDBPyConnection) -> None:
    """Both tables rewritten sorted, each registered as one run; inside the caller's
    transaction. Tables from before key codes get them."""
    codes = "key_code" if not _lacks_key_codes(con) else f"{_KEY_CODE} AS key_code"
    for table in STORE_TABLES:
        con.execute(
            f"CREATE TABLE {table}_sorted AS SELECT {', '.join(DELTA_SCHEMA)}, {codes} "
            f"FROM {table} ORDER BY {_RUN_ORDER}"
        )
        con.execute(f"DROP TABLE {table}")
        con.execute(f"ALTER TABLE {table}_sorted RENAME TO {table}")
        con.execute("DELETE FROM store_runs WHERE tbl = ?", [table])
        for part, rows in _PARTS.items():
            con.execute(
                f"INSERT INTO store_runs SELECT ?, date, ?, ?, count(*) FROM {table} "
                f"WHERE {rows} GROUP BY date",
                [table, part, _next_run(con)],
            )


def _any_of(
    scope: str, start: dt.date, end: dt.date, where: tuple[RowFilter, ...], coded: bool = True
) -> tuple[str, list]:
    """Scope and dates, and any of the filters (each an AND of its columns; None among owners
    means no owner), as placeholders: user values travel as parameters, never as SQL. Keys
    are asked by their codes too (`coded`), which the row groups' statistics can skip by."""
    alternatives, params = [], []
    for row_filter in where:
        clauses = []
        if coded and row_filter.keys and None not in row_filter.keys:
            marks = ", ".join("CAST(? AS UBIGINT)" for _ in row_filter.keys)
            clauses.append(f"key_code IN ({marks})")
            params.extend(key_code(k) for k in row_filter.keys)
        for column, values in (
            ("key", row_filter.keys),
            ("site_id", row_filter.site_ids),
            ("owner_site_id", row_filter.owner_site_ids),
        ):
            if values is None:
                continue
            present = [v for v in values if v is not None]
            tests = [f"{column} IN ({', '.join('?' for _ in present)})"] if present else []
            if len(present) < len(values):
                tests.append(f"{column} IS NULL")
            clauses.append("(" + " OR ".join(tests) + ")" if tests else "FALSE")
            params.extend(present)
        alternatives.append("(" + (" AND ".join(clauses) or "TRUE") + ")")
    where_sql = " OR ".join(alternatives) if alternatives else "FALSE"
    return f"scope = ? AND date BETWEEN ? AND ? AND ({where_sql})", [scope, start, end, *params]
