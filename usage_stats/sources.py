"""The source registry: which Matomo sites exist and how to read them.

The pipeline asks a `SourceRegistry` for the active sites; the admin DB implements it, and
a CSV/XLSX file (one row per site) is the import/export format operators keep their lists in.
Every way in (CLI, import, file) goes through `validate_source`, so a row with a rule that
cannot work never reaches the pipeline.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import polars as pl
import pycountry

SOURCE_TYPES = {"R": "repository", "N": "national node", "L": "regional portal"}
IDENTIFIER_RULES = ("standard", "regex", "mapping")

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
    "identifier_rule",
    "rule_pattern",
    "rule_replacement",
    "mapping_file",
    "url",
    "institution",
    "oai_base_url",
    "active",
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
    identifier_rule: str = "standard"
    rule_pattern: str | None = None
    rule_replacement: str | None = None
    mapping_file: str | None = None
    url: str | None = None
    institution: str | None = None
    oai_base_url: str | None = None
    active: bool = True


class SourceRegistry(Protocol):
    def sources(self) -> list[Source]: ...


FRAME_SCHEMA: dict[str, pl.DataType] = {
    "site_id": pl.Int32(),
    "source_key": pl.String(),
    "name": pl.String(),
    "type": pl.String(),
    "country": pl.String(),
    "identifier_prefix": pl.String(),
    "custom_var_slot": pl.Int8(),
    "national_site_id": pl.Int32(),
    "regional_site_id": pl.Int32(),
    "identifier_rule": pl.String(),
    "rule_pattern": pl.String(),
    "rule_replacement": pl.String(),
    "mapping_file": pl.String(),
    "url": pl.String(),
    "institution": pl.String(),
    "oai_base_url": pl.String(),
    "active": pl.Boolean(),
}


def sources_frame(sources: Iterable[Source]) -> pl.DataFrame:
    """The registry as a frame, the shape the transforms join against."""
    rows = [{f.name: getattr(s, f.name) for f in fields(Source)} for s in sources]
    if not rows:
        return pl.DataFrame(schema=FRAME_SCHEMA)
    return pl.DataFrame(rows, schema=FRAME_SCHEMA, orient="row")


# --- validation ------------------------------------------------------------------------------


def sample_identifier(source: Source) -> str:
    """What a rule is test-applied to: an identifier as this source would record it."""
    return f"{source.identifier_prefix or 'oai:example.org:'}123456789/1"


def load_mapping(path: str) -> pl.DataFrame:
    """A mapping table: CSV with columns `from` and `to` (identifiers after normalisation)."""
    from usage_stats.identifiers import normalize_identifier_expr

    file = Path(path)
    if not file.is_file():
        raise SourceRegistryError(f"mapping file {path} does not exist")
    try:
        table = pl.read_csv(file, infer_schema=False)
    except Exception as exc:
        raise SourceRegistryError(f"mapping file {path} cannot be read as CSV: {exc}") from exc
    if not {"from", "to"} <= set(table.columns):
        raise SourceRegistryError(
            f"mapping file {path} needs the columns 'from' and 'to', has {table.columns}"
        )
    table = table.select("from", "to")
    empty = table.filter(pl.col("from").is_null() | pl.col("to").is_null())
    if empty.height:
        raise SourceRegistryError(
            f"mapping file {path} has {empty.height} row(s) with an empty cell"
        )
    if table.is_empty():
        raise SourceRegistryError(f"mapping file {path} has no rows")
    return table.with_columns(normalize_identifier_expr(pl.col("from")).alias("from"))


def validate_source(source: Source) -> list[str]:
    """Everything wrong with a source, in words an operator can act on (empty when fine)."""
    errors: list[str] = []
    if source.site_id <= 0:
        errors.append(f"site_id must be a positive integer, got {source.site_id}")
    if not source.source_key.strip():
        errors.append("source_key must not be empty")
    if source.type not in SOURCE_TYPES:
        errors.append(f"type must be one of R, N, L, got {source.type!r}")
    if source.country is not None and pycountry.countries.get(alpha_2=source.country) is None:
        errors.append(f"country {source.country!r} is not an ISO 3166-1 alpha-2 code")
    if not 1 <= source.custom_var_slot <= 10:
        errors.append(f"custom_var_slot must be 1..10, got {source.custom_var_slot}")
    if source.identifier_rule not in IDENTIFIER_RULES:
        errors.append(
            f"identifier_rule must be one of {', '.join(IDENTIFIER_RULES)}, "
            f"got {source.identifier_rule!r}"
        )
    elif source.identifier_rule == "regex":
        errors += _regex_errors(source)
    elif source.identifier_rule == "mapping":
        if not source.mapping_file:
            errors.append("identifier_rule 'mapping' needs a mapping_file")
        else:
            try:
                load_mapping(source.mapping_file)
            except SourceRegistryError as exc:
                errors.append(str(exc))
    return errors


def _regex_errors(source: Source) -> list[str]:
    if not source.rule_pattern:
        return ["identifier_rule 'regex' needs a rule_pattern"]
    if source.rule_replacement is None:
        return ["identifier_rule 'regex' needs a rule_replacement (may be empty text)"]
    sample = sample_identifier(source)
    try:
        # The pipeline applies the rule with Polars, so it is checked with Polars: its regex
        # syntax and `$1`/`${name}` replacement references.
        result = pl.Series([sample]).str.replace(source.rule_pattern, source.rule_replacement)[0]
    except Exception as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return [f"rule_pattern {source.rule_pattern!r} does not compile: {detail}"]
    if not result:
        return [f"rule turns the sample identifier {sample!r} into an empty identifier"]
    if re.search(r"\\\d", source.rule_replacement):
        return [
            f"rule_replacement {source.rule_replacement!r} uses \\1-style references; "
            "write $1 (or ${name})"
        ]
    return []


# --- rows ------------------------------------------------------------------------------------


def _optional_int(value: object, column: str, where: str) -> int | None:
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError as exc:
        raise SourceRegistryError(
            f"{where}: column '{column}' must be an integer, got {text!r}"
        ) from exc
    if number != int(number):
        raise SourceRegistryError(f"{where}: column '{column}' must be an integer, got {text!r}")
    return int(number)


def _text(row: dict[str, object], column: str) -> str | None:
    value = row.get(column)
    text = "" if value is None else str(value).strip()
    return text or None


def _boolean(value: object, where: str) -> bool:
    text = "" if value is None else str(value).strip().lower()
    if text in ("", "1", "true", "yes", "y"):
        return True
    if text in ("0", "false", "no", "n"):
        return False
    raise SourceRegistryError(f"{where}: column 'active' must be true or false, got {value!r}")


def parse_source_row(row: dict[str, object], where: str) -> Source:
    """One CSV/XLSX row → a valid Source, or an error naming the row and every problem."""
    site_id = _optional_int(row.get("site_id"), "site_id", where)
    if site_id is None:
        raise SourceRegistryError(f"{where}: column 'site_id' is required")
    source_type = (_text(row, "type") or "").upper()
    if source_type not in SOURCE_TYPES:
        raise SourceRegistryError(
            f"{where}: column 'type' must be one of R, N, L, got {row.get('type')!r}"
        )
    country = (_text(row, "country") or "").upper() or None
    if country is not None and (len(country) != 2 or not country.isalpha()):
        raise SourceRegistryError(
            f"{where}: column 'country' must be an ISO 3166 alpha-2 code, got {country!r}"
        )
    slot = _optional_int(row.get("custom_var_slot"), "custom_var_slot", where)
    if slot is None:
        slot = 6 if source_type == "L" else 1
    if not 1 <= slot <= 10:
        raise SourceRegistryError(f"{where}: column 'custom_var_slot' must be 1..10, got {slot}")
    source = Source(
        site_id=site_id,
        source_key=_text(row, "source_key") or f"site::{site_id}",
        name=_text(row, "name") or f"Site {site_id}",
        type=source_type,
        country=country,
        identifier_prefix=normalize_prefix(_text(row, "identifier_prefix")),
        custom_var_slot=slot,
        national_site_id=_optional_int(row.get("national_site_id"), "national_site_id", where),
        regional_site_id=_optional_int(row.get("regional_site_id"), "regional_site_id", where),
        identifier_rule=(_text(row, "identifier_rule") or "standard").lower(),
        rule_pattern=_text(row, "rule_pattern"),
        rule_replacement=(
            None if row.get("rule_replacement") is None else str(row.get("rule_replacement"))
        )
        if _text(row, "rule_pattern")
        else None,
        mapping_file=_text(row, "mapping_file"),
        url=_text(row, "url"),
        institution=_text(row, "institution"),
        oai_base_url=_text(row, "oai_base_url"),
        active=_boolean(row.get("active"), where),
    )
    errors = validate_source(source)
    if errors:
        raise SourceRegistryError(f"{where}: " + "; ".join(errors))
    return source


def normalize_prefix(prefix: str | None) -> str | None:
    """Normalise as if an identifier followed, so `oai:https://host/server:` → `oai:host:`."""
    from usage_stats.identifiers import normalize_identifier

    if prefix is None:
        return None
    return (normalize_identifier(prefix + "0") or "")[:-1] or None


def read_source_table(path: Path) -> list[tuple[int, dict[str, object]]]:
    """Rows of a CSV or XLSX file with their line numbers (the header is line 1)."""
    if not path.is_file():
        raise SourceRegistryError(f"{path}: source registry file does not exist")
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        try:
            sheet = load_workbook(path, read_only=True, data_only=True).worksheets[0]
        except Exception as exc:
            raise SourceRegistryError(f"{path}: cannot read the workbook ({exc})") from exc
        values = list(sheet.iter_rows(values_only=True))
        if not values:
            raise SourceRegistryError(f"{path}: the first sheet is empty")
        header = [str(h).strip() if h is not None else "" for h in values[0]]
        rows = [
            (line, dict(zip(header, row, strict=False)))
            for line, row in enumerate(values[1:], start=2)
            if any(v not in (None, "") for v in row)
        ]
    else:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(enumerate(reader, start=2))
    missing = {"site_id", "type"} - set(header)
    if missing:
        raise SourceRegistryError(
            f"{path}: missing required column(s) {', '.join(sorted(missing))}"
        )
    return rows


def parse_source_table(path: Path) -> tuple[list[Source], list[str]]:
    """Every valid source of a file, and every problem (line number and reason)."""
    sources: list[Source] = []
    problems: list[str] = []
    seen: dict[int, int] = {}
    keys: dict[str, int] = {}
    for line, row in read_source_table(path):
        where = f"{path}, line {line}"
        try:
            source = parse_source_row(row, where)
        except SourceRegistryError as exc:
            problems.append(str(exc))
            continue
        if source.site_id in seen:
            problems.append(
                f"{where}: site_id {source.site_id} already defined on line {seen[source.site_id]}"
            )
            continue
        if source.source_key in keys:
            problems.append(
                f"{where}: source_key {source.source_key!r} already used on line "
                f"{keys[source.source_key]}"
            )
            continue
        seen[source.site_id] = line
        keys[source.source_key] = line
        sources.append(source)
    return sources, problems


@dataclass(frozen=True)
class CsvSourceRegistry:
    """Reads the file on every call, so an edited file is used by the next run without a restart."""

    path: Path

    def sources(self) -> list[Source]:
        sources, problems = parse_source_table(self.path)
        if problems:
            raise SourceRegistryError(problems[0])
        return [s for s in sources if s.active]


def write_sources_csv(path: Path, sources: Iterable[Source]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for s in sources:
            row = {c: getattr(s, c) for c in CSV_COLUMNS}
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def write_sources_xlsx(path: Path, sources: Iterable[Source]) -> None:
    from openpyxl import Workbook

    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook()
    sheet = book.active
    sheet.title = "sources"
    sheet.append(CSV_COLUMNS)
    for s in sources:
        sheet.append([getattr(s, c) for c in CSV_COLUMNS])
    book.save(path)
