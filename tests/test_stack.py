"""`scripts/stack.sh`: the production topology on one machine, up, one run, down.

The stack comes up from deploy/ on the test servers (PostgreSQL, Redis, OpenSearch, MinIO) with
databases, bucket, index prefix and ports of its own; a run of the usage pipeline for one
generated day, launched through the webserver's GraphQL, goes through the run queue and the
Celery workers into OpenSearch (exactly the planted numbers) and the warehouse in S3; the web
services then answer for that day; `down` stops every process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from sqlalchemy.engine import make_url
from test_opensearch import stored_deltas

from conftest import DAYS, generate, register_sources
from stores import POSTGRES_URL, opensearch_available, s3_available, s3_client
from support import item_metrics, manifest_items
from test_e2e_dagster_dev import free_port
from usage_stats.settings import Settings
from usage_stats.storage.opensearch import OpenSearchStatsStore

pytestmark = [pytest.mark.production, pytest.mark.e2e]

STACK = Path(__file__).resolve().parents[1] / "scripts" / "stack.sh"
REDIS_URL = os.environ.get("USAGE_STATS_TEST_REDIS_URL")
DAY = DAYS[0]

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on Error { message }
  }
}
"""
RUN_STATUS = """
query Run($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }
"""
REPOSITORY = """
query { workspaceOrError { ... on Workspace { locationEntries {
  locationOrLoadError { ... on RepositoryLocation { name repositories { name } } } } } } }
"""


def stack(env: dict[str, str], command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(STACK), command], env=env, capture_output=True, text=True, timeout=timeout
    )


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    answer = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    answer.raise_for_status()
    body = answer.json()
    assert "errors" not in body, body
    return body["data"]


def drop_database(url: str) -> None:
    parsed = make_url(url)
    server = parsed.set(drivername="postgresql", database="postgres")
    with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


def test_stack_up_runs_the_pipeline_on_celery_workers_into_opensearch_and_s3(tmp_path):
    for reason in (opensearch_available(), s3_available()):
        if reason:
            pytest.skip(reason)
    if not REDIS_URL:
        pytest.skip("service Redis: USAGE_STATS_TEST_REDIS_URL not set (scripts/services.sh env)")
    data = generate(tmp_path / "data", kind="s3")  # the lake in a fresh bucket of MinIO
    name = f"st{uuid.uuid4().hex[:8]}"
    pg = make_url(POSTGRES_URL)
    admin_url = pg.set(database=f"{name}_admin").render_as_string(hide_password=False)
    dagster_url = pg.set(
        drivername="postgresql+psycopg2", database=f"{name}_dagster"
    ).render_as_string(hide_password=False)
    web_port, webserver_port = free_port(), free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("USAGE_STATS_STACK", "DAGSTER_"))
    } | {
        "USAGE_STATS_STACK_DIR": str(tmp_path / "stack"),
        "USAGE_STATS_STACK_NAME": name,
        "USAGE_STATS_STACK_BIN": str(Path(sys.executable).parent),
        "USAGE_STATS_STACK_WEBSERVER_PORT": str(webserver_port),
        "USAGE_STATS_WEB_PORT": str(web_port),
        "USAGE_STATS_CODE_SERVER_PORT": str(free_port()),
        "USAGE_STATS_ADMIN_DB_URL": admin_url,
        "USAGE_STATS_DAGSTER_POSTGRES_URL": dagster_url,
        "USAGE_STATS_LAKE_URL": data.settings.lake_url,
        "USAGE_STATS_WAREHOUSE_URL": data.settings.warehouse_url,
        "USAGE_STATS_START_DATE": DAYS[0],
        "USAGE_STATS_END_DATE": DAYS[-1],
        "USAGE_STATS_DEQUEUE_INTERVAL_SECONDS": "1",
    }
    store = OpenSearchStatsStore(
        os.environ.get("USAGE_STATS_OPENSEARCH_URL", "http://127.0.0.1:9200"),
        prefix=name,
        compat_prefix=f"{name}-compat",
    )
    logs = tmp_path / "stack" / "logs"
    try:
        up = stack(env, "up")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert f"open http://127.0.0.1:{webserver_port}" in up.stdout.lower()
        assert stack(env, "status").returncode == 0
        # The sources, into the stack's admin DB (created and migrated by `up`).
        register_sources(
            Settings.from_env(
                {
                    "USAGE_STATS_ADMIN_DB_URL": admin_url,
                    "USAGE_STATS_SOURCES_FILE": data.settings.sources_file,
                }
            )
        )

        webserver = f"http://127.0.0.1:{webserver_port}"
        entries = graphql(webserver, REPOSITORY)["workspaceOrError"]["locationEntries"]
        location = entries[0]["locationOrLoadError"]
        launched = graphql(
            webserver,
            LAUNCH_RUN,
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": location["name"],
                        "repositoryName": location["repositories"][0]["name"],
                        "jobName": "usage_pipeline",
                    },
                    "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DAY}]},
                }
            },
        )["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline = time.monotonic() + 900
        while True:
            status = graphql(webserver, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            assert time.monotonic() < deadline, f"run {run_id} still {status}"
            time.sleep(3)
        assert status == "SUCCESS", "\n".join(
            (logs / f"{p}.log").read_text()[-2000:] for p in ("worker1", "worker2", "daemon")
        )

        # The steps ran as Celery tasks on the stack's workers, the store's writer among them.
        steps = {
            step
            for n in (1, 2)
            for step in re.findall(
                r'"text": "(\w+)"\}, "label": "step_keys"', (logs / f"worker{n}.log").read_text()
            )
        }
        assert {"raw_events", "stats_index"} <= steps, steps
        # OpenSearch holds exactly the planted numbers of the day; the warehouse is in S3.
        assert item_metrics(stored_deltas(store, DAY)) == manifest_items(data.manifest, [DAY])
        bucket, prefix = data.settings.warehouse_url[5:].split("/", 1)
        objects = s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        assert objects.get("KeyCount", 0) > 0
        # The web services read the stack's store.
        health = requests.get(f"http://127.0.0.1:{web_port}/health", timeout=30).json()
        assert health["stats_store"]["last_day"] == DAY
    finally:
        down = stack(env, "down", timeout=300)
        status = stack(env, "status")
        store.delete_all()
        for url in (admin_url, dagster_url):
            drop_database(url)
    assert down.returncode == 0, down.stderr
    assert status.returncode == 3, status.stdout
