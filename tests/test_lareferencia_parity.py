"""LA Referencia parity: the original service's queries on our compatibility indices, the
planted truth, and our `/report/*` endpoints give the same figures.

One generated calendar month (2026-04, 30 days) of ten sites — eight repositories in seven
countries (two in Costa Rica), Costa Rica's national node and the regional portal — goes
through the pipeline's transforms into two OpenSearch stores with fresh prefixes: one writing
the compatibility set with daily documents, one with monthly documents (the original
processor's two modes: run for a date, or for a month). Then, for the item, repository,
national node and regional network widgets, by time and by country:

- (a) the original service's aggregation bodies, sent to the indices it would pick, answer
  exactly what the manifest says those indices hold — figures and document counts, so the
  documents' granularity and index assignment are the processor's;
- (b) our `/report/*` endpoints, served over each store, answer the same figures as (a).

The one place where the original's own two calls disagree — its national by-country call
sends no country filter, so it also sums other countries' items used on the node and the
portal — is checked as such in (a), and (b) compares our national by-country endpoint with
the original's body carrying the filter its time call has (README, *Differences from LA
Referencia*).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from parity_support import (
    METRICS,
    IndexSelection,
    OriginalService,
    Truth,
    country_figures,
    sites_of,
    time_figures,
    without_counts,
)

from conftest import generate
from stores import opensearch_store
from usage_stats.admin.registry import DayStatus, record_processing
from usage_stats.admin.sources import CsvSourceRegistry, sources_frame
from usage_stats.demo.synthetic import SyntheticConfig
from usage_stats.pipeline.canonical import read_canonical_day
from usage_stats.pipeline.cleaning import clean_events
from usage_stats.pipeline.metrics import daily_deltas
from usage_stats.pipeline.snapshots import next_snapshot
from usage_stats.storage.open import open_lake
from usage_stats.storage.opensearch import OpenSearchStatsStore

START = dt.date(2026, 4, 1)
DAYS = 30
END = START + dt.timedelta(days=DAYS - 1)
RANGE = {"start_date": START.isoformat(), "end_date": END.isoformat()}
GRANULARITIES = ("day", "month")
# The widgets: items of a Costa Rican, an Argentinian and the second Costa Rican repository;
# those repositories; Costa Rica's national node; the regional network.
ITEMS = (
    "oai:repo1.example.org:1001/0",
    "oai:repo2.example.org:1002/1",
    "oai:repo8.example.org:1008/2",
)
SOURCES = ("opendoar::1001", "opendoar::1002", "opendoar::1008", "national::CR", "regional::LA")
WIDGETS = [("item", i) for i in ITEMS] + [("source", s) for s in SOURCES]
LIMITS = (10, 3)


@dataclass
class Parity:
    manifest: dict
    stores: dict[str, OpenSearchStatsStore]
    clients: dict[str, Any]  # fastapi TestClients, one over each store
    truth: dict[str, Truth]

    def original(self, granularity: str) -> OriginalService:
        store = self.stores[granularity]
        selection = IndexSelection(sites_of(self.manifest))
        return OriginalService(store.client, store.compat_prefix, selection)


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parity]:
    """The month through the pipeline's transforms into both stores, and the web app."""
    from fastapi.testclient import TestClient

    from usage_stats.web import create_app

    config = SyntheticConfig(start=START, days=DAYS, sites=10, events_per_day=2000, seed=11)
    data = generate(tmp_path_factory.mktemp("parity") / "data", config)
    sources = CsvSourceRegistry(Path(data.settings.sources_file)).sources()
    slots = {s.site_id: s.custom_var_slot for s in sources}
    lake = open_lake(data.settings.lake_url)
    stores = {
        g: opensearch_store(batch_size=2000, compat_granularity=g, sources=sources)
        for g in GRANULARITIES
    }
    previous = None
    statuses = []
    now = dt.datetime.now(dt.UTC)
    try:
        for i in range(DAYS):
            day = START + dt.timedelta(days=i)
            events = read_canonical_day(lake, day, slots, "salt").events
            deltas = daily_deltas(clean_events(events, sources_frame(sources)).sessions)
            previous = next_snapshot(previous, deltas, day)
            for store in stores.values():
                store.replace_day(day, deltas, previous)
            statuses += [DayStatus(s.site_id, day, 1, 1, 0, {}, "test", now) for s in sources]
        record_processing(data.settings.admin_db_url, statuses)
        # Each app over its store: `/report` ranks countries by entries at the granularity of
        # the documents the original would read (the store's).
        clients = {
            g: TestClient(
                create_app(stores[g], data.settings.admin_db_url), raise_server_exceptions=False
            )
            for g in GRANULARITIES
        }
        truth = {g: Truth(data.manifest, g) for g in GRANULARITIES}
        yield Parity(data.manifest, stores, clients, truth)
    finally:
        for store in stores.values():
            store.delete_all()


# --- the set itself -----------------------------------------------------------------------------


def test_the_month_has_what_the_comparisons_need(parity: Parity) -> None:
    """Guards the fixture: several countries of visitors, usage at every level for the items
    compared, and the node's and the portal's usage of items of other countries (which is
    what tells the original's national by-country call from its time call)."""
    truth = parity.truth["day"]
    for identifier in ITEMS:
        rows = truth.item_rows(identifier, START, END)
        assert {truth.level[r.site_id] for r in rows} == {"R", "N", "L"}, identifier
    assert len({r.country for r in truth.rows}) >= 8
    node = truth.selection.source("national::CR")
    foreign = [
        r
        for r in truth.rows
        if r.site_id in (node.site_id, truth.selection.portal) and truth.item_country(r) != "CR"
    ]
    assert foreign


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_index_per_site_and_document_per_site_item_period(parity: Parity, granularity: str) -> None:
    """Indices are the sites where the usage happened, `level` their type; one document per
    site, item and period, dated the period's first day, with the processor's fields."""
    store = parity.stores[granularity]
    truth = parity.truth[granularity]
    client = store.client
    pattern = f"{store.compat_prefix}-*"
    expected_docs = {(r.site_id, r.item, truth.period(r.date)) for r in truth.rows}
    per_index = client.search(
        index=pattern,
        body={
            "size": 0,
            "aggs": {
                "index": {
                    "terms": {"field": "_index", "size": 100},
                    "aggs": {
                        "site": {"terms": {"field": "idsite"}},
                        "level": {"terms": {"field": "level"}},
                    },
                }
            },
        },
    )["aggregations"]["index"]["buckets"]
    expected_sites = {s for s, _, _ in expected_docs}
    assert {b["key"] for b in per_index} == {f"{store.compat_prefix}-{s}" for s in expected_sites}
    for bucket in per_index:
        site = int(bucket["key"].rsplit("-", 1)[1])
        assert [b["key"] for b in bucket["site"]["buckets"]] == [site]
        assert [b["key"] for b in bucket["level"]["buckets"]] == [truth.level[site]]
        assert bucket["doc_count"] == sum(1 for d in expected_docs if d[0] == site)
    mapping = client.indices.get_mapping(index=f"{store.compat_prefix}-1")
    properties = next(iter(mapping.values()))["mappings"]["properties"]
    types = {name: spec.get("type") for name, spec in properties.items()}
    for name, kind in {
        "id": "keyword",
        "identifier": "text",
        "idsite": "long",
        "date": "date",
        "year": "long",
        "month": "long",
        "day": "long",
        "level": "keyword",
        "country": "keyword",
        **dict.fromkeys(METRICS, "long"),
    }.items():
        assert types[name] == kind, name
    assert "format" not in properties["date"]  # the default: keys read 2026-04-01T00:00:00.000Z
    days = client.search(
        index=pattern,
        body={
            "size": 0,
            "aggs": {
                "dates": {
                    "terms": {"field": "date", "size": 100, "order": {"_key": "asc"}},
                    "aggs": {f: {"terms": {"field": f}} for f in ("year", "month", "day")},
                }
            },
        },
    )["aggregations"]["dates"]["buckets"]
    periods = sorted({truth.period(r.date) for r in truth.rows})
    assert [b["key_as_string"][:10] for b in days] == [p.isoformat() for p in periods]
    for bucket, period in zip(days, periods, strict=True):
        fields = {f: [b["key"] for b in bucket[f]["buckets"]] for f in ("year", "month", "day")}
        assert fields == {"year": [period.year], "month": [period.month], "day": [period.day]}
    hit = client.search(
        index=f"{store.compat_prefix}-1",
        body={"size": 1, "query": {"match_phrase": {"identifier": ITEMS[0]}}},
    )["hits"]["hits"][0]["_source"]
    assert (hit["identifier"], hit["idsite"], hit["level"], hit["country"]) == (
        ITEMS[0],
        1,
        "R",
        "CR",
    )


# --- (a) the original's queries on our indices answer the planted truth ------------------------


def _truth_rows(truth: Truth, kind: str, key: str, *, by_country: bool = False) -> list:
    if kind == "item":
        return truth.item_rows(key, START, END)
    return truth.source_rows(key, START, END, by_country=by_country)


def _original(parity: Parity, granularity: str, kind: str, key: str, limit: int | None) -> dict:
    service = parity.original(granularity)
    if kind == "item":
        return service.item(key, RANGE["start_date"], RANGE["end_date"], limit)
    return service.source(key, RANGE["start_date"], RANGE["end_date"], limit)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize(("kind", "key"), WIDGETS)
def test_original_time_query_answers_the_planted_truth(
    parity: Parity, granularity: str, kind: str, key: str
) -> None:
    truth = parity.truth[granularity]
    expected = truth.time(_truth_rows(truth, kind, key))
    got = time_figures(_original(parity, granularity, kind, key, None), with_counts=True)
    assert got == expected
    assert expected["totals"]["views"] > 0
    assert (len(expected["time"]) > 1) if granularity == "day" else (len(expected["time"]) == 1)


@pytest.mark.parametrize("limit", LIMITS)
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize(("kind", "key"), WIDGETS)
def test_original_by_country_query_answers_the_planted_truth(
    parity: Parity, granularity: str, kind: str, key: str, limit: int
) -> None:
    truth = parity.truth[granularity]
    expected = truth.by_country(_truth_rows(truth, kind, key, by_country=True), limit)
    got = country_figures(_original(parity, granularity, kind, key, limit), with_counts=True)
    assert got == expected
    assert all(len(rows) == min(limit, 10) for rows in got["lists"].values())


def test_original_national_by_country_sums_more_than_its_time_call(parity: Parity) -> None:
    """The original's national by-country call has no country filter: on the same indices it
    sums the node's and the portal's usage of every country's items, while its time call sums
    the node's country's items only. With the filter, the two calls agree."""
    service = parity.original("month")
    args = ("national::CR", RANGE["start_date"], RANGE["end_date"])
    time_totals = time_figures(service.source(*args))["totals"]
    unfiltered = country_figures(service.source(*args, limit=250))["totals"]
    filtered = country_figures(service.source(*args, limit=250, country_filter_by_country=True))
    assert filtered["totals"] == time_totals
    assert all(unfiltered[m] > time_totals[m] for m in ("views", "downloads"))


# --- (b) our /report endpoints answer what the original answers -----------------------------------


def _report(
    parity: Parity,
    granularity: str,
    kind: str,
    key: str,
    limit: int | None,
    bars: dict[str, str] | None = None,
) -> dict:
    """`/report/*` of the app over the store writing `granularity` documents."""
    params: dict[str, Any] = dict(RANGE)
    if kind == "item":
        path = "/report/itemWidget" if limit is None else "/report/itemWidgetByCountry"
        params["identifier"] = key
    else:
        path = "/report/repositoryWidget" if limit is None else "/report/repositoryWidgetByCountry"
        params["source_id"] = key
    if limit is not None:
        params["limit"] = limit
    params |= bars or {}
    response = parity.clients[granularity].get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


# The bars the original draws: one per document date. Monthly documents: monthly bars, which
# is what the deployed widgets show (the item widget sends time_unit=year, the repository
# widget time_unit=day) and what /report gives them; daily documents: daily bars, which a new
# client asks /report for with interval=day.
BARS = {"day": {"interval": "day"}, "month": {"time_unit": "year"}}


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize(("kind", "key"), WIDGETS)
def test_report_time_endpoint_equals_the_original(
    parity: Parity, granularity: str, kind: str, key: str
) -> None:
    original = time_figures(_original(parity, granularity, kind, key, None))
    ours = time_figures(_report(parity, granularity, kind, key, None, BARS[granularity]))
    assert without_counts(ours) == without_counts(original)


def _original_country(parity: Parity, granularity: str, kind: str, key: str, limit: int) -> dict:
    """The original's by-country answer; for a national node with the country filter of its
    time call (the documented difference)."""
    if kind == "source" and parity.truth[granularity].selection.source(key).type == "N":
        service = parity.original(granularity)
        return service.source(
            key, RANGE["start_date"], RANGE["end_date"], limit, country_filter_by_country=True
        )
    return _original(parity, granularity, kind, key, limit)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize(("kind", "key"), WIDGETS)
def test_report_by_country_values_equal_the_original(
    parity: Parity, granularity: str, kind: str, key: str
) -> None:
    """Every country's every figure, whatever the order (all countries: limit 250)."""
    original = country_figures(_original_country(parity, granularity, kind, key, 250))
    ours = country_figures(_report(parity, granularity, kind, key, 250))
    assert ours["totals"] == original["totals"]
    for m in METRICS:
        assert dict(ours["lists"][m]) == dict(original["lists"][m]), m


@pytest.mark.parametrize("limit", LIMITS)
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize(("kind", "key"), WIDGETS)
def test_report_by_country_lists_equal_the_original(
    parity: Parity, granularity: str, kind: str, key: str, limit: int
) -> None:
    """The lists as the widget shows them: which countries, in which order, zeros kept."""
    original = country_figures(_original_country(parity, granularity, kind, key, limit))
    ours = country_figures(_report(parity, granularity, kind, key, limit))
    assert ours == original


# --- re-writing a day -----------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_rewriting_a_day_changes_nothing(parity: Parity, granularity: str) -> None:
    """A day written again (here: the 10th, as the pipeline would re-run it) leaves every
    compatibility document as it was: replaced, not added to."""
    store = parity.stores[granularity]
    before = _all_compat(store)
    day = START + dt.timedelta(days=9)
    deltas, snapshot = _stored_day(store, day)
    store.replace_day(day, deltas, snapshot)
    assert _all_compat(store) == before


def _all_compat(store: OpenSearchStatsStore) -> dict[str, dict]:
    client = store.client
    pattern = f"{store.compat_prefix}-*"
    client.indices.refresh(index=pattern)
    page = client.search(index=pattern, body={"size": 2000, "sort": ["_doc"]}, scroll="1m")
    docs: dict[str, dict] = {}
    while page["hits"]["hits"]:
        for hit in page["hits"]["hits"]:
            source = dict(hit["_source"])
            source.pop("write_id")
            docs[f"{hit['_index']}/{hit['_id']}"] = source
        page = client.scroll(scroll_id=page["_scroll_id"], scroll="1m")
    return docs


def _stored_day(store: OpenSearchStatsStore, day: dt.date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The day's deltas and snapshot as the store holds them (what the pipeline would send)."""
    from usage_stats.pipeline.metrics import DELTA_SCHEMA

    frames = []
    for table in ("usage_deltas", "usage_snapshots"):
        client = store.client
        page = client.search(
            index=store.alias(table),
            body={"query": {"term": {"date": day.isoformat()}}, "size": 5000, "sort": ["_doc"]},
            scroll="1m",
        )
        rows = []
        while page["hits"]["hits"]:
            rows += [h["_source"] for h in page["hits"]["hits"]]
            page = client.scroll(scroll_id=page["_scroll_id"], scroll="1m")
        for row in rows:
            row.pop("write_id")
        frame = pl.DataFrame(rows, schema={**DELTA_SCHEMA, "date": pl.String}, orient="row")
        frames.append(frame.with_columns(pl.col("date").str.to_date()))
    return frames[0], frames[1]
