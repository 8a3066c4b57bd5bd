"""The pipeline on a real OpenSearch: documents, the LA Referencia compatibility set, failures.

The compatibility set's figures are checked in depth, with the original service's own queries,
in `test_lareferencia_parity.py`; here: that the pipeline writes it, what it does with items the
original's index mishandled, and how it is replaced."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, materialize

from assets import usage_assets
from conftest import DAYS, GeneratedData, generate
from definitions import build_resources
from resources import OpenSearchStatsStoreResource
from stores import opensearch_store
from support import day_tables, item_metrics, manifest_items
from usage_stats.admin.sources import CsvSourceRegistry, Source
from usage_stats.pipeline.metrics import DELTA_SCHEMA, LA_REFERENCIA_METRICS, METRICS
from usage_stats.storage import lareferencia_index as compat
from usage_stats.storage.opensearch import OpenSearchStatsStore, queries
from usage_stats.storage.store import RowFilter, StatsStoreError

RANGE = {
    "dagster/asset_partition_range_start": DAYS[0],
    "dagster/asset_partition_range_end": DAYS[-1],
}


@pytest.fixture
def store():
    store = opensearch_store(batch_size=300)
    yield store
    store.delete_all()


def run(data: GeneratedData, store_resource: OpenSearchStatsStoreResource, **kwargs):
    resources = build_resources(data.settings) | {"stats_store": store_resource}
    return materialize(
        usage_assets, resources=resources, instance=DagsterInstance.ephemeral(), **kwargs
    )


def resource_for(
    store: OpenSearchStatsStore, data: GeneratedData, **overrides
) -> OpenSearchStatsStoreResource:
    """The pipeline's resource for `store`, reading the sources from `data`'s admin DB."""
    return OpenSearchStatsStoreResource(
        url=overrides.get("url", store.url),
        prefix=store.prefix,
        batch_size=store.batch_size,
        max_retries=overrides.get("max_retries", 5),
        compat_prefix=store.compat_prefix,
        compat_granularity=overrides.get("compat_granularity", store.compat_granularity),
        admin_db_url=data.settings.admin_db_url,
    )


def all_documents(store: OpenSearchStatsStore, index: str, day: str) -> list[dict]:
    """Every document of a day, by scrolling: the full content, for exact comparisons."""
    client = store.client
    client.indices.refresh(index=index)
    page = client.search(
        index=index,
        body={"query": {"term": {"date": day}}, "size": 1000, "sort": ["_doc"]},
        scroll="1m",
    )
    docs = []
    while page["hits"]["hits"]:
        for hit in page["hits"]["hits"]:
            source = dict(hit["_source"])
            source.pop("write_id")
            docs.append({"_id": hit["_id"], **source})
        page = client.scroll(scroll_id=page["_scroll_id"], scroll="1m")
    return sorted(docs, key=lambda d: d["_id"])


def stored_deltas(store: OpenSearchStatsStore, day: str) -> pl.DataFrame:
    docs = all_documents(store, store.alias("usage_deltas"), day)
    rows = [{k: v for k, v in d.items() if k != "_id"} for d in docs]
    frame = pl.DataFrame(rows, schema={**DELTA_SCHEMA, "date": pl.String}, orient="row")
    return frame.with_columns(pl.col("date").str.to_date())


def test_three_day_backfill_indexes_exactly_the_planted_numbers(generated, store):
    assert run(generated, resource_for(store, generated), tags=RANGE).success
    for day in DAYS:
        assert item_metrics(stored_deltas(store, day)) == manifest_items(generated.manifest, [day])
    assert store.days() == [dt.date.fromisoformat(d) for d in DAYS]


@pytest.mark.parametrize("granularity", ["day", "month"])
def test_pipeline_writes_the_compatibility_set(generated, store, granularity):
    """The pipeline's resource gives the store the admin DB's sources: one index per site
    where the usage happened, `level` that site's type, and an item's figures per level and
    visitor country as planted, found with the original service's item query."""
    resource = resource_for(store, generated, compat_granularity=granularity)
    result = run(generated, resource, tags=RANGE)
    assert result.success
    # a month's other days come from the warehouse, none before the first day nor by day
    from_warehouse = {
        e.materialization.partition: e.materialization.metadata.get(
            "compat_period_rows_from_warehouse"
        )
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.path == ["stats_index"]
    }
    counted = {d: m.value for d, m in from_warehouse.items() if m is not None}
    if granularity == "month":
        assert counted[DAYS[0]] == 0 and counted[DAYS[1]] > 0
        assert counted[DAYS[2]] >= counted[DAYS[1]]
    else:
        assert counted == {}
    item = "oai:repo1.example.org:1001/0"
    client = store.client
    pattern = f"{store.compat_prefix}-*"
    levels = {s["site_id"]: s["type"] for s in generated.manifest["sources"]}
    body = {
        "size": 0,
        "query": {"match_phrase": {"identifier": item}},
        "aggs": {
            "index": {
                "terms": {"field": "_index"},
                "aggs": {
                    "level": {"terms": {"field": "level"}},
                    "views": {"sum": {"field": "views"}},
                    "countries": {
                        "nested": {"path": "stats_by_country"},
                        "aggs": {
                            "country": {
                                "terms": {"field": "stats_by_country.country", "size": 50},
                                "aggs": {"views": {"sum": {"field": "stats_by_country.views"}}},
                            }
                        },
                    },
                },
            },
            "dates": {"terms": {"field": "date"}},
        },
    }
    result = client.search(index=pattern, body=body)["aggregations"]
    got_sites: dict[int, int] = {}
    got_countries: dict[tuple[int, str], int] = {}
    for bucket in result["index"]["buckets"]:
        site = int(bucket["key"].rsplit("-", 1)[1])
        assert [b["key"] for b in bucket["level"]["buckets"]] == [levels[site]]
        got_sites[site] = int(bucket["views"]["value"])
        for c in bucket["countries"]["country"]["buckets"]:
            got_countries[(site, c["key"])] = int(c["views"]["value"])
    expected_sites: dict[int, int] = {}
    expected_countries: dict[tuple[int, str], int] = {}
    for (_day, site, item_id, country), metrics in manifest_items(generated.manifest).items():
        if item_id == item:
            expected_sites[site] = expected_sites.get(site, 0) + metrics[0]
            key = (site, country)
            expected_countries[key] = expected_countries.get(key, 0) + metrics[0]
    assert got_sites == expected_sites
    assert {k: v for k, v in got_countries.items() if v} == {
        k: v for k, v in expected_countries.items() if v
    }
    dates = sorted(b["key_as_string"][:10] for b in result["dates"]["buckets"])
    assert dates == (DAYS if granularity == "day" else [DAYS[0]])
    mapping = client.indices.get_mapping(index=f"{store.compat_prefix}-1")
    properties = next(iter(mapping.values()))["mappings"]["properties"]
    assert set(LA_REFERENCIA_METRICS) <= set(properties)


def test_unreachable_opensearch_fails_the_run_with_a_clear_message(generated, store):
    dead = resource_for(store, generated, url="http://127.0.0.1:9", max_retries=2)
    result = run(generated, dead, partition_key=DAYS[0], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.cause.message
    assert "OpenSearch at http://127.0.0.1:9 is unreachable" in message
    assert "after 2 attempts" in message


SERVICES = Path(__file__).resolve().parents[1] / "scripts" / "services.sh"


def services(action: str) -> None:
    subprocess.run([str(SERVICES), action, "opensearch"], check=True, timeout=300)


def test_opensearch_stopped_mid_day_then_rerun_equals_a_clean_run(tmp_path):
    """OpenSearch goes away after the first bulk batch of a day: the write fails saying so;
    once it is back, writing the day again gives exactly the documents of a clean write."""
    data = generate(tmp_path / "data")
    day, deltas, snapshot = day_tables(data, days=1)[0]
    sources = CsvSourceRegistry(Path(data.settings.sources_file)).sources()
    clean = opensearch_store(batch_size=200, sources=sources)
    faulty = opensearch_store(batch_size=200, max_retries=3, backoff_seconds=0.5, sources=sources)
    stopped = []

    def stop_after_first_batch(written: int) -> None:
        if not stopped:
            stopped.append(written)
            services("stop")

    try:
        clean.replace_day(day, deltas, snapshot)
        faulty.on_batch = stop_after_first_batch
        with pytest.raises(StatsStoreError, match=r"OpenSearch at http://\S+ is unreachable"):
            faulty.replace_day(day, deltas, snapshot)
        assert stopped == [200]
    finally:
        services("start")
    faulty.on_batch = None
    faulty.replace_day(day, deltas, snapshot)
    for table in ("usage_deltas", "usage_snapshots"):
        ours = all_documents(faulty, faulty.alias(table), day.isoformat())
        theirs = all_documents(clean, clean.alias(table), day.isoformat())
        assert len(ours) == (deltas if table == "usage_deltas" else snapshot).height
        assert ours == theirs
    month = day.replace(day=1).isoformat()  # the compatibility set's monthly documents
    compat = all_documents(faulty, f"{faulty.compat_prefix}-*", month)
    assert compat
    assert compat == all_documents(clean, f"{clean.compat_prefix}-*", month)
    faulty.delete_all()
    clean.delete_all()


# --- the compatibility set on hand-made usage ---------------------------------------------------

# A Costa Rican repository that also declares its handle prefix, an Argentinian one, Costa
# Rica's national node and the portal.
COMPAT_SOURCES = [
    Source(
        1, "opendoar::1", "Kerwa", "R", "CR", "oai:www.kerwa.ucr.ac.cr:", 1, 4, 5,
        handle_prefixes=("10669",),
    ),
    Source(2, "opendoar::2", "Repo two", "R", "AR", "oai:repo2.example.org:", 1, 4, 5),
    Source(4, "national::CR", "National node", "N", "CR", None, 1, None, 5),
    Source(5, "regional::LA", "Portal", "L", None, None, 6),
]  # fmt: skip
LEVEL = {s.site_id: s.type for s in COMPAT_SOURCES}


def item_rows(day: dt.date, rows: list[tuple[int, str, int | None, str, int]]) -> pl.DataFrame:
    """Item deltas of `day`: (site, item, owner, visitor country, views) each, one download per
    view, no outlinks."""
    records = [
        {
            "date": day,
            "scope": "item",
            "key": item,
            "site_id": site,
            "level": LEVEL[site],
            "owner_site_id": owner,
            "country": country,
            **dict.fromkeys(METRICS, 0),
            "views": views,
            "downloads": views,
            "conversions": views,
        }
        for site, item, owner, country, views in rows
    ]
    return pl.DataFrame(records, schema=DELTA_SCHEMA, orient="row")


def original_views(store: OpenSearchStatsStore, sites: list[int] | None, must: list) -> int:
    """Views summed the way the original service's widgets sum them (range on `date`, its
    `must` clauses), over `<prefix>-<site>` indices or, for the network, `<prefix>-*`."""
    indices = (
        f"{store.compat_prefix}-*"
        if sites is None
        else ",".join(f"{store.compat_prefix}-{s}" for s in sites)
    )
    body = {
        "size": 0,
        "query": {
            "bool": {
                "must": must,
                "filter": [
                    {
                        "range": {
                            "date": {
                                "gte": "now-100y",
                                "lte": "now+100y",
                                "format": "strict_date_optional_time",
                            }
                        }
                    }
                ],
            }
        },
        "aggs": {"views": {"sum": {"field": "views"}}},
    }
    result = store.client.search(
        index=indices, body=body, allow_no_indices=True, ignore_unavailable=True
    )
    return int(result["aggregations"]["views"]["value"])


JUNE_1 = dt.date(2026, 6, 1)
USAGE = [
    (1, "oai:www.kerwa.ucr.ac.cr:10669/578", 1, "CR", 5),
    # the standard analyser reads the local part as part of one word with the host
    (1, "oai:www.kerwa.ucr.ac.cr:article/12", 1, "MX", 3),
    # a handle the repository declares, seen on the national node and the portal
    (4, "hdl:10669/99", 1, "US", 7),
    (5, "hdl:10669/99", 1, "BR", 11),
    # Argentina's item on Costa Rica's node and the portal
    (4, "oai:repo2.example.org:1/2", 2, "AR", 13),
    (5, "oai:repo2.example.org:1/2", 2, "AR", 17),
    # nobody's item on the node (Costa Rica's, as the processor says) and the portal
    (4, "oai:unknown.org:5", None, "CR", 19),
    (5, "oai:unknown.org:5", None, "CL", 23),
]


def test_original_queries_find_items_by_owner_country_and_level():
    """The repository query (`<oai prefix>*`) finds the repository's items by owner — also
    those the processor's index missed (a letter after the host, a handle) — and nothing
    else; the national query (root `country`) the node's country's items on the node, its
    repositories and the portal, plus the node's unowned usage; the network everything."""
    store = opensearch_store(compat_granularity="day", sources=COMPAT_SOURCES)
    try:
        deltas = item_rows(JUNE_1, USAGE)
        store.replace_day(JUNE_1, deltas, deltas)
        kerwa = [{"match_phrase": {"identifier": "oai:www.kerwa.ucr.ac.cr*"}}]
        assert original_views(store, [1, 4, 5], kerwa) == 5 + 3 + 7 + 11
        repo2 = [{"match_phrase": {"identifier": "oai:repo2.example.org*"}}]
        assert original_views(store, [2, 4, 5], repo2) == 13 + 17
        item = [{"match_phrase": {"identifier": "hdl:10669/99"}}]
        assert original_views(store, [1, 4, 5], item) == 7 + 11
        national = [{"match": {"country": "CR"}}]
        assert original_views(store, [4, 1, 5], national) == 5 + 3 + 7 + 11 + 19
        assert original_views(store, None, []) == sum(row[-1] for row in USAGE)
        portal = store.client.search(
            index=f"{store.compat_prefix}-5",
            body={"query": {"match_phrase": {"identifier": "oai:unknown.org:5"}}},
        )["hits"]["hits"]
        assert [h["_source"]["country"] for h in portal] == ["XX"]
        assert [h["_source"]["identifier"] for h in portal] == ["oai:unknown.org:5"]
    finally:
        store.delete_all()


def test_a_month_is_rebuilt_from_its_days_whatever_is_rewritten():
    """Monthly documents sum the month's days; writing a day again with other usage replaces
    that day's share (an item gone from it leaves the month if no other day has it)."""
    store = opensearch_store(compat_granularity="month", sources=COMPAT_SOURCES)
    june_2 = JUNE_1 + dt.timedelta(days=1)
    try:
        first = item_rows(JUNE_1, [(1, "oai:www.kerwa.ucr.ac.cr:10669/578", 1, "CR", 5)])
        store.replace_day(JUNE_1, first, first)
        second = item_rows(
            june_2,
            [
                (1, "oai:www.kerwa.ucr.ac.cr:10669/578", 1, "CR", 2),
                (1, "oai:www.kerwa.ucr.ac.cr:10669/579", 1, "PE", 4),
            ],
        )
        store.replace_day(june_2, second, second)
        by_item = month_documents(store)
        assert by_item == {
            "oai:www.kerwa.ucr.ac.cr:10669/578": (7, [("CR", 7)]),
            "oai:www.kerwa.ucr.ac.cr:10669/579": (4, [("PE", 4)]),
        }
        again = item_rows(june_2, [(1, "oai:www.kerwa.ucr.ac.cr:10669/578", 1, "US", 1)])
        store.replace_day(june_2, again, again)
        assert month_documents(store) == {
            "oai:www.kerwa.ucr.ac.cr:10669/578": (6, [("CR", 5), ("US", 1)])
        }
        store.replace_day(june_2, again, again)  # the same write twice: nothing added
        assert month_documents(store) == {
            "oai:www.kerwa.ucr.ac.cr:10669/578": (6, [("CR", 5), ("US", 1)])
        }
    finally:
        store.delete_all()


def month_documents(store: OpenSearchStatsStore) -> dict[str, tuple[int, list]]:
    """Every compatibility document: identifier → (views, [(visitor country, views)])."""
    client = store.client
    hits = client.search(index=f"{store.compat_prefix}-*", body={"size": 100})["hits"]["hits"]
    docs = [h["_source"] for h in hits]
    assert all(d["date"] == JUNE_1.isoformat() and d["day"] == 1 for d in docs)
    assert len({d["id"] for d in docs}) == len(docs)
    return {
        d["identifier"]: (d["views"], [(c["country"], c["views"]) for c in d["stats_by_country"]])
        for d in docs
    }


def test_daily_and_monthly_documents_are_never_mixed():
    """A store refuses to add monthly documents to a set of daily ones (every widget would
    count them twice), naming the index and what to do."""
    daily = opensearch_store(compat_granularity="day", sources=COMPAT_SOURCES)
    monthly = OpenSearchStatsStore(
        daily.url,
        prefix=f"{daily.prefix}x",
        compat_prefix=daily.compat_prefix,
        compat_granularity="month",
        sources=COMPAT_SOURCES,
    )
    try:
        deltas = item_rows(JUNE_1, USAGE)
        daily.replace_day(JUNE_1, deltas, deltas)
        with pytest.raises(StatsStoreError, match=r"-compat-1 was written with .*'day'"):
            monthly.replace_day(JUNE_1, deltas, deltas)
    finally:
        daily.delete_all()
        monthly.delete_all()


def test_a_store_without_sources_writes_no_compatibility_set():
    """Without the registry an item has no country or owner: rather than documents the
    original's national and repository widgets would silently miss, none."""
    store = opensearch_store()
    try:
        deltas = item_rows(JUNE_1, USAGE)
        store.replace_day(JUNE_1, deltas, deltas)
        assert store.row_count("usage_deltas", JUNE_1) == len(USAGE)
        indices = store.client.indices.get(
            index=f"{store.compat_prefix}-*", allow_no_indices=True, ignore_unavailable=True
        )
        assert indices == {}
    finally:
        store.delete_all()


def test_overlapping_prefixes_are_refused():
    """The original reads the network from `<compat_prefix>-*`, which must not reach the
    store's own indices when the store writes the set."""
    url = "http://127.0.0.1:9200"
    with pytest.raises(ValueError, match="overlap"):
        OpenSearchStatsStore(url, prefix="usage-stats-x", sources=COMPAT_SOURCES)
    with pytest.raises(ValueError, match="overlap"):
        OpenSearchStatsStore(url, prefix="p", compat_prefix="p-deltas", sources=COMPAT_SOURCES)
    OpenSearchStatsStore(url, prefix="usage-stats-x")  # writes no set: only reads
    with pytest.raises(ValueError, match="compat_granularity"):
        OpenSearchStatsStore("http://127.0.0.1:9200", compat_granularity="week")


def test_an_owner_found_mid_month_owns_the_whole_month():
    """An item nobody owned on the 1st and a repository owns from the 2nd (its prefix was
    registered in between) has one monthly document per site, with the latest owner."""
    store = opensearch_store(compat_granularity="month", sources=COMPAT_SOURCES)
    june_2 = JUNE_1 + dt.timedelta(days=1)
    item = "oai:www.kerwa.ucr.ac.cr:10669/578"
    try:
        first = item_rows(JUNE_1, [(4, item, None, "CR", 5)])
        store.replace_day(JUNE_1, first, first)
        second = item_rows(june_2, [(4, item, 1, "US", 2)])
        store.replace_day(june_2, second, second)
        hits = store.client.search(index=f"{store.compat_prefix}-*", body={"size": 10})
        docs = [h["_source"] for h in hits["hits"]["hits"]]
        assert [(d["idsite"], d["owner_idsite"], d["country"], d["views"]) for d in docs] == [
            (4, 1, "CR", 7)
        ]
        kerwa = [{"match_phrase": {"identifier": "oai:www.kerwa.ucr.ac.cr*"}}]
        assert original_views(store, [1, 4, 5], kerwa) == 7
    finally:
        store.delete_all()


def compat_sources(store: OpenSearchStatsStore) -> dict[str, dict]:
    """Every compatibility document by id, as stored (`write_id`, the digest, included)."""
    client = store.client
    client.indices.refresh(index=f"{store.compat_prefix}-*")
    hits = client.search(index=f"{store.compat_prefix}-*", body={"size": 1000, "version": True})[
        "hits"
    ]["hits"]
    return {h["_id"]: {**h["_source"], "_version": h["_version"]} for h in hits}


def test_a_rewritten_month_equals_the_month_written_once():
    """Re-writing a mid-month day with less usage, after an interrupted write and a registry
    change, leaves exactly the documents a clean store writes; a document the rewrite does
    not change is not sent again."""
    june = [JUNE_1 + dt.timedelta(days=n) for n in range(3)]
    kerwa, repo2 = "oai:www.kerwa.ucr.ac.cr:10669/", "oai:repo2.example.org:1/"
    days = [
        item_rows(june[0], [(1, kerwa + "1", 1, "CR", 5), (4, repo2 + "2", 2, "AR", 3)]),
        item_rows(june[1], [(1, kerwa + "1", 1, "US", 2), (1, kerwa + "3", 1, "PE", 4)]),
        item_rows(june[2], [(5, "hdl:10669/9", 1, "BR", 6), (4, repo2 + "2", 2, "AR", 1)]),
    ]
    # day 2 again: the item only it had is gone, the other has other usage
    rewritten = item_rows(june[1], [(1, kerwa + "1", 1, "CL", 7)])
    registry = list(COMPAT_SOURCES)
    store = opensearch_store(compat_granularity="month", sources=lambda: registry, batch_size=1)
    clean = opensearch_store(compat_granularity="month", sources=COMPAT_SOURCES)
    try:
        for deltas in days:
            store.replace_day(deltas.get_column("date")[0], deltas, deltas)
        before = compat_sources(store)
        assert kerwa + "3" in {d["identifier"] for d in before.values()}
        # interrupted once its first compatibility document is sent: day 2's deltas are
        # stored, the month's documents half rewritten
        sent = []

        def interrupt(written: int) -> None:
            sent.append(written)
            if len(sent) == 2 * rewritten.height + 1:
                raise RuntimeError("interrupted")

        store.on_batch = interrupt
        with pytest.raises(RuntimeError, match="interrupted"):
            store.replace_day(june[1], rewritten, rewritten)
        store.on_batch = None
        store.replace_day(june[1], rewritten, rewritten)
        for deltas in (days[0], rewritten, days[2]):
            clean.replace_day(deltas.get_column("date")[0], deltas, deltas)
        after, expected = compat_sources(store), compat_sources(clean)
        unversioned = {k: {f: v for f, v in d.items() if f != "_version"} for k, d in after.items()}
        assert unversioned == {
            k: {f: v for f, v in d.items() if f != "_version"} for k, d in expected.items()
        }
        assert kerwa + "3" not in {d["identifier"] for d in after.values()}
        # repo2's item on the national node: untouched by day 2, not sent again
        untouched = next(k for k, d in after.items() if d["identifier"] == repo2 + "2")
        assert after[untouched]["_version"] == before[untouched]["_version"]

        # the registry changes: Argentina's repository is Uruguay's now; a day that does not
        # have its item rewrites its document all the same
        registry[1] = dataclasses.replace(registry[1], country="UY")
        store.replace_day(june[1], rewritten, rewritten)
        assert compat_sources(store)[untouched]["country"] == "UY"
    finally:
        store.delete_all()
        clean.delete_all()


def sorted_rows(frame: pl.DataFrame) -> list[tuple]:
    return sorted(frame.rows(), key=repr)


def test_a_month_from_the_warehouse_equals_the_month_read_back(tmp_path):
    """The month's other days summed from frames (`period_item_rows`; the stats_index asset
    reads them from the warehouse) are the store's own read-back bucket for bucket, and a
    store given them writes the same compatibility documents as one that reads them back: an
    owner found mid-month, unknown visitor countries, an item on several levels."""
    june = [JUNE_1 + dt.timedelta(days=n) for n in range(4)]
    kerwa, repo2 = "oai:www.kerwa.ucr.ac.cr:10669/", "oai:repo2.example.org:1/"
    days = [
        item_rows(june[0], [(1, kerwa + "1", 1, "CR", 5), (4, kerwa + "2", None, None, 3)]),
        item_rows(
            june[1],
            [
                (4, kerwa + "2", 1, "US", 2),
                (5, kerwa + "2", 1, None, 4),
                (1, kerwa + "1", 1, "CR", 1),
            ],
        ),
        item_rows(june[2], [(4, repo2 + "2", 2, "AR", 7), (5, "hdl:10669/9", 1, "BR", 6)]),
        item_rows(june[3], [(1, kerwa + "1", 1, "PE", 8), (4, repo2 + "2", 2, None, 1)]),
    ]
    read_back = opensearch_store(compat_granularity="month", sources=COMPAT_SOURCES)
    given = opensearch_store(compat_granularity="month", sources=COMPAT_SOURCES)
    try:
        assert given.compat_period(june[2]) == (JUNE_1, dt.date(2026, 6, 30))
        for n, deltas in enumerate(days):
            read_back.replace_day(june[n], deltas, deltas)
            earlier = compat.period_item_rows(days[:n])
            given.replace_day(june[n], deltas, deltas, period_items=earlier)
        last = dt.date(2026, 6, 30)
        for n in range(len(days)):
            stored = queries.month_item_rows(
                read_back.connection, read_back.alias("usage_deltas"), JUNE_1, last, june[n]
            )
            summed = compat.period_item_rows(days[:n] + days[n + 1 :])
            assert stored.schema == summed.schema
            assert sorted_rows(stored) == sorted_rows(summed) and summed.height > 0
        expected = compat_sources(read_back)
        assert {
            k: {f: v for f, v in d.items() if f != "_version"} for k, d in expected.items()
        } == {
            k: {f: v for f, v in d.items() if f != "_version"}
            for k, d in compat_sources(given).items()
        }
        assert len(expected) == 5  # one per site and item
    finally:
        read_back.delete_all()
        given.delete_all()


def test_new_indices_wait_only_for_the_copies_the_nodes_can_hold(tmp_path, monkeypatch):
    """Before a day's first document the store waits for its indices' shard copies; on one
    node a replica can never start, so a store configured with one waits for the primaries
    (yellow), once per index, not for a green that would only come after the timeout."""
    store = opensearch_store(replicas=1, copies_timeout_seconds=20)
    asked: list[dict] = []
    health = store.client.cluster.health

    def recording_health(*args, **kwargs):
        asked.append(kwargs)
        return health(*args, **kwargs)

    monkeypatch.setattr(store.client.cluster, "health", recording_health)
    try:
        (day, deltas, snapshot), (later, deltas2, snapshot2) = day_tables(
            generate(tmp_path / "data"), days=2
        )
        store.replace_day(day, deltas, snapshot)
        store.replace_day(later, deltas2, snapshot2)
        waits = [k for k in asked if "wait_for_status" in k]
        # the day's two indices, then the registry of stored days (created at the first day)
        assert [w["wait_for_status"] for w in waits] == ["yellow", "yellow"]
        assert sorted(waits[0]["index"].split(",")) == sorted(
            {store.index_for("usage_deltas", day), store.index_for("usage_snapshots", day)}
        )
        assert waits[1]["index"] == f"{store.stored_days_alias()}-1"
        assert waits[0]["timeout"] == "20s"
        assert store.row_count("usage_deltas", later) == deltas2.height
    finally:
        store.delete_all()


def registry(store: OpenSearchStatsStore) -> dict[str, int]:
    """The registry's documents: "table|day" → rows."""
    found = store.client.search(
        index=store.stored_days_alias(), body={"size": 100}, ignore_unavailable=True
    )
    return {h["_id"]: h["_source"]["rows"] for h in found["hits"]["hits"]}


def test_a_day_is_listed_once_written_whole_and_older_stores_get_the_list(tmp_path, monkeypatch):
    """`days()` reads the registry that each write ends with, not an aggregation over every
    snapshot document: a write that fails its check leaves its day unlisted, a day rewritten
    empty is unlisted, and a store from before the registry gets it, whole, at its next
    write (until then it is read from the documents)."""
    store = opensearch_store()
    try:
        (d1, deltas1, snap1), (d2, deltas2, snap2), (d3, deltas3, snap3) = day_tables(
            generate(tmp_path / "data"), days=3
        )
        store.replace_day(d1, deltas1, snap1)
        store.replace_day(d2, deltas2, snap2)
        assert store.days() == [d1, d2]
        assert registry(store) == {
            f"usage_snapshots|{d1}": snap1.height,
            f"usage_snapshots|{d2}": snap2.height,
        }

        # a store from before the registry: its days come from the documents...
        store.client.indices.delete(index=f"{store.stored_days_alias()}-1")
        older = OpenSearchStatsStore(
            store.url, prefix=store.prefix, compat_prefix=store.compat_prefix
        )
        assert older.days() == [d1, d2]
        # ...and its next write lists every day it holds
        older.replace_day(d3, deltas3, snap3)
        assert older.days() == [d1, d2, d3]
        assert registry(older) == {
            f"usage_snapshots|{d1}": snap1.height,
            f"usage_snapshots|{d2}": snap2.height,
            f"usage_snapshots|{d3}": snap3.height,
        }

        # a rewrite whose check fails is not listed, though its documents are in
        older.replace_day(d3, deltas3.clear(), snap3.clear())
        assert older.days() == [d1, d2]
        counts = older.row_count
        monkeypatch.setattr(older, "row_count", lambda table, day: counts(table, day) + 1)
        with pytest.raises(StatsStoreError, match="expected"):
            older.replace_day(d3, deltas3, snap3)
        monkeypatch.undo()
        assert older.row_count("usage_snapshots", d3) == snap3.height
        assert older.days() == [d1, d2]
        older.replace_day(d3, deltas3, snap3)
        assert older.days() == [d1, d2, d3]
    finally:
        store.delete_all()


def test_sum_tuples_order_as_the_frame_with_missing_values_last():
    """`sum_tuples` (OpenSearch's `sum_rows`) against the frame of the same buckets
    (`queries.sum_rows`), on buckets as a composite aggregation pages them: ordered by its
    sources, a missing value first; the frame and the tuples put it last."""
    day = dt.date(2026, 1, 5)

    class Node:
        """Composite buckets as the node sends them, no server (our own ordering logic)."""

        def __init__(self, keys: list[tuple]) -> None:
            self.keys = keys

        def composite(self, index, query, sources, aggs):
            names = [next(iter(source)) for source in sources]
            for n, key in enumerate(self.keys):
                yield {
                    "key": dict(zip(names, key, strict=True)),
                    "doc_count": 1,
                    **{m: {"value": float(n + i)} for i, m in enumerate(aggs)},
                }

    metrics = ("views", "total_item_requests")
    cases = {
        ("key", "country"): [(None, "AR"), ("a", None), ("a", "AR"), ("b", "BR")],
        ("key", "level"): [("a", "L"), ("a", "N"), ("b", "R")],
        ("country",): [(None,), ("AR",), ("BR",)],
    }
    for by, keys in cases.items():
        node = Node(keys)
        where = (RowFilter(None, None, (1,)),)
        frame = queries.sum_rows(node, "i", "item", day, day, where, by, (), metrics)
        found = queries.sum_tuples(node, "i", "item", day, day, where, by, metrics)
        assert found == frame.drop("rows").rows(), by
    assert [row[:2] for row in found] == [("AR", 1), ("BR", 2), (None, 0)]
