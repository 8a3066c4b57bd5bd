"""Admin DB tables. Alembic migrations in `migrations/` create them; these models read them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Integer,
    String,
    Text,
    TypeDecorator,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

IDENTIFIER_RULES = ("standard", "regex", "mapping")


class Base(DeclarativeBase):
    pass


class PrefixList(TypeDecorator[tuple[str, ...]]):
    """A source's declared prefixes as one space-separated text, NULL when there are none.

    A text column rather than a child table or JSON: the list is short, read whole with its
    source, and the same on SQLite, PostgreSQL and MySQL. Prefixes are normalised before they
    are saved (`usage_stats.admin.sources.normalize_source`) and never contain white space."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: tuple[str, ...] | None, dialect: Dialect) -> str | None:
        if not value:
            return None
        if any(not p or any(c.isspace() for c in p) for p in value):
            raise ValueError(f"prefixes must be normalised before they are saved: {value!r}")
        return " ".join(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> tuple[str, ...]:
        return tuple(value.split()) if value else ()


class Country(Base):
    __tablename__ = "country"

    code: Mapped[str] = mapped_column(String(2), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    national_site_id: Mapped[int | None] = mapped_column(Integer)


class SourceRow(Base):
    """One Matomo site: a repository (R), a national node (N) or the regional portal (L)."""

    __tablename__ = "source"
    __table_args__ = (
        CheckConstraint("type IN ('R', 'N', 'L')", name="ck_source_type"),
        CheckConstraint(
            "identifier_rule IN ('standard', 'regex', 'mapping')", name="ck_source_identifier_rule"
        ),
        CheckConstraint("custom_var_slot BETWEEN 1 AND 10", name="ck_source_custom_var_slot"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    url: Mapped[str | None] = mapped_column(String(1000))
    institution: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(1))
    site_id: Mapped[int] = mapped_column(Integer, unique=True)
    national_site_id: Mapped[int | None] = mapped_column(Integer)
    regional_site_id: Mapped[int | None] = mapped_column(Integer)
    country: Mapped[str | None] = mapped_column(String(2))
    identifier_prefix: Mapped[str | None] = mapped_column(String(255))
    identifier_rule: Mapped[str] = mapped_column(String(20), default="standard")
    rule_pattern: Mapped[str | None] = mapped_column(Text)
    rule_replacement: Mapped[str | None] = mapped_column(Text)
    mapping_file: Mapped[str | None] = mapped_column(String(1000))
    custom_var_slot: Mapped[int] = mapped_column(Integer, default=1)
    oai_base_url: Mapped[str | None] = mapped_column(String(1000))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    handle_prefixes: Mapped[tuple[str, ...]] = mapped_column(PrefixList, default=())
    doi_prefixes: Mapped[tuple[str, ...]] = mapped_column(PrefixList, default=())
    # OAI-PMH setSpecs to harvest (none: the whole repository); setSpecs hold no white space.
    oai_sets: Mapped[tuple[str, ...]] = mapped_column(PrefixList, default=())
    # `robot_distributed` for this source: on, report (audited only) or off
    distributed_robots: Mapped[str] = mapped_column(String(10), default="on")
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class ProcessingStatus(Base):
    """What a run did for one site and day: the basis of "data complete up to"."""

    __tablename__ = "processing_status"

    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    events_in: Mapped[int] = mapped_column(Integer)
    kept: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[int] = mapped_column(Integer)
    rejected_by_reason: Mapped[dict] = mapped_column(JSON)
    run_id: Mapped[str] = mapped_column(String(64))
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class SushiCustomer(Base):
    """A COUNTER SUSHI customer; the API key is stored only as a salted hash."""

    __tablename__ = "sushi_customer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    requestor_id: Mapped[str | None] = mapped_column(String(100))
    api_key_hash: Mapped[str] = mapped_column(String(255))
    site_ids: Mapped[list] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class HarvestStatus(Base):
    """The last OAI-PMH harvest of one source: where the next one starts, and what it did.

    `last_response_date` only moves when a harvest completes, so a failed run leaves the next
    one starting where the last good one ended."""

    __tablename__ = "harvest_status"
    __table_args__ = (
        CheckConstraint("last_status IN ('ok', 'failed')", name="ck_harvest_status_status"),
    )

    source_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_response_date: Mapped[str | None] = mapped_column(String(32))
    last_completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[str] = mapped_column(String(10))
    last_error: Mapped[str | None] = mapped_column(Text)
    formats: Mapped[tuple[str, ...]] = mapped_column(PrefixList, default=())
    records_seen: Mapped[int] = mapped_column(Integer, default=0)
    records_added: Mapped[int] = mapped_column(Integer, default=0)
    records_updated: Mapped[int] = mapped_column(Integer, default=0)
    records_deleted: Mapped[int] = mapped_column(Integer, default=0)
    records_with_problems: Mapped[int] = mapped_column(Integer, default=0)
    records_total: Mapped[int] = mapped_column(Integer, default=0)
