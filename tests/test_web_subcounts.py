"""Usage breakdowns (`/api/v1/…/breakdown/<field>`) on planted truth, on both stores: the
usage subcounts of `test_usage_subcounts`' two planted days (built by the pipeline's own
functions from planted item deltas and metadata), the endpoints' JSON exact, the top-N
remainders adding up to the whole, CSV and XLSX the same rows, bad input a 4xx."""

from __future__ import annotations

import io

import metadata_support as md
import pytest
from breakdown_support import app_client, csv_rows, get, text_row
from openpyxl import load_workbook
from test_record_stats import SOURCES
from test_usage_subcounts import D1, D2, DAY1, DAY2, META, OWNERS

from stores import opensearch_store
from usage_stats.pipeline.metrics import METRICS
from usage_stats.pipeline.snapshots import next_snapshot
from usage_stats.pipeline.usage_subcounts import OTHER, item_fields, usage_subcounts
from usage_stats.storage.duckdb_store import DuckDBStatsStore

EMPTY = dict.fromkeys(METRICS, 0)


@pytest.fixture(scope="module", params=["duckdb", "opensearch"])
def client(request, tmp_path_factory):
    """A store with the usage subcounts (deltas and snapshots) of D1 and D2."""
    tmp = tmp_path_factory.mktemp("subcounts")
    if request.param == "duckdb":
        store = DuckDBStatsStore(tmp / "stats.duckdb")
    else:
        store = opensearch_store(batch_size=200)
    fields = item_fields(META)
    snap1 = next_snapshot(None, DAY1, D1)
    snap2 = next_snapshot(snap1, DAY2, D2)
    for day, delta, snap in ((D1, DAY1, snap1), (D2, DAY2, snap2)):
        store.replace_subcount_day(
            day,
            usage_subcounts(delta, fields, OWNERS, day),
            usage_subcounts(snap, fields, OWNERS, day),
        )
    yield app_client(store, tmp, SOURCES)
    if request.param == "opensearch":
        store.delete_all()


def counts(views: int, downloads: int) -> dict:
    return EMPTY | {"views": views, "downloads": downloads}


def row(rank, value, views, downloads, whole, metric="views") -> dict:
    figures = counts(views, downloads)
    part = figures[metric]
    return {"rank": rank, "value": value} | figures | {"share": round(part / whole, 6)}


def pairs(part: dict) -> list[tuple]:
    return [(r["value"], r["views"], r["downloads"]) for r in part["values"]]


def adds_up(part: dict) -> None:
    rows = [*part["values"], part["unknown"], part["other"]]
    for m in METRICS:
        assert sum(r[m] for r in rows) == part["whole"][m], m


def test_global_by_type_period_cumulative_and_remainder(client):
    body = get(
        client, "/api/v1/global/breakdown/resource_type", start="2026-01-10", end="2026-01-11"
    )
    assert (body["scope"], body["key"], body["level"], body["metric"]) == (
        "global",
        "global",
        "all",
        "views",
    )
    assert (body["field"], body["multi_valued"], body["limit"]) == ("resource_type", False, 20)
    # D1: a 10+2 (R, N), c 3, z (no metadata) 5, y 1; D2: b 1, c 1 (views/downloads).
    period = body["period"]
    assert period["whole"] == counts(29, 13)
    assert period["values"] == [
        row(1, md.ARTICLE, 16, 6, 29),
        row(2, md.THESIS, 7, 6, 29),
    ]
    assert period["unknown"] == row(None, "", 6, 1, 29)
    assert period["other"] == {"rank": None, "value": OTHER} | EMPTY | {"share": 0.0}
    adds_up(period)
    # the snapshot of D2 holds everything up to it: the same figures
    assert body["cumulative"] == {"as_of": "2026-01-11"} | period
    top1 = get(
        client,
        "/api/v1/global/breakdown/resource_type",
        start="2026-01-11",
        end="2026-01-31",
        limit="1",
    )
    # period: D2 alone; cumulative: as of D2, one value listed, the other folded
    assert top1["period"]["whole"] == counts(2, 1)
    assert pairs(top1["period"]) == [(md.THESIS, 1, 0)]  # a tie on views: by value
    assert top1["period"]["other"] == row(None, OTHER, 1, 1, 2)
    assert top1["cumulative"]["as_of"] == "2026-01-11"
    assert top1["cumulative"]["values"] == [row(1, md.ARTICLE, 16, 6, 29)]
    assert top1["cumulative"]["other"] == row(None, OTHER, 7, 6, 29)
    for part in (top1["period"], top1["cumulative"]):
        adds_up(part)
        listed = [*part["values"], part["unknown"], part["other"]]
        assert round(sum(r["share"] for r in listed), 5) == 1.0


def test_ranked_by_another_metric_and_one_level(client):
    body = get(
        client,
        "/api/v1/global/breakdown/country",
        end="2026-01-11",
        metric="downloads",
        limit="2",
    )
    assert body["metric"] == "downloads"
    assert pairs(body["period"]) == [("BR", 17, 10), ("AR", 4, 2)]
    assert body["period"]["values"][0]["share"] == round(10 / 13, 6)
    assert body["period"]["unknown"] == row(None, "", 5, 0, 13, "downloads")
    assert body["period"]["other"] == row(None, OTHER, 3, 1, 13, "downloads")  # CR, CL
    adds_up(body["period"])
    national = get(client, "/api/v1/global/breakdown/item", end="2026-01-11", level="N")
    assert national["level"] == "N"
    assert national["period"]["whole"] == counts(2, 0)
    assert pairs(national["period"]) == [("a", 2, 0)]


def test_source_and_national_node_and_a_list_field(client):
    one = get(client, "/api/v1/sources/1/breakdown/item", start="2026-01-10", end="2026-01-11")
    assert (one["scope"], one["key"]) == ("source", "1")
    assert one["source"]["source_key"] == "repo::one"
    assert pairs(one["period"]) == [("a", 12, 4), ("z", 5, 0)]
    assert one["period"]["whole"] == counts(17, 4)
    node = get(client, "/api/v1/nodes/9/breakdown/subject", start="2026-01-10", end="2026-01-11")
    assert (node["scope"], node["key"], node["multi_valued"]) == ("national", "CR", True)
    # CR: a (física, química) 12/4, b (física) 7/6, z (no metadata) 5/0
    assert node["period"]["whole"] == counts(24, 10)
    assert node["period"]["values"] == [
        row(1, "física", 19, 10, 24),
        row(2, "química", 12, 4, 24),
    ]
    assert node["period"]["unknown"] == row(None, "", 5, 0, 24)
    portal = get(client, "/api/v1/nodes/10/breakdown/language", end="2026-01-11")
    assert (portal["scope"], portal["period"]["whole"]) == ("global", counts(29, 13))
    assert pairs(portal["period"]) == [("spa", 16, 6), ("por", 7, 6)]


def test_cumulative_before_any_stored_day_is_empty(client):
    body = get(client, "/api/v1/global/breakdown/language", start="2025-01-01", end="2026-01-09")
    assert body["cumulative"]["as_of"] is None
    for part in (body["period"], body["cumulative"]):
        assert part["whole"] == EMPTY
        assert part["values"] == []
        assert part["unknown"]["share"] is None


@pytest.mark.parametrize("table", ["period", "cumulative"])
def test_csv_and_xlsx_hold_the_json_rows(client, table):
    path = "/api/v1/nodes/9/breakdown/resource_type"
    params = {"start": "2026-01-11", "end": "2026-01-11", "limit": "1", "table": table}
    part = get(client, path, **params)[table]
    rows = [*part["values"], part["unknown"], part["other"]]
    response = client.get(path, params=params | {"format": "csv"})
    assert response.status_code == 200
    assert 'filename="usage-node-9-resource_type' in response.headers["content-disposition"]
    assert csv_rows(response.text) == [text_row(r) for r in rows]
    response = client.get(path, params=params | {"format": "xlsx"})
    sheet = load_workbook(io.BytesIO(response.content)).active
    table_rows = list(sheet.iter_rows(values_only=True))
    assert list(table_rows[0]) == list(rows[0])
    # an empty cell reads back as None: the unknown value "" cannot be told from a null
    blank = [r | {"value": r["value"] or None} for r in rows]
    assert [dict(zip(table_rows[0], r, strict=True)) for r in table_rows[1:]] == blank


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/api/v1/global/breakdown/colour", {}, "field"),
        ("/api/v1/global/breakdown/total", {}, "field"),
        ("/api/v1/global/breakdown/language", {"metric": "clicks"}, "metric"),
        ("/api/v1/global/breakdown/language", {"level": "X"}, "level"),
        ("/api/v1/global/breakdown/language", {"limit": "0"}, "limit"),
        ("/api/v1/global/breakdown/language", {"limit": "1001"}, "limit"),
        ("/api/v1/global/breakdown/language", {"limit": "99999999999999999999"}, "limit"),
        ("/api/v1/global/breakdown/language", {"limit": "ten"}, "limit"),
        ("/api/v1/global/breakdown/language", {"table": "series"}, "table"),
        ("/api/v1/global/breakdown/language", {"format": "pdf"}, "format"),
        ("/api/v1/global/breakdown/language", {"start": "2026-13-01"}, "start"),
        ("/api/v1/global/breakdown/language", {"start": "2026-02", "end": "2026-01"}, "end"),
        ("/api/v1/sources/404/breakdown/language", {}, "site_id"),
        ("/api/v1/sources/abc/breakdown/language", {}, "site_id"),
        ("/api/v1/nodes/1/breakdown/language", {}, "site_id"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_parameter(client, path, params, parameter):
    response = client.get(path, params=params)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["parameter"] == parameter, response.text
