"""The production instance (issue 17), on real servers: PostgreSQL storage, the daemon, the code
location as a gRPC code server, the webserver (for GraphQL), and two Celery workers (standing
for two machines) fed by Redis. Everything is started from deploy/ as README: Production says,
with the settings in the environment.

- the daemon ticks the late-data sensor and runs the nightly schedule, all recorded in PostgreSQL;
- a 14-day backfill splits into runs of two days (USAGE_STATS_BACKFILL_DAYS_PER_RUN) that run in
  parallel within the queue's limit, on both workers, then the snapshot chain in one run; the
  stats store then holds exactly what a single-process run (`make demo`'s way) writes;
- the worker process running a step is killed: the run fails, visibly, and the daemon's retry
  completes it, with the same store.

One set of processes serves the three tests (they run in this order), on a small generated lake.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import psycopg
import pytest
import requests
import yaml

from conftest import register_sources
from test_e2e_dagster_dev import free_port, log_tail, stop_process_group
from usage_stats.demo.synthetic import SyntheticConfig, write_synthetic
from usage_stats.settings import Settings

pytestmark = [pytest.mark.production, pytest.mark.e2e]

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAYS = 14
TODAY = dt.datetime.now(dt.UTC).date()
START = TODAY - dt.timedelta(days=DAYS)  # the last day is yesterday: the schedule's day
PARTITIONS = [(START + dt.timedelta(days=i)).isoformat() for i in range(DAYS)]
MAX_RUNS = 3
DAYS_PER_RUN = 2
HTTP_TIMEOUT = 30.0

PG_URL = os.environ.get("USAGE_STATS_ADMIN_DB_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("USAGE_STATS_TEST_REDIS_URL")


def _reachable() -> str | None:
    if not PG_URL:
        return "service PostgreSQL: USAGE_STATS_ADMIN_DB_TEST_POSTGRES_URL not set"
    if not REDIS_URL:
        return "service Redis: USAGE_STATS_TEST_REDIS_URL not set (scripts/services.sh env)"
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        return (
            f"service Redis at {REDIS_URL} not reachable: {exc} (scripts/services.sh start redis)"
        )
    try:
        psycopg.connect(_plain(PG_URL), connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001
        return f"service PostgreSQL at {PG_URL} not reachable: {exc}"
    return None


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _database(name: str) -> str:
    """A fresh PostgreSQL database of the test server (the role may create them)."""
    with psycopg.connect(_plain(PG_URL), autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        con.execute(f'CREATE DATABASE "{name}"')
    return _plain(PG_URL).rsplit("/", 1)[0] + "/" + name


def _drop_quietly(name: str) -> None:
    try:
        with psycopg.connect(_plain(PG_URL), autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception:  # noqa: BLE001  (the server may be gone; the names are unique)
        pass


# --------------------------------------------------------------------------------------------
# the processes


@dataclass
class Cluster:
    home: Path
    data_dir: Path
    reference_db: Path
    env: dict[str, str]
    base_url: str
    dagster_db_url: str
    logs: dict[str, Path]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    repo: dict[str, str] = field(default_factory=dict)

    def fail(self, message: str, *names: str) -> None:
        tails = "\n".join(
            f"--- {name} log (tail) ---\n{log_tail(self.logs[name], 40)}"
            for name in (names or self.logs)
        )
        pytest.fail(f"{message}\n{tails}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=HTTP_TIMEOUT,
        )
        body = response.json() if response.status_code == 200 else {}
        if response.status_code != 200 or body.get("errors"):
            self.fail(f"GraphQL {response.status_code}: {response.text[:2000]}", "webserver")
        return body["data"]

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                self.fail(f"{name} exited with code {proc.returncode}", name)

    def runs(self, tags: dict[str, str] | None = None) -> list[dict]:
        filter_ = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        data = self.graphql(RUNS_QUERY, {"filter": filter_})["runsOrError"]
        return data["results"]

    def wait_run(self, run_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
            if run.get("status") in ("SUCCESS", "FAILURE", "CANCELED"):
                return run
            self.check_alive()
            if time.monotonic() > deadline:
                self.fail(f"run {run_id} still {run.get('status')} after {timeout:.0f}s")
            time.sleep(1)

    def run_messages(self, run_id: str) -> str:
        data = self.graphql(RUN_LOGS_QUERY, {"runId": run_id})["logsForRun"]
        lines = []
        for event in data.get("events") or []:
            lines.append(event.get("message") or "")
            error = event.get("error") or event.get("runError")
            if error:
                lines.append(error.get("message") or "")
        return "\n".join(lines)


def _spawn(cluster: Cluster, name: str, args: list[str]) -> None:
    log = cluster.logs[name]
    with log.open("ab") as out:
        cluster.procs[name] = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=cluster.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _schedule_time() -> dt.datetime:
    """A minute far enough ahead for the processes to be up when it comes."""
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=210)
    return at.replace(second=0, microsecond=0)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    reason = _reachable()
    if reason:
        pytest.skip(reason)
    import redis

    root = tmp_path_factory.mktemp("production")
    tag = uuid.uuid4().hex[:8]
    dagster_db, admin_db = f"dagster_test_{tag}", f"usage_stats_test_{tag}"
    dagster_db_url = _database(dagster_db)
    admin_db_url = _database(admin_db).replace("postgresql://", "postgresql+psycopg://")
    # dropped after everything else, also when the setup below fails or is interrupted
    request.addfinalizer(lambda: [_drop_quietly(name) for name in (dagster_db, admin_db)])
    # Broker and results in two Redis databases of their own, emptied.
    broker = f"{REDIS_URL.rstrip('/')}/14"
    backend = f"{REDIS_URL.rstrip('/')}/15"
    for url in (broker, backend):
        redis.Redis.from_url(url).flushdb()

    # The lake: five sites × 14 days, shared with the single-process reference run.
    data_dir, reference_dir = root / "data", root / "reference"
    lake = data_dir / "lake"
    write_synthetic(
        SyntheticConfig(sites=5, days=DAYS, events_per_day=400, start=START),
        lake_url=str(lake),
        sources_path=data_dir / "sources.csv",
        with_manifest=False,
    )
    common = {
        "USAGE_STATS_START_DATE": START.isoformat(),
        "USAGE_STATS_LAKE_URL": str(lake),
        "USAGE_STATS_SOURCES_FILE": str(data_dir / "sources.csv"),
    }
    admin = {
        **common,
        "USAGE_STATS_DATA_DIR": str(data_dir),
        "USAGE_STATS_ADMIN_DB_URL": admin_db_url,
    }
    register_sources(Settings.from_env(admin))
    register_sources(Settings.from_env({**common, "USAGE_STATS_DATA_DIR": str(reference_dir)}))

    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("USAGE_STATS_", "DAGSTER_")) and k != "PYTHONBREAKPOINT"
    }
    base |= {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        **common,
    }

    # The single-process reference: `make demo`'s way, embedded instance, one run, 14 days.
    reference_home = root / "reference-home"
    reference_home.mkdir()
    shutil.copy(REPO_ROOT / "instance" / "dagster.yaml", reference_home / "dagster.yaml")
    reference_env = base | {
        "USAGE_STATS_DATA_DIR": str(reference_dir),
        "DAGSTER_HOME": str(reference_home),
    }
    tags = {
        "dagster/asset_partition_range_start": PARTITIONS[0],
        "dagster/asset_partition_range_end": PARTITIONS[-1],
    }
    done = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-f", "definitions.py", "-d", "."]
        + ["-j", "usage_pipeline", "--tags", json.dumps(tags)],
        cwd=REPO_ROOT,
        env=reference_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # The production processes, configured as deploy/production.env says.
    home = root / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    at = _schedule_time()
    code_port, web_port = free_port(), free_port()
    env = base | {
        "DAGSTER_HOME": str(home),
        "USAGE_STATS_DATA_DIR": str(data_dir),
        "USAGE_STATS_ADMIN_DB_URL": admin_db_url,
        # psycopg2, which dagster-postgres is made for (SQLAlchemy 2.1's default is psycopg 3)
        "USAGE_STATS_DAGSTER_POSTGRES_URL": dagster_db_url.replace(
            "postgresql://", "postgresql+psycopg2://"
        ),
        "USAGE_STATS_MAX_CONCURRENT_RUNS": str(MAX_RUNS),
        "USAGE_STATS_MATOMO_RUNS_PER_DATABASE": "1",
        "USAGE_STATS_DEQUEUE_INTERVAL_SECONDS": "1",
        "USAGE_STATS_CODE_SERVER_HOST": "127.0.0.1",
        "USAGE_STATS_CODE_SERVER_PORT": str(code_port),
        "USAGE_STATS_EXECUTOR": "celery",
        "USAGE_STATS_CELERY_BROKER_URL": broker,
        "USAGE_STATS_CELERY_BACKEND_URL": backend,
        "USAGE_STATS_BACKFILL_DAYS_PER_RUN": str(DAYS_PER_RUN),
        "USAGE_STATS_SENSOR_INTERVAL_SECONDS": "5",
        "USAGE_STATS_SCHEDULE_HOUR": str(at.hour),
        "USAGE_STATS_SCHEDULE_MINUTE": str(at.minute),
    }
    names = ["code-server", "daemon", "webserver", "worker1", "worker2"]
    cluster = Cluster(
        home=home,
        data_dir=data_dir,
        reference_db=reference_dir / "stats.duckdb",
        env=env,
        base_url=f"http://127.0.0.1:{web_port}",
        dagster_db_url=dagster_db_url,
        logs={name: root / f"{name}.log" for name in names},
    )
    cluster.schedule_at = at  # type: ignore[attr-defined]
    # The instance's schema first, as deploy/compose.yaml's `migrate` and `make stack` do: the
    # code server and the two workers starting together on the new database each created it,
    # and one failed with "type asset_keys already exists" (CI, once).
    migrated = subprocess.run(
        [str(BIN / "dagster"), "instance", "migrate"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    try:
        _spawn(
            cluster,
            "code-server",
            [str(BIN / "dagster"), "api", "grpc", "-h", "127.0.0.1", "-p", str(code_port)]
            + ["-f", "definitions.py", "-d", str(REPO_ROOT), "--location-name", "usage-stats"],
        )
        for n in (1, 2):
            _spawn(
                cluster,
                f"worker{n}",
                [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app"]
                + ["-y", "deploy/celery.yaml", "-n", f"worker{n}", "--", "--concurrency=1"],
            )
        _wait_code_server(cluster, code_port)
        _spawn(
            cluster, "daemon", [str(BIN / "dagster-daemon"), "run", "-w", "deploy/workspace.yaml"]
        )
        _spawn(
            cluster,
            "webserver",
            [str(BIN / "dagster-webserver"), "-w", "deploy/workspace.yaml"]
            + ["-h", "127.0.0.1", "-p", str(web_port)],
        )
        _wait_webserver(cluster)
        _wait_workers(cluster, broker)
        yield cluster
    finally:
        for proc in cluster.procs.values():
            stop_process_group(proc, grace=15)


def _wait_code_server(cluster: Cluster, port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(port)],
            env=cluster.env,
            capture_output=True,
        )
        if done.returncode == 0:
            return
        cluster.check_alive()
        if time.monotonic() > deadline:
            cluster.fail("the gRPC code server did not answer", "code-server")
        time.sleep(2)


def _wait_webserver(cluster: Cluster, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        cluster.check_alive()
        try:
            if requests.get(f"{cluster.base_url}/server_info", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            cluster.fail("the webserver did not answer", "webserver")
        time.sleep(1)
    while True:
        workspace = cluster.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        entries = workspace.get("locationEntries") or []
        if entries and entries[0]["loadStatus"] == "LOADED":
            location = entries[0]["locationOrLoadError"]
            if location["__typename"] != "RepositoryLocation":
                cluster.fail(f"the code location did not load: {location}", "webserver")
            cluster.repo = {
                "repositoryLocationName": location["name"],
                "repositoryName": location["repositories"][0]["name"],
            }
            return
        if time.monotonic() > deadline:
            cluster.fail(f"the code location did not load: {entries}", "webserver")
        time.sleep(1)


def _wait_workers(cluster: Cluster, broker: str, timeout: float = 120) -> None:
    from celery import Celery

    app = Celery(broker=broker)
    deadline = time.monotonic() + timeout
    while True:
        cluster.check_alive()
        replies = app.control.ping(timeout=2) or []
        names = {name for reply in replies for name in reply}
        if {n.split("@")[0] for n in names} >= {"worker1", "worker2"}:
            return
        if time.monotonic() > deadline:
            cluster.fail(f"the Celery workers did not answer: {names}", "worker1", "worker2")
        time.sleep(1)


# --------------------------------------------------------------------------------------------
# GraphQL documents

WORKSPACE_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message }
        }
      }
    }
  }
}
"""

RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs {
      results { runId status startTime endTime tags { key value } assetSelection { path } }
    }
  }
}
"""

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status startTime endTime tags { key value } }
  }
}
"""

RUN_LOGS_QUERY = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { runError: error { message } }
      }
    }
  }
}
"""

START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { status } } ... on PythonError { message }
  }
}
"""

STOP_SENSOR = """
mutation Stop($id: String!) {
  stopSensor(id: $id) { __typename }
}
"""

SENSOR_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor {
      sensorState { id ticks(limit: 5) { status skipReason runIds error { message } } }
    }
  }
}
"""

START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}
"""

SCHEDULE_TICKS = """
query Ticks($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    ... on Schedule {
      scheduleState { id status ticks(limit: 5) { status runIds skipReason error { message } } }
    }
  }
}
"""

ASSET_NODES = "query { assetNodes { assetKey { path } jobNames } }"

LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on Error { message }
  }
}
"""

BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status error { message } runs { runId status } }
  }
}
"""

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


# --------------------------------------------------------------------------------------------
# what the store holds


def store_content(path: Path) -> dict[str, list[tuple]]:
    """Every table of a DuckDB stats store, rows sorted; `store_runs` (the physical layout:
    which write each part of a day came in) as row counts per table, day and part."""
    with duckdb.connect(str(path), read_only=True) as con:
        tables = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
        content = {}
        for table in tables:
            if table == "store_runs":
                query = "SELECT tbl, date, part, sum(rows) FROM store_runs GROUP BY ALL"
            else:
                query = f'SELECT * FROM "{table}"'
            rows = con.execute(query).fetchall()
            content[table] = sorted(rows, key=repr)
    return content


def assert_same_store(actual: Path, expected: Path) -> None:
    mine, reference = store_content(actual), store_content(expected)
    assert sorted(mine) == sorted(reference)
    differing = [t for t in reference if mine[t] != reference[t]]
    assert not differing, {
        t: (len(mine[t]), len(reference[t]), set(mine[t]) ^ set(reference[t])) for t in differing
    }
    assert reference["usage_deltas"], "the reference store is empty"


def wait_tick(cluster: Cluster, query: str, key: str, selector: dict, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = cluster.graphql(query, {"selector": selector})[key]
        ticks = state.get("scheduleState", state.get("sensorState"))["ticks"]
        done = [t for t in ticks if t["status"] in ("SUCCESS", "FAILURE", "SKIPPED")]
        if done:
            return done[0]
        cluster.check_alive()
        if time.monotonic() > deadline:
            cluster.fail(f"no completed tick within {timeout:.0f}s: {ticks}", "daemon")
        time.sleep(2)


def count_in_postgres(url: str, sql: str, *args) -> int:
    with psycopg.connect(url) as con:
        return con.execute(sql, args).fetchone()[0]


# --------------------------------------------------------------------------------------------
# the tests


def test_daemon_ticks_sensor_and_runs_schedule_on_postgres(cluster: Cluster):
    # The late-data sensor, turned on: the daemon evaluates it (nothing processed yet: a skip).
    sensor = {**cluster.repo, "sensorName": "late_data_sensor"}
    started = cluster.graphql(START_SENSOR, {"selector": sensor})["startSensor"]
    assert started["__typename"] == "Sensor", started
    tick = wait_tick(cluster, SENSOR_TICKS, "sensorOrError", sensor, 120)
    assert tick["status"] == "SKIPPED", tick
    assert tick["skipReason"] == "all 0 snapshot(s) are up to date"
    state = cluster.graphql(SENSOR_TICKS, {"selector": sensor})["sensorOrError"]["sensorState"]
    cluster.graphql(STOP_SENSOR, {"id": state["id"]})

    # The nightly schedule (here at a minute just ahead): the daemon ticks it at that minute
    # and the run processes yesterday on the Celery workers.
    schedule = {**cluster.repo, "scheduleName": "daily_usage_schedule"}
    started = cluster.graphql(START_SCHEDULE, {"selector": schedule})["startSchedule"]
    assert started["__typename"] == "ScheduleStateResult", started
    wait = (cluster.schedule_at - dt.datetime.now(dt.UTC)).total_seconds() + 120
    tick = wait_tick(cluster, SCHEDULE_TICKS, "scheduleOrError", schedule, max(wait, 60))
    assert tick["status"] == "SUCCESS", tick
    [run_id] = tick["runIds"]
    run = cluster.wait_run(run_id)
    assert run["status"] == "SUCCESS", cluster.run_messages(run_id)[-3000:]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    # Yesterday as of the tick: a run started just before midnight UTC ticks on the next day.
    yesterday = cluster.schedule_at.date() - dt.timedelta(days=1)  # type: ignore[attr-defined]
    assert tags["dagster/partition"] == yesterday.isoformat()
    assert tags["dagster/schedule_name"] == "daily_usage_schedule"
    assert "in celery worker" in cluster.run_messages(run_id)

    # All of it is in PostgreSQL: the run, its events, both instigators' ticks.
    url = cluster.dagster_db_url
    assert count_in_postgres(url, "SELECT count(*) FROM runs WHERE run_id = %s", run_id) == 1
    assert count_in_postgres(url, "SELECT count(*) FROM event_logs WHERE run_id = %s", run_id) > 10
    assert (
        count_in_postgres(
            url, "SELECT count(*) FROM job_ticks WHERE status IN ('SUCCESS', 'SKIPPED')"
        )
        >= 2
    )
    assert not (cluster.home / "history").exists()  # no SQLite run storage on the side


def test_backfill_of_14_days_on_two_workers_equals_the_single_process_run(cluster: Cluster):
    nodes = cluster.graphql(ASSET_NODES)["assetNodes"]
    selection = [
        {"path": n["assetKey"]["path"]} for n in nodes if "usage_pipeline" in n["jobNames"]
    ]
    launched = cluster.graphql(
        LAUNCH_BACKFILL,
        {"params": {"assetSelection": selection, "partitionNames": PARTITIONS, "title": "14 days"}},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    deadline = time.monotonic() + 900
    while True:
        backfill = cluster.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill["status"] == "COMPLETED_SUCCESS":
            break
        failed = [r["runId"] for r in backfill["runs"] or [] if r["status"] == "FAILURE"]
        if backfill["status"] in ("FAILED", "COMPLETED_FAILED", "CANCELED") or failed:
            cluster.fail(
                f"backfill {backfill}: "
                + "\n".join(cluster.run_messages(r)[-2000:] for r in failed),
                "daemon",
                "worker1",
                "worker2",
            )
        cluster.check_alive()
        if time.monotonic() > deadline:
            cluster.fail(f"backfill still {backfill['status']} after 900 s: {backfill['runs']}")
        time.sleep(3)

    runs = cluster.runs({"dagster/backfill": backfill_id})
    assert runs and all(r["status"] == "SUCCESS" for r in runs), runs

    def days(run: dict) -> tuple[str, str]:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        return tags["dagster/asset_partition_range_start"], tags[
            "dagster/asset_partition_range_end"
        ]

    def runs_of(asset: str) -> list[dict]:
        return sorted(
            (r for r in runs if [asset] in [k["path"] for k in r["assetSelection"] or []]),
            key=days,
        )

    # The day-independent stages: seven runs of two days.
    pairs = [(PARTITIONS[i], PARTITIONS[i + 1]) for i in range(0, DAYS, DAYS_PER_RUN)]
    assert [days(r) for r in runs_of("raw_events")] == pairs
    assert [days(r) for r in runs_of("item_daily_deltas")] == pairs
    # The chain: consecutive ranges covering the 14 days, in order, one after the other.
    chain = runs_of("usage_snapshots")
    ranges = [days(r) for r in chain]
    assert ranges[0][0] == PARTITIONS[0] and ranges[-1][1] == PARTITIONS[-1], ranges
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert dt.date.fromisoformat(start) == dt.date.fromisoformat(end) + dt.timedelta(days=1)
    # ... each day's snapshot written after the day before it (the event log in PostgreSQL)
    with psycopg.connect(cluster.dagster_db_url) as con:
        written = con.execute(
            "SELECT partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            " AND asset_key = %s AND run_id = ANY(%s) ORDER BY id",
            ('["usage_snapshots"]', [r["runId"] for r in chain]),
        ).fetchall()
    assert [p for (p,) in written] == PARTITIONS

    # Never more runs at once than the queue's limit. (That they overlap is up to the daemon:
    # on a quiet machine two or three of the daily runs did; on a loaded one its queue launched
    # one run per iteration, so this does not insist on it.)
    spans = [(r["startTime"], r["endTime"]) for r in runs]
    most = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    print(f"at most {most} backfill runs at once ({len(runs)} runs)")
    assert most <= MAX_RUNS, spans

    # Both workers executed steps.
    for name in ("worker1", "worker2"):
        assert "succeeded in" in cluster.logs[name].read_text(errors="replace"), name

    assert_same_store(cluster.data_dir / "stats.duckdb", cluster.reference_db)


def test_a_worker_killed_mid_run_fails_the_run_and_the_retry_completes(cluster: Cluster):
    import redis

    backend = redis.Redis.from_url(cluster.env["USAGE_STATS_CELERY_BACKEND_URL"])
    before = set(backend.keys("celery-task-meta-*"))
    day = PARTITIONS[3]
    launched = cluster.graphql(
        LAUNCH_RUN,
        {
            "params": {
                "selector": {**cluster.repo, "jobName": "usage_pipeline"},
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    # The first step's task, once a worker has started it: kill the process running it.
    deadline = time.monotonic() + 180
    killed = None
    while killed is None:
        for key in set(backend.keys("celery-task-meta-*")) - before:
            meta = json.loads(backend.get(key) or "{}")
            if meta.get("status") == "STARTED":
                killed = meta["result"]
                os.kill(killed["pid"], signal.SIGKILL)
                break
        if time.monotonic() > deadline:
            cluster.fail("no step was started by a worker within 180 s", "worker1", "worker2")
        time.sleep(0.05)

    failed = cluster.wait_run(run_id)
    assert failed["status"] == "FAILURE"
    assert "WorkerLostError" in cluster.run_messages(run_id), cluster.run_messages(run_id)[-3000:]
    worker = killed["hostname"].split("@")[0]
    assert "WorkerLostError" in cluster.logs[worker].read_text(errors="replace")

    # The daemon retries the run (deploy/dagster.yaml: run_retries) from the failure.
    deadline = time.monotonic() + 180
    while not (retries := cluster.runs({"dagster/parent_run_id": run_id})):
        cluster.check_alive()
        if time.monotonic() > deadline:
            cluster.fail(f"run {run_id} was not retried", "daemon")
        time.sleep(2)
    [retry] = retries
    done = cluster.wait_run(retry["runId"])
    assert done["status"] == "SUCCESS", cluster.run_messages(retry["runId"])[-3000:]
    tags = {t["key"]: t["value"] for t in done["tags"]}
    assert tags["dagster/partition"] == day
    assert tags["dagster/retry_number"] == "1"

    assert_same_store(cluster.data_dir / "stats.duckdb", cluster.reference_db)


def test_the_celery_settings_of_runs_and_workers_agree():
    from assets.execution import CELERY_APP_SETTINGS

    workers = yaml.safe_load((REPO_ROOT / "deploy" / "celery.yaml").read_text())
    config = workers["execution"]["config"]
    assert config["config_source"] == CELERY_APP_SETTINGS
    assert config["broker"] == {"env": "USAGE_STATS_CELERY_BROKER_URL"}
    assert config["backend"] == {"env": "USAGE_STATS_CELERY_BACKEND_URL"}
