"""A Matomo database filled from synthetic lake data: Matomo's log tables, Matomo's columns.

Tests and the export benchmark need a real Matomo schema holding known events. The tables
are created from Matomo's column list (`data/matomo_log_tables_columns.tsv`, as in Matomo's
core and plugin dimensions), plus custom-variable slots 6+ that LA Referencia's portal uses;
the synthetic `events`/`visits` Parquet is split back into `log_action`, `log_visit` and
`log_link_visit_action` rows.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable

import polars as pl
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Time,
    insert,
)
from sqlalchemy.dialects.mysql import BINARY, VARBINARY

from usage_stats import DATA_DIR
from usage_stats.storage.lake import Lake, read_parquet_file

COLUMNS_FILE = DATA_DIR / "matomo_log_tables_columns.tsv"
LOG_TABLES = ("log_visit", "log_link_visit_action", "log_action")


def _column_type(mysql_type: str):  # noqa: ANN202
    base = re.sub(r"\(.*?\)", "", mysql_type).replace(" unsigned", "").strip()
    size = re.search(r"\((\d+)(?:,(\d+))?\)", mysql_type)
    n = int(size.group(1)) if size else None
    if base == "bigint":
        return BigInteger()
    if base in ("int", "mediumint"):
        return BigInteger() if "unsigned" in mysql_type else Integer()
    if base in ("smallint", "tinyint"):
        return SmallInteger()
    if base == "binary":
        return BINARY(n)
    if base == "varbinary":
        return VARBINARY(n)
    if base == "datetime":
        return DateTime()
    if base == "time":
        return Time()
    if base in ("double", "float"):
        return Float()
    if base == "decimal":
        return Numeric(int(size.group(1)), int(size.group(2) or 0)) if size else Numeric()
    return String(n or 255)


def log_tables(prefix: str, extra_custom_var_slots: int = 6) -> MetaData:
    """Matomo's log tables as SQLAlchemy tables, from the shipped column list."""
    metadata = MetaData()
    columns: dict[str, list[Column]] = {}
    with COLUMNS_FILE.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["table"] not in LOG_TABLES:
                continue
            primary = row["default"] == "AUTO_INCREMENT"
            default = row["default"].strip("'") if row["default"] not in ("", "NULL") else None
            columns.setdefault(row["table"], []).append(
                Column(
                    row["column"],
                    _column_type(row["mysql_type"]),
                    primary_key=primary,
                    autoincrement=primary,
                    nullable=row["nullable"] == "YES",
                    server_default=None if primary or default is None else default,
                )
            )
    for slot in range(6, extra_custom_var_slots + 1):
        for kind in ("k", "v"):
            columns["log_link_visit_action"].append(Column(f"custom_var_{kind}{slot}", String(200)))
    for name, cols in columns.items():
        Table(f"{prefix}{name}", metadata, *cols)
    return metadata


def create_log_tables(engine: Engine, prefix: str) -> None:
    log_tables(prefix).create_all(engine)


def _frames(lake: Lake, table: str) -> pl.DataFrame:
    keys = []
    for site_dir in lake.list_dirs(table):
        keys += [info.key for info in lake.stat_files(f"{table}/{site_dir}")]
    frames = [read_parquet_file(lake, key) for key in sorted(keys)]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def _insert(engine: Engine, table: Table, rows: Iterable[dict], batch: int = 5_000) -> int:
    total = 0
    buffer: list[dict] = []
    with engine.begin() as conn:
        for row in rows:
            buffer.append(row)
            if len(buffer) == batch:
                conn.execute(insert(table), buffer)
                total += len(buffer)
                buffer = []
        if buffer:
            conn.execute(insert(table), buffer)
            total += len(buffer)
    return total


def load_lake_into_matomo(engine: Engine, prefix: str, lake: Lake) -> dict[str, int]:
    """Every event and visit of a (synthetic) lake as Matomo log rows; returns row counts."""
    metadata = log_tables(prefix)
    metadata.create_all(engine)
    tables = {name: metadata.tables[f"{prefix}{name}"] for name in LOG_TABLES}
    events = _frames(lake, "events")
    visits = _frames(lake, "visits").with_columns(
        pl.col("visit_total_time").fill_null(0),
        # Matomo's hash of the visitor's browser configuration: not in the lake, required.
        pl.col("idvisitor").alias("config_id"),
    )
    actions = (
        events.select(
            pl.col("action_url").alias("name"),
            pl.col("action_type").alias("type"),
            pl.col("action_url_prefix").alias("url_prefix"),
        )
        .unique(maintain_order=True)
        .with_row_index("idaction", offset=1)
        .with_columns(
            (pl.col("name").hash() % (2**32)).cast(pl.UInt32).alias("hash"),  # CRC32 stand-in
            pl.col("idaction").cast(pl.Int64),
        )
    )
    if "action_name" in events.columns:
        # Page titles are actions of type 4, referenced by idaction_name.
        titles = (
            events.select(pl.col("action_name").alias("name"))
            .drop_nulls()
            .unique(maintain_order=True)
            .with_row_index("idaction", offset=actions.height + 1)
            .with_columns(
                (pl.col("name").hash() % (2**32)).cast(pl.UInt32).alias("hash"),
                pl.col("idaction").cast(pl.Int64),
                pl.lit(4, dtype=actions.schema["type"]).alias("type"),
                pl.lit(None, dtype=actions.schema["url_prefix"]).alias("url_prefix"),
            )
            .select(actions.columns)
        )
        events = (
            events.join(
                titles.select(
                    pl.col("name").alias("action_name"), pl.col("idaction").alias("_name")
                ),
                on="action_name",
                how="left",
            )
            .with_columns(pl.col("_name").alias("idaction_name"))
            .drop("_name", "action_name")
        )
        actions = pl.concat([actions, titles])
    action_rows = actions.drop_nulls("name")
    events = events.drop("idaction_url", strict=False).join(
        actions.select(
            pl.col("name").alias("action_url"),
            pl.col("type").alias("action_type"),
            pl.col("url_prefix").alias("action_url_prefix"),
            pl.col("idaction").alias("idaction_url"),
        ),
        on=["action_url", "action_type", "action_url_prefix"],
        how="left",
        nulls_equal=True,
    )
    link_columns = [c.name for c in tables["log_link_visit_action"].columns]
    visit_columns = [c.name for c in tables["log_visit"].columns]
    counts = {
        "log_action": _insert(
            engine,
            tables["log_action"],
            action_rows.select("idaction", "name", "hash", "type", "url_prefix").iter_rows(
                named=True
            ),
        ),
        "log_visit": _insert(
            engine,
            tables["log_visit"],
            visits.select([c for c in visits.columns if c in visit_columns]).iter_rows(named=True),
        ),
        "log_link_visit_action": _insert(
            engine,
            tables["log_link_visit_action"],
            events.select([c for c in events.columns if c in link_columns]).iter_rows(named=True),
        ),
    }
    return counts


def dump(frame: pl.DataFrame) -> str:  # pragma: no cover - debugging aid
    buffer = io.StringIO()
    frame.write_csv(buffer)
    return buffer.getvalue()
