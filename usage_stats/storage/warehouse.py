"""Intermediate tables of the pipeline, one Parquet file per table and day.

Stages hand each other data through here rather than through Dagster's IO managers so that a
stage can read any day it needs (snapshots read the previous day's snapshot) and a backfill
run can process many days in one pass. Writing a day replaces it.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass

import polars as pl
import pyarrow.parquet as pq

from usage_stats.storage.lake import Lake, LakeReadError, read_parquet_file

_DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Warehouse:
    lake: Lake

    def _key(self, table: str, day: dt.date) -> str:
        return f"{table}/date={day.isoformat()}/part-0.parquet"

    def write(self, table: str, day: dt.date, frame: pl.DataFrame) -> str:
        key = self._key(table, day)
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        self.lake.write_bytes(key, buffer.getvalue())
        return self.lake.describe(key)

    def exists(self, table: str, day: dt.date) -> bool:
        return bool(self.lake.list_files(f"{table}/date={day.isoformat()}"))

    def read(self, table: str, day: dt.date) -> pl.DataFrame:
        if not self.exists(table, day):
            raise LakeReadError(
                f"{self.lake.describe(self._key(table, day))}: no '{table}' for {day}; "
                f"materialise that partition first"
            )
        return read_parquet_file(self.lake, self._key(table, day))

    def row_count(self, table: str, day: dt.date) -> int:
        """Rows of a stored day from the Parquet footer, without decoding the data."""
        key = self._key(table, day)
        return pq.ParquetFile(io.BytesIO(self.lake.read_bytes(key))).metadata.num_rows

    def read_optional(self, table: str, day: dt.date) -> pl.DataFrame | None:
        return self.read(table, day) if self.exists(table, day) else None

    def days(self, table: str) -> list[dt.date]:
        days = []
        for name in self.lake.list_dirs(table):
            match = _DAY_DIR.match(name)
            if match and self.lake.list_files(f"{table}/{name}"):
                days.append(dt.date.fromisoformat(match.group(1)))
        return sorted(days)

    def latest_before(self, table: str, day: dt.date) -> dt.date | None:
        earlier = [d for d in self.days(table) if d < day]
        return earlier[-1] if earlier else None
