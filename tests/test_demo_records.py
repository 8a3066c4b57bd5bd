"""The demo's records: planted by the generator over the demo's days, harvested with no
server from the `file://` datasets it writes (the project's own data provider, in process),
and the manifest's record truth agrees with what the harvest stores."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from usage_stats.admin import db
from usage_stats.admin.sources import Source, validate_source
from usage_stats.demo.synthetic import (
    SyntheticConfig,
    build_sources,
    demo_record_window,
    items_per_site,
    records_truth,
    write_demo_records,
)
from usage_stats.metadata.harvest import ClientSettings
from usage_stats.metadata.store import MetadataStore
from usage_stats.metadata.sync import harvest_sources
from usage_stats.storage.lake import LocalLake

CONFIG = SyntheticConfig(start=dt.date(2026, 1, 1), days=3)
SETTINGS = ClientSettings(delay=30, timeout=5, max_retries=0)  # a delay a local file ignores


@pytest.fixture
def demo(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'admin.db'}"
    db.upgrade(url)
    sources, records = write_demo_records(CONFIG, build_sources(CONFIG.sites), tmp_path / "oai")
    store = MetadataStore(LocalLake(tmp_path / "warehouse"))
    return url, sources, records, store


def test_repositories_get_file_urls_and_records_over_the_demo_days(demo, tmp_path):
    _, sources, records, _ = demo
    urls = {s.source_key: s.oai_base_url for s in sources}
    assert urls == {
        "opendoar::1001": (tmp_path / "oai" / "opendoar__1001.json").as_uri(),
        "opendoar::1002": (tmp_path / "oai" / "opendoar__1002.json").as_uri(),
        "opendoar::1003": (tmp_path / "oai" / "opendoar__1003.json").as_uri(),
        "national::CR": None,
        "regional::LA": None,
    }
    assert all(validate_source(s) == [] for s in sources)
    base, span = demo_record_window(CONFIG)
    assert (base, span) == (dt.datetime(2025, 12, 31, tzinfo=dt.UTC), 4)
    days = Counter(r.datestamp.date() for r in records)
    assert sorted(days) == [dt.date(2025, 12, 31), *(dt.date(2026, 1, d) for d in (1, 2, 3))]
    assert min(days.values()) >= 15  # every day adds records
    assert len(records) == 3 * items_per_site(CONFIG)
    truth = records_truth(records, CONFIG)
    live = [r for r in records if not r.deleted]
    assert truth["total"]["2026-01-03"] == len(live)
    assert truth["before_first_day"] + sum(d["total"] for d in truth["added"].values()) == len(live)
    assert sum(truth["by_resource_type"].values()) == len(live)


def test_harvested_with_no_server_then_idempotent(demo):
    url, sources, records, store = demo
    first = harvest_sources(sources, store, url, SETTINGS)
    ok = [o for o in first if o.status == "ok"]
    assert len(ok) == 3 and {o.status for o in first} == {"ok", "skipped"}
    assert all(o.seconds < 10 for o in ok)  # the 30 s delay is not kept for a local file
    current = store.read_all_current()
    assert sorted(current.get_column("oai_identifier")) == sorted(r.identifier for r in records)
    live = current.filter(~current.get_column("deleted"))
    assert live.height == sum(not r.deleted for r in records)
    expected_types = Counter(r.expected["resource_type"] for r in records if not r.deleted)
    assert Counter(live.get_column("resource_type")) == expected_types
    stamps = {r.identifier: r.datestamp for r in records}
    assert all(
        row["datestamp"] == stamps[row["oai_identifier"]] for row in current.iter_rows(named=True)
    )
    # Again: only what changed since the last response date (nothing), and the files untouched.
    again = harvest_sources(sources, store, url, SETTINGS)
    assert [(o.seen, o.added, o.updated, o.deleted) for o in again if o.status == "ok"] == [
        (0, 0, 0, 0)
    ] * 3
    assert store.read_all_current().equals(current)
    # Generating the same demo again leaves the files (and their resumption tokens) as they were.
    files = sorted(Path(sources[0].oai_base_url.removeprefix("file://")).parent.glob("*.json"))
    stamps = [f.stat().st_mtime_ns for f in files]
    write_demo_records(CONFIG, build_sources(CONFIG.sites), files[0].parent)
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_a_missing_dataset_file_fails_that_source_naming_the_file(demo, tmp_path):
    url, sources, _, store = demo
    (tmp_path / "oai" / "opendoar__1002.json").unlink()
    outcomes = {o.source_key: o for o in harvest_sources(sources, store, url, SETTINGS)}
    failed = outcomes["opendoar::1002"]
    assert failed.status == "failed"
    assert "HTTP 404" in failed.note
    assert f"{tmp_path / 'oai' / 'opendoar__1002.json'}?verb=Identify" in failed.note
    assert outcomes["opendoar::1001"].status == outcomes["opendoar::1003"].status == "ok"


def test_only_json_file_urls_are_accepted():
    source = Source(1, "opendoar::1", "One", "R", "CR", "oai:one.org:", 1)
    assert validate_source(dataclasses.replace(source, oai_base_url="file:///d/one.json")) == []
    for bad in ("file:///d/one", "file://host/one.json", "ftp://one.org/oai"):
        [error] = validate_source(dataclasses.replace(source, oai_base_url=bad))
        assert error.startswith("oai_base_url must be an http(s) URL")
