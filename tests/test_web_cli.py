"""`usage-stats sushi add-customer` stores only a hash; `usage-stats serve` is wired up."""

from __future__ import annotations

import pytest

from usage_stats.admin import db
from usage_stats.admin.sushi import get_customer, hash_api_key, verify_api_key
from usage_stats.cli import build_parser, main


def test_add_customer_prints_the_key_once_and_stores_a_hash(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'admin.db'}"
    db.upgrade(url)
    monkeypatch.setenv("USAGE_STATS_ADMIN_DB_URL", url)
    code = main(
        [
            "sushi",
            "add-customer",
            "--customer-id",
            "c1",
            "--name",
            "Library",
            "--site-id",
            "1",
            "--site-id",
            "3",
            "--requestor-id",
            "r1",
        ]
    )
    assert code == 0
    api_key = capsys.readouterr().out.strip()
    customer = get_customer(url, "c1")
    assert customer.site_ids == (1, 3) and customer.requestor_id == "r1"
    assert api_key not in customer.api_key_hash
    assert verify_api_key(api_key, customer.api_key_hash)
    assert not verify_api_key(api_key + "x", customer.api_key_hash)
    assert (
        main(["sushi", "add-customer", "--customer-id", "c1", "--name", "Again", "--site-id", "1"])
        == 2
    )


def test_hashes_are_salted_and_malformed_hashes_never_verify():
    assert hash_api_key("k") != hash_api_key("k")
    assert not verify_api_key("k", "plain-text")


def test_serve_defaults_to_localhost():
    args = build_parser().parse_args(["serve"])
    assert args.command == "serve" and args.host is None and args.port is None


def test_serve_workers(tmp_path, monkeypatch):
    """One worker runs the app built here; several make uvicorn import the factory in each
    process (an app object cannot be shared between processes)."""
    import uvicorn

    from usage_stats.web import balancer

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    # several workers: connections handed out by the parent (`run_balanced`) unless told
    monkeypatch.setattr(
        balancer,
        "run_balanced",
        lambda config: calls.append(
            (
                "balanced",
                config.app,
                {
                    "factory": config.factory,
                    "workers": config.workers,
                    "port": config.port,
                    "timeout": config.timeout_worker_healthcheck,
                },
            )
        ),
    )
    monkeypatch.setenv("USAGE_STATS_DUCKDB_PATH", str(tmp_path / "stats.duckdb"))
    monkeypatch.setenv("USAGE_STATS_ADMIN_DB_URL", f"sqlite:///{tmp_path / 'admin.db'}")
    monkeypatch.setenv("USAGE_STATS_WEB_WORKERS", "3")
    assert main(["serve", "--workers", "2", "--port", "8123"]) == 0
    how, app, options = calls.pop()
    assert how == "balanced" and app == "usage_stats.web.app:app_from_env"
    assert options == {"factory": True, "workers": 2, "port": 8123, "timeout": 60}
    assert main(["serve"]) == 0 and calls.pop()[2]["workers"] == 3  # from the environment
    assert main(["serve", "--balance", "kernel", "--workers", "2", "--port", "8123"]) == 0
    app, options = calls.pop()
    assert app == "usage_stats.web.app:app_from_env" and options["factory"] is True
    assert options["workers"] == 2 and options["port"] == 8123
    monkeypatch.setenv("USAGE_STATS_WEB_BALANCE", "kernel")
    assert main(["serve"]) == 0 and calls.pop()[1]["workers"] == 3
    monkeypatch.setenv("USAGE_STATS_WEB_BALANCE", "fewest")
    with pytest.raises(ValueError, match="USAGE_STATS_WEB_BALANCE"):
        main(["serve"])
    monkeypatch.delenv("USAGE_STATS_WEB_BALANCE")
    monkeypatch.setenv("USAGE_STATS_WEB_WORKERS", "1")
    assert main(["serve"]) == 0
    app, options = calls.pop()
    assert not isinstance(app, str) and "workers" not in options
    assert main(["serve", "--workers", "0"]) == 2 and not calls


def test_app_from_env_reads_the_web_settings(tmp_path, monkeypatch):
    from usage_stats.web.app import app_from_env

    monkeypatch.setenv("USAGE_STATS_DUCKDB_PATH", str(tmp_path / "stats.duckdb"))
    monkeypatch.setenv("USAGE_STATS_ADMIN_DB_URL", f"sqlite:///{tmp_path / 'admin.db'}")
    monkeypatch.setenv("USAGE_STATS_WEB_CACHE_SECONDS", "7")
    monkeypatch.setenv("USAGE_STATS_RATE_LIMIT_API", "")
    monkeypatch.setenv("USAGE_STATS_SUSHI_ITEMS_KEPT", "250")
    app = app_from_env()
    assert app.state.response_cache.ttl_seconds == 7
    assert app.state.ctx.reported_items.max_keys == 250
    middleware = [m.cls.__name__ for m in app.user_middleware]
    assert "RateLimitMiddleware" in middleware  # widgets and SUSHI still limited
    assert app.state.ctx.store.shared_reads


def test_the_served_app_settles_the_heap_when_it_starts(tmp_path, monkeypatch):
    """`usage-stats serve`'s app freezes the startup heap and raises the young generation's
    threshold (web/heap.py) when it starts, not when it is built; an app built for a test or
    a bench leaves the process's collector alone."""
    import gc

    from fastapi.testclient import TestClient

    from usage_stats.web import heap
    from usage_stats.web.app import app_from_env

    monkeypatch.setenv("USAGE_STATS_DUCKDB_PATH", str(tmp_path / "stats.duckdb"))
    monkeypatch.setenv("USAGE_STATS_ADMIN_DB_URL", f"sqlite:///{tmp_path / 'admin.db'}")
    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        served = app_from_env()
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == threshold
        with TestClient(served):
            assert gc.get_freeze_count() > 0
            assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, *threshold[1:])
        gc.unfreeze()
        gc.set_threshold(*threshold)
        from usage_stats.storage.duckdb_store import DuckDBStatsStore
        from usage_stats.web.app import create_app

        store = DuckDBStatsStore(tmp_path / "other.duckdb")
        with TestClient(create_app(store, f"sqlite:///{tmp_path / 'admin.db'}")):
            assert gc.get_freeze_count() == 0 and gc.get_threshold() == threshold
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
