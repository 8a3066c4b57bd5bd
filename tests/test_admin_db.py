"""Admin DB: migrations on SQLite and PostgreSQL, the registry and processing status."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from stores import fresh_postgres_database
from usage_stats.admin import db
from usage_stats.admin.registry import (
    DayStatus,
    DbSourceRegistry,
    add_source,
    complete_through,
    get_source,
    list_sources,
    processing_status,
    record_processing,
    update_source,
)
from usage_stats.admin.sources import Source, SourceRegistryError

TABLES = {"country", "source", "processing_status", "sushi_customer", "harvest_status"}
REPO = Source(1, "opendoar::1", "Kerwa", "R", "CR", "oai:www.kerwa.ucr.ac.cr:", 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'admin.db'}"
    else:
        yield from fresh_postgres_database()


def tables(url: str) -> set[str]:
    return set(inspect(db.engine_for(url)).get_table_names()) - {"alembic_version"}


def source_columns(url: str) -> set[str]:
    return {c["name"] for c in inspect(db.engine_for(url)).get_columns("source")}


def test_upgrade_from_empty_downgrade_one_step_upgrade_again(url):
    assert tables(url) == set()
    db.upgrade(url)
    assert db.current_revision(url) == db.head_revision() == "0006"
    assert tables(url) == TABLES
    assert {"handle_prefixes", "doi_prefixes", "oai_sets", "distributed_robots"} <= source_columns(
        url
    )
    db.downgrade(url, "-1")
    assert db.current_revision(url) == "0005"
    assert "distributed_robots" not in source_columns(url)
    db.downgrade(url, "-1")
    assert db.current_revision(url) == "0004"
    assert tables(url) == TABLES - {"harvest_status"}
    assert "oai_sets" not in source_columns(url)
    db.downgrade(url, "-1")
    assert db.current_revision(url) == "0003"
    assert tables(url) == TABLES - {"harvest_status"}
    assert not {"handle_prefixes", "doi_prefixes"} & source_columns(url)
    db.downgrade(url, "-1")
    assert db.current_revision(url) == "0002"
    assert tables(url) == TABLES - {"sushi_customer", "harvest_status"}
    db.upgrade(url)
    assert db.current_revision(url) == "0006"
    assert tables(url) == TABLES
    db.downgrade(url, "base")
    assert tables(url) == set()


def test_prefix_migration_keeps_sources_and_their_checks(url):
    """0004 on a DB with sources: they keep every field and declare no prefixes until told;
    its downgrade rebuilds the table on SQLite, which must keep the CHECK constraints."""
    db.upgrade(url, "0003")
    with db.engine_for(url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO source (source_key, name, type, site_id, country, "
                "identifier_prefix, identifier_rule, custom_var_slot, active) VALUES "
                "('opendoar::1', 'Kerwa', 'R', 1, 'CR', 'oai:www.kerwa.ucr.ac.cr:', "
                "'standard', 1, true)"
            )
        )
    db.upgrade(url)
    assert get_source(url, 1) == REPO
    update_source(url, 1, handle_prefixes=("10669",), doi_prefixes=("10.15517",))
    assert get_source(url, 1).handle_prefixes == ("10669",)
    db.downgrade(url, "0003")
    with pytest.raises(IntegrityError), db.engine_for(url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO source (source_key, name, type, site_id, identifier_rule, "
                "custom_var_slot, active) VALUES ('x', 'x', 'Q', 2, 'standard', 1, true)"
            )
        )
    db.upgrade(url)
    assert get_source(url, 1) == REPO


def test_prefixes_are_stored_normalised_and_read_back_as_tuples(url):
    db.upgrade(url)
    pasted = dataclasses.replace(
        REPO,
        identifier_prefix="\u200b oai:https://www.Kerwa.ucr.ac.cr:8443/server: ",
        handle_prefixes=("https://hdl.handle.net/10669/ ", "hdl:20.500.11764"),
        doi_prefixes=("doi:10.15517", "https://doi.org/10.5555/UCR."),
    )
    stored = add_source(url, pasted)
    assert stored.identifier_prefix == "oai:www.kerwa.ucr.ac.cr:"
    assert stored.handle_prefixes == ("10669", "20.500.11764")
    assert stored.doi_prefixes == ("10.15517", "10.5555/ucr.")
    assert get_source(url, 1) == stored
    with db.engine_for(url).connect() as conn:
        raw = conn.execute(text("SELECT handle_prefixes, doi_prefixes FROM source")).one()
    assert tuple(raw) == ("10669 20.500.11764", "10.15517 10.5555/ucr.")
    assert DbSourceRegistry(url).sources() == [stored]
    cleared = update_source(url, 1, identifier_prefix=" ", handle_prefixes=(), doi_prefixes=())
    assert get_source(url, 1) == cleared == dataclasses.replace(REPO, identifier_prefix=None)
    with db.engine_for(url).connect() as conn:
        raw = conn.execute(text("SELECT handle_prefixes, doi_prefixes FROM source")).one()
    assert tuple(raw) == (None, None)


def test_a_prefix_another_active_repository_declares_is_refused(url):
    db.upgrade(url)
    add_source(url, dataclasses.replace(REPO, handle_prefixes=("10669",)))
    other = Source(2, "opendoar::2", "Other", "R", "CR", "oai:other.org:", 1)
    with pytest.raises(
        SourceRegistryError,
        match=r"source 2: handle prefix 10669 is already declared by source 1 \(opendoar::1\)",
    ):
        add_source(url, dataclasses.replace(other, handle_prefixes=("hdl:10669",)))
    add_source(url, dataclasses.replace(other, doi_prefixes=("10.15517",)))
    with pytest.raises(SourceRegistryError, match="DOI prefix 10.15517 is already declared"):
        update_source(url, 1, doi_prefixes=("10.15517",))
    # a longer prefix inside another's is no conflict (the longest wins)
    update_source(url, 1, doi_prefixes=("10.15517/ucr.",))
    # a disabled repository owns nothing, so its prefix is free
    update_source(url, 2, active=False)
    update_source(url, 1, doi_prefixes=("10.15517",))
    with pytest.raises(SourceRegistryError, match="DOI prefix 10.15517 is already declared"):
        update_source(url, 2, active=True)
    assert get_source(url, 2).active is False


def test_prefixes_that_are_not_prefixes_cannot_be_saved(url):
    db.upgrade(url)
    cases = [
        ({"handle_prefixes": ("kerwa",)}, "handle_prefixes: handle prefix 'kerwa' is not a handle"),
        ({"handle_prefixes": ("10.15517",)}, "is a DOI prefix: declare it as a DOI prefix"),
        ({"doi_prefixes": ("10669",)}, "doi_prefixes: DOI prefix '10669' is not a DOI prefix"),
    ]
    for change, message in cases:
        with pytest.raises(SourceRegistryError, match=re.escape(message)):
            add_source(url, dataclasses.replace(REPO, **change))
    node = Source(4, "national::CR", "Node", "N", "CR", None, 1, handle_prefixes=("10669",))
    with pytest.raises(SourceRegistryError, match="only repositories \\(type R\\) own items"):
        add_source(url, node)
    assert list_sources(url, include_inactive=True) == []


def test_unmigrated_db_says_what_to_do(url):
    with pytest.raises(db.AdminDbError, match="run `usage-stats db upgrade`"):
        DbSourceRegistry(url).sources()


def test_a_db_found_current_is_not_asked_again_for_a_while_but_a_downgrade_is_seen(
    url, monkeypatch
):
    db.upgrade(url)
    asked = []
    real = db.current_revision
    monkeypatch.setattr(db, "current_revision", lambda u: asked.append(u) or real(u))
    for _ in range(5):
        db.ensure_current(url)
    assert len(asked) == 1
    db.downgrade(url, "-1")
    with pytest.raises(db.AdminDbError, match="run `usage-stats db upgrade`"):
        db.ensure_current(url)
    db.upgrade(url)
    # and once the window has passed, the DB is asked again
    clock = [1_000_000.0]
    monkeypatch.setattr(db.time, "monotonic", lambda: clock[0])
    db.ensure_current(url)
    clock[0] += db.CURRENT_FOR_SECONDS + 0.1
    asked.clear()
    db.ensure_current(url)
    assert asked == [url]


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


def test_harvest_status_round_trip_and_failures_keep_the_last_from(url):
    from usage_stats.admin.registry import (
        SourceHarvestStatus,
        harvest_status,
        record_harvest_failure,
        record_harvest_success,
    )

    db.upgrade(url)
    stored = add_source(
        url,
        dataclasses.replace(
            REPO,
            oai_base_url="https://kerwa.ucr.ac.cr/oai",
            oai_sets=("com_10669_1", "col_10669_2:sub"),
        ),
    )
    assert get_source(url, 1).oai_sets == ("com_10669_1", "col_10669_2:sub") == stored.oai_sets
    with pytest.raises(SourceRegistryError, match="not an OAI-PMH setSpec"):
        update_source(url, 1, oai_sets=("a set",))
    with pytest.raises(SourceRegistryError, match="oai_base_url must be an http"):
        update_source(url, 1, oai_base_url="ftp://kerwa")
    run = dt.datetime(2026, 2, 1, 10, 0, 5, tzinfo=dt.UTC)
    record_harvest_failure(url, "opendoar::1", "source opendoar::1: HTTP 500", run)
    [first] = harvest_status(url)
    assert (first.last_status, first.last_response_date, first.records_total) == ("failed", None, 0)
    ok = SourceHarvestStatus(
        "opendoar::1",
        run,
        "ok",
        "2026-02-01T10:00:00Z",
        run,
        None,
        ("oai_dc", "oai_openaire"),
        40,
        37,
        0,
        3,
        4,
        40,
    )
    record_harvest_success(url, ok)
    assert harvest_status(url, "opendoar::1") == [ok]
    later = run + dt.timedelta(days=1)
    record_harvest_failure(url, "opendoar::1", "source opendoar::1: unreachable", later)
    [failed] = harvest_status(url)
    assert failed == dataclasses.replace(
        ok, last_run_at=later, last_status="failed", last_error="source opendoar::1: unreachable"
    )


def test_distributed_mode_migrates_on_and_is_checked(url):
    """0006 on a DB with a source: it gets the rule `on`; a mode other than on/report/off is
    refused with the field named, and a valid one is stored."""
    db.upgrade(url, "0005")
    with db.engine_for(url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO source (source_key, name, type, site_id, custom_var_slot, "
                "identifier_rule, active) VALUES ('repo', 'Repo', 'R', 7, 1, 'standard', :on)"
            ),
            {"on": True},
        )
    db.upgrade(url)
    assert get_source(url, 7).distributed_robots == "on"
    with pytest.raises(SourceRegistryError, match="distributed_robots must be one of"):
        update_source(url, 7, distributed_robots="sometimes")
    update_source(url, 7, distributed_robots="report")
    assert get_source(url, 7).distributed_robots == "report"
