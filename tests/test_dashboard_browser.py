"""The dashboard and the item widget in real headless Chromium (Debian's package, driven by
Playwright) against the app serving generated data on 127.0.0.1.

Every number the page shows is compared with the public API's answer for the same range (the
API itself is checked against the generator's manifest in test_web_api). Screenshots are
written to docs/screenshots as artefacts; README shows them."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import polars as pl
import pytest
from browser_support import CHROMIUM, SCREENSHOTS, PageWatch, chromium, serving
from web_support import END, START, load

from usage_stats.pipeline.spikes import SPIKE_SCHEMA
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.web import create_app

pytestmark = pytest.mark.browser

FIGURES = (
    "views",
    "downloads",
    "outlinks",
    "conversions",
    "unique_item_investigations",
    "unique_item_requests",
)
SETTLED = "body:not([data-state=loading])"
# A usage spike flagged on repository 2 (its own usage and one of its items'), for its note.
SPIKE_DAY = dt.date(2026, 1, 30)


def spike_flags() -> pl.DataFrame:
    common = {"date": SPIKE_DAY, "owner_site_id": 2, "history_days": 6, "unit": "block_hash"}
    return pl.DataFrame(
        [
            common
            | {"scope": "item", "key": "oai:spiked:1", "usage": 400, "baseline": 4.0}
            | {"factor": 100.0, "units": 3, "top_blocks_share": 0.97, "top_countries": "US"}
            | {"top_countries_share": 0.99, "reason": "blocks+countries"},
            common
            | {"scope": "source", "key": "2", "usage": 900, "baseline": 100.0}
            | {"factor": 9.0, "units": 80, "top_blocks_share": 0.62, "top_countries": "US"}
            | {"top_countries_share": 0.5, "reason": "blocks"},
        ],
        schema=SPIKE_SCHEMA,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    store = DuckDBStatsStore(tmp_path_factory.mktemp("duckdb") / "stats.duckdb")
    loaded = load(store, tmp_path_factory.mktemp("data"))
    store.replace_spike_day(SPIKE_DAY, spike_flags())
    with serving(create_app(store, loaded.admin_db_url)) as base:
        with httpx.Client(base_url=base, timeout=30) as api:
            yield base, api, loaded


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"service chromium: no browser at {CHROMIUM} (scripts/browser.sh installs it)")
    with chromium() as launched:
        yield launched


@pytest.fixture
def open_page(site, browser):
    """Open a path in a fresh context; yields (page, watch) and checks, after the test, that
    nothing was logged as an error and no request left 127.0.0.1."""
    base = site[0]
    contexts = []
    watches = []

    def opener(path: str, *, locale: str = "en-US", width: int = 1280, height: int = 900):
        context = browser.new_context(
            locale=locale, viewport={"width": width, "height": height}, accept_downloads=True
        )
        contexts.append(context)
        page = context.new_page()
        watch = PageWatch(page)
        watches.append(watch)
        page.goto(base + path)
        page.wait_for_selector(SETTLED, state="attached")
        return page, watch

    yield opener
    for context in contexts:
        context.close()
    for watch in watches:
        assert watch.outside == [], f"requests left 127.0.0.1: {watch.outside}"
        assert watch.errors == [], f"the page logged errors: {watch.errors}"
        assert watch.failed == [], f"requests failed: {watch.failed}"


def shoot(page, name: str) -> None:
    """The page down to the record and breakdown panels (shot, on data that has records, by
    test_dashboard_records_browser); the whole page where there are none (the widget)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    panels = page.query_selector("#records-panel")
    if panels is None:
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
        return
    page.wait_for_selector("body[data-panels=ready], body[data-panels=error]", state="attached")
    top = page.evaluate(
        "document.getElementById('records-panel').getBoundingClientRect().top + scrollY"
    )
    width = page.viewport_size["width"]
    clip = {"x": 0, "y": 0, "width": width, "height": top}
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True, clip=clip)


def figures(page) -> dict[str, tuple[int, int]]:
    cards = page.query_selector_all("#figures .figure")
    return {
        c.get_attribute("data-metric"): (
            int(c.get_attribute("data-value")),
            int(c.get_attribute("data-previous")),
        )
        for c in cards
    }


def query_of(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def chart(page) -> dict:
    return page.evaluate(
        """() => {
            const c = Chart.getChart('series-chart');
            return {labels: c.data.labels,
                    datasets: c.data.datasets.map(d => ({label: d.label, data: d.data}))};
        }"""
    )


def days_before(day: dt.date, n: int) -> str:
    return (day - dt.timedelta(days=n)).isoformat()


# --- the network dashboard ---------------------------------------------------------------


def test_network_figures_equal_the_api_with_change_against_the_previous_period(site, open_page):
    base, api, _ = site
    start, end = days_before(END, 6), END.isoformat()  # the last 7 days with data
    page, _ = open_page("/dashboard?range=7d")
    assert page.get_attribute("body", "data-state") == "ready"
    now = api.get("/api/v1/global", params={"start": start, "end": end}).json()["totals"]
    before = api.get(
        "/api/v1/global", params={"start": days_before(END, 13), "end": days_before(END, 7)}
    ).json()["totals"]
    assert figures(page) == {m: (now[m], before[m]) for m in FIGURES}
    assert all(now[m] > 0 and before[m] > 0 for m in FIGURES)
    card = page.locator("#figures .figure[data-metric=views]")
    assert card.locator(".value").inner_text() == f"{now['views']:,}"
    change = (now["views"] - before["views"]) / before["views"]
    assert f"{change:+.1%}" in card.locator(".change").inner_text()
    assert page.input_value("#start") == start and page.input_value("#end") == end
    assert page.evaluate("performance.getEntriesByName('first-figures').length") == 1
    # the page says what it counts: the whole network
    assert page.get_attribute("#reach", "data-kind") == "network"
    assert page.inner_text("#reach").startswith("The whole network: every use on every site")
    shoot(page, "dashboard.png")


def test_all_time_with_no_previous_usage(site, open_page):
    _, api, _ = site
    page, _ = open_page("/dashboard?range=all")
    body = api.get("/api/v1/global", params={"start": START, "end": END}).json()
    assert figures(page) == {m: (body["totals"][m], 0) for m in FIGURES}
    assert page.locator("#figures .figure[data-metric=views] .change").inner_text() == (
        "new: none the period before"
    )
    assert page.input_value("#start") == START.isoformat()
    assert api.get("/api/v1/coverage").json()["first_day"] == START.isoformat()


def test_top_items_top_repositories_map_and_country_table(site, open_page):
    _, api, loaded = site
    page, _ = open_page("/dashboard?range=all")
    rng = {"start": START.isoformat(), "end": END.isoformat(), "limit": 10}
    top = api.get("/api/v1/global/top", params=rng).json()["items"]
    rows = page.locator("#items-table tbody tr")
    assert rows.count() == len(top) == 10
    shown = [[c.strip() for c in rows.nth(i).locator("td").all_inner_texts()] for i in range(10)]
    assert shown == [
        [
            str(t["rank"]),
            f"{t['title']}\n{t['identifier']}" if t["title"] else t["identifier"],
            f"{t['views']:,}",
            f"{t['downloads']:,}",
        ]
        for t in top
    ]
    titles = loaded.manifest["titles"]
    assert [t["title"] for t in top] == [titles.get(t["identifier"]) for t in top]
    assert any(t["title"] for t in top) and not all(t["title"] for t in top)
    sources = api.get("/api/v1/global/top-sources", params=rng).json()["sources"]
    names = page.locator("#sources-table tbody tr th, #sources-table tbody tr td:nth-child(2)")
    assert names.all_inner_texts() == [s["name"] for s in sources]
    assert len(sources) == 3

    by_country = api.get("/api/v1/global", params=rng).json()["by_country"]
    with_views = {r["country"] for r in by_country if r["views"] > 0}
    on_map = set(
        page.evaluate(
            "[...document.querySelectorAll('#map path')]"
            ".map(p => p.dataset.country).filter(Boolean)"
        )
    )
    painted = set(
        page.evaluate(
            "[...document.querySelectorAll('#map path.has-data')].map(p => p.dataset.country)"
        )
    )
    assert painted == with_views & on_map
    assert {"BR", "AR", "PE", "ES", "US"} <= painted
    assert page.get_attribute("#map", "data-countries-with-data") == str(len(painted))
    table_rows = page.locator("#country-table tbody tr")
    assert table_rows.count() == len(with_views)
    first = max(by_country, key=lambda r: (r["views"], [-ord(ch) for ch in r["country"]]))
    assert table_rows.first.locator("td").first.inner_text() == f"{first['views']:,}"
    assert page.locator("#map-legend .legend-item").count() >= 2


def test_granularity_and_range_change_the_chart_and_the_url(site, open_page):
    _, api, loaded = site
    page, _ = open_page("/dashboard/source/opendoar::1001?range=all")
    assert page.inner_text("#title") == "Repository 1"

    def api_series(start: str, end: str, granularity: str) -> dict:
        return api.get(
            "/api/v1/sources/1", params={"start": start, "end": end, "granularity": granularity}
        ).json()

    def expect(body: dict, metric: str = "views") -> None:
        shown = chart(page)
        assert shown["labels"] == [p["period"] for p in body["series"]]
        levels = {"Repository": "R", "National node": "N", "Regional portal": "L"}
        stacked = {levels[d["label"]]: d["data"] for d in shown["datasets"] if d["label"] in levels}
        assert stacked == {
            s["level"]: [p[metric] for p in s["series"]] for s in body["series_by_level"]
        }
        assert set(stacked) == {"R", "N", "L"}
        running, total = [], 0
        for p in body["series"]:
            total += p[metric]
            running.append(total)
        cumulative = next(d for d in shown["datasets"] if d["label"] == "Cumulative total")
        assert cumulative["data"] == running

    expect(api_series(START.isoformat(), END.isoformat(), "month"))
    assert chart(page)["labels"] == ["2026-01", "2026-02"]

    page.select_option("#granularity", "week")
    page.wait_for_selector("body[data-state=ready]", state="attached")
    assert query_of(page) == {"range": "all", "granularity": "week", "metric": "views"}
    expect(api_series(START.isoformat(), END.isoformat(), "week"))
    assert chart(page)["labels"] == ["2026-W04", "2026-W05", "2026-W06"]

    page.select_option("#range", "7d")
    page.wait_for_selector("body[data-state=ready]", state="attached")
    assert query_of(page)["range"] == "7d"
    assert page.input_value("#start") == days_before(END, 6)
    expect(api_series(days_before(END, 6), END.isoformat(), "week"))

    page.select_option("#granularity", "day")
    page.wait_for_selector("body[data-state=ready]", state="attached")
    page.fill("#start", "2026-01-25")
    page.fill("#end", "2026-01-27")
    page.wait_for_selector("body[data-state=ready]", state="attached")
    assert query_of(page) == {
        "range": "custom",
        "start": "2026-01-25",
        "end": "2026-01-27",
        "granularity": "day",
        "metric": "views",
    }
    assert page.input_value("#range") == "custom"
    expect(api_series("2026-01-25", "2026-01-27", "day"))

    page.select_option("#metric", "unique_item_requests")
    page.wait_for_selector("body[data-state=ready]", state="attached")
    expect(api_series("2026-01-25", "2026-01-27", "day"), "unique_item_requests")

    page.go_back()  # the previous view comes back from the URL
    page.wait_for_selector("body[data-state=ready]", state="attached")
    assert query_of(page)["metric"] == "views"
    expect(api_series("2026-01-25", "2026-01-27", "day"))

    # a shared address opens the same view
    shared, _ = open_page(urlparse(page.url).path + "?" + urlparse(page.url).query)
    assert chart(shared) == chart(page)


def test_csv_download_matches_the_api(site, open_page):
    _, api, _ = site
    page, _ = open_page("/dashboard/node/cr?range=all&granularity=week")
    assert page.inner_text("#title") == "National node"
    # the page says what a national node counts, in the API's words
    label = api.get("/api/v1/nodes/4").json()["reach"]["label"]
    assert label.startswith("Use of the items of Costa Rica's 1 repository, wherever it happened")
    assert page.inner_text("#reach") == label
    assert page.get_attribute("#reach", "data-kind") == "national"
    for panel, params in (
        ("series", {"granularity": "week", "table": "series"}),
        ("country", {"granularity": "week", "table": "country"}),
    ):
        with page.expect_download() as download:
            page.click(f".downloads[data-table={panel}] a[data-format=csv]")
        saved = Path(download.value.path()).read_bytes()
        expected = api.get(
            "/api/v1/nodes/4",
            params={"start": START.isoformat(), "end": END.isoformat(), **params, "format": "csv"},
        )
        assert saved == expected.content
        assert download.value.suggested_filename.endswith(".csv")
    with page.expect_download() as download:
        page.click(".downloads[data-table=items] a[data-format=csv]")
    expected = api.get(
        "/api/v1/nodes/4/top",
        params={"start": START, "end": END, "metric": "views", "limit": 10, "format": "csv"},
    )
    assert Path(download.value.path()).read_bytes() == expected.content
    assert expected.text.count("\n") == 11


def test_no_data_incomplete_and_unknown_states(site, open_page):
    page, _ = open_page("/dashboard?range=custom&start=2025-01-01&end=2025-01-31")
    assert page.get_attribute("body", "data-state") == "empty"
    assert page.inner_text("#status") == "No usage recorded between Jan 1, 2025 and Jan 31, 2025."
    assert page.locator("#items-table td.empty").inner_text() == "No item was used in this range"

    later = (END + dt.timedelta(days=6)).isoformat()
    page, _ = open_page(f"/dashboard?range=custom&start={START}&end={later}")
    notice = page.locator("#notice")
    assert notice.is_visible()
    assert notice.inner_text().startswith("Data is complete through Feb 4, 2026;")

    page, _ = open_page("/dashboard?range=all")
    assert not page.locator("#notice").is_visible()

    page, _ = open_page("/dashboard/source/no-such-repository")
    assert page.get_attribute("body", "data-state") == "missing"
    assert "No repository is registered with the key “no-such-repository”." in page.inner_text(
        "#status"
    )


def test_loading_state_until_the_api_answers(site, browser):
    base = site[0]
    context = browser.new_context()
    page = context.new_page()
    held = []
    page.route("**/api/v1/global?*", lambda route: held.append(route))
    page.goto(base + "/dashboard", wait_until="domcontentloaded")
    page.wait_for_selector("body[data-state=loading] #status", state="attached")
    while len(held) < 2:
        page.wait_for_timeout(20)
    assert page.inner_text("#status").startswith("Loading")
    assert page.get_attribute("#content", "aria-busy") == "true"
    for route in held:
        route.continue_()
    page.unroute("**/api/v1/global?*")
    page.wait_for_selector("body[data-state=ready]", state="attached")
    assert page.get_attribute("#content", "aria-busy") == "false"
    context.close()


def test_numbers_follow_the_pages_language(site, open_page):
    """A German reader gets the English page (no German catalogue) with English numbers: the
    page speaks one locale; the es and pt pages are test_i18n_browser's."""
    _, api, _ = site
    views = api.get("/api/v1/global", params={"start": START, "end": END}).json()["totals"]["views"]
    assert views >= 1000
    page, _ = open_page("/dashboard?range=all", locale="de-DE")
    text = page.locator("#figures .figure[data-metric=views] .value").inner_text()
    assert text == f"{views:,}"
    assert page.get_attribute("html", "lang") == "en"
    assert page.inner_text("#country-table thead").startswith("Country")


def test_keyboard_reaches_every_control_and_changes_the_view(site, open_page):
    page, _ = open_page("/dashboard?range=all")
    reached: list[str] = []
    for _ in range(20):  # a date input has one tab stop per field (month, day, year)
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id || document.activeElement.className")
        if not reached or reached[-1] != focused:
            reached.append(focused)
        if focused == "metric":
            break
    assert reached == ["skip", "goto", "lang", "range", "start", "end", "granularity", "metric"]
    page.focus("#granularity")
    page.keyboard.press("ArrowDown")  # month → quarter
    page.wait_for_selector("body[data-state=ready]", state="attached")
    assert query_of(page)["granularity"] == "quarter"
    assert chart(page)["labels"] == ["2026-Q1"]


def test_readable_on_a_phone(site, open_page):
    page, _ = open_page("/dashboard?range=all", width=390, height=844)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    columns = page.evaluate(
        "getComputedStyle(document.querySelector('main')).gridTemplateColumns.split(' ').length"
    )
    assert columns == 1
    shoot(page, "dashboard-phone.png")


# --- the item widget ---------------------------------------------------------------------


def test_item_widget_shows_views_downloads_over_time_and_by_country(site, open_page):
    _, api, loaded = site
    top = api.get("/api/v1/global/top", params={"start": START, "end": END, "limit": 1}).json()
    identifier = top["items"][0]["identifier"]
    spelled = "oai:" + identifier.removeprefix("oai:").upper()  # the host in capitals
    page, _ = open_page(f"/widget/item?identifier={spelled}", width=360, height=420)
    body = api.get("/api/v1/items", params={"identifier": identifier, "start": START, "end": END})
    body = body.json()
    shown = {
        f.get_attribute("data-metric"): int(f.get_attribute("data-value"))
        for f in page.query_selector_all(".figure")
    }
    assert shown == {"views": body["totals"]["views"], "downloads": body["totals"]["downloads"]}
    assert page.get_attribute("#chart", "data-periods") == str(len(body["series"]))
    assert page.locator("#chart rect").count() == 2 * len(body["series"])
    ranked = sorted(
        (r for r in body["by_country"] if r["views"] + r["downloads"] > 0),
        key=lambda r: (-(r["views"] + r["downloads"]), r["country"]),
    )[:5]
    listed = [li.get_attribute("data-country") for li in page.query_selector_all("#countries li")]
    assert listed == [r["country"] for r in ranked]
    assert page.get_attribute("body", "data-state") == "ready"
    shoot(page, "widget.png")


def test_item_widget_for_an_item_without_usage(site, browser):
    base = site[0]
    context = browser.new_context()
    page = context.new_page()
    watch = PageWatch(page)
    page.goto(base + "/widget/item?identifier=oai:repo1.example.org:never-used")
    page.wait_for_selector(SETTLED, state="attached")
    assert page.inner_text("#status") == "No usage is recorded for this item yet."
    assert watch.outside == []
    context.close()


def test_item_widget_is_embeddable_and_the_dashboard_is_not(site):
    _, api, _ = site
    widget = api.get("/widget/item", params={"identifier": "x"})
    dashboard = api.get("/dashboard")
    assert "frame-ancestors *" in widget.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in dashboard.headers["content-security-policy"]
    assert "default-src 'self'" in dashboard.headers["content-security-policy"]


def test_first_figures_timing_is_recorded(site, open_page, tmp_path):
    """The timing the dashboard benchmark reports (bench/dashboard_bench.py, one year × 100,000
    items) is this performance mark; here it is only checked to be there and sane."""
    page, _ = open_page("/dashboard")
    timing = page.evaluate(
        "JSON.stringify({first: performance.getEntriesByName('first-figures')[0].startTime,"
        " nav: performance.getEntriesByType('navigation')[0].responseEnd})"
    )
    values = json.loads(timing)
    assert 0 < values["nav"] <= values["first"]


def test_a_flagged_usage_spike_is_a_note_and_a_marker_on_its_day(site, open_page):
    _, api, _ = site
    page, _ = open_page("/dashboard/source/opendoar::1002?range=all&granularity=day")
    assert page.is_visible("#spikes")
    notes = page.query_selector_all("#spikes-list li")
    assert [(n.get_attribute("data-scope"), n.get_attribute("data-date")) for n in notes] == [
        ("item", "2026-01-30"),
        ("source", "2026-01-30"),
    ]
    assert "oai:spiked:1" in notes[0].inner_text()
    assert "100× its usual 4" in notes[0].inner_text()
    assert "Flagged for review" in notes[1].inner_text()
    assert page.get_attribute("#series-chart", "data-flagged") == "2026-01-30"
    body = api.get(
        "/api/v1/sources/2",
        params={"start": START.isoformat(), "end": END.isoformat(), "granularity": "day"},
    ).json()
    marker = next(d for d in chart(page)["datasets"] if d["label"].startswith("Flagged"))
    expected = [p["views"] if p["period"] == "2026-01-30" else None for p in body["series"]]
    assert marker["data"] == expected
    assert "2026-01-30 ⚑" in page.text_content("#series-table")  # (a closed <details>)
    # by month the marker is on January's bar; another repository has no note
    page.select_option("#granularity", "month")
    page.wait_for_selector("body[data-state=ready]", state="attached")
    assert page.get_attribute("#series-chart", "data-flagged") == "2026-01"
    other, _ = open_page("/dashboard/source/opendoar::1001?range=all")
    assert not other.is_visible("#spikes")
    assert other.get_attribute("#series-chart", "data-flagged") == ""
    shoot(page, "dashboard-spike.png")
