"""The dashboard's record and breakdown panels in headless Chromium, on planted data: 28 days
of usage of 210 items over three repositories (`bench/web_bench.py`'s generator, with a
cumulative snapshot chain), their harvested records, record statistics and usage subcounts
(`dashboard_records_support`).

Every figure, bar, share and chart series the panels show is compared with the public API's
answer for the same query; record metadata in the top lists with the planted records
themselves. Screenshots of the panels go to docs/screenshots (README shows them)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
from urllib.parse import parse_qs, urlparse

import httpx
import polars as pl
import pytest
from browser_support import CHROMIUM, SCREENSHOTS, PageWatch, chromium, serving
from dashboard_records_support import plant

from bench import web_bench
from usage_stats.pipeline.snapshots import next_snapshot
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.web import create_app

pytestmark = pytest.mark.browser

ARGS = argparse.Namespace(items=210, sources=3, days=28, active_per_day=30, zipf=1.0, seed=5)
FIRST = web_bench.FIRST_DAY
LAST = FIRST + dt.timedelta(days=ARGS.days - 1)
SPAN = {"start": FIRST.isoformat(), "end": LAST.isoformat()}
PANELS_DONE = "body[data-panels=ready], body[data-panels=error]"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("records-dashboard")
    store = DuckDBStatsStore(tmp / "stats.duckdb")
    items = web_bench.year_of_items(ARGS)
    deltas = web_bench.with_rollups(items)
    snapshot = None
    for day, part in sorted(deltas.partition_by("date", as_dict=True).items()):
        snapshot = next_snapshot(snapshot, part, day[0])
        store.replace_day(day[0], part, snapshot)
    admin = f"sqlite:///{tmp / 'admin.sqlite'}"
    web_bench.prepare_admin_db(admin, ARGS)
    sources = web_bench.sources_list(ARGS.sources)
    planted = plant(store, items, sources, FIRST, ARGS.days)
    with serving(create_app(store, admin)) as base:
        with httpx.Client(base_url=base, timeout=30) as api:
            yield base, api, planted.metadata, sources


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"service chromium: no browser at {CHROMIUM} (scripts/browser.sh installs it)")
    with chromium() as launched:
        yield launched


@pytest.fixture
def open_page(site, browser):
    """Open a path and wait until the panels are drawn; after the test, nothing may have been
    logged as an error, failed, or left 127.0.0.1."""
    base = site[0]
    contexts, watches = [], []

    def opener(path: str, *, routes=(), width: int = 1280):
        context = browser.new_context(
            locale="en-US", viewport={"width": width, "height": 900}, accept_downloads=True
        )
        contexts.append(context)
        page = context.new_page()
        for pattern, handler in routes:
            page.route(pattern, handler)
        watch = PageWatch(page)
        watches.append(watch)
        page.goto(base + path)
        page.wait_for_selector(PANELS_DONE, state="attached")
        assert page.get_attribute("body", "data-panels") == "ready"
        # the usage panels beside them settled too, without an error
        page.wait_for_selector("body:not([data-state=loading])", state="attached")
        assert page.get_attribute("body", "data-state") in ("ready", "empty")
        return page

    yield opener
    for context in contexts:
        context.close()
    for watch in watches:
        assert watch.outside == [], watch.outside
        assert watch.errors == [], watch.errors
        assert watch.failed == [], watch.failed


def get(api, path: str, **params) -> dict:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def bars(page, field: str) -> list[dict]:
    return page.eval_on_selector_all(
        f"#breakdown-{field} .bar",
        """(rows) => rows.map((r) => ({kind: r.classList[1], key: r.dataset.key,
            label: r.querySelector('.bar-label').textContent,
            value: Number(r.dataset.value),
            share: r.dataset.share === "" ? null : Number(r.dataset.share)}))""",
    )


def api_rows(answer: dict, metric: str) -> list[tuple]:
    """The (key, value, share) rows a usage panel must show: the named values, then the
    unknown and other remainders when they count anything."""
    part = answer["period"]
    rows = [(r["value"], r[metric], r["share"]) for r in part["values"]]
    for extra in (part["unknown"], part["other"]):
        if extra[metric] > 0:
            rows.append((extra["value"], extra[metric], extra["share"]))
    return rows


def pct(share: float) -> str:
    """A share as the page writes it in en-US: at most one decimal."""
    return f"{share:.1%}".replace(".0%", "%")


def shoot(locator, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    locator.screenshot(path=str(SCREENSHOTS / name))


# --- record figures and chart ----------------------------------------------------------------


def test_record_figures_chart_and_all_time_figures_equal_the_api(site, open_page):
    _, api, metadata, _ = site
    page = open_page("/dashboard?range=all&granularity=week")
    records = get(api, "/api/v1/records/global", granularity="week", **SPAN)
    cards = {
        c.get_attribute("data-record"): int(c.get_attribute("data-value"))
        for c in page.query_selector_all("#record-figures .figure")
    }
    assert cards == {
        "added": records["period"]["added"],
        "removed": records["period"]["removed"],
        "total": records["cumulative"]["total"],
    }
    # planted truth: every record appeared within the range, none was removed
    assert cards == {"added": metadata.height, "removed": 0, "total": metadata.height}
    chart = page.evaluate(
        """() => Chart.getChart('records-chart').data.datasets.map((d) => ({label: d.label,
            data: d.data}))"""
    )
    assert chart == [
        {"label": "Records added", "data": [b["added"] for b in records["series"]]},
        {"label": "Records held", "data": [b["total"] for b in records["series"]]},
    ]
    assert sum(b["added"] for b in records["series"]) == metadata.height
    rows = page.eval_on_selector_all(
        "#records-table tbody tr",
        "(rows) => rows.map((r) => [...r.children].map((c) => c.textContent))",
    )
    assert rows == [
        [b["period"], f"{b['added']:,}", f"{b['removed']:,}", f"{b['total']:,}"]
        for b in records["series"]
    ]
    href = page.get_attribute("#records-downloads a[data-format=csv]", "href")
    assert parse_qs(urlparse(href).query) == {
        "start": [SPAN["start"]],
        "end": [SPAN["end"]],
        "granularity": ["week"],
        "format": ["csv"],
    }
    assert urlparse(href).path == "/api/v1/records/global"
    # every usage figure's all-time variant: the snapshot at the end, which over all time is
    # also the range's own sum
    totals = get(api, "/api/v1/global", **SPAN)["totals"]
    cumulative = get(api, "/api/v1/global/cumulative", granularity="year", **SPAN)["series"][-1]
    for card in page.query_selector_all("#figures .figure"):
        metric = card.get_attribute("data-metric")
        assert int(card.get_attribute("data-cumulative")) == cumulative[metric] == totals[metric]
        assert f"{cumulative[metric]:,} all time" in card.inner_text()
    assert page.evaluate("performance.getEntriesByName('all-panels').length") == 1
    shoot(page.locator("#records-panel"), "dashboard-records.png")


# --- breakdown panels ------------------------------------------------------------------------


def test_breakdown_panels_bars_shares_remainders_table_and_csv(site, open_page):
    _, api, _, _ = site
    page = open_page("/dashboard?range=all&metric=downloads")
    offered = get(api, "/api/v1/breakdowns")
    panels = page.eval_on_selector_all(
        "#breakdowns .breakdown", "(s) => s.map((x) => x.dataset.field)"
    )
    assert panels == [f for f in offered["usage"] if f not in ("country", "item")]
    for field in panels:
        answer = get(api, f"/api/v1/global/breakdown/{field}", metric="downloads", limit=20, **SPAN)
        shown = bars(page, field)
        assert [(b["key"], b["value"], b["share"]) for b in shown] == api_rows(answer, "downloads")
        assert page.get_attribute(f"#breakdown-{field}", "data-whole") == str(
            answer["period"]["whole"]["downloads"]
        )
        # values, unknown and other add up to the whole; the planted item rows carry no
        # referrer (it comes from the visits), so that panel is empty, as the API's rows
        if shown and not answer["multi_valued"]:
            assert sum(b["value"] for b in shown) == answer["period"]["whole"]["downloads"]
    # subjects: 30 planted, so the top 20 and an "(other)" remainder
    subject = bars(page, "subject")
    assert [b["kind"] for b in subject].count("named") == 20
    assert subject[-1]["kind"] == "other" and subject[-1]["label"] == "Other values"
    # readable labels: COAR concepts by their label, languages by name
    labels = {b["key"]: b["label"] for b in bars(page, "resource_type") + bars(page, "language")}
    assert labels["http://purl.org/coar/resource_type/c_6501"] == "Journal article"
    assert labels["http://purl.org/coar/resource_type/c_ddb1"] == "Dataset"
    assert (labels["spa"], labels["por"], labels["eng"]) == ("Spanish", "Portuguese", "English")
    assert labels[""] == "Not given"
    # the table equivalent: the same rows, with shares as text
    language = get(api, "/api/v1/global/breakdown/language", metric="downloads", **SPAN)
    page.click("#breakdown-language summary")
    rows = page.eval_on_selector_all(
        "#breakdown-language tbody tr", "(rows) => rows.map((r) => r.innerText.split('\\t'))"
    )
    first = language["period"]["values"][0]
    assert len(rows) == len(bars(page, "language"))
    assert rows[0] == [labels[first["value"]], f"{first['downloads']:,}", pct(first["share"])]
    # CSV: the same query as the panel, answered by the API with the same rows
    href = page.get_attribute("#breakdown-language a[data-format=csv]", "href")
    assert urlparse(href).path == "/api/v1/global/breakdown/language"
    assert {k: v[0] for k, v in parse_qs(urlparse(href).query).items()} == {
        **SPAN,
        "metric": "downloads",
        "limit": "20",
        "format": "csv",
    }
    table = list(csv.DictReader(io.StringIO(api.get(href).text)))
    assert [(r["value"], int(r["downloads"])) for r in table] == [
        (r["value"], r["downloads"])
        for r in [
            *language["period"]["values"],
            language["period"]["unknown"],
            language["period"]["other"],
        ]
    ]
    shoot(page.locator("#breakdown-resource_type"), "dashboard-breakdown.png")
    shoot(page.locator("#breakdown-subject"), "dashboard-breakdown-subject.png")


def test_records_toggle_and_scope_switch(site, open_page):
    _, api, metadata, sources = site
    page = open_page("/dashboard?range=all")
    page.select_option("#by", "records")
    page.wait_for_selector("#breakdown-resource_type[data-by=records][data-state=ready]")
    page.wait_for_selector(PANELS_DONE, state="attached")
    assert parse_qs(urlparse(page.url).query)["by"] == ["records"]
    fields = page.eval_on_selector_all(
        "#breakdowns .breakdown", "(s) => s.map((x) => x.dataset.field)"
    )
    assert fields == get(api, "/api/v1/breakdowns")["records"]
    answer = get(api, "/api/v1/records/global/breakdown/resource_type", limit=20, **SPAN)
    shown = bars(page, "resource_type")
    listed = [r for r in answer["values"] if r["value"] != ""]
    assert [(b["key"], b["value"]) for b in shown if b["kind"] == "named"] == [
        (r["value"], r["total"]) for r in listed
    ]
    # planted truth: records held by type
    by_type = dict(metadata.group_by("resource_type").len().fill_null("").iter_rows())
    assert {b["key"]: b["value"] for b in shown} == by_type
    assert sum(b["value"] for b in shown) == metadata.height
    # a national node and a repository: their own record figures, the toggle kept
    node = next(s for s in sources if s.type == "N")
    page = open_page("/dashboard/node/br?range=all&by=records")
    records = get(api, f"/api/v1/records/nodes/{node.site_id}", **SPAN)
    value = page.get_attribute("#record-figures .figure[data-record=total]", "data-value")
    assert int(value) == records["cumulative"]["total"] == metadata.height
    assert page.get_attribute("#breakdown-language", "data-by") == "records"
    source = sources[0]
    page = open_page(f"/dashboard/source/{source.source_key}?range=all")
    records = get(api, f"/api/v1/records/sources/{source.site_id}", **SPAN)
    own = metadata.filter(pl.col("source_key") == source.source_key).height
    value = page.get_attribute("#record-figures .figure[data-record=added]", "data-value")
    assert int(value) == records["period"]["added"] == own
    href = page.get_attribute("#breakdown-publisher a[data-format=xlsx]", "href")
    assert urlparse(href).path == f"/api/v1/sources/{source.site_id}/breakdown/publisher"


# --- most viewed and downloaded records ------------------------------------------------------


def test_most_viewed_and_downloaded_records_with_their_metadata(site, open_page):
    _, api, metadata, sources = site
    page = open_page("/dashboard?range=all")
    names = {s.source_key: s.name for s in sources}
    records = {r["item_key"]: r for r in metadata.iter_rows(named=True)}
    types = get(api, "/api/v1/breakdowns")["value_labels"]["resource_type"]
    for metric in ("views", "downloads"):
        answer = get(api, "/api/v1/global/breakdown/item", metric=metric, limit=10, **SPAN)
        rows = page.eval_on_selector_all(
            f"#top-{metric}-table tbody tr",
            """(rows) => rows.map((r) => ({key: r.querySelector('a').dataset.key,
                cells: [...r.children].map((c) => c.innerText)}))""",
        )
        assert len(rows) == 10
        for row, ranked in zip(rows, answer["period"]["values"], strict=True):
            record = records[ranked["value"]]
            kind = types.get(record["resource_type"] or "", "–")
            assert row["key"] == ranked["value"]
            assert row["cells"] == [
                str(ranked["rank"]),
                f"{record['title']}\n{ranked['value']}",
                kind[:1].upper() + kind[1:] if record["resource_type"] else "–",
                str(record["publication_year"]),
                names[record["source_key"]],
                f"{ranked[metric]:,}",
                pct(ranked["share"]),
            ]
    shoot(page.locator("#top-views-panel"), "dashboard-top-records.png")


# --- states and new fields -------------------------------------------------------------------


def test_empty_range_shows_empty_states(site, open_page):
    page = open_page("/dashboard?range=custom&start=2024-06-01&end=2024-06-30")
    assert page.get_attribute("#record-figures .figure[data-record=added]", "data-value") == "0"
    assert page.get_attribute("#record-figures .figure[data-record=total]", "data-value") == "0"
    assert page.is_visible("#records-empty")
    assert page.inner_text("#records-empty") == "No records harvested up to Jun 30, 2024."
    states = page.eval_on_selector_all(
        "#breakdowns .breakdown", "(s) => s.map((x) => x.dataset.state)"
    )
    assert states and set(states) == {"empty"}
    assert page.inner_text("#breakdown-language .empty") == (
        "No views between Jun 1, 2024 and Jun 30, 2024."
    )
    assert bars(page, "language") == []
    assert page.inner_text("#top-views-table tbody") == "No record was viewed in this range"


def test_a_field_the_api_adds_gets_its_panel(site, open_page):
    """The panels follow `/api/v1/breakdowns`: a field the pipeline starts counting (here a
    referrer, answered by a stand-in) appears without a change to the dashboard."""
    _, api, _, _ = site
    offered = get(api, "/api/v1/breakdowns")
    # the referrer (offered since the pipeline counts it) stands for a new field: last, once,
    # with no label of its own (the dashboard names it)
    offered["usage"] = [f for f in offered["usage"] if f != "referrer"] + ["referrer"]
    metrics = list(get(api, "/api/v1/global", **SPAN)["totals"])
    zero = dict.fromkeys(metrics, 0)

    def row(value, views, share):
        return {"rank": 1, "value": value} | zero | {"views": views, "share": share}

    referrers = {
        "period": {
            "whole": zero | {"views": 10},
            "values": [row("scholar.google.com", 6, 0.6), row("www.bing.com", 3, 0.3)],
            "unknown": row("", 1, 0.1) | {"rank": None},
            "other": row("(other)", 0, 0.0) | {"rank": None},
        },
        "multi_valued": False,
    }

    def fields(route):
        route.fulfill(json=offered)

    def referrer(route):
        route.fulfill(json=referrers)

    page = open_page(
        "/dashboard?range=all",
        routes=[
            ("**/api/v1/breakdowns", fields),
            ("**/api/v1/global/breakdown/referrer?*", referrer),
        ],
    )
    assert page.locator("#breakdown-referrer h2").inner_text() == "Referrer"
    assert [(b["label"], b["value"], b["share"]) for b in bars(page, "referrer")] == [
        ("scholar.google.com", 6, 0.6),
        ("www.bing.com", 3, 0.3),
        ("Not given", 1, 0.1),
    ]
    assert [b["kind"] for b in bars(page, "referrer")] == ["named", "named", "unknown"]
