"""The DuckDB stats store: the embedded default, one local file.

DuckDB allows one writing process per file; Dagster runs of different days are separate
processes, so connections are opened per operation and a locked file is retried for a while
before the write fails with a clear message.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS
from usage_stats.pipeline.records import RECORD_COUNTS, RECORD_SCHEMA
from usage_stats.storage.store import (
    RECORD_TABLES,
    STORE_TABLES,
    STORED_METADATA_SCHEMA,
    DayWrite,
    RecordQuery,
    RowFilter,
    StatsStore,
    StatsStoreError,
    alias_frame,
    day_frames,
    empty_record_sums,
    empty_sums,
    metadata_frame,
    record_day_frames,
)

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
    + ")"
)
_CREATE_ALIASES = "CREATE TABLE IF NOT EXISTS item_aliases (alias VARCHAR, item_key VARCHAR)"
_NAIVE_UTC = [
    name for name, dtype in STORED_METADATA_SCHEMA.items() if dtype == pl.Datetime("us", "UTC")
]


def _create_record_table_sql(table: str) -> str:
    columns = ", ".join(f"{name} {_SQL_TYPES[dtype]}" for name, dtype in RECORD_SCHEMA.items())
    return f"CREATE TABLE IF NOT EXISTS {table} ({columns})"


def _create_table_sql(table: str) -> str:
    columns = ", ".join(f"{name} {_SQL_TYPES[dtype]}" for name, dtype in DELTA_SCHEMA.items())
    return f"CREATE TABLE IF NOT EXISTS {table} ({columns})"


@dataclass(frozen=True)
class DuckDBStatsStore(StatsStore):
    path: Path
    lock_timeout_seconds: float = 120.0

    @contextmanager
    def _connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.05
        # A reader of a store nobody has written yet opens it writable, so the tables exist and
        # an empty store answers zeros instead of a missing-table error.
        read_only = read_only and self.path.exists()
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise StatsStoreError(f"DuckDB stats store {self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        try:
            if not read_only:
                for table in STORE_TABLES:
                    con.execute(_create_table_sql(table))
                con.execute(_CREATE_TITLES)
                con.execute(_CREATE_METADATA)
                con.execute(_CREATE_ALIASES)
                for table in RECORD_TABLES:
                    con.execute(_create_record_table_sql(table))
            yield con
        finally:
            con.close()

    def replace_day(self, day: dt.date, deltas: pl.DataFrame, snapshot: pl.DataFrame) -> DayWrite:
        deltas, snapshot = day_frames(day, deltas, snapshot)
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for table, frame in (("usage_deltas", deltas), ("usage_snapshots", snapshot)):
                    con.execute(f"DELETE FROM {table} WHERE date = ?", [day])
                    con.register("incoming", frame.to_arrow())
                    names = ", ".join(DELTA_SCHEMA)
                    con.execute(f"INSERT INTO {table} SELECT {names} FROM incoming")
                    con.unregister("incoming")
                    stored = con.execute(
                        f"SELECT count(*) FROM {table} WHERE date = ?", [day]
                    ).fetchone()[0]
                    if stored != frame.height:
                        raise StatsStoreError(
                            f"{table} for {day}: {stored} rows stored, {frame.height} expected"
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
        with self._connect() as con:
            return con.execute(f"SELECT count(*) FROM {table} WHERE date = ?", [day]).fetchone()[0]

    def record_days(self) -> list[dt.date]:
        # Writable: a store that never saw a record day still has its (empty) tables.
        with self._connect() as con:
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
        with self._connect() as con:
            frame = pl.from_arrow(con.sql(sql, params=[*params, start, end]).to_arrow_table())
        assert isinstance(frame, pl.DataFrame)
        if by and frame.is_empty():
            return empty_record_sums(by)
        return frame

    def _record_snapshot(self, query: RecordQuery, day: dt.date) -> pl.DataFrame:
        clause, params = _record_clause(query)
        counts = ", ".join(RECORD_COUNTS)
        with self._connect() as con:
            table = con.sql(
                f"SELECT level, value, {counts} FROM record_snapshots "
                f"WHERE {clause} AND date = ? ORDER BY level NULLS LAST, value",
                params=[*params, day],
            ).to_arrow_table()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame.cast({c: RECORD_SCHEMA[c] for c in frame.columns})

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
            con.execute(
                "INSERT INTO item_titles SELECT key, title, date FROM incoming_titles "
                "ON CONFLICT (key) DO UPDATE SET title = excluded.title, date = excluded.date "
                "WHERE excluded.date >= item_titles.date"
            )
            con.unregister("incoming_titles")
        return frame.height

    def titles(self, keys: tuple[str, ...]) -> dict[str, str]:
        if not keys:
            return {}
        with self._connect(read_only=True) as con:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'item_titles'"
            ).fetchone()[0]
            if not exists:  # a store written before titles were kept
                return {}
            rows = con.execute(
                f"SELECT key, title FROM item_titles WHERE key IN ({', '.join('?' for _ in keys)})",
                list(keys),
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
                    f"INSERT INTO item_metadata SELECT {_METADATA_COLUMNS} "
                    "FROM incoming_metadata i WHERE NOT EXISTS "
                    "(SELECT 1 FROM item_metadata m WHERE m.item_key = i.item_key)"
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("incoming_metadata")
        return frame.height

    def item_metadata(self, keys: tuple[str, ...]) -> pl.DataFrame:
        """A join with the keys as a registered frame: one statement however many keys (a
        repository's IR asks for tens of thousands)."""
        empty = pl.DataFrame(schema=STORED_METADATA_SCHEMA)
        if not keys:
            return empty
        wanted = pl.DataFrame(
            {"item_key": list(dict.fromkeys(keys))}, schema={"item_key": pl.String}
        )
        with self._connect(read_only=True) as con:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'item_metadata'"
            ).fetchall()[0][0]
            if not exists:  # a store written before metadata was kept
                return empty
            con.register("wanted_keys", wanted.to_arrow())
            columns = ", ".join(f"m.{c}" for c in STORED_METADATA_SCHEMA)
            table = con.sql(
                f"SELECT {columns} FROM item_metadata m JOIN wanted_keys w USING (item_key) "
                "ORDER BY m.item_key"
            ).to_arrow_table()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame.with_columns(pl.col(c).dt.replace_time_zone("UTC") for c in _NAIVE_UTC).cast(
            STORED_METADATA_SCHEMA
        )

    def record_aliases(self, crosswalk: pl.DataFrame) -> int:
        """Delete everything and insert the new table in one transaction: readers see the old
        cross-walk or the new one, never a mix."""
        frame = alias_frame(crosswalk)
        with self._connect() as con:
            con.register("incoming_aliases", frame.to_arrow())
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute("DELETE FROM item_aliases")
                con.execute("INSERT INTO item_aliases SELECT alias, item_key FROM incoming_aliases")
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
        with self._connect(read_only=True) as con:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'item_aliases'"
            ).fetchone()[0]
            if not exists:  # a store written before the cross-walk was kept
                return {}
            rows = con.execute(
                "SELECT alias, item_key FROM item_aliases "
                f"WHERE alias IN ({', '.join('?' for _ in keys)})",
                list(keys),
            ).fetchall()
        return dict(rows)

    def optimize(self) -> float:
        """Rewrite both tables ordered by scope, key and date, in one transaction.

        DuckDB skips row groups by their min/max; days are written one by one, so every row
        group holds every scope and key and each query reads the whole table. Sorted, a query
        for one scope and key reads a few row groups: 2.5× faster for a year of 100,000 items,
        for a 2 s rewrite (bench/README.md). Days written later are appended unsorted until the
        next call, at the end of each stats_index run. Returns the seconds it took."""
        started = time.perf_counter()
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for table in STORE_TABLES:
                    con.execute(
                        f"CREATE TABLE {table}_sorted AS "
                        f"SELECT * FROM {table} ORDER BY scope, key, date"
                    )
                    con.execute(f"DROP TABLE {table}")
                    con.execute(f"ALTER TABLE {table}_sorted RENAME TO {table}")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("CHECKPOINT")
        return time.perf_counter() - started

    def row_count(self, table: str, day: dt.date) -> int:
        if table not in STORE_TABLES:
            raise ValueError(f"unknown table {table!r}")
        with self._connect(read_only=True) as con:
            return con.execute(f"SELECT count(*) FROM {table} WHERE date = ?", [day]).fetchone()[0]

    def days(self) -> list[dt.date]:
        with self._connect(read_only=True) as con:
            rows = con.execute("SELECT DISTINCT date FROM usage_snapshots ORDER BY date").fetchall()
        return [r[0] for r in rows]

    def snapshot(self, scope: str, key: str, day: dt.date) -> pl.DataFrame:
        with self._connect(read_only=True) as con:
            table = con.sql(
                "SELECT * FROM usage_snapshots WHERE scope = ? AND key = ? AND date = ? "
                "ORDER BY site_id, level, country",
                params=[scope, key, day],
            ).to_arrow_table()
        return pl.from_arrow(table)

    def _sums_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        where: tuple[RowFilter, ...],
        by: tuple[str, ...],
        distinct: tuple[str, ...],
        table: str = "usage_deltas",
    ) -> pl.DataFrame:
        if table not in STORE_TABLES:
            raise ValueError(f"unknown table {table!r}")
        month = "CAST(date_trunc('month', date) AS DATE)"
        columns = [f"{month} AS month" if c == "month" else c for c in by]
        sums = ", ".join(f"CAST(coalesce(sum({m}), 0) AS BIGINT) AS {m}" for m in METRICS)
        counted = ", ".join(month if c == "month" else c for c in distinct)
        rows = f"count(DISTINCT ({counted}))" if distinct else "count(*)"
        clause, params = _any_of(scope, start, end, where)
        sql = (
            f'SELECT {", ".join([*columns, sums])}, CAST({rows} AS BIGINT) AS "rows" '
            f"FROM {table} WHERE {clause}"
        )
        if by:
            sql += f" GROUP BY {', '.join(by)} ORDER BY {', '.join(by)}"
        with self._connect(read_only=True) as con:
            frame = pl.from_arrow(con.sql(sql, params=params).to_arrow_table())
        if by and frame.is_empty():
            return empty_sums(by)
        return frame

    def _top_where(
        self,
        scope: str,
        start: dt.date,
        end: dt.date,
        metric: str,
        limit: int,
        where: tuple[RowFilter, ...],
    ) -> pl.DataFrame:
        clause, params = _any_of(scope, start, end, where)
        with self._connect(read_only=True) as con:
            table = con.sql(
                f"SELECT key, CAST(sum({metric}) AS BIGINT) AS {metric} FROM usage_deltas "
                f"WHERE {clause} GROUP BY key ORDER BY {metric} DESC, key LIMIT ?",
                params=[*params, limit],
            ).to_arrow_table()
        return pl.from_arrow(table)


def _record_clause(query: RecordQuery) -> tuple[str, list]:
    clause = "scope = ? AND key = ? AND basis = ? AND field = ?"
    params: list = [query.scope, query.key, query.basis, query.field]
    if query.level is not None:
        clause += " AND level = ?"
        params.append(query.level)
    return clause, params


def _any_of(
    scope: str, start: dt.date, end: dt.date, where: tuple[RowFilter, ...]
) -> tuple[str, list]:
    """Scope and dates, and any of the filters (each an AND of its columns; None among owners
    means no owner), as placeholders: user values travel as parameters, never as SQL."""
    alternatives, params = [], []
    for row_filter in where:
        clauses = []
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
