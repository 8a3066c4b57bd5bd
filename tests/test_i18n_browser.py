"""Every page in English, Spanish and Portuguese, in real headless Chromium (Debian's package,
driven by Playwright) against the app serving generated data on 127.0.0.1: the dashboard,
the item widget and the embeddable repository view. Each page must show no English message
of the catalogue (every text node, label, title and chart label is matched against them),
numbers in the chosen locale (compared with Babel's CLDR formatting), country names as CLDR
writes them in the language, dates with the language's month names. The language menu sets
a cookie that the next page honours. Screenshots go to docs/screenshots (README)."""

from __future__ import annotations

import datetime as dt
import os
import re

import httpx
import pytest
from babel.dates import get_month_names
from babel.numbers import format_decimal
from browser_support import CHROMIUM, SCREENSHOTS, PageWatch, chromium, serving
from web_support import END, START, load

from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.web import create_app, i18n

pytestmark = pytest.mark.browser

SETTLED = "body:not([data-state=loading])"
ENGLISH_MONTHS = re.compile(r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\b")
# What a page shows, as text: text nodes, the labels and titles a reader meets, the title,
# and the chart's dataset labels and axis titles (drawn on a canvas).
TEXTS = """() => {
  const out = [document.title];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const text = walk.currentNode.textContent.trim();
    if (text) out.push(text);
  }
  for (const node of document.querySelectorAll("[aria-label], [title], optgroup[label]")) {
    for (const name of ["aria-label", "title", "label"]) {
      const value = node.getAttribute(name);
      if (value) out.push(value.trim());
    }
  }
  for (const id of ["series-chart", "records-chart"]) {
    const chart = window.Chart && Chart.getChart(id);
    if (!chart) continue;
    for (const set of chart.data.datasets) out.push(set.label);
    for (const scale of Object.values(chart.options.scales)) {
      if (scale.title && scale.title.text) out.push(scale.title.text);
    }
  }
  return out;
}"""


def english_patterns(language: str) -> list[tuple[str, re.Pattern]]:
    """The catalogue's English messages that read differently in `language`, as patterns
    (a placeholder matches any text)."""
    patterns = []
    for message, translation in i18n.script_messages(language).items():
        if translation == message:
            continue
        pattern = re.escape(message)
        pattern = re.sub(r"\\\{\w+\\\}", ".+", pattern)
        patterns.append((message, re.compile(pattern)))
    return patterns


def leftovers(page, language: str, data: set[str] = frozenset()) -> list[tuple[str, str]]:
    """English messages the page shows; `data`: texts that are data, not messages (the demo
    names its portal "Regional portal")."""
    patterns = english_patterns(language)
    found = []
    for text in page.evaluate(TEXTS):
        if text in data or text.split(" · ")[0] in data:
            continue
        for message, pattern in patterns:
            if pattern.fullmatch(text):
                found.append((text, message))
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    store = DuckDBStatsStore(tmp_path_factory.mktemp("duckdb") / "stats.duckdb")
    loaded = load(store, tmp_path_factory.mktemp("data"))
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
    """Open a path in a fresh context with the browser's `locale` (its Accept-Language);
    after the test, nothing logged as an error and no request left 127.0.0.1."""
    base = site[0]
    contexts = []
    watches = []

    def opener(path: str, *, locale: str = "en-US", width: int = 1280, height: int = 900):
        context = browser.new_context(
            locale=locale.split(",")[0],
            extra_http_headers={"Accept-Language": locale},
            viewport={"width": width, "height": height},
        )
        contexts.append(context)
        page = context.new_page()
        watch = PageWatch(page)
        watches.append(watch)
        response = page.goto(base + path)
        page.wait_for_selector(SETTLED, state="attached")
        return page, watch, response

    yield opener
    for context in contexts:
        context.close()
    for watch in watches:
        assert watch.outside == [], f"requests left 127.0.0.1: {watch.outside}"
        assert watch.errors == [], f"the page logged errors: {watch.errors}"
        assert watch.failed == [], f"requests failed: {watch.failed}"


def shoot(page, name: str, *, panels: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if not panels:
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
        return
    top = page.evaluate(
        "document.getElementById('records-panel').getBoundingClientRect().top + scrollY"
    )
    clip = {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": top}
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True, clip=clip)


def babel_locale(tag: str) -> str:
    return tag.replace("-", "_")


# (how the reader asks, the browser's Accept-Language, the page's language and number locale)
CASES = [
    pytest.param("", "en-US", "en", "en", id="en"),
    pytest.param("lang=es", "en-US", "es", "es-419", id="es-by-query"),
    pytest.param("", "es-AR,es;q=0.9,en;q=0.5", "es", "es-AR", id="es-AR-by-header"),
    pytest.param("", "pt-BR,pt;q=0.9,en;q=0.5", "pt", "pt-BR", id="pt-BR-by-header"),
]


@pytest.mark.parametrize(("query", "accept", "language", "locale"), CASES)
def test_dashboard_in_the_language(site, open_page, query, accept, language, locale):
    _, api, _ = site
    page, _, _ = open_page(f"/dashboard?range=all&{query}", locale=accept)
    page.wait_for_selector("body[data-panels=ready], body[data-panels=error]", state="attached")
    assert page.get_attribute("html", "lang") == language
    assert page.get_attribute("body", "data-state") == "ready"
    names = {s["name"] for s in api.get("/api/v1/sources").json()}
    assert leftovers(page, language, names) == []
    # numbers in the locale: every figure card, as CLDR formats it
    totals = api.get("/api/v1/global", params={"start": START, "end": END}).json()["totals"]
    for metric in ("views", "downloads", "unique_item_requests"):
        shown = page.locator(f"#figures .figure[data-metric={metric}] .value").inner_text()
        assert shown == format_decimal(totals[metric], locale=babel_locale(locale)), metric
    assert totals["views"] >= 1000  # grouped, so the locale shows
    # country names from CLDR in the language
    names = i18n.territories(language)
    countries = page.locator("#country-table tbody th").all_inner_texts()
    unknown = i18n.translations(language).gettext("Unknown country")
    assert countries and all(n in names.values() or n == unknown for n in countries), countries
    assert len(set(countries) - {unknown}) >= 3
    # the series' chart axis and labels, the metric menu
    title = page.evaluate("Chart.getChart('series-chart').options.scales.y.title.text")
    expected = {
        "en": "Views per month",
        "es": "Visualizaciones por mes",
        "pt": "Visualizações por mês",
    }
    assert title == expected[language]
    # dates with the language's month names
    status = page.inner_text("#status")
    months = get_month_names("abbreviated", locale=babel_locale(locale)).values()
    assert any(m.rstrip(".") in status for m in months), status
    if language != "en":
        assert not ENGLISH_MONTHS.search(status), status
    # downloads carry the language, so their file names are translated
    href = page.get_attribute(".downloads[data-table=series] a[data-format=csv]", "href")
    assert ("lang=" + language in href) == (language != "en")
    if locale in ("es-419", "pt-BR"):
        shoot(page, f"dashboard-{language}.png", panels=True)


@pytest.mark.parametrize(("query", "accept", "language", "locale"), CASES)
def test_item_widget_in_the_language(site, open_page, query, accept, language, locale):
    _, api, _ = site
    top = api.get("/api/v1/global/top", params={"start": START, "end": END, "limit": 1}).json()
    identifier = top["items"][0]["identifier"]
    page, _, _ = open_page(
        f"/widget/item?identifier={identifier}&{query}", locale=accept, width=360, height=460
    )
    assert page.get_attribute("html", "lang") == language
    assert page.get_attribute("body", "data-state") == "ready"
    assert leftovers(page, language) == []
    body = api.get("/api/v1/items", params={"identifier": identifier, "start": START, "end": END})
    body = body.json()
    for metric in ("views", "downloads"):
        shown = page.locator(f".figure[data-metric={metric}] .value").inner_text()
        assert shown == format_decimal(body["totals"][metric], locale=babel_locale(locale))
    names = i18n.territories(language)
    for item in page.query_selector_all("#countries li"):
        code = item.get_attribute("data-country")
        expected = names[code] if code and code != "ZZ" else None
        if expected:
            assert item.query_selector("span").inner_text() == expected
    label = page.locator(".figure[data-metric=views] .label").inner_text()
    assert label == {"en": "Views", "es": "Visualizaciones", "pt": "Visualizações"}[language]
    rng = page.inner_text("#range")
    if language != "en":
        assert not ENGLISH_MONTHS.search(rng), rng
    if locale in ("es-419", "pt-BR"):
        shoot(page, f"widget-{language}.png")


def test_item_widget_messages_in_the_language(site, browser):
    base = site[0]
    for language, text in (
        ("es", "Todavía no hay uso registrado para este ítem."),
        ("pt", "Ainda não há uso registrado para este item."),
    ):
        context = browser.new_context()
        page = context.new_page()
        watch = PageWatch(page)
        page.goto(f"{base}/widget/item?identifier=oai:repo1.example.org:never-used&lang={language}")
        page.wait_for_selector(SETTLED, state="attached")
        assert page.inner_text("#status") == text
        assert watch.outside == []
        context.close()


def last_year(last: str) -> tuple[str, str]:
    day = dt.date.fromisoformat(last)
    start = day.replace(year=day.year - 1) + dt.timedelta(days=1)
    return start.isoformat(), last


@pytest.mark.parametrize(("query", "accept", "language", "locale"), CASES)
def test_repository_embed_in_the_language(site, open_page, query, accept, language, locale):
    _, api, _ = site
    source = next(s for s in api.get("/api/v1/sources").json() if s["type"] == "R")
    page, _, response = open_page(
        f"/embed/repository/{source['source_key']}?{query}", locale=accept, width=480, height=520
    )
    assert response.status == 200
    assert page.get_attribute("html", "lang") == language
    assert page.get_attribute("body", "data-state") == "ready"
    assert page.inner_text("#embed-title") == source["name"]
    assert leftovers(page, language) == []
    start, end = last_year(api.get("/api/v1/coverage").json()["last_day"])
    params = {"start": start, "end": end, "granularity": "month"}
    body = api.get(f"/api/v1/sources/{source['site_id']}", params=params).json()
    for metric in ("views", "downloads"):
        card = page.locator(f".figure[data-metric={metric}]")
        assert int(card.get_attribute("data-value")) == body["totals"][metric]
        shown = card.locator(".value").inner_text()
        assert shown == format_decimal(body["totals"][metric], locale=babel_locale(locale))
    assert page.get_attribute("#chart", "data-periods") == str(len(body["series"]))
    ranked = sorted(
        (r for r in body["by_country"] if r["views"] + r["downloads"] > 0),
        key=lambda r: (-(r["views"] + r["downloads"]), r["country"]),
    )[:5]
    listed = [li.get_attribute("data-country") for li in page.query_selector_all("#countries li")]
    assert listed == [r["country"] for r in ranked]
    more = page.get_attribute("#more", "href")
    assert more.startswith("/dashboard/source/") and more.endswith(f"lang={language}")
    if locale in ("es-419", "pt-BR"):
        shoot(page, f"embed-{language}.png")


def test_repository_embed_of_an_unknown_key_is_a_404_page(site, open_page):
    page, watch, response = open_page("/embed/repository/opendoar::424242?lang=pt")
    assert response.status == 404
    # the browser logs the page's own 404, and nothing else
    assert [e for e in watch.errors if "404 (Not Found)" in e] == watch.errors
    assert len(watch.errors) == 1
    watch.errors.clear()
    assert page.get_attribute("html", "lang") == "pt"
    assert page.inner_text("h1") == "Não encontrado"
    assert "opendoar::424242" in page.inner_text("#status")


def test_the_language_menu_switches_and_is_remembered(site, open_page):
    base = site[0]
    page, _, _ = open_page("/dashboard?range=all")
    assert page.get_attribute("html", "lang") == "en"
    # all drawn: nothing in flight for the switch to abort
    page.wait_for_selector("body[data-panels=ready], body[data-panels=error]", state="attached")
    with page.expect_navigation():
        page.select_option("#lang", "pt")
    page.wait_for_selector("body[data-state=ready]", state="attached")
    assert page.get_attribute("html", "lang") == "pt"
    assert page.inner_text("#series-title") == "Ao longo do tempo"
    assert "lang=pt" in page.url and "range=all" in page.url
    page.wait_for_selector("body[data-panels=ready], body[data-panels=error]", state="attached")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert cookies["lang"] == "pt"
    page.goto(base + "/dashboard/source/opendoar::1001")  # no ?lang=: the cookie decides
    page.wait_for_selector(SETTLED, state="attached")
    assert page.get_attribute("html", "lang") == "pt"
    assert page.text_content("#view-kind") == "Repositório · Costa Rica"
    page.wait_for_selector("body[data-panels=ready], body[data-panels=error]", state="attached")
