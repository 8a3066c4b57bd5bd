"""What the record-statistics and usage-breakdown API tests share: an app over a store and
an admin DB of given sources, JSON reads that must succeed, and CSV rows as text."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from fastapi.testclient import TestClient

from usage_stats.admin import db
from usage_stats.admin.registry import add_source
from usage_stats.admin.sources import Source
from usage_stats.web import create_app

NODE = Source(9, "node::cr", "Nodo CR", "N", "cr", None, 1)
PORTAL = Source(10, "portal::la", "Portal", "L", None, None, 1)


def app_client(store, tmp: Path, sources) -> TestClient:
    """The web app over `store`, with `sources` and the CR node and portal registered."""
    url = f"sqlite:///{tmp / 'admin.db'}"
    db.upgrade(url)
    for source in (*sources, NODE, PORTAL):
        add_source(url, source)
    return TestClient(create_app(store, url), raise_server_exceptions=False)


def get(client: TestClient, path: str, **params: str) -> dict:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def text_row(row: dict) -> dict:
    return {k: "" if v is None else str(v) for k, v in row.items()}
