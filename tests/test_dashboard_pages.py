"""The dashboard's pages without a browser: every asset they load is local and present, and
a checkout whose assets were never built says how to build them instead of half-loading."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.web import create_app, dashboard


def app(tmp_path: Path) -> TestClient:
    store = DuckDBStatsStore(tmp_path / "stats.duckdb")
    return TestClient(create_app(store, f"sqlite:///{tmp_path / 'admin.db'}"))


def test_every_asset_the_pages_load_is_served_from_this_origin(tmp_path):
    client = app(tmp_path)
    for page in ("/dashboard", "/dashboard/node/cr", "/dashboard/source/x", "/widget/item"):
        response = client.get(page)
        assert response.status_code == 200, page
        references = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        local = [r for r in references if r.startswith("/static/")]
        assert local and set(references) - set(local) <= {"#figures", "/docs"}, references
        for ref in local:
            assert client.get(ref).status_code == 200, ref
    scripts = [p for p in dashboard.STATIC.glob("*.js")]
    for script in scripts:
        imports = re.findall(r'from "([^"]+)"', script.read_text())
        assert all(i.startswith("./") for i in imports), (script, imports)
        for url in re.findall(r'"(https?://[^"]+)"', script.read_text()):
            assert url == "http://www.w3.org/2000/svg", (script, url)  # a namespace, not a fetch


def test_unbuilt_assets_are_a_503_that_says_how_to_build_them(tmp_path, monkeypatch):
    monkeypatch.setattr(dashboard, "VENDOR", tmp_path / "vendor")
    response = app(tmp_path).get("/dashboard")
    assert response.status_code == 503
    assert "missing static/vendor/chart.umd.min.js" in response.text
    assert "make assets" in response.text


def test_home_leads_to_the_dashboard(tmp_path):
    response = app(tmp_path).get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/dashboard"
