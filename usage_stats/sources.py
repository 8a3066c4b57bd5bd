"""The source registry: which Matomo sites exist and how to read them.

The pipeline asks a `SourceRegistry` for the sites it knows; until the admin DB exists a CSV
file implements it. The same CSV stays the import/export format for operators afterwards.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import polars as pl

SOURCE_TYPES = {"R": "repository", "N": "national node", "L": "regional portal"}

CSV_COLUMNS = [
    "site_id",
    "source_key",
    "name",
    "type",
    "country",
    "identifier_prefix",
    "custom_var_slot",
    "national_site_id",
    "regional_site_id",
]


class SourceRegistryError(ValueError):
    """A registry file or row that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Source:
    site_id: int
    source_key: str
    name: str
    type: str
    country: str | None
    identifier_prefix: str | None
    custom_var_slot: int
    national_site_id: int | None = None
    regional_site_id: int | None = None


class SourceRegistry(Protocol):
    def sources(self) -> list[Source]: ...


def sources_frame(sources: Iterable[Source]) -> pl.DataFrame:
    """The registry as a frame, the shape the transforms join against."""
    rows = [{f.name: getattr(s, f.name) for f in fields(Source)} for s in sources]
    schema = {
        "site_id": pl.Int32,
        "source_key": pl.String,
        "name": pl.String,
        "type": pl.String,
        "country": pl.String,
        "identifier_prefix": pl.String,
        "custom_var_slot": pl.Int8,
        "national_site_id": pl.Int32,
        "regional_site_id": pl.Int32,
    }
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _optional_int(value: str, column: str, where: str) -> int | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise SourceRegistryError(
            f"{where}: column '{column}' must be an integer, got {value!r}"
        ) from exc


def parse_source_row(row: dict[str, str], where: str) -> Source:
    """One CSV row → Source, with messages an operator can act on."""
    site_id = _optional_int(row.get("site_id", ""), "site_id", where)
    if site_id is None:
        raise SourceRegistryError(f"{where}: column 'site_id' is required")
    source_type = (row.get("type") or "").strip().upper()
    if source_type not in SOURCE_TYPES:
        raise SourceRegistryError(
            f"{where}: column 'type' must be one of R, N, L, got {row.get('type')!r}"
        )
    country = (row.get("country") or "").strip().upper() or None
    if country is not None and (len(country) != 2 or not country.isalpha()):
        raise SourceRegistryError(
            f"{where}: column 'country' must be an ISO 3166 alpha-2 code, got {country!r}"
        )
    slot = _optional_int(row.get("custom_var_slot", ""), "custom_var_slot", where)
    if slot is None:
        slot = 6 if source_type == "L" else 1
    if not 1 <= slot <= 10:
        raise SourceRegistryError(f"{where}: column 'custom_var_slot' must be 1..10, got {slot}")
    from usage_stats.identifiers import normalize_identifier

    prefix = (row.get("identifier_prefix") or "").strip() or None
    if prefix is not None:
        # normalise as if an identifier followed, so `oai:https://host/server:` → `oai:host:`
        prefix = (normalize_identifier(prefix + "0") or "")[:-1] or None
    return Source(
        site_id=site_id,
        source_key=(row.get("source_key") or "").strip() or f"site::{site_id}",
        name=(row.get("name") or "").strip() or f"Site {site_id}",
        type=source_type,
        country=country,
        identifier_prefix=prefix,
        custom_var_slot=slot,
        national_site_id=_optional_int(row.get("national_site_id", ""), "national_site_id", where),
        regional_site_id=_optional_int(row.get("regional_site_id", ""), "regional_site_id", where),
    )


@dataclass(frozen=True)
class CsvSourceRegistry:
    """Reads the file on every call, so an edited file is used by the next run without a restart."""

    path: Path

    def sources(self) -> list[Source]:
        if not self.path.exists():
            raise SourceRegistryError(f"{self.path}: source registry file does not exist")
        with self.path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"site_id", "type"} - set(reader.fieldnames or [])
            if missing:
                raise SourceRegistryError(
                    f"{self.path}: missing required column(s) {', '.join(sorted(missing))}"
                )
            result: list[Source] = []
            seen: dict[int, int] = {}
            for line, row in enumerate(reader, start=2):
                where = f"{self.path}, line {line}"
                source = parse_source_row(row, where)
                if source.site_id in seen:
                    raise SourceRegistryError(
                        f"{where}: site_id {source.site_id} already defined "
                        f"on line {seen[source.site_id]}"
                    )
                seen[source.site_id] = line
                result.append(source)
        return result


def write_sources_csv(path: Path, sources: Iterable[Source]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for s in sources:
            row = {c: getattr(s, c) for c in CSV_COLUMNS}
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
