"""Abuse resistance (web/protection.py, sushi.KeyChecker): per-client rate limits and their
429 answers (the API's error body, SUSHI's Exception 1020), security headers on every
response, and API key checks that cost the same for unknown and known customers and are
bounded per second."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from usage_stats.admin import db
from usage_stats.admin.registry import add_source
from usage_stats.admin.sources import Source
from usage_stats.admin.sushi import add_customer
from usage_stats.settings import Settings
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.web import create_app, protection, sushi

WIDGET = "/report/repositoryWidget?source_id=opendoar::1001"


@pytest.fixture(scope="module")
def admin(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('admin') / 'admin.sqlite'}"
    db.upgrade(url)
    add_source(url, Source(1, "opendoar::1001", "Repo 1", "R", "BR", "oai:repo1.example.org:", 1))
    _, key = add_customer(url, "cust-1", "Library One", [1])
    return url, key


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return DuckDBStatsStore(tmp_path_factory.mktemp("duckdb") / "stats.duckdb")


def limited_app(store, url, **kwargs):
    limiter = protection.RateLimiter(protection.rules("3/minute", "2/minute", "2/minute"))
    return create_app(store, url, rate_limits=limiter, **kwargs)


def test_widget_and_api_limits_answer_429_with_retry_after(store, admin):
    url, _ = admin
    client = TestClient(limited_app(store, url))
    for _ in range(3):
        assert client.get(WIDGET).status_code == 200
    refused = client.get(WIDGET)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["status"] == 429 and "retry after" in error["message"]
    assert refused.headers["x-content-type-options"] == "nosniff"
    # the API counts separately, with its own limit
    assert client.get("/api/v1/sources").status_code == 200
    assert client.get("/api/v1/sources").status_code == 200
    assert client.get("/api/v1/sources").status_code == 429
    # another client address is not affected; paths outside the families are not limited
    other = TestClient(client.app, client=("203.0.113.9", 5000))
    assert other.get(WIDGET).status_code == 200
    for _ in range(5):
        assert client.get("/health").status_code == 200


def test_sushi_limit_is_exception_1020(store, admin):
    url, key = admin
    client = TestClient(limited_app(store, url))
    params = {"customer_id": "cust-1", "api_key": key}
    assert client.get("/r51/members", params=params).status_code == 200
    assert client.get("/r51/status").status_code == 200
    refused = client.get("/r51/members", params=params)
    assert refused.status_code == 429
    assert refused.json()["Code"] == 1020
    assert refused.json()["Message"] == sushi.MESSAGES[1020]
    assert int(refused.headers["retry-after"]) >= 1


def test_limit_settings_are_checked():
    assert protection.rules("", "0", None) == []
    assert [r.name for r in protection.rules("10/second", "", "5 per minute")] == [
        "widgets",
        "sushi",
    ]
    with pytest.raises(ValueError, match="USAGE_STATS_RATE_LIMIT_API"):
        protection.rules("", "lots", "")
    settings = Settings.from_env({"USAGE_STATS_RATE_LIMIT_WIDGETS": "5/second"})
    assert settings.rate_limit_widgets == "5/second" and settings.rate_limit_sushi == "60/minute"
    with pytest.raises(ValueError, match="USAGE_STATS_WEB_CACHE_SECONDS"):
        Settings.from_env({"USAGE_STATS_WEB_CACHE_SECONDS": "-1"})
    with pytest.raises(ValueError, match="USAGE_STATS_SUSHI_ITEMS_KEPT"):
        Settings.from_env({"USAGE_STATS_SUSHI_ITEMS_KEPT": "-5"})


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        WIDGET,
        "/report/itemWidget?identifier=",  # 400
        "/nowhere",  # 404
        "/api/v1/sources",
        "/r51/status",
        "/r51/members",  # SUSHI refusal
        "/openapi.json",
        "/docs",
        "/widget/item",
        "/dashboard",
    ],
)
def test_security_headers_on_every_response(store, admin, path):
    client = TestClient(create_app(store, admin[0]))
    response = client.get(path)
    assert response.status_code != 500
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = response.headers["content-security-policy"]
    if path in ("/widget/item", "/dashboard") and response.status_code == 200:
        assert "script-src 'self'" in policy  # the pages keep their own
        assert ("frame-ancestors *" in policy) == (path == "/widget/item")
    elif path != "/docs":
        assert policy == "default-src 'none'; frame-ancestors 'none'"


def test_docs_load_their_assets_from_the_application(store, admin):
    client = TestClient(create_app(store, admin[0]))
    page = client.get("/docs")
    assert page.status_code == 200, "run scripts/build_assets.sh (make assets)"
    assert "script-src 'self';" in page.headers["content-security-policy"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/static/") for s in sources)
    for source in sources:
        assert client.get(source).status_code == 200, source
    assert client.get("/openapi.json").json()["info"]["title"] == "usage-stats"
    assert client.get("/redoc").status_code == 404


# --- API keys ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hashed(monkeypatch):
    """Every scrypt verification the key checker makes: (key, stored hash)."""
    calls: list[tuple[str, str]] = []
    real = sushi.verify_api_key

    def spy(api_key: str, stored: str) -> bool:
        calls.append((api_key, stored))
        return real(api_key, stored)

    monkeypatch.setattr(sushi, "verify_api_key", spy)
    return calls


def test_unknown_and_known_customers_cost_the_same_hash(store, admin, hashed):
    url, key = admin
    client = TestClient(create_app(store, url, sushi_key_checker=sushi.KeyChecker(per_second=100)))
    unknown = client.get("/r51/members", params={"customer_id": "nobody", "api_key": "guess"})
    assert unknown.status_code == 403 and unknown.json()["Code"] == 2010
    assert hashed == [("guess", sushi.DUMMY_HASH)]
    wrong = client.get("/r51/members", params={"customer_id": "cust-1", "api_key": "guess"})
    assert wrong.status_code == 401 and wrong.json()["Code"] == 2020
    assert len(hashed) == 2 and hashed[1][1] != sushi.DUMMY_HASH


def test_a_passed_key_is_remembered_not_rehashed(store, admin, hashed):
    url, key = admin
    client = TestClient(create_app(store, url, sushi_key_checker=sushi.KeyChecker(per_second=100)))
    params = {"customer_id": "cust-1", "api_key": key}
    assert client.get("/r51/members", params=params).status_code == 200
    assert client.get("/r51/members", params=params).status_code == 200
    assert len(hashed) == 1
    # a wrong key is hashed every time (nothing remembered can make it pass)
    bad = {"customer_id": "cust-1", "api_key": key + "x"}
    assert client.get("/r51/members", params=bad).status_code == 401
    assert client.get("/r51/members", params=bad).status_code == 401
    assert len(hashed) == 3


def test_key_checks_per_second_are_bounded(store, admin, hashed):
    url, _ = admin
    clock = Clock()
    checker = sushi.KeyChecker(per_second=1, burst=2, wait_seconds=0, clock=clock)
    client = TestClient(create_app(store, url, sushi_key_checker=checker))
    codes = [
        client.get("/r51/members", params={"customer_id": f"c{i}", "api_key": "k"}).json()["Code"]
        for i in range(4)
    ]
    assert codes == [2010, 2010, 1020, 1020]
    assert len(hashed) == 2  # the refused ones cost no hash
    busy = client.get("/r51/members", params={"customer_id": "c", "api_key": "k"})
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    clock.now += 1.0  # one more check a second
    assert (
        client.get("/r51/members", params={"customer_id": "c", "api_key": "k"}).json()["Code"]
        == 2010
    )


def test_key_check_setting():
    assert sushi.KeyChecker.from_env({}).per_second == 5.0
    assert sushi.KeyChecker.from_env({"USAGE_STATS_SUSHI_KEY_CHECKS_PER_SECOND": "2"}).burst == 2
    for bad in ("0", "x", "-1"):
        with pytest.raises(ValueError, match="KEY_CHECKS_PER_SECOND"):
            sushi.KeyChecker.from_env({"USAGE_STATS_SUSHI_KEY_CHECKS_PER_SECOND": bad})
