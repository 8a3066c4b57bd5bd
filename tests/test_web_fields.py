"""`/api/v1/breakdowns` (the breakdown fields and value labels) and `/api/v1/items/metadata`
(what items are), on planted records."""

from __future__ import annotations

import metadata_support as md
import pytest
from breakdown_support import app_client, get
from test_record_stats import SOURCES

from usage_stats.pipeline.records import LIST_FIELDS, SUBCOUNT_FIELDS
from usage_stats.pipeline.usage_subcounts import USAGE_SUBCOUNT_FIELDS
from usage_stats.storage.duckdb_store import DuckDBStatsStore


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fields")
    store = DuckDBStatsStore(tmp / "stats.duckdb")
    store.record_item_metadata(
        md.frame(
            md.record(
                "oai:a:1",
                source_key=SOURCES[0].source_key,
                site_id=SOURCES[0].site_id,
                title="A thesis",
                resource_type=md.THESIS,
                access_rights=md.OPEN,
                publication_year=2019,
            ),
            md.record("oai:a:2", source_key="opendoar::unregistered", title=None),
        )
    )
    return app_client(store, tmp, SOURCES)


def test_breakdowns_lists_the_pipelines_fields_and_labels(client):
    body = get(client, "/api/v1/breakdowns")
    assert body["usage"] == list(USAGE_SUBCOUNT_FIELDS)
    assert body["records"] == list(SUBCOUNT_FIELDS)
    assert body["multi_valued"] == list(LIST_FIELDS)
    assert set(body["field_labels"]) == set(USAGE_SUBCOUNT_FIELDS) | set(SUBCOUNT_FIELDS)
    assert body["field_labels"]["resource_type"] == "Resource type"
    types, access = body["value_labels"]["resource_type"], body["value_labels"]["access_status"]
    assert types[md.ARTICLE] == "journal article"
    assert types[md.THESIS] == "thesis"
    assert access[md.OPEN] == "open access"
    assert len(access) == 4


def test_items_metadata_in_the_order_asked(client):
    body = get(client, "/api/v1/items/metadata", key=["oai:a:2", "oai:none", "oai:a:1"])
    assert body == {
        "items": [
            {
                "key": "oai:a:2",
                "title": None,
                "resource_type": None,
                "resource_type_label": None,
                "publication_year": None,
                "access_status": None,
                "source_key": "opendoar::unregistered",
                "source_name": None,
                "deleted": False,
            },
            {
                "key": "oai:a:1",
                "title": "A thesis",
                "resource_type": md.THESIS,
                "resource_type_label": "thesis",
                "publication_year": 2019,
                "access_status": md.OPEN,
                "source_key": SOURCES[0].source_key,
                "source_name": SOURCES[0].name,
                "deleted": False,
            },
        ],
        "unknown": ["oai:none"],
    }


@pytest.mark.parametrize("keys", [[], [f"oai:k:{i}" for i in range(101)], ["x" * 513]])
def test_items_metadata_wants_1_to_100_keys_of_at_most_512_bytes(client, keys):
    response = client.get("/api/v1/items/metadata", params={"key": keys})
    assert response.status_code == 400
    assert response.json()["error"]["parameter"] == "key"
