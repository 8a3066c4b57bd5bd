"""OAI-PMH harvesting against a real data provider (oai-repo, scripts/services.sh `oai`) with
planted records, and against a misbehaving server for the faults a real one will not make."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

import polars as pl
import pytest

from oai_support import Provider, fake_server, good_source, oai_error, records_page
from usage_stats.admin import db
from usage_stats.admin.registry import harvest_status
from usage_stats.demo.oai_records import (
    epoch_changes,
    planted_records,
    provider_dataset,
    source_formats,
)
from usage_stats.demo.synthetic import SyntheticConfig, build_sources, items_per_site
from usage_stats.metadata.harvest import ClientSettings, HarvestError, HarvestTarget, harvest_source
from usage_stats.metadata.schema import ITEM_METADATA_SCHEMA, METADATA_CHANGES_SCHEMA
from usage_stats.metadata.store import MetadataStore
from usage_stats.metadata.sync import harvest_sources
from usage_stats.storage.lake import LocalLake

CONFIG = SyntheticConfig()
N_ITEMS = items_per_site(CONFIG)
FAST = ClientSettings(delay=0, timeout=10, max_retries=2, backoff=0.01)


def headers_only(metadata: dict[str, bytes]) -> dict[str, object]:
    """The harvest layer's tests read headers; field mapping has its own tests."""
    assert metadata, "a live record always carries metadata"
    return {"metadata_format": next((p for p in metadata if p != "oai_dc"), "oai_dc")}


@pytest.fixture
def provider():
    p = Provider()
    yield p
    p.close()


@pytest.fixture
def env(tmp_path: Path, provider: Provider):
    """Admin DB, warehouse and the generator's sources, repositories pointed at the provider."""
    url = f"sqlite:///{tmp_path / 'admin.db'}"
    db.upgrade(url)
    sources = [
        dataclasses.replace(s, oai_base_url=provider.url(s.source_key)) if s.type == "R" else s
        for s in build_sources(CONFIG.sites)
    ]
    provider.put(provider_dataset(sources, planted_records(sources, N_ITEMS, CONFIG.seed), 7))
    store = MetadataStore(LocalLake(tmp_path / "warehouse"))
    return url, sources, store


def _harvest(env, **kwargs):
    url, sources, store = env
    kwargs.setdefault("mapper", headers_only)
    return {o.source_key: o for o in harvest_sources(sources, store, url, FAST, **kwargs)}


def test_first_harvest_reads_every_planted_record(env):
    url, sources, store = env
    outcomes = _harvest(env)
    planted = planted_records(sources, N_ITEMS, CONFIG.seed)
    assert {k for k, o in outcomes.items() if o.status == "skipped"} == {
        "national::CR",
        "regional::LA",
    }
    assert all(o.note == "no OAI base URL" for o in outcomes.values() if o.status == "skipped")
    for source in (s for s in sources if s.type == "R"):
        mine = [r for r in planted if r.source_key == source.source_key]
        o = outcomes[source.source_key]
        assert o.status == "ok", o.note
        assert o.formats == tuple(source_formats(source))
        assert o.since is None
        n_deleted = sum(r.deleted for r in mine)
        assert (o.seen, o.added, o.updated, o.deleted, o.total) == (
            len(mine),
            len(mine) - n_deleted,
            0,
            n_deleted,
            len(mine),
        )
        # 7 records a page: every list is several pages, resumption tokens followed
        pages = -(-len(mine) // 7) + -(-(len(mine) - n_deleted) // 7) - 1
        assert o.requests >= 2 + pages
        state = store.read_current(source.source_key)
        assert state.schema == ITEM_METADATA_SCHEMA
        assert state.get_column("oai_identifier").to_list() == sorted(r.identifier for r in mine)
        by_id = {r["oai_identifier"]: r for r in state.iter_rows(named=True)}
        for r in mine:
            row = by_id[r.identifier]
            assert row["deleted"] == r.deleted
            assert row["sets"] == list(r.sets)
            assert row["item_key"] == r.expected["item_key"]
            assert row["datestamp"] == r.datestamp
            assert row["site_id"] == source.site_id
            assert row["metadata_format"] == (None if r.deleted else source_formats(source)[1])
        [status] = harvest_status(url, source.source_key)
        assert status.last_status == "ok" and status.last_error is None
        assert status.last_response_date == o.response_date
        assert status.records_total == len(mine)
        assert status.formats == o.formats
        log = store.read_changes(source.source_key)
        assert log.schema == METADATA_CHANGES_SCHEMA
        assert log.group_by("change").len().sort("change").rows() == sorted(
            [("added", len(mine) - n_deleted), ("deleted", n_deleted)]
        )


def test_second_harvest_reads_only_the_changes_and_logs_them(env, provider):
    url, sources, store = env
    first = _harvest(env)
    time.sleep(1.1)  # the edits are stamped after the first harvest's response date
    changed_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    edited = planted_records(sources, N_ITEMS, CONFIG.seed, epoch=2, changed_at=changed_at)
    provider.put(provider_dataset(sources, edited, 7))
    time.sleep(1.1)  # so that the second harvest's response date is after the edits
    second = _harvest(env)
    expected = epoch_changes(sources, N_ITEMS, CONFIG.seed)
    for key, changes in expected.items():
        o = second[key]
        assert o.status == "ok", o.note
        assert o.since == first[key].response_date
        assert o.seen == len(changes), "only the records changed since the first harvest"
        counts = {c: list(changes.values()).count(c) for c in ("added", "updated", "deleted")}
        assert (o.added, o.updated, o.deleted) == (
            counts["added"],
            counts["updated"],
            counts["deleted"],
        )
        log = store.read_changes(key).filter(pl.col("harvested_at") > pl.col("harvested_at").min())
        assert (
            dict(zip(log["oai_identifier"], log["change"].cast(pl.String), strict=True)) == changes
        )
        assert set(log["datestamp"]) == {changed_at}
        state = {r["oai_identifier"]: r for r in store.read_current(key).iter_rows(named=True)}
        assert len(state) == first[key].total + counts["added"]
        for identifier, change in changes.items():
            assert state[identifier]["deleted"] == (change == "deleted")
            assert state[identifier]["datestamp"] == changed_at
        [status] = harvest_status(url, key)
        assert (status.records_seen, status.records_updated) == (o.seen, counts["updated"])
    # nothing changed since: noRecordsMatch is an empty harvest, not an error
    third = _harvest(env)
    assert all(o.seen == 0 and o.status == "ok" for o in third.values() if o.status != "skipped")


def test_rerun_over_the_same_records_is_idempotent(env):
    url, sources, store = env
    _harvest(env)
    key = "opendoar::1001"
    state = store.read_current(key)
    changes = store.read_changes(key)
    again = _harvest(env, since="2000-01-01T00:00:00Z")[key]
    assert again.seen == state.height
    assert (again.added, again.updated, again.deleted) == (0, 0, 0)
    assert store.read_current(key).equals(state)
    assert store.read_changes(key).equals(changes)
    full = _harvest(env, full=True)[key]
    assert (full.added, full.updated, full.deleted) == (0, 0, 0)
    assert store.read_current(key).equals(state)


def test_configured_sets_limit_the_harvest(env):
    url, sources, store = env
    sources[0] = dataclasses.replace(sources[0], oai_sets=("col_1001_1",))
    o = _harvest((url, sources, store))["opendoar::1001"]
    expected = [
        r.identifier
        for r in planted_records(sources, N_ITEMS, CONFIG.seed)
        if r.source_key == "opendoar::1001" and "col_1001_1" in r.sets
    ]
    assert o.seen == len(expected) > 0
    assert store.read_current("opendoar::1001")["oai_identifier"].to_list() == sorted(expected)


def test_records_without_readable_metadata_are_kept_and_counted(env):
    from usage_stats.metadata.mapping import MetadataError

    def unreadable(metadata):
        raise MetadataError("no format could be read")

    o = _harvest(env, mapper=unreadable)["opendoar::1002"]
    state = env[2].read_current("opendoar::1002")
    live = state.filter(~pl.col("deleted"))
    assert o.with_problems == live.height > 0
    assert live["problems"].to_list() == [["metadata: no format could be read"]] * live.height
    assert live["title"].null_count() == live.height


def test_a_token_invalidated_by_the_source_fails_that_source_only(env, provider):
    """The real provider refuses a resumption token once its records change (badResumptionToken):
    the source fails naming the request, nothing is stored, and its next run starts over."""
    url, sources, store = env
    dataset = provider_dataset(sources, planted_records(sources, N_ITEMS, CONFIG.seed), 7)
    target = HarvestTarget("opendoar::1001", 1, provider.url("opendoar::1001"))
    replaced = []

    def edit_after_first_page(line: str) -> None:
        if not replaced:
            dataset["sources"]["opendoar::1001"]["records"].pop()
            provider.put(dataset)
            replaced.append(line)

    with pytest.raises(HarvestError) as caught:
        harvest_source(target, settings=FAST, progress=edit_after_first_page)
    message = str(caught.value)
    assert message.startswith("source opendoar::1001: OAI-PMH error badResumptionToken")
    assert (
        "resumptionToken=" in message and provider.url("opendoar::1001").split("//")[1] in message
    )


def test_bad_sources_fail_alone_and_resume(env, provider):
    url, sources, store = env
    calls = {"n": 0}

    def malformed_second_page(args, n):
        if args.get("resumptionToken") == "p2" and calls["n"] == 0:
            return 200, {}, records_page(["oai:bad.example.org:3"], None)[:-30]  # cut short
        return good_source(args, n)

    with fake_server(malformed_second_page) as (bad_url, seen):
        broken = dataclasses.replace(sources[1], oai_base_url=bad_url)
        run = [sources[0], broken, sources[2]]
        outcomes = {
            o.source_key: o for o in harvest_sources(run, store, url, FAST, mapper=headers_only)
        }
        bad = outcomes[broken.source_key]
        assert bad.status == "failed"
        assert bad.note.startswith(f"source {broken.source_key}: the response is not well-formed")
        assert f"(request: {bad_url}?verb=ListRecords&resumptionToken=p2)" in bad.note
        assert outcomes["opendoar::1001"].status == outcomes["opendoar::1003"].status == "ok"
        assert store.read_current(broken.source_key).is_empty()
        assert store.read_changes(broken.source_key).is_empty()
        [status] = harvest_status(url, broken.source_key)
        assert (status.last_status, status.last_response_date) == ("failed", None)
        assert status.last_error == bad.note
        # the next run starts from the beginning again and completes
        calls["n"] = 1
        [again] = harvest_sources([broken], store, url, FAST, mapper=headers_only)
        assert (again.status, again.since, again.added) == ("ok", None, 4)
        [status] = harvest_status(url, broken.source_key)
        assert (status.last_status, status.last_response_date) == ("ok", "2026-02-01T10:00:00Z")
        # and a later failure keeps the last good `from` and counts
        calls["n"] = 0
        seen.clear()
        [third] = harvest_sources([broken], store, url, FAST, mapper=headers_only)
        assert third.status == "failed" and third.since == "2026-02-01T10:00:00Z"
        assert seen[2]["from"] == "2026-02-01T10:00:00Z"
        [status] = harvest_status(url, broken.source_key)
        assert (status.last_response_date, status.records_total) == ("2026-02-01T10:00:00Z", 4)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("cannotDisseminateFormat", "OAI-PMH error cannotDisseminateFormat: no such format"),
        ("badResumptionToken", "OAI-PMH error badResumptionToken: no such format"),
        ("badArgument", "OAI-PMH error badArgument: no such format"),
    ],
)
def test_oai_errors_name_the_source_and_request(code, expected):
    def answer(args, n):
        if args.get("verb") == "ListRecords":
            return 200, {}, oai_error(code, "no such format")
        return good_source(args, n)

    with fake_server(answer) as (base, _):
        with pytest.raises(HarvestError) as caught:
            harvest_source(HarvestTarget("x::1", 1, base), settings=FAST)
    assert str(caught.value) == (
        f"source x::1: {expected} (request: {base}?verb=ListRecords&metadataPrefix=oai_dc)"
    )


def test_no_records_match_is_an_empty_harvest():
    def answer(args, n):
        if args.get("verb") == "ListRecords":
            return 200, {}, oai_error("noRecordsMatch")
        return good_source(args, n)

    with fake_server(answer) as (base, _):
        harvest = harvest_source(HarvestTarget("x::1", 1, base), "2026-01-05T00:00:00Z", FAST)
    assert harvest.records == [] and harvest.response_date == "2026-02-01T10:00:00Z"


def test_503_with_retry_after_is_honoured_then_retried():
    waits: list[float] = []

    def answer(args, n):
        if n in (2, 3):  # the first ListRecords, twice
            return 503, {"Retry-After": "3"}, "busy"
        return good_source(args, n)

    with fake_server(answer) as (base, seen):
        harvest = harvest_source(HarvestTarget("x::1", 1, base), settings=FAST, sleep=waits.append)
    assert len(harvest.records) == 4
    assert waits == [3.0, 3.0]
    assert len(seen) == 6


def test_endless_503_and_too_long_retry_after_fail_clearly():
    def busy(args, n):
        return (503, {}, "busy") if args.get("verb") == "ListRecords" else good_source(args, n)

    with fake_server(busy) as (base, seen):
        with pytest.raises(HarvestError, match=r"HTTP 503 after 3 attempt\(s\) \(request: "):
            harvest_source(HarvestTarget("x::1", 1, base), settings=FAST, sleep=lambda s: None)
        assert len(seen) == 2 + 3

    def far(args, n):
        return 503, {"Retry-After": "86400"}, "come back tomorrow"

    with fake_server(far) as (base, _):
        with pytest.raises(HarvestError, match="Retry-After 86400 s, longer than the 600 s"):
            harvest_source(HarvestTarget("x::1", 1, base), settings=FAST)


def test_an_unreachable_source_names_itself_and_the_request():
    with fake_server(good_source) as (base, _):
        pass  # closed: nothing listens there any more
    waits: list[float] = []
    with pytest.raises(HarvestError) as caught:
        harvest_source(HarvestTarget("x::9", 9, base), settings=FAST, sleep=waits.append)
    assert str(caught.value).startswith("source x::9: unreachable after 3 attempt(s): Connection")
    assert str(caught.value).endswith(f"(request: {base}?verb=Identify)")
    assert waits == [0.01, 0.02]  # bounded, exponential backoff


def test_the_delay_between_requests_is_kept():
    with fake_server(good_source) as (base, seen):
        started = time.monotonic()
        harvest_source(
            HarvestTarget("x::1", 1, base), settings=dataclasses.replace(FAST, delay=0.2)
        )
        elapsed = time.monotonic() - started
    assert len(seen) == 4 and elapsed >= 3 * 0.2


def test_harvest_and_map_give_the_planted_values_and_identifier_spellings(env, tmp_path):
    """With the real mapping: every field the generator planted, read from oai_dc plus
    OpenAIRE v4 or DSpace dim, and every identifier spelling normalised for the cross-walk."""
    from usage_stats.demo.synthetic import write_synthetic

    url, sources, store = env
    outcomes = _harvest(env, mapper=None)
    manifest = write_synthetic(CONFIG, str(tmp_path / "lake"), with_manifest=True).manifest
    expected = manifest["metadata"]["records"]
    assert {r["source_key"] for r in expected} == {
        "opendoar::1001",
        "opendoar::1002",
        "opendoar::1003",
    }
    state = {r["oai_identifier"]: r for r in store.read_all_current().iter_rows(named=True)}
    assert set(state) == {r["oai_identifier"] for r in expected}
    fields = [
        "title",
        "creators",
        "publication_year",
        "resource_type",
        "access_rights",
        "language",
        "subjects",
        "doi",
        "handle",
        "projects",
        "sets",
        "item_key",
        "deleted",
        "file_count",  # planted files: counts and sizes in oai_openaire and dim spellings
        "file_bytes",
    ]
    problems = 0
    for want in expected:
        got = state[want["oai_identifier"]]
        if want["deleted"]:
            assert got["deleted"] and got["title"] is None
            continue
        for name in fields:
            assert got[name] == want[name], (want["oai_identifier"], name)
        for name in ("publication_date", "embargo_end"):
            value = got[name].isoformat() if got[name] else None
            assert value == want[name], (want["oai_identifier"], name)
        assert sorted({p.split(":")[0] for p in got["problems"]}) == want["problem_fields"]
        problems += bool(want["problem_fields"])
        # the cross-walk: the DOI, the handle and the OAI id each resolve to this record
        keys = set(got["item_keys"])
        assert want["handle"] in keys and got["item_key"] == want["item_key"]
        if want["doi"]:
            assert want["doi"] in keys
    assert sum(o.with_problems for o in outcomes.values()) == problems > 0


def test_cli_harvest_prints_progress_and_resumes(env, monkeypatch, tmp_path, capsys):
    from usage_stats.admin.registry import add_source
    from usage_stats.cli import main

    url, sources, _ = env
    add_source(url, sources[0])
    monkeypatch.setenv("USAGE_STATS_ADMIN_DB_URL", url)
    monkeypatch.setenv("USAGE_STATS_WAREHOUSE_URL", str(tmp_path / "cli-warehouse"))
    monkeypatch.setenv("USAGE_STATS_OAI_DELAY", "0")
    assert main(["harvest", "--source", "opendoar::1001"]) == 0
    out = capsys.readouterr().out
    assert "opendoar::1001: oai_dc: 7 record(s)" in out
    n = len([r for r in planted_records(sources, N_ITEMS, CONFIG.seed) if r.site_id == 1])
    assert f"opendoar::1001: {n} record(s) since the beginning (oai_dc, oai_openaire)" in out
    assert main(["harvest", "--source", "opendoar::1001"]) == 0
    assert "opendoar::1001: 0 record(s) since 20" in capsys.readouterr().out
    assert main(["harvest", "--source", "opendoar::9"]) == 2
    assert "no active source with key 'opendoar::9'" in capsys.readouterr().err


def test_asset_stores_the_good_sources_then_fails_naming_the_bad(env, tmp_path):
    from dagster import materialize
    from dagster_aws.s3 import S3Resource

    from assets.item_metadata import item_metadata
    from resources import AdminDbResource, HarvestSettings, WarehouseResource
    from usage_stats.admin.registry import add_source, list_sources

    url, sources, _ = env
    for s in sources:
        add_source(url, s)
    resources = {
        "warehouse": WarehouseResource(url=str(tmp_path / "wh"), s3=S3Resource()),
        "admin_db": AdminDbResource(url=url),
        "harvest_settings": HarvestSettings(delay=0, timeout=5, max_retries=0),
    }
    result = materialize([item_metadata], resources=resources)
    [event] = result.asset_materializations_for_node("item_metadata")
    assert event.metadata["added"].value == sum(
        not r.deleted for r in planted_records(sources, N_ITEMS, CONFIG.seed)
    )
    assert "national::CR, regional::LA" in event.metadata["skipped"].value
    from usage_stats.admin.registry import update_source

    update_source(url, 2, oai_base_url="http://127.0.0.1:9/oai")  # nothing listens on port 9
    assert len(list_sources(url)) == 5
    failed = materialize([item_metadata], resources=resources, raise_on_error=False)
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    text = failure.event_specific_data.error.message
    assert "1 of 3 source(s) failed (the others are stored): source opendoar::1002: " in text
    assert "unreachable" in text
