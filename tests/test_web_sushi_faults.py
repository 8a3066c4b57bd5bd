"""SUSHI when what it reads is down, for real: a stats store that cannot be opened (a DuckDB
file that is not a database, an OpenSearch port nobody listens on, a DuckDB file corrupted while
the service runs) or an admin DB that cannot be reached (a missing SQLite file, PostgreSQL at a
closed port). Reports answer Exception 1000 with HTTP 503 (Table D.1), `/r51/status` says
Service_Active false with an alert, and an outage is never taken for a failed key."""

from __future__ import annotations

import datetime as dt
import json
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator, FormatChecker

from stores import opensearch_store
from usage_stats import DATA_DIR
from usage_stats.admin.db import upgrade
from usage_stats.admin.registry import DayStatus, record_processing
from usage_stats.admin.sushi import add_customer
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.opensearch import OpenSearchStatsStore
from usage_stats.web import create_app, sushi

SPEC = json.loads((DATA_DIR / "COUNTER_SUSHI_API_5.1_openapi3.1.json").read_text())
PATHS = ("/r51/reports/pr", "/r51/reports/ir", "/r51/reports", "/r51/members")


def closed_port() -> int:
    """A port nothing listens on: bound by us, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def validate_response(body, path: str, status: int) -> None:
    responses = SPEC["paths"][path]["get"]["responses"]
    assert str(status) in responses, f"{path} may not answer {status}"
    name = responses[str(status)]["$ref"].rsplit("/", 1)[1]
    schema = SPEC["components"]["responses"][name]["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**SPEC, **schema}, format_checker=FormatChecker())
    errors = list(validator.iter_errors(body))
    assert not errors, errors[0].message


def admin_db(tmp_path: Path) -> tuple[str, str]:
    """A working admin DB with one customer, processed through January 2026."""
    url = f"sqlite:///{tmp_path / 'admin.db'}"
    upgrade(url)
    now = dt.datetime.now(dt.UTC)
    days = [dt.date(2026, 1, d) for d in range(1, 32)]
    record_processing(url, [DayStatus(1, d, 0, 0, 0, {}, "test", now) for d in days])
    _, key = add_customer(url, "c1", "Customer One", [1])
    return url, key


def query(key: str) -> dict:
    return {"customer_id": "c1", "api_key": key, "begin_date": "2026-01", "end_date": "2026-01"}


def assert_inactive(client: TestClient, alert: str) -> None:
    response = client.get("/r51/status")
    assert response.status_code == 200
    validate_response(response.json(), "/r51/status", 200)
    [status] = response.json()
    assert status["Service_Active"] is False
    assert [a["Alert"] for a in status["Alerts"]] == [alert]


def assert_1000(response, path: str, data: str) -> None:
    assert response.status_code == 503, response.text
    validate_response(response.json(), path, 503)
    assert response.json() == {"Code": 1000, "Message": "Service Not Available", "Data": data}


@pytest.fixture(params=["duckdb", "opensearch"])
def dead_store(request, tmp_path):
    if request.param == "duckdb":
        path = tmp_path / "stats.duckdb"
        path.write_bytes(b"this is not a DuckDB database" * 200)
        return DuckDBStatsStore(path, lock_timeout_seconds=1)
    return OpenSearchStatsStore(
        f"http://127.0.0.1:{closed_port()}", max_retries=1, timeout_seconds=2
    )


def test_store_outage_is_exception_1000(dead_store, tmp_path):
    url, key = admin_db(tmp_path)
    client = TestClient(create_app(dead_store, url), raise_server_exceptions=False)
    assert_inactive(client, "The usage store cannot be reached.")
    for path in ("/r51/reports/pr", "/r51/reports/ir", "/r51/reports/ir_a1"):
        for fmt in ("json", "tsv"):
            response = client.get(path, params={**query(key), "format": fmt})
            assert_1000(response, path, "the usage store cannot be reached")
    # what needs only the admin DB still answers
    listed = client.get("/r51/reports", params={"customer_id": "c1", "api_key": key})
    assert listed.status_code == 200
    assert listed.json()[0]["Last_Month_Available"] == "2026-01"


def test_store_lost_while_serving(tmp_path):
    url, key = admin_db(tmp_path)
    path = tmp_path / "stats.duckdb"
    client = TestClient(
        create_app(DuckDBStatsStore(path, lock_timeout_seconds=1), url),
        raise_server_exceptions=False,
    )
    assert client.get("/r51/reports/pr", params=query(key)).status_code == 200
    assert client.get("/r51/status").json()[0]["Service_Active"] is True
    path.write_bytes(b"\0" * 4096)  # the file is gone bad under the running service
    assert_1000(
        client.get("/r51/reports/pr", params=query(key)),
        "/r51/reports/pr",
        "the usage store cannot be reached",
    )
    assert_inactive(client, "The usage store cannot be reached.")


@pytest.fixture(params=["missing sqlite file", "postgresql at a closed port"])
def dead_admin_db(request, tmp_path):
    if request.param == "missing sqlite file":
        return f"sqlite:///{tmp_path / 'nowhere' / 'admin.db'}"
    return f"postgresql+psycopg://usage_stats:usage_stats@127.0.0.1:{closed_port()}/usage_stats"


@pytest.fixture(params=["duckdb", "opensearch"])
def live_store(request, tmp_path):
    if request.param == "duckdb":
        yield DuckDBStatsStore(tmp_path / "stats.duckdb")
        return
    store = opensearch_store()
    yield store
    store.delete_all()


def test_admin_db_outage_is_exception_1000(live_store, dead_admin_db):
    limiter = sushi.FailedAuthLimiter(limit=2, window_seconds=600)
    client = TestClient(
        create_app(live_store, dead_admin_db, sushi_limiter=limiter),
        raise_server_exceptions=False,
    )
    assert_inactive(client, "The customer database cannot be reached.")
    for _ in range(3):  # more than the failed-key limit: an outage is not a failed key
        for path in PATHS:
            response = client.get(path, params=query("any-key"))
            assert_1000(response, path, "the customer database cannot be reached")


def test_both_down(tmp_path):
    path = tmp_path / "stats.duckdb"
    path.write_bytes(b"garbage" * 100)
    client = TestClient(
        create_app(DuckDBStatsStore(path), f"sqlite:///{tmp_path / 'none' / 'admin.db'}"),
        raise_server_exceptions=False,
    )
    [status] = client.get("/r51/status").json()
    assert status["Service_Active"] is False
    assert [a["Alert"] for a in status["Alerts"]] == [
        "The usage store cannot be reached.",
        "The customer database cannot be reached.",
    ]
    # authentication comes first, so it is the admin DB that is named
    assert_1000(
        client.get("/r51/reports/pr", params=query("k")),
        "/r51/reports/pr",
        "the customer database cannot be reached",
    )


def test_a_bug_is_a_counter_body_with_500(tmp_path, monkeypatch):
    """Not an outage: answered as Exception 1000 too (a harvester can read it), but with HTTP
    500, so that a bug never hides among outages."""
    url, key = admin_db(tmp_path)
    client = TestClient(
        create_app(DuckDBStatsStore(tmp_path / "s.duckdb"), url), raise_server_exceptions=False
    )

    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(sushi, "_entries", broken)
    response = client.get("/r51/reports/pr", params=query(key))
    assert response.status_code == 500
    assert response.json() == {
        "Code": 1000,
        "Message": "Service Not Available",
        "Data": "internal error",
    }


def test_failed_authentication_limit_from_the_environment():
    assert sushi.FailedAuthLimiter.from_env({}) == sushi.FailedAuthLimiter(10, 900.0)
    limiter = sushi.FailedAuthLimiter.from_env(
        {"USAGE_STATS_SUSHI_AUTH_FAILURES": "5", "USAGE_STATS_SUSHI_AUTH_WINDOW_SECONDS": "60"}
    )
    assert (limiter.limit, limiter.window_seconds) == (5, 60.0)
    off = sushi.FailedAuthLimiter.from_env({"USAGE_STATS_SUSHI_AUTH_FAILURES": "0"})
    for _ in range(100):
        off.record("client")
    assert off.retry_after("client") is None
    for bad in ("ten", "-1"):
        with pytest.raises(ValueError, match="USAGE_STATS_SUSHI_AUTH_FAILURES"):
            sushi.FailedAuthLimiter.from_env({"USAGE_STATS_SUSHI_AUTH_FAILURES": bad})


def test_failed_authentication_memory_is_bounded():
    clock = [0.0]
    limiter = sushi.FailedAuthLimiter(
        limit=2, window_seconds=10, max_clients=3, clock=lambda: clock[0]
    )
    for client in ("a", "b", "c", "d"):
        limiter.record(client)
        limiter.record(client)
    assert limiter.retry_after("a") is None  # forgotten: the least recently failing
    assert [limiter.retry_after(c) for c in ("b", "c", "d")] == [10, 10, 10]
    clock[0] = 10.0
    assert limiter.retry_after("d") is None
