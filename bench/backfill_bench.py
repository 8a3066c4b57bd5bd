"""A backfill through the production stack with 1, then 2 Celery workers: wall time, speed-up.

For each worker count, `scripts/stack.sh up` starts the production topology on this machine
(PostgreSQL, Redis, OpenSearch, MinIO, code server, daemon, webserver, N workers, web
services; databases, index prefix and ports of its own), the sources go into its admin DB,
and an asset backfill of every usage asset over all the generated days is launched through
the webserver's GraphQL (the way an operator does it from the UI). Timed: from the launch to
the backfill's COMPLETED_SUCCESS. The day-independent stages run in runs of
`--days-per-run` days (USAGE_STATS_BACKFILL_DAYS_PER_RUN), at most `workers + 1` runs at once
(USAGE_STATS_MAX_CONCURRENT_RUNS), the snapshot chain and the OpenSearch writes after them in
order. The stack is brought down and its databases and indices dropped after each.

The lake is generated once (usage_stats.demo.synthetic, not timed) into --workdir and copied
to a MinIO bucket; each worker count gets a fresh warehouse in that bucket.

    .venv/bin/python bench/backfill_bench.py --days 30 --events 1000000 --workers 1 2

Needs the test servers (scripts/services.sh start) and the project's virtualenv.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import psycopg
import requests
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from usage_stats.admin import db  # noqa: E402
from usage_stats.admin.registry import import_sources  # noqa: E402
from usage_stats.demo.synthetic import SyntheticConfig, write_synthetic  # noqa: E402

STACK = REPO / "scripts" / "stack.sh"
POSTGRES = "postgresql+psycopg://usage_stats:usage_stats@127.0.0.1:5433/usage_stats"
ASSET_NODES = "query { assetNodes { assetKey { path } jobNames } }"
LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
    ... on Error { message }
  }
}
"""
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status runs { runId status } }
  }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    answer = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=120
    )
    answer.raise_for_status()
    body = answer.json()
    if "errors" in body:
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def s3():
    return boto3.client(
        "s3", endpoint_url=os.environ.get("USAGE_STATS_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    )


def generate(args: argparse.Namespace) -> tuple[Path, str]:
    """The lake (local, once) and its copy in a bucket; returns the sources file and bucket."""
    name = f"d{args.days}-e{args.events}-s{args.sites}"
    local = args.workdir / name
    sources = local / "sources.csv"
    if not sources.exists():
        started = time.monotonic()
        config = SyntheticConfig(
            sites=args.sites, days=args.days, events_per_day=args.events, start=args.start
        )
        write_synthetic(config, str(local / "lake"), sources, with_manifest=False)
        print(f"generated {name} in {time.monotonic() - started:.0f} s")
    bucket = f"backfill-bench-{name}"
    client = s3()
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)
        for path in sorted((local / "lake").rglob("*.parquet")):
            client.upload_file(str(path), bucket, f"lake/{path.relative_to(local / 'lake')}")
        print(f"uploaded the lake to s3://{bucket}/lake")
    return sources, bucket


def stack(env: dict[str, str], command: str) -> None:
    done = subprocess.run([str(STACK), command], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"stack.sh {command} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


def drop(url: str) -> None:
    parsed = make_url(url)
    server = parsed.set(drivername="postgresql", database="postgres")
    with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


def backfill(args: argparse.Namespace, workers: int, sources: Path, bucket: str) -> dict:
    name = f"bb{workers}x{uuid.uuid4().hex[:6]}"
    pg = make_url(POSTGRES)
    admin = pg.set(database=f"{name}_admin").render_as_string(hide_password=False)
    dagster = pg.set(drivername="postgresql+psycopg2", database=f"{name}_dagster")
    dagster_url = dagster.render_as_string(hide_password=False)
    webserver_port = free_port()
    last = args.start + dt.timedelta(days=args.days - 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USAGE_STATS_", "DAGSTER_"))}
    env |= {
        "USAGE_STATS_STACK_DIR": str(args.workdir / f"stack-{name}"),
        "USAGE_STATS_STACK_NAME": name,
        "USAGE_STATS_STACK_BIN": str(Path(sys.executable).parent),
        "USAGE_STATS_STACK_WORKERS": str(workers),
        "USAGE_STATS_STACK_WEBSERVER_PORT": str(webserver_port),
        "USAGE_STATS_WEB_PORT": str(free_port()),
        "USAGE_STATS_CODE_SERVER_PORT": str(free_port()),
        "USAGE_STATS_ADMIN_DB_URL": admin,
        "USAGE_STATS_DAGSTER_POSTGRES_URL": dagster_url,
        "USAGE_STATS_LAKE_URL": f"s3://{bucket}/lake",
        "USAGE_STATS_WAREHOUSE_URL": f"s3://{bucket}/warehouse-{name}",
        "USAGE_STATS_START_DATE": args.start.isoformat(),
        "USAGE_STATS_END_DATE": last.isoformat(),
        "USAGE_STATS_BACKFILL_DAYS_PER_RUN": str(args.days_per_run),
        "USAGE_STATS_MAX_CONCURRENT_RUNS": str(workers + 1),
        "USAGE_STATS_DEQUEUE_INTERVAL_SECONDS": "1",
    }
    if "USAGE_STATS_SERVICES_DIR" in os.environ:
        env["USAGE_STATS_SERVICES_DIR"] = os.environ["USAGE_STATS_SERVICES_DIR"]
    url = f"http://127.0.0.1:{webserver_port}"
    opensearch = os.environ.get("USAGE_STATS_OPENSEARCH_URL", "http://127.0.0.1:9200")
    try:
        stack(env, "up")
        db.upgrade(admin)
        import_sources(admin, sources)
        nodes = graphql(url, ASSET_NODES)["assetNodes"]
        selection = [
            {"path": n["assetKey"]["path"]} for n in nodes if "usage_pipeline" in n["jobNames"]
        ]
        partitions = [(args.start + dt.timedelta(days=i)).isoformat() for i in range(args.days)]
        started = time.monotonic()
        launched = graphql(
            url,
            LAUNCH_BACKFILL,
            {"params": {"assetSelection": selection, "partitionNames": partitions, "title": name}},
        )["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {launched}")
        while True:
            state = graphql(url, BACKFILL, {"id": launched["backfillId"]})[
                "partitionBackfillOrError"
            ]
            failed = [r["runId"] for r in state["runs"] or [] if r["status"] == "FAILURE"]
            if state["status"] == "COMPLETED_SUCCESS":
                break
            if failed or state["status"] in ("FAILED", "COMPLETED_FAILED", "CANCELED"):
                raise RuntimeError(
                    f"backfill {state['status']}, failed runs {failed} "
                    f"(logs: {env['USAGE_STATS_STACK_DIR']}/logs)"
                )
            time.sleep(2)
        seconds = time.monotonic() - started
        runs = len(state["runs"] or [])
    finally:
        try:
            stack(env, "down")
        finally:
            requests.delete(f"{opensearch}/{name}-*,{name}-compat-*", timeout=120)
            for database in (admin, dagster_url):
                drop(database)
    events = args.days * args.events
    return {
        "workers": workers,
        "seconds": round(seconds, 1),
        "runs": runs,
        "events": events,
        "events_per_second": round(events / seconds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events", type=int, default=1_000_000, help="events per day")
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--days-per-run", type=int, default=1)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 1, 1))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/backfill-bench"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    sources, bucket = generate(args)
    results = []
    for workers in args.workers:
        result = backfill(args, workers, sources, bucket)
        result["speed_up"] = round(results[0]["seconds"] / result["seconds"], 2) if results else 1.0
        results.append(result)
        print(
            f"{workers} worker(s): {result['seconds']:8.1f} s  {result['runs']:3d} runs  "
            f"{result['events_per_second']:>9,} events/s  speed-up {result['speed_up']:.2f}",
            flush=True,
        )
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")
    out = REPO / "bench" / "results" / f"backfill-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "load": load},
            indent=2,
        )
    )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
