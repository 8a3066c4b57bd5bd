"""Statistics API and LA Referencia widgets on both stores, with exact numbers from the
generator's manifest (two calendar months, three repositories, a node, the portal)."""

from __future__ import annotations

import csv
import io

import metadata_support as md
import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from web_support import END, START, load, month, national, owner, sums, week

from stores import opensearch_store
from usage_stats.pipeline.crosswalk import crosswalk_table
from usage_stats.pipeline.metrics import METRICS
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.web import create_app

RANGE = {"start": START.isoformat(), "end": END.isoformat()}


@pytest.fixture(scope="module", params=["duckdb", "opensearch"])
def web(request, tmp_path_factory):
    if request.param == "duckdb":
        store = DuckDBStatsStore(tmp_path_factory.mktemp("duckdb") / "stats.duckdb")
    else:
        store = opensearch_store(batch_size=2000)
    loaded = load(store, tmp_path_factory.mktemp("data"))
    client = TestClient(create_app(store, loaded.admin_db_url), raise_server_exceptions=False)
    yield client, loaded
    if request.param == "opensearch":
        store.delete_all()


def metrics(row: dict) -> dict:
    return {m: row[m] for m in METRICS}


def busiest_item(loaded, prefix: str = "oai:repo1.example.org:") -> str:
    per_item = sums(loaded.manifest, by=lambda i: i["item_id"])
    return max((k for k in per_item if k.startswith(prefix)), key=lambda k: per_item[k]["views"])


def ranked(per_key: dict, metric: str, limit: int) -> list[tuple[str, dict]]:
    """Manifest sums per key, most `metric` first, ties by key ascending, as the API ranks."""
    order = sorted(per_key.items(), key=lambda kv: (-kv[1][metric], kv[0]))[:limit]
    assert all(v[metric] > 0 for _, v in order), "limit reaches keys without usage"
    return order


def test_health(web):
    client, _ = web
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["stats_store"]["last_day"] == END.isoformat()


def test_item_totals_any_spelling_and_calendar_months(web):
    client, loaded = web
    item = busiest_item(loaded)
    spelled = item.replace("oai:repo1.example.org:", "oai:https://REPO1.example.org/server:")
    response = client.get("/api/v1/items", params={"identifier": spelled, **RANGE})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["key"] == item
    assert body["complete_through"] == END.isoformat()
    keep = lambda i: i["item_id"] == item  # noqa: E731
    assert body["totals"] == sums(loaded.manifest, keep)[()]
    expected = sums(loaded.manifest, keep, by=lambda i: month(i["date"]))
    assert [s["period"] for s in body["series"]] == ["2026-01", "2026-02"]
    assert body["series"][0]["start"] == "2026-01-24" and body["series"][0]["end"] == "2026-01-31"
    assert body["series"][1]["start"] == "2026-02-01" and body["series"][1]["end"] == "2026-02-04"
    for bucket in body["series"]:
        assert metrics(bucket) == expected.get(bucket["period"], dict.fromkeys(METRICS, 0))
    by_country = sums(loaded.manifest, keep, by=lambda i: i["country"])
    assert {r["country"]: metrics(r) for r in body["by_country"]} == by_country


def test_weeks_quarters_years_and_days(web):
    client, loaded = web
    params = {"start": "2026-01-24", "end": "2026-02-04"}
    weekly = client.get("/api/v1/global", params={**params, "granularity": "week"}).json()
    assert [s["period"] for s in weekly["series"]] == ["2026-W04", "2026-W05", "2026-W06"]
    assert weekly["series"][0]["start"] == "2026-01-24"  # clipped: the week began on the 19th
    assert weekly["series"][1]["start"] == "2026-01-26"  # Monday

    expected = sums(loaded.manifest, by=lambda i: week(i["date"]))
    assert {s["period"]: metrics(s) for s in weekly["series"]} == expected
    for grain, label in (("quarter", "2026-Q1"), ("year", "2026")):
        body = client.get("/api/v1/global", params={**params, "granularity": grain}).json()
        assert [s["period"] for s in body["series"]] == [label]
        assert metrics(body["series"][0]) == sums(loaded.manifest)[()]
    daily = client.get("/api/v1/global", params={**params, "granularity": "day"}).json()
    assert len(daily["series"]) == 12
    assert {s["period"]: metrics(s) for s in daily["series"]} == sums(
        loaded.manifest, by=lambda i: i["date"]
    )


def test_source_includes_national_and_regional_levels(web):
    client, loaded = web
    prefix = loaded.prefixes[1]
    body = client.get("/api/v1/sources/1", params=RANGE).json()
    keep = lambda i: i["item_id"].startswith(prefix)  # noqa: E731
    assert body["totals"] == sums(loaded.manifest, keep)[()]
    by_level = sums(loaded.manifest, keep, by=lambda i: loaded.levels[i["site_id"]])
    assert {r["level"]: metrics(r) for r in body["by_level"]} == by_level
    assert {"R", "N", "L"} <= set(by_level)
    assert body["source"]["source_key"] == "opendoar::1001"


def test_node_portal_site_and_global(web):
    client, loaded = web
    # a national node: its country's items on its country's sites and the portal
    body = client.get("/api/v1/nodes/4", params=RANGE).json()
    keep = national(loaded)
    assert body["totals"] == sums(loaded.manifest, keep)[()]
    by_level = sums(loaded.manifest, keep, by=lambda i: loaded.levels[i["site_id"]])
    assert {r["level"]: metrics(r) for r in body["by_level"]} == by_level
    assert set(by_level) == {"R", "N", "L"}
    assert {r["country"]: metrics(r) for r in body["by_country"]} == sums(
        loaded.manifest, keep, by=lambda i: i["country"]
    )
    assert (body["scope"], body["key"], body["reach"]["kind"]) == ("national", "4", "national")
    assert body["reach"]["label"].startswith("Use of the items of Costa Rica's 1 repository")
    # planted: the node's site also shows Argentina's and Brazil's items, which are not
    # Costa Rica's (LA Referencia's national widget filters on the item's country)
    foreign = lambda i: i["site_id"] == 4 and owner(loaded, i["item_id"]) != 1  # noqa: E731
    assert sums(loaded.manifest, foreign)[()]["views"] > 0
    # the regional portal: the whole network, as /global
    portal = client.get("/api/v1/nodes/5", params=RANGE).json()
    assert portal["totals"] == sums(loaded.manifest)[()]
    assert portal["reach"]["kind"] == "network"
    # one site alone
    for site in (1, 4, 5):
        body = client.get(f"/api/v1/sites/{site}", params=RANGE).json()
        assert body["totals"] == sums(loaded.manifest, lambda i, s=site: i["site_id"] == s)[()]
        assert body["reach"]["kind"] == "site" and body["scope"] == "site"
    body = client.get("/api/v1/global", params=RANGE).json()
    assert body["totals"] == sums(loaded.manifest)[()]
    assert {r["country"]: metrics(r) for r in body["by_country"]} == sums(
        loaded.manifest, by=lambda i: i["country"]
    )


def test_top_items_of_source_node_and_global(web):
    client, loaded = web

    def expected(keep):
        views = sums(loaded.manifest, keep, by=lambda i: i["item_id"])
        ranked = sorted(((k, v["views"]) for k, v in views.items()), key=lambda kv: (-kv[1], kv[0]))
        return [list(r) for r in ranked[:5]]

    def top(path):
        items = client.get(path, params={**RANGE, "limit": 5}).json()["items"]
        return [[i["identifier"], i["views"]] for i in items]

    prefix = loaded.prefixes[2]
    assert top("/api/v1/sources/2/top") == expected(lambda i: i["item_id"].startswith(prefix))
    assert top("/api/v1/sites/5/top") == expected(lambda i: i["site_id"] == 5)
    assert top("/api/v1/nodes/4/top") == expected(national(loaded))
    assert top("/api/v1/nodes/5/top") == expected(lambda i: True)
    assert top("/api/v1/global/top") == expected(lambda i: True)


def test_series_by_level_of_source_node_and_global(web):
    client, loaded = web
    level = lambda i: loaded.levels[i["site_id"]]  # noqa: E731
    prefix = loaded.prefixes[1]
    cases = [
        (
            "/api/v1/sources/1",
            "day",
            lambda i: i["item_id"].startswith(prefix),
            lambda i: i["date"],
        ),
        ("/api/v1/sites/4", "day", lambda i: i["site_id"] == 4, lambda i: i["date"]),
        ("/api/v1/nodes/4", "week", national(loaded), lambda i: week(i["date"])),
        ("/api/v1/global", "month", lambda i: True, lambda i: month(i["date"])),
    ]
    for path, grain, keep, period in cases:
        body = client.get(path, params={**RANGE, "granularity": grain}).json()
        expected = sums(loaded.manifest, keep, by=lambda i, p=period: (level(i), p(i)))
        levels = [lv for lv in ("R", "N", "L") if any(k[0] == lv for k in expected)]
        assert [s["level"] for s in body["series_by_level"]] == levels, path
        periods = [s["period"] for s in body["series"]]
        zero = dict.fromkeys(METRICS, 0)
        for entry in body["series_by_level"]:
            assert [s["period"] for s in entry["series"]] == periods
            assert [(s["start"], s["end"]) for s in entry["series"]] == [
                (s["start"], s["end"]) for s in body["series"]
            ]
            for bucket in entry["series"]:
                assert metrics(bucket) == expected.get((entry["level"], bucket["period"]), zero)
        for i, bucket in enumerate(body["series"]):
            stacked = {m: sum(e["series"][i][m] for e in body["series_by_level"]) for m in METRICS}
            assert stacked == metrics(bucket)
    # a source has items used on every level; a node only on its own
    body = client.get("/api/v1/sources/1", params={**RANGE, "granularity": "day"}).json()
    assert [s["level"] for s in body["series_by_level"]] == ["R", "N", "L"]
    assert len(body["series_by_level"][0]["series"]) == 12
    node = client.get("/api/v1/sites/4", params=RANGE).json()
    assert [s["level"] for s in node["series_by_level"]] == ["N"]
    node = client.get("/api/v1/nodes/4", params=RANGE).json()
    assert [s["level"] for s in node["series_by_level"]] == ["R", "N", "L"]


def test_top_item_rows_carry_every_metric_whatever_the_ranking(web):
    client, loaded = web
    prefix = loaded.prefixes[2]
    cases = [
        ("/api/v1/global/top", lambda i: True),
        ("/api/v1/sites/4/top", lambda i: i["site_id"] == 4),
        ("/api/v1/sites/5/top", lambda i: i["site_id"] == 5),
        ("/api/v1/nodes/4/top", national(loaded)),
        ("/api/v1/nodes/5/top", lambda i: True),
        ("/api/v1/sources/2/top", lambda i: i["item_id"].startswith(prefix)),
    ]
    for path, keep in cases:
        per_item = sums(loaded.manifest, keep, by=lambda i: i["item_id"])
        for metric in ("views", "downloads", "unique_item_requests"):
            params = {**RANGE, "limit": 7}
            if metric != "views":
                params["metric"] = metric
            body = client.get(path, params=params).json()
            assert body["metric"] == metric and body["limit"] == 7
            expected = ranked(per_item, metric, 7)
            rows = body["items"]
            assert [r["rank"] for r in rows] == list(range(1, 8)), (path, metric)
            assert [(r["identifier"], metrics(r)) for r in rows] == expected, (path, metric)
    # the ranking by downloads differs from the one by views, and files say so
    per_item = sums(loaded.manifest, by=lambda i: i["item_id"])
    assert [k for k, _ in ranked(per_item, "downloads", 7)] != [
        k for k, _ in ranked(per_item, "views", 7)
    ]
    response = client.get(
        "/api/v1/global/top", params={**RANGE, "metric": "downloads", "limit": 7, "format": "csv"}
    )
    assert response.status_code == 200, response.text
    assert (
        'filename="global-top-items-downloads-2026-01-24-2026-02-04.csv"'
        in response.headers["content-disposition"]
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["identifier"], {m: int(r[m]) for m in METRICS}) for r in rows] == ranked(
        per_item, "downloads", 7
    )


def test_top_sources_global_and_of_a_node(web):
    client, loaded = web
    registered = {s.site_id: s for s in loaded.sources}
    cases = [
        ("/api/v1/global/top-sources", lambda i: True),
        ("/api/v1/sites/4/top-sources", lambda i: i["site_id"] == 4),
        ("/api/v1/sites/5/top-sources", lambda i: i["site_id"] == 5),
        ("/api/v1/sites/1/top-sources", lambda i: i["site_id"] == 1),
        ("/api/v1/nodes/4/top-sources", national(loaded)),
        ("/api/v1/nodes/5/top-sources", lambda i: True),
    ]
    for path, keep in cases:
        per_owner = sums(
            loaded.manifest,
            lambda i, k=keep: k(i) and owner(loaded, i["item_id"]) is not None,
            by=lambda i: owner(loaded, i["item_id"]),
        )
        for metric in ("views", "downloads", "total_item_investigations"):
            body = client.get(path, params={**RANGE, "metric": metric}).json()
            assert body["metric"] == metric and body["limit"] == 10
            expected = sorted(per_owner.items(), key=lambda kv: (-kv[1][metric], str(kv[0])))
            rows = body["sources"]
            assert [r["rank"] for r in rows] == list(range(1, len(expected) + 1))
            assert [(r["site_id"], metrics(r)) for r in rows] == expected, (path, metric)
            for r in rows:
                source = registered[r["site_id"]]
                assert (r["source_key"], r["name"], r["country"]) == (
                    source.source_key,
                    source.name,
                    source.country,
                )
                assert source.type == "R"
    # all three repositories' items are used on the node's site; Costa Rica's node counts its own
    assert len(client.get("/api/v1/sites/4/top-sources", params=RANGE).json()["sources"]) == 3
    node = client.get("/api/v1/nodes/4/top-sources", params=RANGE).json()["sources"]
    assert [r["site_id"] for r in node] == [1]
    # the limit
    per_owner = sums(loaded.manifest, by=lambda i: owner(loaded, i["item_id"]))
    per_owner.pop(None, None)
    limited = client.get(
        "/api/v1/global/top-sources", params={**RANGE, "limit": 2, "metric": "outlinks"}
    ).json()
    assert limited["limit"] == 2
    assert [(r["site_id"], metrics(r)) for r in limited["sources"]] == sorted(
        per_owner.items(), key=lambda kv: (-kv[1]["outlinks"], str(kv[0]))
    )[:2]
    # CSV rows are the JSON rows
    params = {**RANGE, "metric": "downloads"}
    response = client.get("/api/v1/nodes/5/top-sources", params={**params, "format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert (
        'filename="node-5-top-sources-downloads-2026-01-24-2026-02-04.csv"'
        in response.headers["content-disposition"]
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    json_rows = client.get("/api/v1/nodes/5/top-sources", params=params).json()["sources"]
    assert rows == [{k: "" if v is None else str(v) for k, v in r.items()} for r in json_rows]
    assert list(rows[0]) == ["rank", "site_id", "source_key", "name", "country", *METRICS]


def test_coverage(web):
    client, loaded = web
    days = sorted({i["date"] for i in loaded.manifest["items"]})
    assert (days[0], days[-1]) == (START.isoformat(), END.isoformat())
    response = client.get("/api/v1/coverage")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "first_day": START.isoformat(),
        "last_day": END.isoformat(),
        "complete_through": END.isoformat(),
    }


def test_csv_and_xlsx_downloads(web):
    client, loaded = web
    response = client.get("/api/v1/sources/1", params={**RANGE, "format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    assert (
        'filename="source-1-2026-01-24-2026-02-04-month.csv"'
        in response.headers["content-disposition"]
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["period"] for r in rows] == ["2026-01", "2026-02"]
    json_body = client.get("/api/v1/sources/1", params=RANGE).json()
    assert [int(r["views"]) for r in rows] == [s["views"] for s in json_body["series"]]
    by_accept = client.get(
        "/api/v1/global", params={**RANGE, "table": "country"}, headers={"Accept": "text/csv"}
    )
    assert by_accept.text.splitlines()[0].startswith("country,views")
    xlsx = client.get("/api/v1/global", params={**RANGE, "format": "xlsx", "table": "level"})
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    values = list(sheet.values)
    assert values[0][0] == "level"
    by_level = sums(loaded.manifest, by=lambda i: loaded.levels[i["site_id"]])
    assert {r[0]: r[1] for r in values[1:]} == {k: v["views"] for k, v in by_level.items()}


# --- LA Referencia widgets: tests/test_web_widgets.py -------------------------------------


# --- bad input ------------------------------------------------------------------------

EVIL = ["x' OR '1'='1", "*", '{"match_all": {}}', "key:* OR scope:item", "oai:*", '\\"; DROP']
BAD = [
    ("/api/v1/global", {"start": "2026-13-01"}, 400, "start"),
    ("/api/v1/global", {"start": "yesterday"}, 400, "start"),
    ("/api/v1/global", {"start": "2026-02-01", "end": "2026-01-01"}, 400, "end"),
    ("/api/v1/global", {"granularity": "decade"}, 400, "granularity"),
    ("/api/v1/global", {"format": "pdf"}, 400, "format"),
    ("/api/v1/global", {"table": "x"}, 400, "table"),
    ("/api/v1/global", {"start": "1900-01-01"}, 400, "start"),
    ("/api/v1/global", {"start": "2000-01-01", "granularity": "day"}, 400, "granularity"),
    ("/api/v1/global/top", {"limit": "0"}, 400, "limit"),
    ("/api/v1/global/top", {"limit": "100000"}, 400, "limit"),
    ("/api/v1/global/top", {"limit": "ten"}, 400, "limit"),
    ("/api/v1/global/top", {"metric": "views; DROP TABLE x"}, 400, "metric"),
    ("/api/v1/global/top", {"metric": "clicks"}, 400, "metric"),
    ("/api/v1/global/top", {"format": "pdf"}, 400, "format"),
    ("/api/v1/sources/4/top", {}, 404, "site_id"),
    ("/api/v1/nodes/999/top", {}, 404, "site_id"),
    ("/api/v1/nodes/1", {}, 404, "site_id"),
    ("/api/v1/nodes/1/top", {}, 404, "site_id"),
    ("/api/v1/nodes/1/top-sources", {}, 404, "site_id"),
    ("/api/v1/sites/999", {}, 404, "site_id"),
    ("/api/v1/sites/abc/top", {}, 400, "site_id"),
    ("/api/v1/sites/0/top-sources", {}, 400, "site_id"),
    ("/api/v1/global/top-sources", {"metric": "clicks"}, 400, "metric"),
    ("/api/v1/global/top-sources", {"metric": "views; DROP TABLE x"}, 400, "metric"),
    ("/api/v1/global/top-sources", {"limit": "0"}, 400, "limit"),
    ("/api/v1/global/top-sources", {"limit": "1001"}, 400, "limit"),
    ("/api/v1/global/top-sources", {"start": "2026-13-01"}, 400, "start"),
    ("/api/v1/global/top-sources", {"start": "2026-02-01", "end": "2026-01-01"}, 400, "end"),
    ("/api/v1/global/top-sources", {"format": "pdf"}, 400, "format"),
    ("/api/v1/nodes/4/top-sources", {"metric": "clicks"}, 400, "metric"),
    ("/api/v1/nodes/999/top-sources", {}, 404, "site_id"),
    ("/api/v1/nodes/abc/top-sources", {}, 400, "site_id"),
    ("/api/v1/nodes/0/top-sources", {}, 400, "site_id"),
    ("/api/v1/sources/999", {}, 404, "site_id"),
    ("/api/v1/sources/4", {}, 404, "site_id"),
    ("/api/v1/sources/abc", {}, 400, "site_id"),
    ("/api/v1/nodes/-1", {}, 400, "site_id"),
    ("/api/v1/items", {}, 400, "identifier"),
    ("/api/v1/items", {"identifier": "oai:nowhere.example:1"}, 404, "identifier"),
    ("/report/itemWidget", {}, 400, "identifier"),
    (
        "/report/itemWidget",
        {"identifier": "oai:repo1.example.org:1001/0", "start_date": "now-1x"},
        400,
        "start_date",
    ),
    ("/report/itemWidget", {"source": "opendoar::nope"}, 404, "source"),
    (
        "/report/itemWidget",
        {"identifier": "oai:repo1.example.org:1001/0", "time_unit": "minute"},
        400,
        "time_unit",
    ),
    (
        "/report/repositoryWidget",
        {"source_id": "opendoar::1001", "interval": "1m"},
        400,
        "interval",
    ),
    (
        "/report/itemWidget",
        {"identifier": "oai:repo1.example.org:1001/0", "interval": "decade"},
        400,
        "interval",
    ),
    ("/report/itemWidgetByCountry", {"source": "national::XX"}, 404, "source"),
    (
        "/report/repositoryWidgetByCountry",
        {"source_id": "opendoar::1001", "limit": "0"},
        400,
        "limit",
    ),
    (
        "/report/repositoryWidget",
        {"source_id": "opendoar::1001", "start_date": "now-1q"},
        400,
        "start_date",
    ),
    (
        "/report/repositoryWidget",
        {"source_id": "opendoar::1001", "end_date": "now/q"},
        400,
        "end_date",
    ),
    (
        "/report/repositoryWidget",
        {"source_id": "opendoar::1001", "end_date": "x||+1d"},
        400,
        "end_date",
    ),
    (
        "/report/itemWidgetByCountry",
        {"identifier": "oai:repo1.example.org:1001/0", "limit": "251"},
        400,
        "limit",
    ),
    ("/report/repositoryWidget", {}, 400, "source_id"),
    ("/report/repositoryWidget", {"source_id": "opendoar::0"}, 404, "source_id"),
    (
        "/report/repositoryWidgetByCountry",
        {"source_id": "opendoar::1001", "end_date": "2026-99"},
        400,
        "end_date",
    ),
]
BAD += [("/api/v1/items", {"identifier": e}, 404, "identifier") for e in EVIL]
BAD += [("/report/itemWidget", {"identifier": e}, 404, "identifier") for e in EVIL if e != "*"]
BAD += [("/report/repositoryWidget", {"source_id": e}, 404, "source_id") for e in EVIL if e != "*"]
BAD += [("/api/v1/global", {"start": e}, 400, "start") for e in EVIL]


BAD += [
    ("/api/v1/global", {"start": "9999", "end": "9999"}, 400, "end"),
    ("/api/v1/global", {"start": "0001", "end": "0001"}, 400, "end"),
    ("/api/v1/global", {"start": "0001", "end": "2026"}, 400, "start"),
    ("/api/v1/global/top", {"start": "9999"}, 400, "start"),
    (
        "/report/itemWidget",
        {"identifier": "oai:repo1.example.org:1001/0", "start_date": "9999", "end_date": "9999"},
        400,
        "end_date",
    ),
]


@pytest.mark.parametrize(("path", "params", "status", "parameter"), BAD)
def test_bad_input_is_a_4xx_naming_the_parameter(web, path, params, status, parameter):
    client, _ = web
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["parameter"] == parameter
    assert parameter in error["message"] or "source" in error["message"]


def test_item_titles_in_top_items_and_item_statistics(web):
    client, loaded = web
    titles = loaded.manifest["titles"]
    rows = client.get("/api/v1/global/top", params={**RANGE, "limit": 30}).json()["items"]
    assert [r["title"] for r in rows] == [titles.get(r["identifier"]) for r in rows]
    titled = [r for r in rows if r["title"]]
    untitled = [r for r in rows if not r["title"]]
    assert titled and untitled  # planted: items 2 and 4 (mod 7) have no usable title
    one = client.get("/api/v1/items", params={**RANGE, "identifier": titled[0]["identifier"]})
    assert one.json()["title"] == titles[titled[0]["identifier"]]
    none = client.get("/api/v1/items", params={**RANGE, "identifier": untitled[0]["identifier"]})
    assert none.json()["title"] is None
    csv_text = client.get("/api/v1/global/top", params={**RANGE, "limit": 30, "format": "csv"}).text
    header, first = csv_text.splitlines()[:2]
    assert header.startswith("rank,identifier,title,views")
    assert first.split(",")[2] == (rows[0]["title"] or "")


# Dates far outside the calendar the API serves (1900-01-01 .. 2999-12-31), malformed or
# impossible: always a 400 naming the parameter, on every endpoint that takes dates.
ITEM = "oai:repo1.example.org:1001/0"
DATE_ENDPOINTS = [
    ("/api/v1/global", {}, ("start", "end")),
    ("/api/v1/global/top", {}, ("start", "end")),
    ("/api/v1/global/top-sources", {}, ("start", "end")),
    ("/api/v1/sources/1", {}, ("start", "end")),
    ("/api/v1/sources/1/top", {}, ("start", "end")),
    ("/api/v1/nodes/4", {}, ("start", "end")),
    ("/api/v1/sites/4", {}, ("start", "end")),
    ("/api/v1/items", {"identifier": ITEM}, ("start", "end")),
    ("/report/itemWidget", {"identifier": ITEM}, ("start_date", "end_date")),
    ("/report/itemWidgetByCountry", {"identifier": ITEM}, ("start_date", "end_date")),
    ("/report/repositoryWidget", {"source_id": "opendoar::1001"}, ("start_date", "end_date")),
]
BAD_DATES = [
    "9999",
    "0001",
    "0000",
    "10000",
    "1899-12-31",
    "3000-01-01",
    "0001-01-01",
    "9999-12-31",
    "9999-12",
    "2026-13",
    "2026-00",
    "2026-02-30",
    "2026-01-32",
    "2026-1-1",
    "now-9999y",
    "now-10000d",
    "now+1x",
    "now-1d/q",
    "now||-1d",
    "2026-01-01||-99999d",
    "2026-01-01T25:00:00Z",
    "now-" + "1d-" * 40 + "1d",
    "9" * 5000,
    "２０２６",
    "-1",
    "\x00",
]


@pytest.mark.parametrize(("path", "extra", "names"), DATE_ENDPOINTS)
def test_bad_dates_are_a_400_naming_the_parameter(web, path, extra, names):
    client, _ = web
    for name in names:
        for value in BAD_DATES:
            response = client.get(path, params={**extra, name: value})
            assert response.status_code == 400, (name, value[:20], response.text[:200])
            error = response.json()["error"]
            assert error["parameter"] == name and name in error["message"]
            assert len(error["message"]) < 300


def test_dates_at_the_edges_of_the_calendar_served(web):
    client, _ = web
    for start, end in (("2999-12-01", "2999-12-31"), ("1900-01-01", "1900-12-31")):
        for granularity in ("day", "week", "month", "quarter", "year"):
            response = client.get(
                "/api/v1/global", params={"start": start, "end": end, "granularity": granularity}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["totals"] == dict.fromkeys(METRICS, 0)
            assert body["series"][-1]["end"] == end


def test_a_records_doi_and_handle_url_answer_its_oai_items_figures(web):
    """After the cross-walk, use recorded under a record's DOI or handle is counted on its
    OAI item: asked by either, the API answers that item's figures; an alias two records
    claim (ambiguous) is not resolved and is answered as any key without usage (404)."""
    client, loaded = web
    item = busiest_item(loaded)
    other = busiest_item(loaded, "oai:repo2.example.org:")
    doi, handle, shared = "10.77777/e2e.web", "hdl:77777/1", "10.77777/shared"
    records = md.frame(
        md.record(item, site_id=1, item_keys=[item, doi, handle, shared]),
        md.record(other, site_id=2, item_keys=[other, shared]),
    )
    loaded.store.record_aliases(crosswalk_table(records))
    try:
        expected = sums(loaded.manifest, lambda i: i["item_id"] == item)[()]
        for spelled in ("https://doi.org/10.77777/E2E.WEB", "https://hdl.handle.net/77777/1"):
            response = client.get("/api/v1/items", params={"identifier": spelled, **RANGE})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["key"] == item
            assert body["totals"] == expected
            assert body["owner"]["site_id"] == 1
        response = client.get("/api/v1/items", params={"identifier": shared, **RANGE})
        assert response.status_code == 404, response.text
        assert response.json()["error"]["parameter"] == "identifier"
        for bad in ("doi:", "\u200b", "x" * 5000, "10.77777/e2e.web\x00"):  # 4xx, never 500
            status = client.get("/api/v1/items", params={"identifier": bad}).status_code
            assert status in (400, 404), bad
    finally:
        loaded.store.record_aliases(crosswalk_table(md.frame()))
