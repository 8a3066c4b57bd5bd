"""The raw layer: Matomo-shaped Parquet in LA Referencia's archive layout.

`<lake>/{events|visits}/idsite=<N>/year=<YYYY>/month=<M>/day=<D>/<file>.parquet`, month and
day not zero-padded; older archives have month-level leaves with no `day=` level. A lake is
addressed by URL (`storage/open.py`); the `Lake` protocol is the seam where the S3 implementation
plugs in.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import polars as pl

TABLES = ("events", "visits")
_SITE_DIR = re.compile(r"^idsite=(\d+)$")


class LakeReadError(RuntimeError):
    """A raw file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class FileInfo:
    """What the new-file sensor needs to tell a new or changed file from a known one."""

    key: str
    modified: float  # POSIX seconds
    size: int
    etag: str = ""


class Lake(Protocol):
    url: str

    def list_dirs(self, prefix: str) -> list[str]: ...

    def list_files(self, prefix: str, suffix: str = ".parquet") -> list[str]: ...

    def stat_files(self, prefix: str, suffix: str = ".parquet") -> list[FileInfo]: ...

    def read_bytes(self, key: str) -> bytes: ...

    def write_bytes(self, key: str, data: bytes) -> None: ...

    def upload_file(self, key: str, path: Path) -> None: ...

    def delete_prefix(self, prefix: str) -> None: ...

    def describe(self, key: str) -> str: ...


@dataclass(frozen=True)
class LocalLake:
    """A folder on disk; the embedded default."""

    root: Path

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def list_dirs(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def list_files(self, prefix: str, suffix: str = ".parquet") -> list[str]:
        """Files directly under `prefix` (not recursive), relative to the lake root."""
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.iterdir()
            if p.is_file() and p.name.endswith(suffix)
        )

    def stat_files(self, prefix: str, suffix: str = ".parquet") -> list[FileInfo]:
        """Every file below `prefix`, recursively, with its modification time."""
        base = self._path(prefix)
        if not base.is_dir():
            return []
        infos = []
        for path in base.rglob(f"*{suffix}"):
            if path.is_file():
                stat = path.stat()
                infos.append(
                    FileInfo(str(path.relative_to(self.root)), stat.st_mtime, stat.st_size)
                )
        return sorted(infos, key=lambda f: f.key)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def upload_file(self, key: str, path: Path) -> None:
        """Copy a finished local file in, atomically (a reader never sees half of it)."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(target)

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    def describe(self, key: str) -> str:
        return str(self._path(key))


def day_leaf(table: str, site_id: int, day: dt.date) -> str:
    return f"{table}/idsite={site_id}/year={day.year}/month={day.month}/day={day.day}"


def month_leaf(table: str, site_id: int, day: dt.date) -> str:
    return f"{table}/idsite={site_id}/year={day.year}/month={day.month}"


@dataclass(frozen=True)
class RawFile:
    key: str
    site_id: int
    month_level: bool
    # bytes on storage: how the day is split into pieces of similar weight
    size: int = 0


def site_ids_in_lake(lake: Lake, table: str = "events") -> list[int]:
    ids = []
    for name in lake.list_dirs(table):
        match = _SITE_DIR.match(name)
        if match:
            ids.append(int(match.group(1)))
    return sorted(ids)


def raw_files_for_day(
    lake: Lake, table: str, day: dt.date, sites: list[int] | None = None
) -> list[RawFile]:
    """Every file that can hold rows of `day`: its day leaf and its month-level leaf."""
    site_ids = site_ids_in_lake(lake, table) if sites is None else sorted(sites)
    files: list[RawFile] = []
    for site_id in site_ids:
        for info in lake.stat_files(day_leaf(table, site_id, day)):
            files.append(RawFile(info.key, site_id, month_level=False, size=info.size))
        month = month_leaf(table, site_id, day)
        archived = lake.list_files(month)  # rare (older dumps): sized only when present
        sizes = {i.key: i.size for i in lake.stat_files(month)} if archived else {}
        for key in archived:
            files.append(RawFile(key, site_id, month_level=True, size=sizes.get(key, 0)))
    return files


def read_parquet_file(lake: Lake, key: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """The file, or only `columns` of it (the others are not decoded)."""
    try:
        return pl.read_parquet(io.BytesIO(lake.read_bytes(key)), columns=columns)
    except Exception as exc:  # any failure to decode is the file's fault; name it
        raise LakeReadError(f"{lake.describe(key)}: cannot read Parquet file ({exc})") from exc


def scan_parquet_file(
    lake: Lake, key: str, columns: Iterable[str]
) -> tuple[pl.LazyFrame, pl.Schema]:
    """A lazy read of those of `columns` the file has, and the file's schema.

    Only the footer is parsed here, so files can be checked one by one and then decoded
    together, in parallel, by one `collect_all` (decoding errors surface there). Matomo
    exports carry columns nobody reads (link ids, custom variable keys, plugin columns);
    naming the wanted ones skips decoding the rest. Absent names are left out rather than
    raised on, so callers still see which required columns are missing and can name them.
    """
    try:
        data = lake.read_bytes(key)
        schema = pl.read_parquet_schema(io.BytesIO(data))
    except Exception as exc:  # any failure to decode is the file's fault; name it
        raise LakeReadError(f"{lake.describe(key)}: cannot read Parquet file ({exc})") from exc
    present = [c for c in columns if c in schema]
    return pl.scan_parquet(io.BytesIO(data)).select(present), schema


def write_leaf(
    lake: Lake, table: str, site_id: int, day: dt.date, frame: pl.DataFrame, part: int = 0
) -> str:
    """Replace the day leaf of one site (never append: a re-export must not duplicate rows);
    `part` > 0 adds a further file to the leaf its part 0 has just replaced."""
    prefix = day_leaf(table, site_id, day)
    if part == 0:
        lake.delete_prefix(prefix)
    key = f"{prefix}/part-{part}.parquet"
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    lake.write_bytes(key, buffer.getvalue())
    return key


def write_month_leaf(
    lake: Lake, table: str, site_id: int, day: dt.date, frame: pl.DataFrame
) -> str:
    """An archive-style month leaf with no `day=` level (how older LA Referencia dumps look)."""
    key = f"{month_leaf(table, site_id, day)}/part-0.parquet"
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    lake.write_bytes(key, buffer.getvalue())
    return key
