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
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Protocol

import polars as pl
import pycountry

from usage_stats.pipeline.ownership import PrefixError, normalize_prefixes, split_prefixes

SOURCE_TYPES = {"R": "repository", "N": "national node", "L": "regional portal"}
IDENTIFIER_RULES = ("standard", "regex", "mapping")
# modes of the `robot_distributed` rule per source (usage_stats.pipeline.distributed.MODES)
DISTRIBUTED_MODES = ("on", "report", "off")

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
    "handle_prefixes",
    "doi_prefixes",
    "oai_sets",
    "distributed_robots",
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
    # Naming authorities of the repository's handles and DOIs (normalised: `1721.1`,
    # `10.1234`), which attribute its items to it when they are seen as handles or DOIs.
    handle_prefixes: tuple[str, ...] = ()
    doi_prefixes: tuple[str, ...] = ()
    # OAI-PMH setSpecs the harvest is limited to (none: the whole repository at oai_base_url).
    oai_sets: tuple[str, ...] = ()
    # The `robot_distributed` rule on this source's use: `on` (flagged blocks' events are
    # rejected), `report` (audited only) or `off` (usage_stats.pipeline.distributed).
    distributed_robots: str = "on"


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
    "handle_prefixes": pl.List(pl.String()),
    "doi_prefixes": pl.List(pl.String()),
    "oai_sets": pl.List(pl.String()),
    "distributed_robots": pl.String(),
}


def sources_frame(sources: Iterable[Source]) -> pl.DataFrame:
    """The registry as a frame, the shape the transforms join against."""
    rows = [{f.name: _frame_value(getattr(s, f.name)) for f in fields(Source)} for s in sources]
    if not rows:
        return pl.DataFrame(schema=FRAME_SCHEMA)
    return pl.DataFrame(rows, schema=FRAME_SCHEMA, orient="row")


def _frame_value(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


# --- validation ------------------------------------------------------------------------------


def sample_identifier(source: Source) -> str:
    """What a rule is test-applied to: an identifier as this source would record it."""
    return f"{source.identifier_prefix or 'oai:example.org:'}123456789/1"


def load_mapping(path: str) -> pl.DataFrame:
    """A mapping table: CSV with columns `from` and `to` (identifiers after normalisation)."""
    from usage_stats.pipeline.identifiers import normalize_identifier_expr

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
    if source.distributed_robots not in DISTRIBUTED_MODES:
        errors.append(
            f"distributed_robots must be one of {', '.join(DISTRIBUTED_MODES)}, "
            f"got {source.distributed_robots!r}"
        )
    return errors + _prefix_errors(source) + _oai_errors(source)


# A setSpec as OAI-PMH 2.0 defines it: unreserved URI characters, `:` between levels.
_SET_SPEC = re.compile(r"^[A-Za-z0-9\-_.!~*'()]+(:[A-Za-z0-9\-_.!~*'()]+)*$")


def _oai_errors(source: Source) -> list[str]:
    """An OAI base URL that no harvester could request, or sets no OAI server could name."""
    errors = []
    url = source.oai_base_url
    if url is not None and not re.match(r"^(https?://[^\s/]+|file:///\S+\.json$)", url):
        errors.append(
            f"oai_base_url must be an http(s) URL (or a file:///….json dataset of the demo's "
            f"data provider), got {url!r}"
        )
    for spec in source.oai_sets:
        if not _SET_SPEC.match(spec):
            errors.append(f"oai_sets: {spec!r} is not an OAI-PMH setSpec")
    if source.oai_sets and not url:
        errors.append("oai_sets: sets need an oai_base_url to be harvested from")
    return errors


def _prefix_errors(source: Source) -> list[str]:
    """Declared handle and DOI prefixes that cannot be read, or that a source which owns no
    items declares (only repositories own items: a node's declaration would do nothing)."""
    errors = []
    for column, kind in (("handle_prefixes", "hdl"), ("doi_prefixes", "doi")):
        values = getattr(source, column)
        if values and source.type != "R":
            errors.append(
                f"{column}: only repositories (type R) own items; a source of type "
                f"{source.type} declares none"
            )
        for value in values:
            try:
                normalize_prefixes(value, kind)
            except PrefixError as exc:
                errors.append(f"{column}: {exc}")
    return errors


def normalize_source(source: Source) -> Source:
    """`source` with every prefix in its stored spelling; what the registry saves, so a
    pasted trailing space or resolver URL never reaches the admin DB. Call `validate_source`
    first: an unreadable prefix raises here."""
    return replace(
        source,
        identifier_prefix=normalize_prefix(source.identifier_prefix),
        handle_prefixes=normalize_prefixes(source.handle_prefixes, "hdl"),
        doi_prefixes=normalize_prefixes(source.doi_prefixes, "doi"),
    )


def prefix_conflicts(sources: Iterable[Source]) -> list[tuple[Source, Source, str]]:
    """(earlier, later, what) for every prefix two active repositories both declare: the
    item's owner would be a guess, so the registry refuses to save it. A longer prefix inside
    another's (`10.1234/ufsc.` inside `10.1234`) is no conflict: the longest wins."""
    claimed: dict[tuple[str, str], Source] = {}
    conflicts = []
    for source in sources:
        if source.type != "R" or not source.active:
            continue
        declared = (
            [("identifier prefix", source.identifier_prefix)] if source.identifier_prefix else []
        )
        declared += [("handle prefix", p) for p in source.handle_prefixes]
        declared += [("DOI prefix", p) for p in source.doi_prefixes]
        for kind, prefix in declared:
            first = claimed.setdefault((kind, prefix), source)
            if first is not source:
                conflicts.append((first, source, f"{kind} {prefix}"))
    return conflicts


def conflict_message(first: Source, later: Source, what: str) -> str:
    return (
        f"{what} is already declared by source {first.site_id} ({first.source_key}); "
        "two active repositories cannot own the same prefix"
    )


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
        handle_prefixes=_prefixes(row, "handle_prefixes", "hdl", where),
        doi_prefixes=_prefixes(row, "doi_prefixes", "doi", where),
        oai_sets=tuple(split_prefixes(row.get("oai_sets"))),
        distributed_robots=(_text(row, "distributed_robots") or "on").lower(),
    )
    errors = validate_source(source)
    if errors:
        raise SourceRegistryError(f"{where}: " + "; ".join(errors))
    return source


def _prefixes(row: dict[str, object], column: str, kind: str, where: str) -> tuple[str, ...]:
    try:
        return normalize_prefixes(row.get(column), kind)
    except PrefixError as exc:
        raise SourceRegistryError(f"{where}: column '{column}': {exc}") from exc


def normalize_prefix(prefix: str | None) -> str | None:
    """Normalise as if an identifier followed, so `oai:https://host/server:` → `oai:host:`.

    The sample local id has a slash, as a DSpace handle does, so that a port spelled without a
    scheme (`oai:host:8080:`) is read as the identifiers after it are read (`oai:host:`)."""
    from usage_stats.pipeline.identifiers import clean_identifier, normalize_identifier

    prefix = clean_identifier(prefix)
    if prefix is None:
        return None
    sample = "0/0"
    key = normalize_identifier(prefix + sample) or ""
    return (key[: -len(sample)] if key.endswith(sample) else key) or None


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
        clashes = prefix_conflicts([*sources, source])
        if clashes:
            first, _, what = clashes[0]
            problems.append(
                f"{where}: {what} is already declared by site_id {first.site_id} on line "
                f"{seen[first.site_id]}; two active repositories cannot own the same prefix"
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
            writer.writerow({c: _cell(getattr(s, c)) for c in CSV_COLUMNS})


def write_sources_xlsx(path: Path, sources: Iterable[Source]) -> None:
    from openpyxl import Workbook

    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook()
    sheet = book.active
    sheet.title = "sources"
    sheet.append(CSV_COLUMNS)
    for s in sources:
        sheet.append([_cell(getattr(s, c)) for c in CSV_COLUMNS])
    book.save(path)


def _cell(value: object) -> object:
    """A value as a file cell: lists of prefixes `;`-separated, as the import reads them."""
    if isinstance(value, tuple):
        return ";".join(value)
    return "" if value is None else value
