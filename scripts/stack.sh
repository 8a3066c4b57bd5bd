#!/usr/bin/env bash
# The production topology on one machine (README: Production), all on 127.0.0.1: PostgreSQL,
# Redis, OpenSearch and MinIO (started by scripts/services.sh), then the processes of deploy/:
# the gRPC code server, dagster-daemon, dagster-webserver, two Celery workers (standing for two
# machines) and the web services (`usage-stats serve`). Dagster's instance is deploy/dagster.yaml
# on PostgreSQL; the lake and warehouse are in MinIO, the stats store in OpenSearch.
#
# Usage: scripts/stack.sh up|down|status|env
#   up      start the servers and the processes that are not running, wait until all answer
#   down    stop the processes (not the servers: scripts/services.sh stop)
#   status  say what runs; exit 0 only when every process runs
#   env     print the `export` lines of the stack's settings (for `usage-stats`, `dagster` …)
#
# Settings: deploy/production.env, with its example hosts replaced by the local servers; any
# variable already set in the environment wins over both. Beyond production.env's:
#   USAGE_STATS_STACK_DIR            pid files, logs and DAGSTER_HOME (default <repo>/.stack)
#   USAGE_STATS_STACK_NAME           names the stack's PostgreSQL databases, bucket, index
#                                    prefix and Redis databases (default: stack)
#   USAGE_STATS_STACK_WEBSERVER_PORT Dagster UI port (default 3000)
#   USAGE_STATS_STACK_WORKERS        Celery workers (default 2), each one process (--concurrency=1)
#   USAGE_STATS_STACK_OPENSEARCH     `node` (the single test node, default) or `cluster` (the
#                                    2-node cluster of services.sh, with one replica)
#   USAGE_STATS_STACK_BIN            the virtualenv's bin directory (default <repo>/.venv/bin)
#   USAGE_STATS_STACK_TIMEOUT        seconds to wait for each process (default 180)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SERVICES="$ROOT/scripts/services.sh"
STACK="$(realpath -m -s -- "${USAGE_STATS_STACK_DIR:-$ROOT/.stack}")"
NAME="${USAGE_STATS_STACK_NAME:-stack}"
BIN="${USAGE_STATS_STACK_BIN:-$ROOT/.venv/bin}"
WORKERS="${USAGE_STATS_STACK_WORKERS:-2}"
TIMEOUT="${USAGE_STATS_STACK_TIMEOUT:-180}"
RUN="$STACK/run"
LOGS="$STACK/logs"

say() { echo "stack: $*"; }
die() { echo "stack: error: $*" >&2; exit 1; }

[[ $NAME =~ ^[a-z][a-z0-9]*$ ]] || die "USAGE_STATS_STACK_NAME=$NAME: lower-case letters and digits only"
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "USAGE_STATS_STACK_WORKERS=$WORKERS: a number >= 1"
[[ -x $BIN/dagster ]] || die "no $BIN/dagster (make install, or set USAGE_STATS_STACK_BIN)"

# ---------------------------------------------------------------- settings

# The local servers' addresses and credentials (scripts/services.sh env), then the stack's own
# values, then deploy/production.env for the rest: each only where the variable is unset.
set_default() {  # name value
    [[ -n ${!1+x} ]] || export "$1=$2"
}

configure() {
    local line name value cluster_url
    eval "$("$SERVICES" env)"
    local pg="usage_stats:usage_stats@127.0.0.1:${USAGE_STATS_POSTGRES_PORT:-5433}"
    set_default DAGSTER_HOME "$STACK/dagster_home"
    set_default USAGE_STATS_DAGSTER_POSTGRES_URL "postgresql+psycopg2://$pg/${NAME}_dagster"
    set_default USAGE_STATS_ADMIN_DB_URL "postgresql+psycopg://$pg/${NAME}_admin"
    set_default USAGE_STATS_CODE_SERVER_HOST 127.0.0.1
    set_default USAGE_STATS_CODE_SERVER_PORT 4266
    set_default USAGE_STATS_CELERY_BROKER_URL "$USAGE_STATS_TEST_REDIS_URL/2"
    set_default USAGE_STATS_CELERY_BACKEND_URL "$USAGE_STATS_TEST_REDIS_URL/3"
    set_default USAGE_STATS_LAKE_URL "s3://usage-stats-$NAME/lake"
    set_default USAGE_STATS_WAREHOUSE_URL "s3://usage-stats-$NAME/warehouse"
    set_default USAGE_STATS_DATA_DIR "$STACK/data"
    set_default USAGE_STATS_DUCKDB_PATH "$STACK/data/stats.duckdb"
    set_default USAGE_STATS_OPENSEARCH_PREFIX "$NAME"
    set_default USAGE_STATS_OPENSEARCH_COMPAT_PREFIX "$NAME-compat"
    if [[ ${USAGE_STATS_STACK_OPENSEARCH:-node} == cluster ]]; then
        cluster_url="$USAGE_STATS_TEST_OPENSEARCH_CLUSTER_URL"
        set_default USAGE_STATS_OPENSEARCH_URL "$cluster_url"
        set_default USAGE_STATS_OPENSEARCH_REPLICAS 1
    else
        set_default USAGE_STATS_OPENSEARCH_REPLICAS 0  # one node: a replica is never assigned
    fi
    set_default USAGE_STATS_STACK_WEBSERVER_PORT 3000
    set_default USAGE_STATS_WEB_HOST 127.0.0.1
    set_default USAGE_STATS_WEB_PORT 8000
    while IFS= read -r line; do
        [[ $line =~ ^([A-Z_][A-Z0-9_]*)=(.*)$ ]] || continue
        name="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
        set_default "$name" "$value"
    done <"$ROOT/deploy/production.env"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    export PATH="$BIN:$PATH"
}

cmd_env() {
    local name
    for name in $(compgen -e | grep -E '^(USAGE_STATS_|DAGSTER_HOME$|AWS_)' | sort); do
        printf 'export %s=%q\n' "$name" "${!name}"
    done
}

# ---------------------------------------------------------------- processes

live_pid() {  # name: the pid in its pid file while that process runs
    local pid
    pid="$(cat "$RUN/$1.pid" 2>/dev/null)" || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

launch() {  # name command...: in a session of its own (stopped as a group), output to its log
    local name="$1"; shift
    if live_pid "$name" >/dev/null; then
        say "$name: already running (pid $(live_pid "$name"))"
        return 0
    fi
    : >"$LOGS/$name.log"
    (cd "$ROOT" && exec setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&-) &
    echo $! >"$RUN/$name.pid"
    say "$name: starting (pid $!, log $LOGS/$name.log)"
}

fail() {  # name message
    echo "stack: $1: $2; last lines of $LOGS/$1.log:" >&2
    tail -n 30 "$LOGS/$1.log" >&2 || true
    echo "stack: (what started keeps running: scripts/stack.sh down)" >&2
    exit 1
}

wait_for() {  # name description command...: until the command succeeds, while the process runs
    local name="$1" what="$2" deadline=$((SECONDS + TIMEOUT)); shift 2
    while ((SECONDS < deadline)); do
        live_pid "$name" >/dev/null || fail "$name" "exited during startup"
        if "$@" >/dev/null 2>&1; then
            say "$name: up, $what"
            return 0
        fi
        sleep 1
    done
    fail "$name" "not answering within ${TIMEOUT}s"
}

stop() {  # name: TERM to its process group, KILL after 30 s
    local name="$1" pid i
    if ! pid="$(live_pid "$name")"; then
        rm -f "$RUN/$name.pid"
        return 0
    fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$RUN/$name.pid"
    say "$name: stopped (pid $pid)"
}

# shellcheck disable=SC2016  # $1 is the inner shell's
listening() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }  # port

workers() { seq 1 "$WORKERS" | sed 's/^/worker/'; }
PROCESSES() { echo code-server daemon webserver; workers; echo web; }

# Databases, bucket and schema the stack needs, created when missing (idempotent).
prepare() {
    "$BIN/python" - <<'EOF'
import os

import boto3
import psycopg
from sqlalchemy.engine import make_url

for var in ("USAGE_STATS_DAGSTER_POSTGRES_URL", "USAGE_STATS_ADMIN_DB_URL"):
    url = make_url(os.environ[var])
    server = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,))
        if exists.fetchone() is None:
            conn.execute(f'CREATE DATABASE "{url.database}"')
            print(f"stack: created PostgreSQL database {url.database}")
s3 = boto3.client("s3", endpoint_url=os.environ.get("USAGE_STATS_S3_ENDPOINT_URL"))
for var in ("USAGE_STATS_LAKE_URL", "USAGE_STATS_WAREHOUSE_URL"):
    if os.environ[var].startswith("s3://"):
        bucket = os.environ[var][5:].split("/", 1)[0]
        if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=bucket)
            print(f"stack: created bucket {bucket}")
EOF
    "$BIN/usage-stats" db upgrade >/dev/null
}

celery_ping() {  # name: the worker answers a ping through the broker
    "$BIN/python" -c '
import os, sys
from celery import Celery
app = Celery(broker=os.environ["USAGE_STATS_CELERY_BROKER_URL"])
names = {n.split("@")[0] for r in (app.control.ping(timeout=2) or []) for n in r}
sys.exit(0 if sys.argv[1] in names else 1)' "$1"
}

cmd_up() {
    local s w
    # services.sh only for servers that do not answer (it takes its services dir's lock).
    for s in "postgres:${USAGE_STATS_POSTGRES_PORT:-5433}" "redis:${USAGE_STATS_REDIS_PORT:-6380}" \
        "opensearch:${USAGE_STATS_OPENSEARCH_PORT:-9200}" "minio:${USAGE_STATS_S3_PORT:-9000}"; do
        listening "${s#*:}" || "$SERVICES" start "${s%%:*}"
    done
    if [[ ${USAGE_STATS_STACK_OPENSEARCH:-node} == cluster ]]; then "$SERVICES" start cluster; fi
    mkdir -p "$DAGSTER_HOME" "$USAGE_STATS_DATA_DIR"
    cp "$ROOT/deploy/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
    prepare
    # The instance's schema, once, before the processes that would each create it on a new
    # database at their first connection (several at once collide: "asset_keys already exists").
    "$BIN/dagster" instance migrate >/dev/null || die "dagster instance migrate failed (USAGE_STATS_DAGSTER_POSTGRES_URL)"
    say "Dagster instance schema up to date"

    launch code-server "$BIN/dagster" api grpc -h "$USAGE_STATS_CODE_SERVER_HOST" \
        -p "$USAGE_STATS_CODE_SERVER_PORT" -f definitions.py -d "$ROOT" --location-name usage-stats
    for w in $(workers); do
        launch "$w" "$BIN/dagster-celery" worker start -A dagster_celery.app \
            -y deploy/celery.yaml -n "$w" -- --concurrency=1
    done
    launch web "$BIN/usage-stats" serve
    wait_for code-server "gRPC on $USAGE_STATS_CODE_SERVER_HOST:$USAGE_STATS_CODE_SERVER_PORT" \
        "$BIN/dagster" api grpc-health-check -p "$USAGE_STATS_CODE_SERVER_PORT"
    launch daemon "$BIN/dagster-daemon" run -w deploy/workspace.yaml
    launch webserver "$BIN/dagster-webserver" -w deploy/workspace.yaml -h 127.0.0.1 \
        -p "$USAGE_STATS_STACK_WEBSERVER_PORT"
    wait_for webserver "http://127.0.0.1:$USAGE_STATS_STACK_WEBSERVER_PORT" \
        curl -sf --max-time 2 "http://127.0.0.1:$USAGE_STATS_STACK_WEBSERVER_PORT/server_info"
    wait_for daemon "schedules, sensors, backfills, run queue" \
        "$BIN/dagster-daemon" liveness-check
    for w in $(workers); do wait_for "$w" "Celery worker on $USAGE_STATS_CELERY_BROKER_URL" celery_ping "$w"; done
    wait_for web "http://$USAGE_STATS_WEB_HOST:$USAGE_STATS_WEB_PORT" \
        curl -sf --max-time 2 "http://$USAGE_STATS_WEB_HOST:$USAGE_STATS_WEB_PORT/health"
    cat <<EOF

stack: up. Open http://127.0.0.1:$USAGE_STATS_STACK_WEBSERVER_PORT (Dagster) and http://$USAGE_STATS_WEB_HOST:$USAGE_STATS_WEB_PORT (statistics, dashboard, SUSHI).
stack: settings: eval "\$(scripts/stack.sh env)"; sources: usage-stats sources import <file>
stack: logs in $LOGS; stop with scripts/stack.sh down
EOF
}

cmd_down() {
    local p
    # Front to back: nothing new is launched while the workers finish.
    for p in webserver daemon web $(workers) code-server; do stop "$p"; done
}

cmd_status() {
    local p pid rc=0
    for p in $(PROCESSES); do
        if pid="$(live_pid "$p")"; then say "$p: running (pid $pid)"; else say "$p: not running"; rc=3; fi
    done
    return "$rc"
}

case "${1:-}" in
    up | down | status | env) ;;
    *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
mkdir -p "$RUN" "$LOGS"
configure
exec 9>"$STACK/.lock"
flock 9
"cmd_$1"
