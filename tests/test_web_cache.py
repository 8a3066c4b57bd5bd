"""The response cache (web/cache.py) on both stores: a widget never serves the numbers of
before a run once the run has written (the run writing from another store object, as a
Dagster run writes from another process), revalidation with ETag / Last-Modified (304),
gzip, Cache-Control, and which answers are kept."""

from __future__ import annotations

import datetime as dt
import email.utils
import time

import polars as pl
import pytest
from fastapi.testclient import TestClient

from stores import opensearch_store
from usage_stats.admin import db
from usage_stats.admin.registry import add_source
from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.opensearch.store import OpenSearchStatsStore
from usage_stats.web import create_app
from usage_stats.web.cache import normalised_query
from usage_stats.web.common import today

ITEM = "oai:repo1.example.org:42"
DAY1, DAY2 = dt.date(2026, 1, 5), dt.date(2026, 1, 6)
WIDGET = {"identifier": ITEM, "start_date": "2026-01-01", "end_date": "2026-01-31"}


def day_rows(day: dt.date, views: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One item's views on its repository (site 1) that day, and the global rollup."""
    base = {m: 0 for m in METRICS}
    rows = [
        {"date": day, "scope": scope, "key": key, "site_id": site, "level": "R",
         "owner_site_id": site, "country": "BR", **base, "views": views,
         "total_item_investigations": views, "unique_item_investigations": views}
        for scope, key, site in (("item", ITEM, 1), ("source", "1", 1), ("site", "1", 1),
                                 ("global", "global", None))
    ]  # fmt: skip
    deltas = pl.DataFrame(rows, schema=DELTA_SCHEMA)
    return deltas, deltas.filter(pl.col("scope") == "global")


def admin_db(tmp_path) -> str:
    from usage_stats.admin.sources import Source

    url = f"sqlite:///{tmp_path / 'admin.sqlite'}"
    db.upgrade(url)
    add_source(url, Source(1, "opendoar::1001", "Repo 1", "R", "BR", "oai:repo1.example.org:", 1))
    return url


@pytest.fixture(params=["duckdb", "opensearch"])
def stores(request, tmp_path):
    """(the store the app reads, a second object over the same data that writes, as a run)"""
    if request.param == "duckdb":
        path = tmp_path / "stats.duckdb"
        yield DuckDBStatsStore(path), DuckDBStatsStore(path)
        return
    reader = opensearch_store()
    writer = OpenSearchStatsStore(
        reader.url, prefix=reader.prefix, compat_prefix=reader.compat_prefix
    )
    try:
        yield reader, writer
    finally:
        reader.delete_all()


def views(client: TestClient, **extra) -> int:
    response = client.get("/report/itemWidget", params={**WIDGET, **extra})
    assert response.status_code == 200, response.text
    return response.json()["views"]["value"]


def test_a_run_that_writes_a_day_invalidates_cached_answers(stores, tmp_path):
    reader, writer = stores
    writer.replace_day(DAY1, *day_rows(DAY1, 3))
    app = create_app(reader, admin_db(tmp_path), response_cache_seconds=3600)
    client = TestClient(app)
    cache = app.state.response_cache
    assert views(client) == 3
    hits = cache.hits
    assert views(client) == 3
    assert cache.hits == hits + 1  # the second answer came from the cache

    writer.replace_day(DAY2, *day_rows(DAY2, 5))  # today's run, from another store object
    time.sleep(getattr(reader, "version_check_seconds", 0.0) + 0.1)
    assert views(client) == 8
    writer.replace_day(DAY2, *day_rows(DAY2, 1))  # the day re-run
    time.sleep(getattr(reader, "version_check_seconds", 0.0) + 0.1)
    assert views(client) == 4


@pytest.fixture
def duckdb_client(tmp_path):
    store = DuckDBStatsStore(tmp_path / "stats.duckdb")
    store.replace_day(DAY1, *day_rows(DAY1, 3))
    app = create_app(
        store, admin_db(tmp_path), response_cache_seconds=3600, browser_cache_seconds=120
    )
    return TestClient(app), store, app.state.response_cache


def test_etag_revalidation_is_304_until_the_data_changes(duckdb_client):
    client, store, _ = duckdb_client
    first = client.get("/report/itemWidget", params=WIDGET)
    etag = first.headers["etag"]
    assert etag.startswith('"') and first.headers["cache-control"] == "public, max-age=120"
    again = client.get("/report/itemWidget", params=WIDGET, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    weak = client.get("/report/itemWidget", params=WIDGET, headers={"If-None-Match": "W/" + etag})
    assert weak.status_code == 304
    other = client.get("/report/itemWidget", params=WIDGET, headers={"If-None-Match": '"x"'})
    assert other.status_code == 200 and other.json() == first.json()

    store.replace_day(DAY2, *day_rows(DAY2, 5))
    changed = client.get("/report/itemWidget", params=WIDGET, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["views"]["value"] == 8 and changed.headers["etag"] != etag


def test_last_modified_revalidation(duckdb_client):
    client, _, _ = duckdb_client
    first = client.get("/report/itemWidget", params=WIDGET)
    modified = email.utils.parsedate_to_datetime(first.headers["last-modified"])
    later = email.utils.format_datetime(modified + dt.timedelta(seconds=5), usegmt=True)
    same = first.headers["last-modified"]
    assert (
        client.get(
            "/report/itemWidget", params=WIDGET, headers={"If-Modified-Since": later}
        ).status_code
        == 304
    )
    # the same second is not proof: an answer recomputed in it may differ (ETag decides)
    assert (
        client.get(
            "/report/itemWidget", params=WIDGET, headers={"If-Modified-Since": same}
        ).status_code
        == 200
    )
    bad = client.get("/report/itemWidget", params=WIDGET, headers={"If-Modified-Since": "soon"})
    assert bad.status_code == 200


def test_gzip_for_clients_that_accept_it(duckdb_client):
    client, store, _ = duckdb_client
    for day in range(10, 20):  # a bucket per day with usage: a body worth compressing
        store.replace_day(dt.date(2026, 1, day), *day_rows(dt.date(2026, 1, day), 1))
    params = {**WIDGET, "interval": "day"}
    plain = client.get("/report/itemWidget", params=params, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    zipped = client.get("/report/itemWidget", params=params, headers={"Accept-Encoding": "gzip"})
    assert len(plain.content) >= 1000, "the body is meant to be large enough to compress"
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(plain.content)
    assert zipped.json() == plain.json()  # decoded by the client
    assert "Accept-Encoding" in zipped.headers["vary"]


def test_the_query_is_normalised_and_only_successes_are_kept(duckdb_client):
    client, _, cache = duckdb_client
    views(client)
    hits = cache.hits
    reordered = dict(reversed(list(WIDGET.items())))
    assert client.get("/report/itemWidget", params=reordered).status_code == 200
    assert cache.hits == hits + 1
    entries = len(cache)
    assert (
        client.get("/report/itemWidget", params={"identifier": ITEM, "end_date": "x"}).status_code
        == 400
    )
    assert (
        client.get("/report/itemWidget", params={"identifier": ITEM, "end_date": "x"}).status_code
        == 400
    )
    assert len(cache) == entries  # refusals are not kept
    # SUSHI (authenticated) and the pages are never cached nor marked cacheable
    assert "etag" not in client.get("/r51/status").headers
    assert client.get("/health").headers.get("cache-control") is None


def test_today_is_part_of_the_key(duckdb_client, monkeypatch):
    """Date math (`now-1y`) moves with the day: yesterday's answer to it is not today's."""
    client, _, cache = duckdb_client
    params = {"identifier": ITEM, "start_date": "now-1y"}
    client.get("/report/itemWidget", params=params)
    entries = len(cache)
    tomorrow = today() + dt.timedelta(days=1)
    monkeypatch.setattr("usage_stats.web.cache.today", lambda: tomorrow)
    client.get("/report/itemWidget", params=params)
    assert len(cache) == entries + 1


def test_normalised_query():
    assert normalised_query(b"b=2&a=1&a=0&c=%20x+y") == (
        ("a", "1"),
        ("a", "0"),
        ("b", "2"),
        ("c", " x y"),
    )
    assert normalised_query(b"") == ()


def test_answers_are_kept_per_format_asked(duckdb_client):
    """The API's exports choose CSV by `Accept`: a cached JSON answer is not a CSV one."""
    client, _, _ = duckdb_client
    params = {"identifier": ITEM, "start": "2026-01-01", "end": "2026-01-31"}
    as_json = client.get("/api/v1/items", params=params)
    as_csv = client.get("/api/v1/items", params=params, headers={"Accept": "text/csv"})
    again = client.get("/api/v1/items", params=params)
    assert as_json.status_code == as_csv.status_code == 200, as_csv.text
    assert as_json.headers["content-type"].startswith("application/json")
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert again.headers["content-type"].startswith("application/json")
    assert "Accept" in as_csv.headers["vary"]


def test_every_worker_drops_its_answers_when_a_run_writes(tmp_path):
    """`serve --workers N`: each worker has its own cache and its own shared read
    connection (as `app_from_settings` builds them); the run writes from a store object of
    its own. Every worker, having cached the day before, answers with the new day at once."""
    path = tmp_path / "stats.duckdb"
    run = DuckDBStatsStore(path)
    run.replace_day(DAY1, *day_rows(DAY1, 3))
    url = admin_db(tmp_path)
    workers = [
        create_app(DuckDBStatsStore(path, shared_reads=True), url, response_cache_seconds=3600)
        for _ in range(2)
    ]
    clients = [TestClient(app) for app in workers]
    for client, app in zip(clients, workers, strict=True):
        assert views(client) == 3
        hits = app.state.response_cache.hits
        assert views(client) == 3
        assert app.state.response_cache.hits == hits + 1  # each worker serves it cached
    run.replace_day(DAY2, *day_rows(DAY2, 5))  # waits for the workers' readers to let go
    assert [views(client) for client in clients] == [8, 8]
    run.replace_day(DAY2, *day_rows(DAY2, 1))  # the day re-run
    assert [views(client) for client in clients] == [4, 4]
    assert [views(client, interval="day") for client in clients] == [4, 4]


def test_concurrent_misses_of_one_answer_are_computed_once():
    """A popular item asked by many clients at once (a worker's first seconds, or right after
    a run's write) is computed once; the others get that answer. An answer that is not kept
    (an error) is computed by each request; a waiter that goes away cancels nothing, and when
    the request computing goes away, one of its waiters computes instead."""
    import asyncio
    from collections import Counter

    import httpx

    from usage_stats.web.cache import CachingMiddleware, ResponseCache

    calls: Counter = Counter()

    async def endpoint(scope, receive, send) -> None:
        asked = (scope["path"], scope["query_string"])
        calls[asked] += 1
        await asyncio.sleep(0.05)
        status = 404 if scope["path"].endswith("missing") else 200
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"n": %d}' % calls[asked]})

    middleware = CachingMiddleware(endpoint, ResponseCache(lambda: 1, ttl_seconds=60))

    async def run() -> tuple[list, list, list]:
        transport = httpx.ASGITransport(middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            def ask(path: str):
                return client.get(path)

            a = [ask("/report/itemWidget?identifier=a") for _ in range(8)]
            b = [ask("/report/itemWidget?identifier=b") for _ in range(3)]
            gone = asyncio.ensure_future(ask("/report/itemWidget?identifier=c"))
            waiting = [ask("/report/itemWidget?identifier=c") for _ in range(2)]
            missing = [ask("/report/missing") for _ in range(4)]
            together = asyncio.gather(*a, *b, *waiting, *missing)
            await asyncio.sleep(0.01)  # every one started, a's first computing
            impatient = asyncio.ensure_future(ask("/report/itemWidget?identifier=a"))
            await asyncio.sleep(0.01)
            gone.cancel()
            impatient.cancel()
            answers = await together
        return answers[:11], answers[11:13], answers[13:]

    found, after_cancel, missing = asyncio.run(run())
    assert [r.status_code for r in found] == [200] * 11
    assert [r.json() for r in found] == [{"n": 1}] * 11
    assert calls[("/report/itemWidget", b"identifier=a")] == 1
    assert calls[("/report/itemWidget", b"identifier=b")] == 1
    assert [r.json() for r in after_cancel] == [{"n": 2}] * 2  # one took over, once
    assert calls[("/report/itemWidget", b"identifier=c")] == 2
    assert [r.status_code for r in missing] == [404] * 4
    assert calls[("/report/missing", b"")] == 4
    assert middleware.computed == 1 + 1 + 2 + 4
