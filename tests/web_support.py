"""Shared set-up of the web tests: two calendar months of generated data in a stats store,
processing status and a SUSHI customer in the admin DB, and sums from the manifest."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from conftest import generate
from usage_stats.admin.registry import DayStatus, disable_source, record_processing
from usage_stats.admin.sources import CsvSourceRegistry, sources_frame
from usage_stats.admin.sushi import add_customer
from usage_stats.demo.synthetic import SyntheticConfig
from usage_stats.pipeline.canonical import read_canonical_day
from usage_stats.pipeline.cleaning import clean_events
from usage_stats.pipeline.metrics import METRICS, daily_deltas
from usage_stats.pipeline.snapshots import next_snapshot
from usage_stats.pipeline.titles import latest_item_titles
from usage_stats.storage.open import open_lake

START = dt.date(2026, 1, 24)
DAYS = 12  # 2026-01-24 .. 2026-02-04: two calendar months, three ISO weeks and a bit
END = START + dt.timedelta(days=DAYS - 1)
CUSTOMER = "repo1-library"
REQUESTOR = "harvester-1"


@dataclass
class Loaded:
    store: object
    manifest: dict
    admin_db_url: str
    api_key: str
    sources: list
    prefixes: dict[int, str]
    levels: dict[int, str]


def load(store, data_dir: Path, unregistered: tuple[int, ...] = ()) -> Loaded:
    """`unregistered`: sites the pipeline does not know (their events are rejected as
    `unknown_site`, their items used elsewhere belong to nobody), disabled in the admin DB,
    and left out of the manifest's items, sources and prefixes."""
    config = SyntheticConfig(start=START, days=DAYS, events_per_day=1500, seed=7)
    data = generate(data_dir, config)
    sources = [
        s
        for s in CsvSourceRegistry(Path(data.settings.sources_file)).sources()
        if s.site_id not in unregistered
    ]
    slots = {s.site_id: s.custom_var_slot for s in sources}
    lake = open_lake(data.settings.lake_url)
    previous = None
    statuses = []
    for i in range(DAYS):
        day = START + dt.timedelta(days=i)
        day_input = read_canonical_day(lake, day, slots, "salt")
        deltas = daily_deltas(clean_events(day_input.events, sources_frame(sources)).sessions)
        previous = next_snapshot(previous, deltas, day)
        store.replace_day(day, deltas, previous)
        store.record_titles(day, latest_item_titles(day_input.titles, sources))
        now = dt.datetime.now(dt.UTC)
        statuses += [DayStatus(s.site_id, day, 1, 1, 0, {}, "test", now) for s in sources]
    url = data.settings.admin_db_url
    record_processing(url, statuses)
    _, api_key = add_customer(url, CUSTOMER, "Repository 1 Library", [1], requestor_id=REQUESTOR)
    manifest = data.manifest
    if unregistered:
        for site_id in unregistered:
            disable_source(url, site_id)
        items = [i for i in manifest["items"] if i["site_id"] not in unregistered]
        manifest = {**manifest, "items": items}
    return Loaded(
        store,
        manifest,
        url,
        api_key,
        sources,
        {s.site_id: s.identifier_prefix for s in sources if s.identifier_prefix},
        {s.site_id: s.type for s in sources},
    )


def sums(manifest: dict, keep=lambda item: True, by=lambda item: ()) -> dict:
    out: dict = defaultdict(lambda: dict.fromkeys(METRICS, 0))
    for item in manifest["items"]:
        if keep(item):
            acc = out[by(item)]
            for metric in METRICS:
                acc[metric] += item[metric]
    return dict(out)


def unique_prefix() -> str:
    return uuid.uuid4().hex[:8]


def web_client(request, tmp_path_factory):
    """Module fixture body: a TestClient over a loaded DuckDB or OpenSearch store."""
    from fastapi.testclient import TestClient

    from stores import opensearch_store
    from usage_stats.storage.duckdb_store import DuckDBStatsStore
    from usage_stats.web import create_app

    if request.param == "duckdb":
        store = DuckDBStatsStore(tmp_path_factory.mktemp("duckdb") / "stats.duckdb")
    else:
        store = opensearch_store(batch_size=2000)
    loaded = load(store, tmp_path_factory.mktemp("data"))
    client = TestClient(create_app(store, loaded.admin_db_url), raise_server_exceptions=False)
    yield client, loaded
    if request.param == "opensearch":
        store.delete_all()


def month(day: str) -> str:
    return day[:7]


def week(day: str) -> str:
    y, w, _ = dt.date.fromisoformat(day).isocalendar()
    return f"{y}-W{w:02d}"


def owner(loaded: Loaded, item_id: str) -> int | None:
    """The repository whose identifier prefix the item id starts with (longest prefix)."""
    owners = [(len(p), s) for s, p in loaded.prefixes.items() if item_id.startswith(p)]
    return max(owners)[1] if owners else None


def national(loaded: Loaded, country: str = "CR"):
    """What a national node counts (LA Referencia's national widget): the items of the
    country's repositories used on those repositories, the node and the regional portal, and
    items nobody owns used on the country's own sites."""
    repositories = {s.site_id for s in loaded.sources if s.type == "R" and s.country == country}
    nodes = {s.site_id for s in loaded.sources if s.type == "N" and s.country == country}
    portals = {s.site_id for s in loaded.sources if s.type == "L"}

    def keep(item: dict) -> bool:
        site, holder = item["site_id"], owner(loaded, item["item_id"])
        if holder is None:
            return site in repositories | nodes
        return holder in repositories and site in repositories | nodes | portals

    return keep
