"""/docs in a real browser (headless Chromium): Swagger UI renders the API's operations from
the application's own files, under its Content-Security-Policy, without asking any other
origin (issue 16)."""

from __future__ import annotations

import os

import pytest
from browser_support import CHROMIUM, chromium, serving

from usage_stats.admin import db
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.web import create_app

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"service chromium: no browser at {CHROMIUM} (scripts/browser.sh installs it)",
)


def test_docs_render_from_this_origin_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'admin.sqlite'}"
    db.upgrade(url)
    app = create_app(DuckDBStatsStore(tmp_path / "stats.duckdb"), url)
    with serving(app) as base, chromium() as browser:
        page = browser.new_page()
        console: list[str] = []
        requested: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("request", lambda r: requested.append(r.url))
        page.goto(f"{base}/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        assert page.locator(".opblock").count() >= 20  # the API's operations
        assert not [m for m in console if m.startswith("error")], console
        foreign = [r for r in requested if not r.startswith((base, "data:"))]
        assert not foreign, foreign
