"""Admin DB: migrations on SQLite and PostgreSQL, the registry and processing status."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import inspect

from stores import fresh_postgres_database
from usage_stats.admin import db
from usage_stats.admin.registry import (
    DayStatus,
    DbSourceRegistry,
    add_source,
    complete_through,
    get_source,
    processing_status,
    record_processing,
    update_source,
)
from usage_stats.sources import Source, SourceRegistryError

TABLES = {"country", "source", "processing_status", "sushi_customer"}
REPO = Source(1, "opendoar::1", "Kerwa", "R", "CR", "oai:www.kerwa.ucr.ac.cr:", 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'admin.db'}"
    else:
        yield from fresh_postgres_database()


def tables(url: str) -> set[str]:
    return set(inspect(db.engine_for(url)).get_table_names()) - {"alembic_version"}


def test_upgrade_from_empty_downgrade_one_step_upgrade_again(url):
    assert tables(url) == set()
    db.upgrade(url)
    assert db.current_revision(url) == db.head_revision() == "0003"
    assert tables(url) == TABLES
    db.downgrade(url, "-1")
    assert db.current_revision(url) == "0002"
    assert tables(url) == TABLES - {"sushi_customer"}
    db.upgrade(url)
    assert db.current_revision(url) == "0003"
    assert tables(url) == TABLES
    db.downgrade(url, "base")
    assert tables(url) == set()


def test_unmigrated_db_says_what_to_do(url):
    with pytest.raises(db.AdminDbError, match="run `usage-stats db upgrade`"):
        DbSourceRegistry(url).sources()


def test_registry_sees_changes_without_restart(url):
    db.upgrade(url)
    registry = DbSourceRegistry(url)
    assert registry.sources() == []
    add_source(url, REPO)
    assert registry.sources() == [REPO]
    update_source(url, 1, name="Kerwa UCR")
    assert registry.sources()[0].name == "Kerwa UCR"
    update_source(url, 1, active=False)
    assert registry.sources() == []
    assert get_source(url, 1).active is False


def test_invalid_rule_cannot_be_saved(url):
    db.upgrade(url)
    bad = dataclasses.replace(REPO, identifier_rule="regex", rule_pattern="([", rule_replacement="")
    with pytest.raises(SourceRegistryError, match="rule_pattern '\\(\\[' does not compile"):
        add_source(url, bad)
    add_source(url, REPO)
    with pytest.raises(SourceRegistryError, match="needs a mapping_file"):
        update_source(url, 1, identifier_rule="mapping")
    assert get_source(url, 1).identifier_rule == "standard"


def test_processing_status_is_replaced_per_site_and_day(url):
    db.upgrade(url)
    day = dt.date(2026, 1, 1)
    now = dt.datetime(2026, 1, 2, 3, 0, tzinfo=dt.UTC)
    first = DayStatus(1, day, 10, 8, 2, {"thumbnail": 2}, "run-a", now)
    record_processing(url, [first, dataclasses.replace(first, day=day + dt.timedelta(days=1))])
    record_processing(url, [dataclasses.replace(first, kept=9, rejected=1, run_id="run-b")])
    rows = processing_status(url, site_id=1)
    assert [(r.day, r.kept, r.run_id) for r in rows] == [
        (day, 9, "run-b"),
        (day + dt.timedelta(days=1), 8, "run-a"),
    ]
    assert rows[0].rejected_by_reason == {"thumbnail": 2}
    assert complete_through(url, 1) == day + dt.timedelta(days=1)
    assert processing_status(url, start=day + dt.timedelta(days=1))[0].run_id == "run-a"
