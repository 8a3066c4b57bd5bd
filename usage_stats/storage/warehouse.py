"""Intermediate tables of the pipeline: per table and day, one or more Parquet parts.

Stages hand each other data through here rather than through Dagster's IO managers so that a
stage can read any day it needs (snapshots read the previous day's snapshot) and a backfill
run can process many days in one pass. Writing a day replaces it.

A large day is written in parts, one per piece of the day (`usage_stats.pipeline.pieces`), so
that neither the writer nor the next stage ever holds the whole day: `day_parts` writes them
one by one, `parts` reads them one by one, `read` reads them all. The parts of a day are
`part-0.parquet`, `part-1.parquet`, … in the order the rows belong.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import polars as pl
import pyarrow.parquet as pq

from usage_stats.storage.lake import Lake, LakeReadError, read_parquet_file

_DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_PART = re.compile(r"/part-(\d+)\.parquet$")


@dataclass
class DayParts:
    """The parts of one table and day being written (see `Warehouse.day_parts`).

    A part is written in the background while the stage makes the next piece: encoding
    Parquet keeps about one core busy, so on two cores the write of a piece and the work on
    the next one overlap instead of taking turns. One write at a time is in flight, so at
    most one piece more than the stage's own is held (`append` waits for the previous one).
    """

    warehouse: Warehouse
    table: str
    day: dt.date
    rows: int = 0
    count: int = 0
    schema: pl.Schema | None = field(default=None, repr=False)
    _writer: ThreadPoolExecutor | None = field(default=None, repr=False)
    _pending: Future | None = field(default=None, repr=False)

    def append(self, frame: pl.DataFrame, keep_empty: bool = False) -> None:
        """Write the next part. An empty frame is kept only if it is the day's only part, or
        with `keep_empty` (a table whose parts pair with another table's, one for one)."""
        if self.schema is None:
            self.schema = frame.schema
        if frame.is_empty() and not keep_empty:
            return
        self.wait()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"write-{self.table}")
        self._pending = self._writer.submit(
            self.warehouse._write_part, self.table, self.day, self.count, frame
        )
        self.count += 1
        self.rows += frame.height

    def wait(self) -> None:
        """Until the part being written is written (its error, if any, raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the last write and stop the writer thread."""
        try:
            self.wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None

    @property
    def uri(self) -> str:
        return self.warehouse.describe(self.table, self.day)


@dataclass(frozen=True)
class Warehouse:
    lake: Lake

    def _folder(self, table: str, day: dt.date) -> str:
        return f"{table}/date={day.isoformat()}"

    def _part_key(self, table: str, day: dt.date, part: int) -> str:
        return f"{self._folder(table, day)}/part-{part}.parquet"

    def _write_part(self, table: str, day: dt.date, part: int, frame: pl.DataFrame) -> None:
        """LZ4 and no column statistics: the next stage reads every row of a day anyway, and
        on a 10M-event day these halve the write (zstd with statistics: 7.2 s, LZ4 without:
        4.1 s, for files a third larger; bench/README.md)."""
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="lz4", statistics=False)
        self.lake.write_bytes(self._part_key(table, day, part), buffer.getvalue())

    def _part_keys(self, table: str, day: dt.date) -> list[str]:
        """The day's parts in order (`part-10` after `part-9`)."""
        keyed = []
        for key in self.lake.list_files(self._folder(table, day)):
            match = _PART.search(key)
            if match:
                keyed.append((int(match.group(1)), key))
        return [key for _, key in sorted(keyed)]

    def _drop_parts_from(self, table: str, day: dt.date, first: int) -> None:
        """Remove the parts an earlier, longer write of the day left behind."""
        for key in self._part_keys(table, day):
            match = _PART.search(key)
            if match and int(match.group(1)) >= first:
                self.lake.delete_prefix(key)

    def describe(self, table: str, day: dt.date) -> str:
        """Where the day's table is: its one file, or the folder of its parts."""
        keys = self._part_keys(table, day)
        if len(keys) == 1:
            return self.lake.describe(keys[0])
        return self.lake.describe(self._folder(table, day))

    def write(self, table: str, day: dt.date, frame: pl.DataFrame) -> str:
        """Replace the day's table by `frame`, one part; returns where it is."""
        self._write_part(table, day, 0, frame)
        self._drop_parts_from(table, day, 1)
        return self.lake.describe(self._part_key(table, day, 0))

    @contextmanager
    def day_parts(self, table: str, day: dt.date) -> Iterator[DayParts]:
        """Replace the day's table part by part: `append` each piece as it is made.

        Parts of an earlier write of the day beyond the new ones are removed once the last
        is written; a write that fails midway leaves a day the next run of the stage
        replaces. A day with no rows gets one empty part, so its schema is still known.
        """
        parts = DayParts(self, table, day)
        try:
            yield parts
        finally:
            parts.close()
        if parts.count == 0:
            empty = pl.DataFrame(schema=parts.schema) if parts.schema is not None else None
            if empty is None:
                raise ValueError(f"no part of {table} for {day} was given, not even an empty one")
            self._write_part(table, day, 0, empty)
            parts.count = 1
        self._drop_parts_from(table, day, parts.count)

    def exists(self, table: str, day: dt.date) -> bool:
        return bool(self._part_keys(table, day))

    def _require(self, table: str, day: dt.date) -> list[str]:
        keys = self._part_keys(table, day)
        if not keys:
            raise LakeReadError(
                f"{self.lake.describe(self._part_key(table, day, 0))}: no '{table}' for {day}; "
                f"materialise that partition first"
            )
        return keys

    def parts(
        self,
        table: str,
        day: dt.date,
        read_ahead: bool = False,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pl.DataFrame]:
        """The day's parts one at a time (a stage holds one piece of the day at once).

        With `read_ahead`, the next part is read in the background while the caller works
        on the current one (decoding Parquet then overlaps with the stage's work instead of
        taking turns with it), at the cost of holding one part more. With `columns`, only
        those are decoded (a stage that reads three of a table's twenty pays for three).
        """
        keys = self._require(table, day)
        if not read_ahead or len(keys) == 1:
            for key in keys:
                yield read_parquet_file(self.lake, key, columns)
            return
        with ThreadPoolExecutor(1, thread_name_prefix=f"read-{table}") as reader:
            pending = reader.submit(read_parquet_file, self.lake, keys[0], columns)
            for key in keys[1:]:
                current = pending.result()
                pending = reader.submit(read_parquet_file, self.lake, key, columns)
                yield current
                del current
            yield pending.result()

    def read(self, table: str, day: dt.date) -> pl.DataFrame:
        frames = list(self.parts(table, day))
        return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")

    def schema(self, table: str, day: dt.date) -> pl.Schema:
        """The stored day's columns, from its first part's footer (no data decoded)."""
        key = self._require(table, day)[0]
        try:
            return pl.read_parquet_schema(io.BytesIO(self.lake.read_bytes(key)))
        except Exception as exc:  # any failure to decode is the file's fault; name it
            where = self.lake.describe(key)
            raise LakeReadError(f"{where}: cannot read Parquet file ({exc})") from exc

    def row_count(self, table: str, day: dt.date) -> int:
        """Rows of a stored day from the Parquet footers, without decoding the data."""
        return sum(
            pq.ParquetFile(io.BytesIO(self.lake.read_bytes(key))).metadata.num_rows
            for key in self._require(table, day)
        )

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
