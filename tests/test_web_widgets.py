"""LA Referencia widget endpoints (`/report/*`) on both stores, with exact numbers from the
generator's manifest: what each reach counts (item, repository, national node, regional
network), the original's by-country buckets, the time buckets the deployed widgets need, source
keys in any case, date math, items without usage and CORS.

The data: two calendar months of three repositories (1 Costa Rica, 2 Argentina, 3 Brazil), the
Costa Rican national node (4) and the regional portal (5). Repository 3 is planted as
*unregistered* (disabled, unknown to the pipeline): its site's events are rejected and its items
used on the node and the portal belong to nobody, so the national node's "items nobody claims,
used on the country's own sites" part is exercised.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import metadata_support as md
import pytest
from fastapi.testclient import TestClient
from web_support import END, START, load, month, national, owner, sums

from stores import opensearch_store
from usage_stats.pipeline.crosswalk import crosswalk_table
from usage_stats.pipeline.metrics import LA_REFERENCIA_METRICS, METRICS
from usage_stats.settings import Settings
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.store import RowFilter
from usage_stats.web import common, create_app

M = LA_REFERENCIA_METRICS
RANGE = {"start_date": START.isoformat(), "end_date": END.isoformat()}
UNREGISTERED = 3


@pytest.fixture(scope="module", params=["duckdb", "opensearch"])
def web(request, tmp_path_factory):
    if request.param == "duckdb":  # as the web service reads it: item lookups on its loop
        store = DuckDBStatsStore(tmp_path_factory.mktemp("duckdb") / "stats.duckdb")
        store = DuckDBStatsStore(store.path, shared_reads=True)
    else:
        store = opensearch_store(batch_size=2000)
    loaded = load(store, tmp_path_factory.mktemp("data"), unregistered=(UNREGISTERED,))
    client = TestClient(create_app(store, loaded.admin_db_url), raise_server_exceptions=False)
    yield client, loaded
    if request.param == "opensearch":
        store.delete_all()


def la(values: dict) -> dict:
    return {m: values[m] for m in M}


def level_of(loaded):
    return lambda i: loaded.levels[i["site_id"]]


def busiest_item(loaded, prefix: str = "oai:repo1.example.org:") -> str:
    per_item = sums(loaded.manifest, by=lambda i: i["item_id"])
    return max((k for k in per_item if k.startswith(prefix)), key=lambda k: per_item[k]["views"])


def reaches(loaded) -> dict:
    """Widget request → which manifest entries it counts."""
    item = busiest_item(loaded)
    repo1 = loaded.prefixes[1]
    return {
        ("/report/itemWidget", "identifier", item): lambda i: i["item_id"] == item,
        ("/report/repositoryWidget", "source_id", "opendoar::1001"): lambda i: i[
            "item_id"
        ].startswith(repo1),
        ("/report/repositoryWidget", "source_id", "national::CR"): national(loaded),
        ("/report/repositoryWidget", "source_id", "regional::LA"): lambda i: True,
        ("/report/itemWidget", "source", "national::CR"): national(loaded),
        ("/report/itemWidget", "source", "regional::LA"): lambda i: True,
    }


def expect_widget(body: dict, loaded, keep, period=lambda i: month(i["date"])) -> None:
    """Totals, level buckets (R, N, L: key descending) and time buckets by level, exactly."""
    assert {m: body[m]["value"] for m in M} == la(sums(loaded.manifest, keep)[()])
    by_level = sums(loaded.manifest, keep, by=level_of(loaded))
    expected_levels = {k: la(v) for k, v in by_level.items() if any(la(v).values())}
    assert [b["key"] for b in body["level"]["buckets"]] == sorted(expected_levels, reverse=True)
    assert {b["key"]: {m: b[m]["value"] for m in M} for b in body["level"]["buckets"]} == (
        expected_levels
    )
    by_period = sums(loaded.manifest, keep, by=lambda i: (period(i), level_of(loaded)(i)))
    expected = {(_stamp(p), lv): la(v) for (p, lv), v in by_period.items() if any(la(v).values())}
    keys = [b["key_as_string"] for b in body["time"]["buckets"]]
    assert keys == sorted({k for k, _ in expected})
    got = {
        (bucket["key_as_string"], level["key"]): {m: level[m]["value"] for m in M}
        for bucket in body["time"]["buckets"]
        for level in bucket["level"]["buckets"]
    }
    assert got == expected


def _stamp(period: str) -> str:
    """A period of the manifest (YYYY-MM or YYYY-MM-DD) as the widget's bucket key."""
    day = period if len(period) == 10 else period + "-01"
    return f"{day}T00:00:00.000Z"


# --- 1. what each reach counts ----------------------------------------------------------


def test_item_repository_national_and_regional_widgets(web):
    client, loaded = web
    for (path, parameter, value), keep in reaches(loaded).items():
        response = client.get(path, params={parameter: value, **RANGE})
        assert response.status_code == 200, (path, value, response.text)
        expect_widget(response.json(), loaded, keep)


def test_national_node_counts_its_countrys_items_and_unclaimed_ones_on_its_own_sites(web):
    client, loaded = web
    keep = national(loaded)
    body = client.get("/report/repositoryWidget", params={"source_id": "national::CR", **RANGE})
    levels = {b["key"]: b["views"]["value"] for b in body.json()["level"]["buckets"]}
    assert set(levels) == {"R", "N", "L"}
    # the planted cases, each non-empty, so each part of the rule is checked
    repo3 = "oai:repo3.example.org:"
    unclaimed_on_node = lambda i: i["site_id"] == 4 and i["item_id"].startswith(repo3)  # noqa: E731
    unclaimed_on_portal = lambda i: i["site_id"] == 5 and i["item_id"].startswith(repo3)  # noqa: E731
    foreign_on_node = lambda i: i["site_id"] == 4 and owner(loaded, i["item_id"]) == 2  # noqa: E731
    for case in (unclaimed_on_node, unclaimed_on_portal, foreign_on_node):
        assert sums(loaded.manifest, case)[()]["views"] > 0
    assert all(keep(i) for i in loaded.manifest["items"] if unclaimed_on_node(i))
    assert not any(keep(i) for i in loaded.manifest["items"] if unclaimed_on_portal(i))
    assert not any(keep(i) for i in loaded.manifest["items"] if foreign_on_node(i))
    expected_n = sums(loaded.manifest, lambda i: keep(i) and i["site_id"] == 4)[()]["views"]
    assert levels["N"] == expected_n
    # /api/v1 and the widget count the same
    api = client.get("/api/v1/nodes/4", params={"start": START, "end": END}).json()
    assert la(api["totals"]) == {m: body.json()[m]["value"] for m in M}


def test_store_reads_over_any_of_several_row_sets(web):
    """`sums_where` / `top_where` on the item scope: None among the owners is "nobody's"."""
    _, loaded = web
    store = loaded.store
    nobody = store.sums_where("item", START, END, (RowFilter(owner_site_ids=(None,)),))
    expected = sums(loaded.manifest, lambda i: owner(loaded, i["item_id"]) is None)[()]
    assert {m: nobody.item(0, m) for m in METRICS} == expected
    entries = [i for i in loaded.manifest["items"] if owner(loaded, i["item_id"]) is None]
    assert nobody.item(0, "rows") == len(entries) > 0
    either = (RowFilter(site_ids=(4,), owner_site_ids=(None,)), RowFilter(owner_site_ids=(1,)))

    def keep(i: dict) -> bool:
        holder = owner(loaded, i["item_id"])
        return holder == 1 or (i["site_id"] == 4 and holder is None)

    by_site = store.sums_where("item", START, END, either, by=("site_id",))
    assert {r["site_id"]: {m: r[m] for m in METRICS} for r in by_site.iter_rows(named=True)} == (
        sums(loaded.manifest, keep, by=lambda i: i["site_id"])
    )
    top = store.top_where("item", START, END, "downloads", 5, either)
    per_item = sums(loaded.manifest, keep, by=lambda i: i["item_id"])
    ranked = sorted(per_item.items(), key=lambda kv: (-kv[1]["downloads"], kv[0]))[:5]
    assert top.rows() == [(k, v["downloads"]) for k, v in ranked]
    assert store.sums_where("item", START, END, ()).item(0, "rows") == 0
    # distinct combinations: the original's monthly entries per country
    per_month = store.sums_where(
        "item", START, END, (RowFilter(),), by=("country",), distinct=("site_id", "key", "month")
    )
    expected_entries = entries_by_country(loaded, lambda i: True, "month")
    assert dict(per_month.select("country", "rows").iter_rows()) == expected_entries
    total = store.sums_where("item", START, END, (RowFilter(),), distinct=("site_id", "key"))
    assert total.item(0, "rows") == len(
        {(i["site_id"], i["item_id"]) for i in loaded.manifest["items"]}
    )
    assert total.item(0, "views") == sums(loaded.manifest)[()]["views"]
    empty = store.sums_where("item", START, END, (RowFilter(site_ids=()),), by=("country",))
    assert empty.is_empty() and "rows" in empty.columns


# --- 2. by country, as the original's nested terms aggregation -----------------------------


def entries_by_country(loaded, keep, granularity: str) -> dict:
    """Per visitor country: its entries in the original's documents (one per site, item,
    day or month, and country with usage)."""
    entries: dict = defaultdict(set)
    for item in loaded.manifest["items"]:
        if keep(item) and any(item[m] for m in M):
            period = item["date"] if granularity == "day" else month(item["date"])
            entries[item["country"]].add((item["site_id"], item["item_id"], period))
    return {c: len(e) for c, e in entries.items()}


@pytest.mark.parametrize("granularity", ["month", "day"])
@pytest.mark.parametrize("limit", [None, "3", "250"])
def test_by_country_ranks_countries_once_for_every_metric(web, limit, granularity):
    _, loaded = web
    app = create_app(loaded.store, loaded.admin_db_url, document_granularity=granularity)
    client = TestClient(app, raise_server_exceptions=False)
    for (path, parameter, value), keep in reaches(loaded).items():
        params = {parameter: value, **RANGE, **({"limit": limit} if limit else {})}
        body = client.get(path + "ByCountry", params=params).json()
        assert {m: body[m]["value"] for m in M} == la(sums(loaded.manifest, keep)[()])
        entries = entries_by_country(loaded, keep, granularity)
        order = sorted(entries, key=lambda c: (-entries[c], c))
        shown = order[: int(limit or 10)]
        per_country = sums(loaded.manifest, keep, by=lambda i: i["country"])
        assert body["country"]["doc_count"] == sum(entries.values())
        for metric in M:
            agg = body["country"][metric]
            assert [b["key"] for b in agg["buckets"]] == shown, (value, metric)
            assert [b["doc_count"] for b in agg["buckets"]] == [entries[c] for c in shown]
            assert [b["count"]["value"] for b in agg["buckets"]] == [
                per_country[c][metric] for c in shown
            ]
            assert agg["sum_other_doc_count"] == sum(entries[c] for c in order[len(shown) :])
            assert agg["doc_count_error_upper_bound"] == 0


def test_the_default_document_granularity_is_the_compatibility_sets(web):
    client, loaded = web
    assert client.app.state.ctx.document_granularity == getattr(
        loaded.store, "compat_granularity", "month"
    )
    assert (
        create_app(
            loaded.store, loaded.admin_db_url, document_granularity="day"
        ).state.ctx.document_granularity
        == "day"
    )
    with pytest.raises(ValueError, match="document_granularity"):
        create_app(loaded.store, loaded.admin_db_url, document_granularity="week")


def test_by_country_lists_countries_with_zeros_as_the_widget_needs(web):
    """The deployed item widget builds its country list from the conversions buckets: every
    country with usage is there, with 0 where it has no conversion."""
    client, loaded = web
    per_item_country = sums(loaded.manifest, by=lambda i: (i["item_id"], i["country"]))
    countries: dict = defaultdict(dict)
    for (key, country), values in per_item_country.items():
        countries[key][country] = values
    # the item seen from most countries among those with a country but no conversion
    item = max(
        (k for k, c in countries.items() if any(v["conversions"] == 0 for v in c.values())),
        key=lambda k: (len(countries[k]), k),
    )
    body = client.get(
        "/report/itemWidgetByCountry", params={"identifier": item, **RANGE, "limit": "250"}
    ).json()
    buckets = body["country"]["conversions"]["buckets"]
    assert {b["key"]: b["count"]["value"] for b in buckets} == {
        c: v["conversions"] for c, v in countries[item].items()
    }
    assert any(b["count"]["value"] == 0 for b in buckets)
    # outlinks at limit 3: the three countries with most entries, with their outlinks
    three = client.get(
        "/report/repositoryWidgetByCountry",
        params={"source_id": "opendoar::1001", **RANGE, "limit": "3"},
    ).json()
    assert [b["key"] for b in three["country"]["outlinks"]["buckets"]] == [
        b["key"] for b in three["country"]["views"]["buckets"]
    ]


# --- 3. time buckets -------------------------------------------------------------------------


def test_time_buckets_are_months_whatever_time_unit_says(web):
    client, loaded = web
    keep = national(loaded)
    base = {"source_id": "national::CR", **RANGE}
    for unit in (None, "year", "day", "week", "month", "quarter", "1y", "1m"):
        params = base | ({"time_unit": unit} if unit else {})
        body = client.get("/report/repositoryWidget", params=params).json()
        keys = [b["key_as_string"] for b in body["time"]["buckets"]]
        assert keys == ["2026-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z"], unit
        assert [b["key"] for b in body["time"]["buckets"]] == [1767225600000, 1769904000000]
        expect_widget(body, loaded, keep)


def test_explicit_interval_for_new_clients(web):
    client, loaded = web
    item = busiest_item(loaded)
    keep = lambda i: i["item_id"] == item  # noqa: E731
    base = {"identifier": item, **RANGE, "time_unit": "year"}
    daily = client.get("/report/itemWidget", params={**base, "interval": "day"}).json()
    expect_widget(daily, loaded, keep, period=lambda i: i["date"])
    assert daily["time"]["buckets"][0]["end"] == daily["time"]["buckets"][0]["key_as_string"][:10]

    def monday(day: str) -> str:
        d = dt.date.fromisoformat(day)
        return (d - dt.timedelta(days=d.weekday())).isoformat()

    for spelling in ("week", "1w", "WEEK"):
        weekly = client.get("/report/itemWidget", params={**base, "interval": spelling}).json()
        expect_widget(weekly, loaded, keep, period=lambda i: monday(i["date"]))
    assert [b["key_as_string"][:10] for b in weekly["time"]["buckets"]] == [
        "2026-01-19",
        "2026-01-26",
        "2026-02-02",
    ]
    for spelling, keys in (("1M", ["2026-01", "2026-02"]), ("quarter", ["2026-01"])):
        body = client.get("/report/itemWidget", params={**base, "interval": spelling}).json()
        assert [b["key_as_string"][:7] for b in body["time"]["buckets"]] == keys
    yearly = client.get("/report/itemWidget", params={**base, "interval": "1y"}).json()
    assert [b["key_as_string"] for b in yearly["time"]["buckets"]] == ["2026-01-01T00:00:00.000Z"]
    assert yearly["time"]["buckets"][0]["end"] == "2026-12-31"


# --- 4. source keys in any case, date math, items without usage -----------------------------


def test_source_keys_in_any_case_and_site_ids(web):
    client, _ = web
    for path in ("/report/repositoryWidget", "/report/repositoryWidgetByCountry"):
        for key, same in (
            ("OPENDOAR::1001", "opendoar::1001"),
            ("National::cr", "national::CR"),
            ("REGIONAL::LA", "regional::LA"),
            (" opendoar::1002 ", "2"),
        ):
            a = client.get(path, params={"source_id": key, **RANGE})
            b = client.get(path, params={"source_id": same, **RANGE})
            assert a.status_code == b.status_code == 200, (key, a.text)
            assert a.json() == b.json()
    item = client.get("/report/itemWidget", params={"source": "NATIONAL::CR", **RANGE})
    assert item.status_code == 200
    # a disabled (unregistered) repository is unknown
    gone = client.get("/report/repositoryWidget", params={"source_id": "opendoar::1003"})
    assert gone.status_code == 404 and gone.json()["error"]["parameter"] == "source_id"


@pytest.fixture
def frozen(monkeypatch):
    """`now` is 2026-02-04 10:30 UTC, the last day of the data."""
    moment = dt.datetime(2026, 2, 4, 10, 30, tzinfo=dt.UTC)
    monkeypatch.setattr(common, "now", lambda: moment)
    return moment


def test_date_math_as_the_widgets_send_it(web, frozen):
    client, loaded = web
    base = {"source_id": "regional::LA"}

    def views(first: str, last: str) -> int:
        keep = lambda i: first <= i["date"] <= last  # noqa: E731
        return sums(loaded.manifest, keep).get((), {"views": 0})["views"]

    cases = [
        ("now-1y", "now", "2025-02-04", "2026-02-04"),
        ("now-1y/y", "now", "2025-01-01", "2026-02-04"),
        ("now-1y/y", "now-1y/y", "2025-01-01", "2025-12-31"),
        ("now-6M", "now-1h", "2025-08-04", "2026-02-04"),
        ("now/M", "now", "2026-02-01", "2026-02-04"),
        ("now-1M/M", "now-1M/M", "2026-01-01", "2026-01-31"),
        ("now-2w/w", "now-1w/w", "2026-01-19", "2026-02-01"),
        ("now-11d", "now-11h", "2026-01-24", "2026-02-03"),
        ("now-250h", "now+1d", "2026-01-25", "2026-02-05"),
        ("2026-01-27||/w", "2026-01-27||+1w/w", "2026-01-26", "2026-02-08"),
        ("2026-01||+27d", "2026-02||-1d", "2026-01-28", "2026-01-31"),
        ("2026-01-25T03:00:00.000Z", "2026-02-01T02:59:59.999Z", "2026-01-25", "2026-02-01"),
        ("2026-01-25T22:00:00-03:00", "2026-01-31T23:00:00-03:00", "2026-01-26", "2026-02-01"),
        ("2026-01", "2026-01", "2026-01-01", "2026-01-31"),
    ]
    for start, end, first, last in cases:
        body = client.get(
            "/report/repositoryWidget", params={**base, "start_date": start, "end_date": end}
        )
        assert body.status_code == 200, (start, end, body.text)
        assert body.json()["views"]["value"] == views(first, last), (start, end)
    # the defaults: now-1y .. now
    default = client.get("/report/repositoryWidget", params=base).json()
    assert default["views"]["value"] == views("2025-02-04", "2026-02-04")


@pytest.mark.parametrize("path", ["/report/itemWidget", "/report/itemWidgetByCountry"])
def test_an_item_without_usage(web, path):
    client, _ = web
    known = "oai:repo1.example.org:1001/never-used"
    for params in (
        {"identifier": known},
        {"identifier": known, "source": "no-such-source"},  # the owner wins, as there
        {"identifier": "oai:elsewhere.example.org:1", "source": "OPENDOAR::1001"},
    ):
        response = client.get(path, params={**params, **RANGE})
        assert response.status_code == 200, (params, response.text)
        body = response.json()
        assert {m: body[m]["value"] for m in M} == dict.fromkeys(M, 0)
        if path.endswith("ByCountry"):
            assert body["country"]["doc_count"] == 0
            assert all(body["country"][m]["buckets"] == [] for m in M)
        else:
            assert body["level"]["buckets"] == [] and body["time"]["buckets"] == []
    unknown = client.get(path, params={"identifier": "oai:elsewhere.example.org:1", **RANGE})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["parameter"] == "identifier"
    bad_source = client.get(
        path, params={"identifier": "oai:elsewhere.example.org:1", "source": "nope::1"}
    )
    assert bad_source.status_code == 404 and bad_source.json()["error"]["parameter"] == "source"


# --- 6. CORS ------------------------------------------------------------------------------


def test_widgets_answer_any_origin_by_default_and_the_api_none(web):
    client, _ = web
    origin = {"Origin": "https://repositorio.example.ac.cr"}
    for path, params in (
        ("/report/repositoryWidget", {"source_id": "opendoar::1001"}),
        ("/report/itemWidgetByCountry", {"source": "national::CR"}),
        ("/widget/item", {"identifier": "oai:repo1.example.org:1001/0"}),
    ):
        response = client.get(path, params=params, headers=origin)
        assert response.headers.get("access-control-allow-origin") == "*", path
        assert "access-control-allow-credentials" not in response.headers
    preflight = client.options(
        "/report/itemWidget",
        headers={**origin, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    for path in ("/api/v1/global", "/r51/status", "/health"):
        response = client.get(path, headers=origin)
        assert "access-control-allow-origin" not in response.headers, path


def test_cors_origins_are_configurable_separately(web):
    _, loaded = web
    app = create_app(
        loaded.store,
        loaded.admin_db_url,
        cors_origins=("https://dashboard.example.org",),
        widget_cors_origins=("https://repositorio.example.ac.cr",),
    )
    client = TestClient(app)

    def allowed(path: str, origin: str) -> str | None:
        response = client.get(path, headers={"Origin": origin})
        return response.headers.get("access-control-allow-origin")

    widget = "/report/repositoryWidget?source_id=opendoar::1001"
    assert (
        allowed(widget, "https://repositorio.example.ac.cr") == "https://repositorio.example.ac.cr"
    )
    assert allowed(widget, "https://dashboard.example.org") is None
    assert allowed("/api/v1/global", "https://dashboard.example.org") == (
        "https://dashboard.example.org"
    )
    assert allowed("/api/v1/global", "https://repositorio.example.ac.cr") is None
    closed = TestClient(create_app(loaded.store, loaded.admin_db_url, widget_cors_origins=()))
    response = closed.get(widget, headers={"Origin": "https://x.example"})
    assert "access-control-allow-origin" not in response.headers


def test_widget_cors_setting():
    assert Settings.from_env({}).widget_cors_origins == ("*",)
    assert Settings.from_env({"USAGE_STATS_WIDGET_CORS_ORIGINS": ""}).widget_cors_origins == ()
    assert Settings.from_env(
        {"USAGE_STATS_WIDGET_CORS_ORIGINS": "https://a.example, https://b.example"}
    ).widget_cors_origins == ("https://a.example", "https://b.example")
    assert Settings.from_env({}).cors_origins == ()


def test_item_widget_by_a_records_doi_or_handle_counts_its_oai_item(web):
    """The widget asked for a DOI or handle the cross-walk resolves shows the record's OAI
    item; an ambiguous alias is not resolved (an unknown key without usage: 404)."""
    client, loaded = web
    item = busiest_item(loaded)
    other = busiest_item(loaded, "oai:repo2.example.org:")
    doi, handle, shared = "10.77777/widget.1", "hdl:77777/w1", "10.77777/widget.shared"
    records = md.frame(
        md.record(item, site_id=1, item_keys=[item, doi, handle, shared]),
        md.record(other, site_id=2, item_keys=[other, shared]),
    )
    loaded.store.record_aliases(crosswalk_table(records))
    try:
        for spelled in (f"doi:{doi}", "https://hdl.handle.net/77777/w1"):
            response = client.get("/report/itemWidget", params={"identifier": spelled, **RANGE})
            assert response.status_code == 200, response.text
            expect_widget(response.json(), loaded, lambda i: i["item_id"] == item)
        response = client.get("/report/itemWidget", params={"identifier": shared, **RANGE})
        assert response.status_code == 404, response.text
        assert response.json()["error"]["parameter"] == "identifier"
    finally:
        loaded.store.record_aliases(crosswalk_table(md.frame()))


def test_an_item_lookup_runs_on_the_event_loop_only_on_a_store_read_in_process(web, monkeypatch):
    """An item's widget on the web's DuckDB reader is computed on the event loop (the hop to
    a thread and back was ~0.4 ms of a ~4 ms miss: issue 16); a repository's sums, and every
    read of OpenSearch, wait in the thread pool, where they leave the loop free."""
    import asyncio

    client, loaded = web
    on_loop: list[tuple[str, bool]] = []
    original = type(loaded.store)._sums_where  # every usage sum's way to the store

    def spied(self, scope, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop.append((scope, True))
        except RuntimeError:
            on_loop.append((scope, False))
        return original(self, scope, *args, **kwargs)

    monkeypatch.setattr(type(loaded.store), "_sums_where", spied)
    in_process = loaded.store.reads_in_process
    assert in_process == isinstance(loaded.store, DuckDBStatsStore)
    item = busiest_item(loaded)
    asked = {
        "/report/itemWidget": ({"identifier": item}, in_process),
        "/report/itemWidgetByCountry": ({"identifier": item}, False),
        "/report/repositoryWidget": ({"source_id": "opendoar::1001"}, False),
        "/report/repositoryWidgetByCountry": ({"source_id": "opendoar::1001"}, False),
    }
    for path, (params, expected) in asked.items():
        on_loop.clear()
        # a date range no other test asks: not an answer from the response cache
        response = client.get(path, params={**params, "start_date": "2019-01-01"})
        assert response.status_code == 200, (path, response.text)
        assert on_loop and all(loop is expected for _, loop in on_loop), (path, on_loop)


def test_the_widgets_parameters_are_documented(web):
    """The widgets read their query strings themselves: OpenAPI (`/docs`, the fuzz test)
    still lists every parameter."""
    client, _ = web
    paths = client.get("/openapi.json").json()["paths"]
    documented = {
        path: [p["name"] for p in paths[path]["get"]["parameters"]]
        for path in paths
        if path.startswith("/report/")
    }
    assert documented == {
        "/report/itemWidget": [
            "identifier",
            "source",
            "start_date",
            "end_date",
            "time_unit",
            "interval",
        ],
        "/report/itemWidgetByCountry": ["identifier", "source", "start_date", "end_date", "limit"],
        "/report/repositoryWidget": [
            "source_id",
            "start_date",
            "end_date",
            "time_unit",
            "interval",
        ],
        "/report/repositoryWidgetByCountry": ["source_id", "start_date", "end_date", "limit"],
    }


@pytest.mark.parametrize("unit", ["day", "week", "month", "quarter", "year"])
def test_a_widget_sums_many_daily_rows_with_arrays_as_it_sums_few_in_python(unit):
    """A popular item's year (~1,100 daily rows) is summed with numpy (`_sums_by_arrays`),
    an ordinary one's in Python: both give the same totals, levels and buckets, with null
    metrics, rows without usage (zeros, corrections below zero), a missing level and days
    that cross week, month, quarter and year bounds."""
    import random

    import polars as pl

    from usage_stats.web import lareferencia

    metrics = list(lareferencia.M)
    schema = {"date": pl.Date, "level": pl.String, **dict.fromkeys(metrics, pl.Int64)}
    for seed in range(12):
        rng = random.Random(seed)
        first = dt.date(2024, 12, 20)
        rows = [
            (
                first + dt.timedelta(days=rng.randrange(120)),
                rng.choice(["R", "N", "L", None]),
                *(
                    rng.choice([None, 0, 0, 1, 3, 250, -2] if seed % 2 else [0, 1, 7])
                    for _ in metrics
                ),
            )
            for _ in range(rng.choice([0, 1, 40, 700]))
        ]
        frame = pl.DataFrame(rows, schema=schema, orient="row")
        assert lareferencia._sums_by_arrays(frame, unit) == lareferencia._sums_in_python(
            frame, unit
        ), seed
        # and the widget's answer is the same whichever path sums the frame
        by_arrays = lareferencia.widget(frame, unit)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(lareferencia, "_PYTHON_ROWS", len(rows) + 1)
            assert lareferencia.widget(frame, unit) == by_arrays, seed
