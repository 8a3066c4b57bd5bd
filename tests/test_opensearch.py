"""The pipeline on a real OpenSearch: documents, the LA Referencia compatibility set, failures."""

from __future__ import annotations

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
from usage_stats.metrics import DELTA_SCHEMA, LA_REFERENCIA_METRICS
from usage_stats.opensearch_store import OpenSearchStatsStore
from usage_stats.store import StatsStoreError

RANGE = {
    "dagster/asset_partition_range_start": DAYS[0],
    "dagster/asset_partition_range_end": DAYS[-1],
}


@pytest.fixture
def store():
    store = opensearch_store(batch_size=300)
    yield store
    store.delete_all()


def run(data: GeneratedData, store_resource, **kwargs):
    resources = build_resources(data.settings) | {"stats_store": store_resource}
    return materialize(
        usage_assets, resources=resources, instance=DagsterInstance.ephemeral(), **kwargs
    )


def resource_for(store: OpenSearchStatsStore, **overrides) -> OpenSearchStatsStoreResource:
    return OpenSearchStatsStoreResource(
        url=overrides.get("url", store.url),
        prefix=store.prefix,
        batch_size=store.batch_size,
        max_retries=overrides.get("max_retries", 5),
        compat_prefix=store.compat_prefix,
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
    assert run(generated, resource_for(store), tags=RANGE).success
    for day in DAYS:
        assert item_metrics(stored_deltas(store, day)) == manifest_items(generated.manifest, [day])
    assert store.days() == [dt.date.fromisoformat(d) for d in DAYS]


def test_compatibility_index_matches_la_referencia_shape(generated, store):
    assert run(generated, resource_for(store), partition_key=DAYS[0]).success
    item = "oai:repo1.example.org:1001/0"
    client = store.client
    index = f"{store.compat_prefix}-1"  # the owning repository's index
    mapping = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapping["id"]["type"] == "keyword"
    assert mapping["stats_by_country"]["type"] == "nested"
    body = {
        "size": 0,
        "query": {"bool": {"filter": [{"term": {"id": item}}, {"term": {"date": DAYS[0]}}]}},
        "aggs": {
            "level": {
                "terms": {"field": "level"},
                "aggs": {
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
            }
        },
    }
    buckets = client.search(index=index, body=body)["aggregations"]["level"]["buckets"]
    levels = {s["site_id"]: s["type"] for s in generated.manifest["sources"]}
    expected_levels: dict[str, int] = {}
    expected_countries: dict[tuple[str, str], int] = {}
    for (_day, site, item_id, country), metrics in manifest_items(
        generated.manifest, [DAYS[0]]
    ).items():
        if item_id == item:
            level = levels[site]
            expected_levels[level] = expected_levels.get(level, 0) + metrics[0]
            key = (level, country)
            expected_countries[key] = expected_countries.get(key, 0) + metrics[0]
    assert {b["key"]: int(b["views"]["value"]) for b in buckets} == expected_levels
    got_countries = {
        (b["key"], c["key"]): int(c["views"]["value"])
        for b in buckets
        for c in b["countries"]["country"]["buckets"]
        if c["views"]["value"]
    }
    assert got_countries == {k: v for k, v in expected_countries.items() if v}
    assert set(LA_REFERENCIA_METRICS) <= set(mapping)


def test_unreachable_opensearch_fails_the_run_with_a_clear_message(generated, store):
    dead = resource_for(store, url="http://127.0.0.1:9", max_retries=2)
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
    clean = opensearch_store(batch_size=200)
    faulty = opensearch_store(batch_size=200, max_retries=3, backoff_seconds=0.5)
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
    compat = all_documents(faulty, f"{faulty.compat_prefix}-*", day.isoformat())
    assert compat == all_documents(clean, f"{clean.compat_prefix}-*", day.isoformat())
    faulty.delete_all()
    clean.delete_all()
