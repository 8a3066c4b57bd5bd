"""End to end: `dagster dev` on synthetic data, a backfill launched through GraphQL.

Starts the real webserver + daemon + code server in its own process group, launches a
partition backfill of the whole usage pipeline over three days, waits for it, then checks the
DuckDB stats store against the synthetic manifest (the exact expected item-level deltas).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psutil
import pytest
import requests

from conftest import register_sources
from usage_stats.demo.synthetic import SyntheticConfig, write_synthetic
from usage_stats.pipeline.metrics import METRICS
from usage_stats.settings import Settings
from usage_stats.storage.duckdb_store import DuckDBStatsStore

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).parent / "dagster"
START = dt.date(2026, 1, 1)
DAYS = [START + dt.timedelta(days=i) for i in range(3)]
PARTITION_KEYS = [d.isoformat() for d in DAYS]
JOB_NAME = "usage_pipeline"
EXPECTED_ASSETS = {
    "raw_events",
    "sessions",
    "rejected_events",
    "distributed_robot_audit",
    "item_titles",
    "item_daily_deltas",
    "usage_snapshots",
    "stats_index",
    "usage_spikes",
}

STARTUP_TIMEOUT = 120.0  # webserver answering + code location loaded
BACKFILL_TIMEOUT = 240.0
SHUTDOWN_GRACE = 30.0
HTTP_TIMEOUT = 30.0


# --------------------------------------------------------------------------------------------
# helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 80) -> str:
    if not path.exists():
        return "(no log file)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def subprocess_env(data_dir: Path, dagster_home: Path) -> dict[str, str]:
    """The caller's environment without any project or Dagster setting, then ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("USAGE_STATS_", "DAGSTER_")) and k != "PYTHONBREAKPOINT"
    }
    env["USAGE_STATS_DATA_DIR"] = str(data_dir)
    env["DAGSTER_HOME"] = str(dagster_home)
    env["PYTHONUNBUFFERED"] = "1"
    # Sensors: tick fast, and look back far enough to see the 2026-01 test data.
    env["USAGE_STATS_SENSOR_INTERVAL_SECONDS"] = "5"
    env["USAGE_STATS_SENSOR_LOOKBACK_DAYS"] = "3650"
    return env


def stop_process_group(proc: subprocess.Popen, grace: float = SHUTDOWN_GRACE) -> None:
    """SIGTERM the whole group, wait, then SIGKILL the group and any straggler."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid  # leader gone; its group id was its pid (start_new_session)
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # Children may outlive the leader for a moment; give them the rest of the grace period.
    _, alive = psutil.wait_procs(descendants, timeout=5)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


@dataclass
class DagsterDev:
    proc: subprocess.Popen
    base_url: str
    log_path: Path
    data_dir: Path

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n--- dagster dev log (tail) ---\n{log_tail(self.log_path)}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=HTTP_TIMEOUT,
        )
        if response.status_code != 200:
            self.fail(f"GraphQL HTTP {response.status_code}: {response.text[:2000]}")
        body = response.json()
        if body.get("errors"):
            self.fail(f"GraphQL errors: {body['errors']}")
        return body["data"]


# --------------------------------------------------------------------------------------------
# GraphQL documents

WORKSPACE_QUERY = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message stack }
  }
}
"""

ASSET_NODES_QUERY = """
query AssetNodes {
  assetNodes { assetKey { path } jobNames isPartitioned }
}
"""

LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionKeysNotFoundError { message partitionKeys }
    ... on PartitionSetNotFoundError { message }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id
      status
      isAssetBackfill
      numPartitions
      partitionNames
      error { message stack }
      runs { runId status }
    }
    ... on BackfillNotFoundError { message }
    ... on PythonError { message stack }
  }
}
"""

RUN_FAILURES_QUERY = """
query RunFailures($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ExecutionStepFailureEvent { error { message stack } }
        ... on RunFailureEvent { pipelineRunError: error { message } }
      }
    }
  }
}
"""

FAILED_BACKFILL = {"FAILED", "COMPLETED_FAILED", "CANCELED", "CANCELING", "FAILING"}


def run_failure_details(dev: DagsterDev, run_ids: list[str]) -> str:
    parts = []
    for run_id in run_ids:
        try:
            data = dev.graphql(RUN_FAILURES_QUERY, {"runId": run_id})
        except BaseException as exc:  # pytest.fail raises; keep whatever we already have
            parts.append(f"run {run_id}: could not read logs ({exc})")
            continue
        events = (data.get("logsForRun") or {}).get("events") or []
        lines = []
        for event in events:
            if event.get("level") in ("ERROR", "CRITICAL") or "error" in event:
                lines.append(f"  [{event['__typename']}] {event.get('message', '')}")
                error = event.get("error") or event.get("pipelineRunError")
                if error:
                    lines.append("    " + (error.get("message") or "").strip())
                    if error.get("stack"):
                        lines.append("    " + "".join(error["stack"][-3:]).strip())
        parts.append(f"run {run_id}:\n" + ("\n".join(lines) or "  (no error events)"))
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def synthetic(tmp_path: Path) -> dict:
    data_dir = tmp_path / "data"
    result = write_synthetic(
        SyntheticConfig(sites=5, days=len(DAYS), events_per_day=1500, start=START),
        lake_url=str(data_dir / "lake"),
        sources_path=data_dir / "sources.csv",
        manifest_path=tmp_path / "manifest.json",
    )
    assert result.manifest is not None
    register_sources(Settings.from_env({"USAGE_STATS_DATA_DIR": str(data_dir)}))
    return result.manifest


@pytest.fixture
def dagster_dev(tmp_path: Path, synthetic: dict, request: pytest.FixtureRequest) -> DagsterDev:
    data_dir = tmp_path / "data"
    dagster_home = tmp_path / "home"
    dagster_home.mkdir()
    shutil.copy(REPO_ROOT / "instance" / "dagster.yaml", dagster_home / "dagster.yaml")
    log_path = tmp_path / "dagster-dev.log"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"

    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=subprocess_env(data_dir, dagster_home),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    request.addfinalizer(lambda: stop_process_group(proc))
    dev = DagsterDev(proc, base_url, log_path, data_dir)

    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            dev.fail(f"dagster dev exited early with code {proc.returncode}")
        try:
            if requests.get(f"{base_url}/server_info", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            dev.fail(f"the webserver did not answer on {base_url} within {STARTUP_TIMEOUT:.0f}s")
        time.sleep(1)

    # The code location loads in its own process after the webserver is up.
    while True:
        workspace = dev.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            dev.fail(f"workspace error: {workspace}")
        entries = workspace["locationEntries"]
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            for entry in entries:
                location = entry["locationOrLoadError"]
                if location is None or location["__typename"] != "RepositoryLocation":
                    dev.fail(f"code location {entry['name']} failed to load: {location}")
            break
        if proc.poll() is not None:
            dev.fail(f"dagster dev exited early with code {proc.returncode}")
        if time.monotonic() > deadline:
            dev.fail(f"the code location did not load within {STARTUP_TIMEOUT:.0f}s: {entries}")
        time.sleep(1)
    return dev


# --------------------------------------------------------------------------------------------
# the test


def test_backfill_through_graphql_matches_manifest(dagster_dev: DagsterDev, synthetic: dict):
    dev = dagster_dev

    # The UI itself is served.
    page = requests.get(f"{dev.base_url}/", timeout=HTTP_TIMEOUT)
    assert page.status_code == 200
    assert "text/html" in page.headers.get("content-type", "")
    assert "<html" in page.text.lower()

    # Every asset of the job, as the UI would select them for a backfill.
    nodes = dev.graphql(ASSET_NODES_QUERY)["assetNodes"]
    job_assets = [n for n in nodes if JOB_NAME in n["jobNames"]]
    assert {"/".join(n["assetKey"]["path"]) for n in job_assets} == EXPECTED_ASSETS
    assert all(n["isPartitioned"] for n in job_assets)

    launched = dev.graphql(
        LAUNCH_BACKFILL,
        {
            "params": {
                "assetSelection": [{"path": n["assetKey"]["path"]} for n in job_assets],
                "partitionNames": PARTITION_KEYS,
                "title": "e2e test backfill",
            }
        },
    )["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        dev.fail(f"launchPartitionBackfill failed: {launched}")
    backfill_id = launched["backfillId"]

    deadline = time.monotonic() + BACKFILL_TIMEOUT
    while True:
        backfill = dev.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill["__typename"] != "PartitionBackfill":
            dev.fail(f"backfill {backfill_id}: {backfill}")
        status = backfill["status"]
        runs = backfill["runs"] or []
        if status == "COMPLETED_SUCCESS":
            break
        if status in FAILED_BACKFILL or any(r["status"] == "FAILURE" for r in runs):
            failed = [r["runId"] for r in runs if r["status"] != "SUCCESS"]
            dev.fail(
                f"backfill {backfill_id} is {status}; runs {runs}; error {backfill['error']}\n"
                + run_failure_details(dev, failed)
            )
        if dev.proc.poll() is not None:
            dev.fail(f"dagster dev exited with code {dev.proc.returncode} during the backfill")
        if time.monotonic() > deadline:
            dev.fail(
                f"backfill {backfill_id} still {status} after {BACKFILL_TIMEOUT:.0f}s; runs {runs}"
            )
        time.sleep(2)

    assert backfill["isAssetBackfill"]
    assert sorted(backfill["partitionNames"]) == PARTITION_KEYS
    # Every asset uses BackfillPolicy.single_run(): three days, one run.
    assert [r["status"] for r in runs] == ["SUCCESS"], runs

    # The stats store holds exactly the manifest's item deltas, and only these days.
    db_path = dev.data_dir / "stats.duckdb"
    assert db_path.exists(), f"no stats store at {db_path}"
    assert DuckDBStatsStore(db_path).days() == DAYS

    columns = ", ".join(METRICS)
    with duckdb.connect(str(db_path), read_only=True) as con:
        stored_days = [
            r[0]
            for r in con.execute("SELECT DISTINCT date FROM usage_deltas ORDER BY date").fetchall()
        ]
        rows = con.execute(
            f"SELECT date, site_id, key, country, {columns} FROM usage_deltas WHERE scope = 'item'"
        ).fetchall()
    assert stored_days == DAYS

    actual = {(r[0].isoformat(), r[1], r[2], r[3]): tuple(r[4:]) for r in rows}
    assert len(actual) == len(rows), "duplicate item rows in the stats store"
    expected = {
        (i["date"], i["site_id"], i["item_id"], i["country"]): tuple(i[m] for m in METRICS)
        for i in synthetic["items"]
    }
    assert expected, "the synthetic manifest has no item rows"
    missing = expected.keys() - actual.keys()
    extra = actual.keys() - expected.keys()
    differing = {
        k: (actual[k], expected[k])
        for k in expected.keys() & actual.keys()
        if actual[k] != expected[k]
    }
    assert not (missing or extra or differing), (
        f"{len(missing)} missing, {len(extra)} unexpected, {len(differing)} differing item rows; "
        f"e.g. missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]}, "
        f"differing (stored, expected) {list(differing.items())[:3]}"
    )
    assert actual == expected


SENSORS_QUERY = """
query Sensors($repo: RepositorySelector!) {
  sensorsOrError(repositorySelector: $repo) {
    __typename
    ... on Sensors { results { name sensorState { status } } }
    ... on PythonError { message }
  }
}
"""

START_SENSOR = """
mutation Start($sensor: SensorSelector!) {
  startSensor(sensorSelector: $sensor) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
    ... on Error { message }
  }
}
"""

SENSOR_TICKS = """
query Ticks($sensor: SensorSelector!) {
  sensorOrError(sensorSelector: $sensor) {
    __typename
    ... on Sensor {
      sensorState { status ticks(limit: 5) { status runKeys runIds skipReason error { message } } }
    }
  }
}
"""


def test_new_file_sensor_is_listed_turned_on_and_ticks(dagster_dev: DagsterDev):
    dev = dagster_dev
    workspace = dev.graphql(WORKSPACE_QUERY)["workspaceOrError"]
    location = workspace["locationEntries"][0]["locationOrLoadError"]
    repo = {
        "repositoryLocationName": location["name"],
        "repositoryName": location["repositories"][0]["name"],
    }
    sensors = dev.graphql(SENSORS_QUERY, {"repo": repo})["sensorsOrError"]
    states = {s["name"]: s["sensorState"]["status"] for s in sensors["results"]}
    assert states == {
        "raw_files_sensor": "STOPPED",
        "late_data_sensor": "STOPPED",
        "late_harvest_sensor": "STOPPED",
    }

    selector = {**repo, "sensorName": "raw_files_sensor"}
    started = dev.graphql(START_SENSOR, {"sensor": selector})["startSensor"]
    assert started["__typename"] == "Sensor", started
    assert started["sensorState"]["status"] == "RUNNING"

    # The daemon evaluates it: every file is new, so the first tick asks for the three days.
    deadline = time.monotonic() + 120
    while True:
        sensor = dev.graphql(SENSOR_TICKS, {"sensor": selector})["sensorOrError"]
        ticks = sensor["sensorState"]["ticks"]
        done = [t for t in ticks if t["status"] in ("SUCCESS", "FAILURE", "SKIPPED")]
        if done:
            break
        if time.monotonic() > deadline:
            dev.fail(f"no completed sensor tick within 120 s: {ticks}")
        time.sleep(2)
    tick = done[-1]
    assert tick["status"] == "SUCCESS", tick
    assert sorted(key.split(":")[1] for key in tick["runKeys"]) == PARTITION_KEYS
    assert len(tick["runIds"]) == 3
