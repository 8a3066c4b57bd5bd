#!/usr/bin/env bash
# Installs (once, cached) and runs the real servers the test suite talks to, on 127.0.0.1 only:
#   - OpenSearch (integ-test zip from Maven Central, no security plugin)
#   - MinIO as the S3-compatible store (built from source with `go install`)
#
# Usage: scripts/services.sh start|stop|status|env [opensearch|minio]
#   start   install what is missing, start what is not running, wait until both answer
#   stop    stop both (whole process trees); fine when nothing runs
#   status  say what runs
#   env     print `export` lines for clients: eval "$(scripts/services.sh env)"
#
# Settings (environment):
#   USAGE_STATS_SERVICES_DIR       where servers keep data, logs and pid files (default: <repo>/.services)
#   USAGE_STATS_CACHE_DIR          downloads and builds shared by checkouts (default: ~/.cache/usage-stats)
#   USAGE_STATS_OPENSEARCH_PORT    OpenSearch HTTP port (default 9200)
#   USAGE_STATS_OPENSEARCH_TRANSPORT_PORT  node-to-node port (default 19300, away from other clusters' 9300)
#   USAGE_STATS_S3_PORT            S3 API port (default 9000)
#   USAGE_STATS_S3_ACCESS_KEY / USAGE_STATS_S3_SECRET_KEY   MinIO root credentials
#   USAGE_STATS_SERVICES_TIMEOUT   seconds to wait for each server to answer (default 120)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SD="${USAGE_STATS_SERVICES_DIR:-$ROOT/.services}"
# Downloads and builds shared by every checkout on this machine (a fresh clone, as CI uses,
# must not rebuild MinIO for five minutes): the OpenSearch zip and the MinIO binary.
CACHE="${USAGE_STATS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/usage-stats}"

OPENSEARCH_VERSION=2.19.5
OS_PORT="${USAGE_STATS_OPENSEARCH_PORT:-9200}"
OS_TRANSPORT_PORT="${USAGE_STATS_OPENSEARCH_TRANSPORT_PORT:-19300}"
OS_USER=usage-stats-os   # OpenSearch refuses to run as root; used only when we are root
OS_HOME="$SD/opensearch-$OPENSEARCH_VERSION"
OS_VAR="$SD/opensearch"  # data, logs, tmp: survive a version bump of the unpacked dir

# MinIO's RELEASE.* tags are not semver, and the Go module proxy we can reach answers 403
# "not available" for them (and for their commit hashes); it does serve @latest, a master
# pseudo-version (2026-02-12, after the last tag RELEASE.2025-10-15T17-29-55Z). Pinned here.
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
S3_PORT="${USAGE_STATS_S3_PORT:-9000}"
S3_ACCESS_KEY="${USAGE_STATS_S3_ACCESS_KEY:-usage-stats}"
S3_SECRET_KEY="${USAGE_STATS_S3_SECRET_KEY:-usage-stats-secret}"   # MinIO wants >= 8 chars
S3_REGION=us-east-1

TIMEOUT="${USAGE_STATS_SERVICES_TIMEOUT:-120}"
RUN="$SD/run"    # pid files
LOGS="$SD/logs"  # stdout/stderr of each server

say() { echo "services: $*"; }
die() { echo "services: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- process helpers

# The pid in a pid file, if that process is alive and still is the server we started
# (a stale pid file may name a recycled pid).
live_pid() {  # name cmdline-marker
    local pidfile="$RUN/$1.pid" pid
    [[ -f $pidfile ]] || return 1
    pid="$(<"$pidfile")"
    [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
    echo "$pid"
}

descendants() {  # pid: all children, grandchildren, ...
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
        echo "$child"
        descendants "$child"
    done
}

# Start a command in its own session (so `stop` can kill its whole process group) with all
# output going to a log. setsid execs in place here (a background job is never a group
# leader), so $! is the server's pid. fd 9 (our lock) must not leak into the server.
launch() {  # name command...
    local name="$1"; shift
    : >"$LOGS/$name.log"
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN/$name.pid"
}

# During startup the launched pid goes through exec (setsid, setpriv, env, the start script,
# java) and /proc/<pid>/cmdline can be briefly empty: only a vanished pid means it exited.
still_running() {  # name
    local pid
    pid="$(cat "$RUN/$1.pid" 2>/dev/null)" || return 1
    kill -0 "$pid" 2>/dev/null
}

any_alive() {  # pids...: true while at least one of them still runs
    local p
    for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done
    return 1
}

stop_one() {  # name cmdline-marker
    local name="$1" pid pids i
    if ! pid="$(live_pid "$1" "$2")"; then
        rm -f "$RUN/$name.pid"
        say "$name: not running"
        return 0
    fi
    # Everything the server spawned, whether or not it stayed in the process group.
    pids="$pid $(descendants "$pid" | tr '\n' ' ')"
    kill -TERM -- "-$pid" 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do  # up to 30 s for a clean shutdown of every process
        # shellcheck disable=SC2086
        any_alive $pids || break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    if any_alive $pids; then
        say "$name: still running after 30 s, killing"
        kill -KILL -- "-$pid" 2>/dev/null || true
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
    say "$name: stopped (pid $pid)"
}

answers() { curl -s -o /dev/null --max-time 2 "$1"; }

fail_with_log() {  # name message
    local log="$LOGS/$1.log"
    echo "services: $1: $2; last lines of $log:" >&2
    tail -n 30 "$log" >&2 || true
    # A Java stack trace fills the tail; the cause is usually in the first error lines.
    if grep -qE '\[ERROR\]|Exception|Caused by|FATAL' "$log"; then
        echo "services: first error lines of $log:" >&2
        grep -E '\[ERROR\]|Exception|Caused by|FATAL' "$log" | grep -v 'JVM arguments' | head -n 6 | cut -c1-400 >&2
    fi
    echo "services: (the other server, if it started, keeps running: scripts/services.sh stop)" >&2
    exit 1
}

# ---------------------------------------------------------------- OpenSearch

# OpenSearch 2.x needs the Java SecurityManager, which JDK 24+ no longer has: take the first
# JDK 11..23 from $JAVA_HOME, the `java` on PATH, or /usr/lib/jvm.
find_java_home() {
    local candidates=() c major java
    [[ -n ${JAVA_HOME:-} ]] && candidates+=("$JAVA_HOME")
    if java="$(command -v java)"; then
        candidates+=("$(dirname "$(dirname "$(readlink -f "$java")")")")
    fi
    candidates+=(/usr/lib/jvm/*)
    for c in "${candidates[@]}"; do
        [[ -x $c/bin/java ]] || continue
        major="$("$c/bin/java" -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p')"
        if [[ -n $major ]] && ((major >= 11 && major <= 23)); then
            echo "$c"
            return 0
        fi
    done
    return 1
}

install_opensearch() {
    [[ -x $OS_HOME/bin/opensearch ]] && return 0
    local zip="$CACHE/opensearch-$OPENSEARCH_VERSION.zip" tmp
    if [[ ! -f $zip ]]; then
        say "opensearch: fetching $OPENSEARCH_VERSION with Maven (first time only)"
        command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
        mkdir -p "$CACHE"
        tmp="$(mktemp -d "$CACHE/.mvn.XXXXXX")"
        # Output to a log: Maven 3.8 prints colour codes even with -q -B.
        mvn -q -B dependency:copy \
            -Dartifact="org.opensearch.distribution.integ-test-zip:opensearch:$OPENSEARCH_VERSION:zip" \
            -DoutputDirectory="$tmp" >"$LOGS/opensearch-fetch.log" 2>&1 \
            || { rm -rf "$tmp"; tail -n 30 "$LOGS/opensearch-fetch.log" >&2
                 die "Maven could not fetch OpenSearch $OPENSEARCH_VERSION (log: $LOGS/opensearch-fetch.log)"; }
        mv "$tmp/opensearch-$OPENSEARCH_VERSION.zip" "$zip"  # atomic: no half-written zip
        rm -rf "$tmp"
    fi
    say "opensearch: unpacking"
    tmp="$(mktemp -d "$SD/.unpack.XXXXXX")"
    unzip -q "$zip" -d "$tmp"
    mv "$tmp/opensearch-$OPENSEARCH_VERSION" "$OS_HOME"  # atomic: unpacked dir is whole or absent
    rm -rf "$tmp"
}

ensure_os_user() {
    id -u "$OS_USER" >/dev/null 2>&1 && return 0
    say "opensearch: creating system user $OS_USER (OpenSearch will not run as root)"
    useradd --system --no-create-home --user-group --shell /usr/sbin/nologin "$OS_USER" \
        || id -u "$OS_USER" >/dev/null 2>&1  # lost a race with another start: fine
}

# Matches the launcher chain (setsid/setpriv/env/bin/opensearch, all exec in place) as well
# as the java it ends in (-Dopensearch.path.home=...).
os_pid() { live_pid opensearch "$OS_HOME"; }

launch_opensearch() {
    local java_home
    java_home="$(find_java_home)" || die "no JDK 11..23 found (OpenSearch $OPENSEARCH_VERSION needs one; JDK 17 is the tested one)"
    mkdir -p "$OS_VAR/data" "$OS_VAR/logs" "$OS_VAR/tmp"

    # Written on every start so port changes take effect. Loopback only, one node, no disk
    # watermarks (a full CI disk must not turn indices read-only), no security plugin in
    # this distribution (so plain http, no credentials).
    cat >"$OS_HOME/config/opensearch.yml" <<EOF
# Written by scripts/services.sh on every start; edit the script, not this file.
cluster.name: usage-stats
node.name: usage-stats-test
discovery.type: single-node
network.host: 127.0.0.1
http.port: $OS_PORT
transport.port: $OS_TRANSPORT_PORT
path.data: $OS_VAR/data
path.logs: $OS_VAR/logs
cluster.routing.allocation.disk.threshold_enabled: false
action.auto_create_index: true
EOF

    local -a as_user=()
    if [[ $(id -u) -eq 0 ]]; then
        ensure_os_user
        chown -R "$OS_USER:$OS_USER" "$OS_HOME" "$OS_VAR"
        # setpriv execs (unlike su/runuser, which stay as a parent), so the pid stays java's.
        as_user=(setpriv --reuid="$OS_USER" --regid="$OS_USER" --init-groups --)
        "${as_user[@]}" test -r "$OS_HOME/bin/opensearch" \
            || die "user $OS_USER cannot reach $OS_HOME (a parent directory closed to others?)"
    fi

    launch opensearch "${as_user[@]}" env \
        HOME="$OS_VAR" \
        OPENSEARCH_JAVA_HOME="$java_home" \
        OPENSEARCH_JAVA_OPTS="-Xms512m -Xmx512m" \
        OPENSEARCH_TMPDIR="$OS_VAR/tmp" \
        "$OS_HOME/bin/opensearch"
    say "opensearch: starting (pid $(<"$RUN/opensearch.pid"), java $java_home)"
}

wait_opensearch() {
    local deadline=$((SECONDS + TIMEOUT)) health version
    while ((SECONDS < deadline)); do
        still_running opensearch || fail_with_log opensearch "exited during startup"
        health="$(curl -s --max-time 2 "http://127.0.0.1:$OS_PORT/_cluster/health" || true)"
        if [[ $health =~ \"status\":\"(green|yellow)\" ]]; then
            version="$(curl -s --max-time 2 "http://127.0.0.1:$OS_PORT/" \
                | sed -nE 's/.*"number" *: *"([^"]+)".*/\1/p' | head -n 1)"
            say "opensearch: up, version ${version:-?}, cluster ${BASH_REMATCH[1]}, http://127.0.0.1:$OS_PORT"
            return 0
        fi
        sleep 1
    done
    fail_with_log opensearch "no green/yellow cluster health within ${TIMEOUT}s"
}

# ---------------------------------------------------------------- MinIO (S3)

MINIO_BIN="$SD/bin/minio"

install_minio() {
    # The stamp says which version the binary was built from: a new pin rebuilds.
    [[ -x $MINIO_BIN && $(cat "$MINIO_BIN.version" 2>/dev/null) == "$MINIO_VERSION" ]] && return 0
    local cached="$CACHE/minio-$MINIO_VERSION"
    if [[ -x $cached ]]; then
        mkdir -p "$SD/bin"
        cp "$cached" "$MINIO_BIN.tmp" && mv "$MINIO_BIN.tmp" "$MINIO_BIN"
        echo "$MINIO_VERSION" >"$MINIO_BIN.version"
        return 0
    fi
    command -v go >/dev/null || die "go not found (MinIO is built from source with go install)"
    say "minio: building $MINIO_MODULE@$MINIO_VERSION (first time only; ~6 min on 2 cores)"
    local started=$SECONDS
    # Module and build caches live in the services dir (not ~/go) and are removed after the
    # build: ~2 GB that only the binary (~150 MB) is needed from. -modcacherw lets rm work.
    GOBIN="$SD/bin" GOMODCACHE="$SD/go/mod" GOCACHE="$SD/go/cache" \
        GOFLAGS="${GOFLAGS:-} -modcacherw -buildvcs=false" CGO_ENABLED=0 \
        go install "$MINIO_MODULE@$MINIO_VERSION" >"$LOGS/minio-build.log" 2>&1 \
        || { tail -n 30 "$LOGS/minio-build.log" >&2; die "building MinIO failed (log: $LOGS/minio-build.log)"; }
    echo "$MINIO_VERSION" >"$MINIO_BIN.version"
    rm -rf "$SD/go"
    mkdir -p "$CACHE"
    cp "$MINIO_BIN" "$cached.tmp" && mv "$cached.tmp" "$cached"
    say "minio: built in $((SECONDS - started))s"
}

minio_pid() { live_pid minio "$MINIO_BIN server"; }

launch_minio() {
    mkdir -p "$SD/minio/data"
    # No web console (one port less to clash), no update checks (no internet here).
    launch minio env \
        MINIO_ROOT_USER="$S3_ACCESS_KEY" \
        MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" \
        MINIO_SITE_REGION="$S3_REGION" \
        MINIO_BROWSER=off \
        MINIO_UPDATE=off \
        "$MINIO_BIN" server --address "127.0.0.1:$S3_PORT" "$SD/minio/data"
    say "minio: starting (pid $(<"$RUN/minio.pid"))"
}

wait_minio() {
    local deadline=$((SECONDS + TIMEOUT)) version
    while ((SECONDS < deadline)); do
        still_running minio || fail_with_log minio "exited during startup"
        if curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$S3_PORT/minio/health/ready"; then
            # The go-install build reports DEVELOPMENT.GOGET, so name the module version too.
            version="$("$MINIO_BIN" --version | head -n 1)"
            say "minio: up, $MINIO_MODULE@$MINIO_VERSION ($version), http://127.0.0.1:$S3_PORT"
            return 0
        fi
        sleep 0.5
    done
    fail_with_log minio "not answering within ${TIMEOUT}s"
}

# ---------------------------------------------------------------- commands

# Which servers a command acts on: both, or the one named after the command (the fault tests
# stop and restart OpenSearch alone).
wants() { [[ -z $ONLY || $ONLY == "$1" ]]; }

cmd_start() {
    local os_new=0 minio_new=0

    # Start OpenSearch first, then build MinIO while the JVM warms up.
    if ! wants opensearch; then
        :
    elif os_pid >/dev/null; then
        say "opensearch: already running (pid $(os_pid))"
    else
        answers "http://127.0.0.1:$OS_PORT/" \
            && die "port $OS_PORT answers but is not our OpenSearch; stop that or set USAGE_STATS_OPENSEARCH_PORT"
        install_opensearch
        launch_opensearch
        os_new=1
    fi

    if ! wants minio; then
        :
    elif minio_pid >/dev/null; then
        say "minio: already running (pid $(minio_pid))"
    else
        answers "http://127.0.0.1:$S3_PORT/" \
            && die "port $S3_PORT answers but is not our MinIO; stop that or set USAGE_STATS_S3_PORT"
        install_minio
        launch_minio
        minio_new=1
    fi

    ((os_new)) && wait_opensearch
    ((minio_new)) && wait_minio
    return 0
}

cmd_stop() {
    if wants opensearch; then stop_one opensearch "$OS_HOME"; fi
    if wants minio; then stop_one minio "$MINIO_BIN server"; fi
}

cmd_status() {
    local pid rc=0
    if pid="$(os_pid)"; then
        say "opensearch: running (pid $pid), http://127.0.0.1:$OS_PORT, $(curl -s --max-time 2 \
            "http://127.0.0.1:$OS_PORT/_cat/health?h=status" || echo 'not answering')"
    else
        say "opensearch: not running"; rc=3
    fi
    if pid="$(minio_pid)"; then
        say "minio: running (pid $pid), http://127.0.0.1:$S3_PORT, $(curl -sf -o /dev/null --max-time 2 \
            "http://127.0.0.1:$S3_PORT/minio/health/ready" && echo ready || echo 'not answering')"
    else
        say "minio: not running"; rc=3
    fi
    return "$rc"  # 0 only when both run (like LSB status codes)
}

cmd_env() {
    cat <<EOF
export USAGE_STATS_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_DEFAULT_REGION=$S3_REGION
export USAGE_STATS_OPENSEARCH_URL=http://127.0.0.1:$OS_PORT
EOF
}

ONLY="${2:-}"
case "${1:-}" in
    env) cmd_env; exit 0 ;;  # needs no directory and no lock
    start | stop | status) ;;
    *) echo "usage: $0 start|stop|status|env [opensearch|minio]" >&2; exit 2 ;;
esac
case "$ONLY" in
    "" | opensearch | minio) ;;
    *) echo "usage: $0 start|stop|status|env [opensearch|minio]" >&2; exit 2 ;;
esac

mkdir -p "$SD/downloads" "$RUN" "$LOGS"
# One start/stop at a time (e.g. two terminals, or make -j).
exec 9>"$SD/.lock"
flock 9

"cmd_$1"
