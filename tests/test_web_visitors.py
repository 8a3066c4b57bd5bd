"""Unique visitors (`/api/v1/…/visitors`) and the referrer breakdown on both stores: the
planted referrer day of `test_referrers` built by the pipeline's own functions, stored, and
read back exactly as JSON and CSV, per day and level and never summed; bad input a 4xx."""

from __future__ import annotations

import metadata_support as md
import pytest
from breakdown_support import app_client, csv_rows, get
from test_record_stats import SOURCES
from test_referrers import DAY, VISITS, sessions_frame, visits_frame

from stores import opensearch_store
from usage_stats.pipeline.metrics import daily_deltas
from usage_stats.pipeline.referrer_subcounts import (
    referrer_item_rows,
    referrer_subcounts,
    unique_visitors,
    visitor_cells,
    with_visitors,
)
from usage_stats.pipeline.referrers import classify_visits
from usage_stats.pipeline.usage_subcounts import full_subcounts, item_fields, owner_countries, top_n
from usage_stats.storage.duckdb_store import DuckDBStatsStore

OWNERS = owner_countries(SOURCES)  # sites 1 and 2 in CR (node 9), 3 in AR


@pytest.fixture(scope="module", params=["duckdb", "opensearch"])
def client(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("visitors")
    store = (
        DuckDBStatsStore(tmp / "stats.duckdb")
        if request.param == "duckdb"
        else opensearch_store(batch_size=200)
    )
    visits, _ = classify_visits(visits_frame(VISITS))
    sessions = sessions_frame()
    fields = item_fields(md.frame(md.record("a")))
    full = full_subcounts(daily_deltas(sessions), fields, OWNERS, DAY)
    referrers = referrer_subcounts(referrer_item_rows(sessions, visits), OWNERS, DAY)
    visitors = unique_visitors(visitor_cells(sessions, visits), OWNERS, DAY)
    deltas = with_visitors(top_n(full.vstack(referrers)), visitors)
    store.replace_subcount_day(DAY, deltas, top_n(full))
    yield app_client(store, tmp, SOURCES)
    if request.param == "opensearch":
        store.delete_all()


def test_visitors_per_day_and_level_json_and_csv(client):
    body = get(client, "/api/v1/global/visitors", start="2026-03-01", end="2026-03-31")
    assert (body["scope"], body["key"], body["level"]) == ("global", "global", "all")
    assert body["days"] == [
        {"date": "2026-03-02", "level": "N", "visitors": 1},
        {"date": "2026-03-02", "level": "R", "visitors": 5},
    ]
    # sites 1 and 2 are both CR here: v2 used both, one visitor of the country
    node = get(client, "/api/v1/nodes/9/visitors", start="2026-03-02", end="2026-03-02", level="R")
    assert node["days"] == [{"date": "2026-03-02", "level": "R", "visitors": 5}]
    source = get(client, "/api/v1/sources/2/visitors", start="2026-03-02", end="2026-03-02")
    assert source["days"] == [{"date": "2026-03-02", "level": "R", "visitors": 2}]
    text = client.get("/api/v1/sources/1/visitors", params={"start": "2026-03-02", "format": "csv"})
    assert text.status_code == 200
    assert csv_rows(text.text) == [
        {"date": "2026-03-02", "level": "N", "visitors": "1"},
        {"date": "2026-03-02", "level": "R", "visitors": "4"},
    ]
    assert get(client, "/api/v1/sources/3/visitors", start="2026-03-02")["days"] == []
    assert client.get("/api/v1/global/visitors", params={"level": "X"}).status_code == 400
    assert client.get("/api/v1/sources/404/visitors").status_code == 404


def test_referrer_breakdown_adds_up(client):
    body = get(client, "/api/v1/global/breakdown/referrer", start="2026-03-02", end="2026-03-02")
    period = body["period"]
    assert [(r["value"], r["views"]) for r in period["values"]] == [
        ("direct", 3),
        ("social:facebook", 2),
        ("campaign:boletín", 1),
        ("search:google", 1),
        ("website:scielo.org", 1),
    ]
    assert (period["unknown"]["views"], period["other"]["views"], period["whole"]["views"]) == (
        1,
        0,
        9,
    )
