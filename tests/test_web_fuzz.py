"""Schema-driven fuzzing of the app's own OpenAPI (schemathesis): whatever the parameters,
no server error. Bounded examples per operation keep it well under a minute per store."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from web_support import web_client

web = pytest.fixture(scope="module", params=["duckdb", "opensearch"])(web_client)
EXAMPLES = 25


def test_no_server_errors_on_any_operation(web):
    client, _ = web
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    checked = 0
    paths = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        paths.add(operation.path)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            response = case.call()
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.query}: {response.status_code} "
                f"{response.text[:300]}"
            )
            if response.status_code >= 400:
                body = response.json()
                assert "error" in body or "Code" in body, body

        run()
        checked += 1
    assert checked >= 15
    # Record statistics, usage breakdowns and cumulative series are fuzzed too (path
    # parameters included).
    assert {
        "/api/v1/records/global/breakdown/{field}",
        "/api/v1/records/nodes/{site_id}/breakdown/{field}",
        "/api/v1/global/cumulative",
        "/api/v1/items/cumulative",
        "/api/v1/global/breakdown/{field}",
        "/api/v1/sources/{site_id}/breakdown/{field}",
        "/api/v1/nodes/{site_id}/breakdown/{field}",
        "/api/v1/global/visitors",
        "/api/v1/sources/{site_id}/visitors",
        "/api/v1/nodes/{site_id}/visitors",
        "/api/v1/sources/{site_id}/spikes",
    } <= paths
