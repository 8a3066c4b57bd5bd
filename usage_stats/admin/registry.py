"""Sources and processing status in the admin DB.

`DbSourceRegistry` is what the pipeline asks for its sites: it reads the DB on every call,
so a source added or changed by an operator is used by the next run without a restart.
Writes go through `validate_source`: a source whose rule cannot work cannot be saved; its
prefixes are stored normalised (`normalize_source`), and a prefix another active repository
already declares is refused (`prefix_conflicts`): an item's owner is never a guess.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pycountry
from sqlalchemy import delete, select

from usage_stats.admin.db import ensure_current, session_scope
from usage_stats.admin.models import Country, HarvestStatus, ProcessingStatus, SourceRow
from usage_stats.admin.sources import (
    Source,
    SourceRegistryError,
    conflict_message,
    normalize_source,
    parse_source_table,
    prefix_conflicts,
    validate_source,
    write_sources_csv,
    write_sources_xlsx,
)

_FIELDS = [f.name for f in dataclasses.fields(Source)]


def _to_source(row: SourceRow) -> Source:
    return Source(**{name: getattr(row, name) for name in _FIELDS})


def _check(source: Source) -> Source:
    """The source as it will be stored (prefixes normalised), or every problem it has."""
    errors = validate_source(source)
    if errors:
        raise SourceRegistryError(f"source {source.site_id}: " + "; ".join(errors))
    return normalize_source(source)


def _check_conflicts(session, source: Source) -> None:  # noqa: ANN001
    """Refuse `source` when it declares a prefix another active repository declares."""
    others = session.scalars(
        select(SourceRow).where(SourceRow.site_id != source.site_id).order_by(SourceRow.site_id)
    ).all()
    for first, later, what in prefix_conflicts([*(_to_source(r) for r in others), source]):
        if later is source:
            raise SourceRegistryError(
                f"source {source.site_id}: " + conflict_message(first, later, what)
            )


@dataclass(frozen=True)
class DbSourceRegistry:
    url: str

    def sources(self) -> list[Source]:
        ensure_current(self.url)
        with session_scope(self.url) as session:
            rows = session.scalars(
                select(SourceRow).where(SourceRow.active.is_(True)).order_by(SourceRow.site_id)
            ).all()
            return [_to_source(r) for r in rows]


def list_sources(url: str, include_inactive: bool = False) -> list[Source]:
    ensure_current(url)
    with session_scope(url) as session:
        query = select(SourceRow).order_by(SourceRow.site_id)
        if not include_inactive:
            query = query.where(SourceRow.active.is_(True))
        return [_to_source(r) for r in session.scalars(query).all()]


def get_source(url: str, site_id: int) -> Source:
    ensure_current(url)
    with session_scope(url) as session:
        row = session.scalar(select(SourceRow).where(SourceRow.site_id == site_id))
        if row is None:
            raise SourceRegistryError(f"no source with site_id {site_id}")
        return _to_source(row)


def _upsert_country(session, code: str | None, national_site_id: int | None = None) -> None:  # noqa: ANN001
    if code is None:
        return
    country = session.get(Country, code)
    if country is None:
        name = pycountry.countries.get(alpha_2=code).name
        session.add(Country(code=code, name=name, national_site_id=national_site_id))
    elif national_site_id is not None:
        country.national_site_id = national_site_id


def add_source(url: str, source: Source) -> Source:
    source = _check(source)
    ensure_current(url)
    with session_scope(url) as session:
        clash = session.scalar(
            select(SourceRow).where(
                (SourceRow.site_id == source.site_id) | (SourceRow.source_key == source.source_key)
            )
        )
        if clash is not None:
            what = "site_id" if clash.site_id == source.site_id else "source_key"
            value = source.site_id if what == "site_id" else source.source_key
            raise SourceRegistryError(f"a source with {what} {value!r} already exists")
        _check_conflicts(session, source)
        session.add(SourceRow(**dataclasses.asdict(source)))
        _upsert_country(session, source.country, source.site_id if source.type == "N" else None)
    return source


def update_source(url: str, site_id: int, **changes: object) -> Source:
    unknown = set(changes) - set(_FIELDS) - {"site_id"}
    if unknown:
        raise SourceRegistryError(f"unknown field(s): {', '.join(sorted(unknown))}")
    current = get_source(url, site_id)
    updated = _check(dataclasses.replace(current, **changes))  # type: ignore[arg-type]
    with session_scope(url) as session:
        _check_conflicts(session, updated)
        if updated.source_key != current.source_key:
            key = updated.source_key
            clash = session.scalar(select(SourceRow).where(SourceRow.source_key == key))
            if clash is not None:
                raise SourceRegistryError(f"a source with source_key {key!r} already exists")
        row = session.scalar(select(SourceRow).where(SourceRow.site_id == site_id))
        for name in _FIELDS:
            setattr(row, name, getattr(updated, name))
        _upsert_country(session, updated.country, site_id if updated.type == "N" else None)
    return updated


def disable_source(url: str, site_id: int) -> Source:
    return update_source(url, site_id, active=False)


@dataclass(frozen=True)
class ImportReport:
    added: list[int]
    updated: list[int]
    unchanged: list[int]
    problems: list[str]
    dry_run: bool

    @property
    def ok(self) -> bool:
        return not self.problems


def import_sources(url: str, path: Path, dry_run: bool = False) -> ImportReport:
    """All rows or nothing: one bad row rejects the file, with every bad row listed."""
    sources, problems = parse_source_table(path)
    existing = {s.site_id: s for s in list_sources(url, include_inactive=True)}
    keys = {s.source_key: s.site_id for s in existing.values()}
    for source in sources:
        owner = keys.get(source.source_key)
        if owner is not None and owner != source.site_id:
            problems.append(
                f"{path}: site_id {source.site_id}: source_key {source.source_key!r} belongs to "
                f"site_id {owner} in the admin DB"
            )
    # The registry as it would be after the import: the file's rows replace their sites'.
    in_file = {s.site_id for s in sources}
    kept = [s for s in existing.values() if s.site_id not in in_file]
    for first, later, what in prefix_conflicts([*kept, *sources]):
        if first.site_id in in_file or later.site_id not in in_file:
            continue  # within the file: named with its lines by parse_source_table
        problems.append(
            f"{path}: site_id {later.site_id}: {what} is already declared by site_id "
            f"{first.site_id} ({first.source_key}) in the admin DB; two active repositories "
            "cannot own the same prefix"
        )
    added = [s.site_id for s in sources if s.site_id not in existing]
    updated = [s.site_id for s in sources if s.site_id in existing and existing[s.site_id] != s]
    unchanged = [s.site_id for s in sources if existing.get(s.site_id) == s]
    report = ImportReport(added, updated, unchanged, problems, dry_run)
    if problems or dry_run:
        return report
    with session_scope(url) as session:
        for source in sources:
            row = session.scalar(select(SourceRow).where(SourceRow.site_id == source.site_id))
            if row is None:
                session.add(SourceRow(**dataclasses.asdict(source)))
            else:
                for name in _FIELDS:
                    setattr(row, name, getattr(source, name))
            _upsert_country(session, source.country, source.site_id if source.type == "N" else None)
    return report


def export_sources(url: str, path: Path) -> int:
    sources = list_sources(url, include_inactive=True)
    if path.suffix.lower() == ".xlsx":
        write_sources_xlsx(path, sources)
    else:
        write_sources_csv(path, sources)
    return len(sources)


# --- processing status -----------------------------------------------------------------------


@dataclass(frozen=True)
class DayStatus:
    site_id: int
    day: dt.date
    events_in: int
    kept: int
    rejected: int
    rejected_by_reason: dict[str, int]
    run_id: str
    finished_at: dt.datetime


def record_processing(url: str, statuses: list[DayStatus]) -> None:
    """Replace the status of each (site, day) with what this run did."""
    if not statuses:
        return
    ensure_current(url)
    with session_scope(url) as session:
        for status in statuses:
            session.execute(
                delete(ProcessingStatus)
                .where(ProcessingStatus.site_id == status.site_id)
                .where(ProcessingStatus.day == status.day)
            )
        session.flush()
        session.add_all(ProcessingStatus(**dataclasses.asdict(s)) for s in statuses)


def processing_status(
    url: str, site_id: int | None = None, start: dt.date | None = None, end: dt.date | None = None
) -> list[DayStatus]:
    ensure_current(url)
    with session_scope(url) as session:
        query = select(ProcessingStatus).order_by(ProcessingStatus.day, ProcessingStatus.site_id)
        if site_id is not None:
            query = query.where(ProcessingStatus.site_id == site_id)
        if start is not None:
            query = query.where(ProcessingStatus.day >= start)
        if end is not None:
            query = query.where(ProcessingStatus.day <= end)
        return [
            DayStatus(**{f.name: getattr(r, f.name) for f in dataclasses.fields(DayStatus)})
            for r in session.scalars(query).all()
        ]


def complete_through(url: str, site_id: int | None = None) -> dt.date | None:
    """The last day up to which every day since the first processed one has a status.

    Asked on every dashboard and API response (cached briefly), so only the distinct days are
    read, not the status rows: a year of 50 sites is 365 days instead of 18,000 rows."""
    ensure_current(url)
    with session_scope(url) as session:
        query = select(ProcessingStatus.day).distinct().order_by(ProcessingStatus.day)
        if site_id is not None:
            query = query.where(ProcessingStatus.site_id == site_id)
        days = list(session.scalars(query))
    if not days:
        return None
    last = days[0]
    for day in days[1:]:
        if day != last + dt.timedelta(days=1):
            break
        last = day
    return last


# --- OAI-PMH harvest status ------------------------------------------------------------------


@dataclass(frozen=True)
class SourceHarvestStatus:
    """What the last harvest of a source did; `last_response_date` is the next `from`."""

    source_key: str
    last_run_at: dt.datetime
    last_status: str  # ok | failed
    last_response_date: str | None = None
    last_completed_at: dt.datetime | None = None
    last_error: str | None = None
    formats: tuple[str, ...] = ()
    records_seen: int = 0
    records_added: int = 0
    records_updated: int = 0
    records_deleted: int = 0
    records_with_problems: int = 0
    records_total: int = 0


_HARVEST_FIELDS = [f.name for f in dataclasses.fields(SourceHarvestStatus)]


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite and MySQL hand back naive datetimes; every stored one was UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def harvest_status(url: str, source_key: str | None = None) -> list[SourceHarvestStatus]:
    ensure_current(url)
    with session_scope(url) as session:
        query = select(HarvestStatus).order_by(HarvestStatus.source_key)
        if source_key is not None:
            query = query.where(HarvestStatus.source_key == source_key)
        out = []
        for row in session.scalars(query).all():
            values = {name: getattr(row, name) for name in _HARVEST_FIELDS}
            values["last_run_at"] = _utc(values["last_run_at"])
            values["last_completed_at"] = _utc(values["last_completed_at"])
            out.append(SourceHarvestStatus(**values))
        return out


def record_harvest_success(url: str, status: SourceHarvestStatus) -> None:
    """Replace the source's status with a completed harvest's."""
    ensure_current(url)
    with session_scope(url) as session:
        row = session.get(HarvestStatus, status.source_key)
        if row is None:
            row = HarvestStatus(source_key=status.source_key)
            session.add(row)
        for name in _HARVEST_FIELDS:
            setattr(row, name, getattr(status, name))


def record_harvest_failure(url: str, source_key: str, error: str, run_at: dt.datetime) -> None:
    """Note a failed run, keeping the last completed harvest's response date and counts: the
    next run starts from there, and the counts stay those of the data actually stored."""
    ensure_current(url)
    with session_scope(url) as session:
        row = session.get(HarvestStatus, source_key)
        if row is None:
            row = HarvestStatus(source_key=source_key, formats=())
            session.add(row)
        row.last_run_at = run_at
        row.last_status = "failed"
        row.last_error = error
