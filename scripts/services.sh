#!/usr/bin/env bash
# Installs (once, cached) and runs the real servers the test suite talks to, on 127.0.0.1 only:
#   - OpenSearch (integ-test zip from Maven Central, no security plugin)
#   - MinIO as the S3-compatible store (built from source with `go install`)
#   - PostgreSQL for the admin database (Debian's `postgresql` package)
#   - MariaDB standing in for a Matomo database (Debian's `mariadb-server` package)
#   - Redis as the Celery broker of the distributed executor (Debian's `redis-server` package)
#   - an OAI-PMH data provider (`oai-repo` from PyPI, usage_stats/demo/oai_server.py) serving
#     planted records; tests put datasets of their own into it
# PostgreSQL, MariaDB and Redis are apt-installed when their binaries are missing (that needs root),
# but run as our own instances on our own data directories, never as the Debian system
# cluster/service (which, where apt may start services, listens on 5432/3306: our defaults
# are 5433/3307; Redis's system service takes 6379, ours 6380). As root they run as the package's system users `postgres` and `mysql`.
#
# Usage: scripts/services.sh start|stop|status|env [opensearch|minio|postgres|mariadb|redis|oai]
#        scripts/services.sh start|stop|status cluster|cluster-node1|cluster-node2
#   start   install what is missing, start what is not running, wait until all answer
#   stop    stop all (OpenSearch and MinIO: whole process trees; PostgreSQL: fast shutdown;
#           MariaDB: clean shutdown; the 2-node cluster too if started); fine when nothing runs
#   status  say what runs; exit 0 only when every server asked about runs
#   env     print `export` lines for clients: eval "$(scripts/services.sh env)"
#   The second argument limits start/stop/status to that one server.
#   `cluster` is a separate 2-node OpenSearch cluster (the tests of replicas and of a node
#   lost mid-write start and stop it, and each node alone); never started by a plain `start`.
#
# Settings (environment):
#   USAGE_STATS_SERVICES_DIR       where servers keep data, logs and pid files (default: <repo>/.services)
#   USAGE_STATS_CACHE_DIR          downloads and builds shared by checkouts (default: ~/.cache/usage-stats)
#   USAGE_STATS_OPENSEARCH_PORT    OpenSearch HTTP port (default 9200)
#   USAGE_STATS_OPENSEARCH_TRANSPORT_PORT  node-to-node port (default 19300, away from other clusters' 9300)
#   USAGE_STATS_OPENSEARCH_CLUSTER_PORT  HTTP port of cluster node 1 (default 9201; node 2: +1)
#   USAGE_STATS_OPENSEARCH_CLUSTER_TRANSPORT_PORT  transport port of node 1 (default 19301; +1)
#   USAGE_STATS_OPENSEARCH_CLUSTER_HEAP  Java heap of each cluster node (default 384m)
#   USAGE_STATS_S3_PORT            S3 API port (default 9000)
#   USAGE_STATS_S3_ACCESS_KEY / USAGE_STATS_S3_SECRET_KEY   MinIO root credentials
#   USAGE_STATS_POSTGRES_PORT      PostgreSQL port (default 5433); role, password and database
#                                  `usage_stats` (the role may create databases)
#   USAGE_STATS_MARIADB_PORT       MariaDB port (default 3307); user and password `matomo`
#                                  (all privileges, from 127.0.0.1/localhost), database `matomo`
#   USAGE_STATS_REDIS_PORT         Redis port (default 6380); no password, loopback only, no
#                                  persistence (a broker's queue is gone with the server)
#   USAGE_STATS_OAI_PORT           OAI-PMH test provider port (default 8765); sources at
#                                  http://127.0.0.1:<port>/oai/<dataset>/<source key>
#   USAGE_STATS_SERVICES_TIMEOUT   seconds to wait for each server to answer (default 120)
# PostgreSQL and MariaDB keep their data in <services dir>/postgres and <services dir>/mariadb
# (Redis its working directory in <services dir>/redis),
# unless started as root from a services dir their system user cannot reach (a parent closed
# to others, e.g. a checkout under /root) or too deep for a unix socket path: then in
# /var/tmp/usage-stats-<hash of the services dir>/{postgres,mariadb}, one per checkout.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# Absolute (without resolving symlinks): PostgreSQL and MariaDB are run from / and the
# per-checkout fallback directory is keyed by this path.
SD="$(realpath -m -s -- "${USAGE_STATS_SERVICES_DIR:-$ROOT/.services}")"
# Downloads and builds shared by every checkout on this machine (a fresh clone, as CI uses,
# must not rebuild MinIO for five minutes): the OpenSearch zip and the MinIO binary.
CACHE="${USAGE_STATS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/usage-stats}"

OPENSEARCH_VERSION=2.19.5
OS_PORT="${USAGE_STATS_OPENSEARCH_PORT:-9200}"
OS_TRANSPORT_PORT="${USAGE_STATS_OPENSEARCH_TRANSPORT_PORT:-19300}"
OS_USER=usage-stats-os   # OpenSearch refuses to run as root; used only when we are root
OS_HOME="$SD/opensearch-$OPENSEARCH_VERSION"
OS_VAR="$SD/opensearch"  # data, logs, tmp: survive a version bump of the unpacked dir
OSC_HEAP="${USAGE_STATS_OPENSEARCH_CLUSTER_HEAP:-384m}"

# MinIO's RELEASE.* tags are not semver, and the Go module proxy we can reach answers 403
# "not available" for them (and for their commit hashes); it does serve @latest, a master
# pseudo-version (2026-02-12, after the last tag RELEASE.2025-10-15T17-29-55Z). Pinned here.
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
S3_PORT="${USAGE_STATS_S3_PORT:-9000}"
S3_ACCESS_KEY="${USAGE_STATS_S3_ACCESS_KEY:-usage-stats}"
S3_SECRET_KEY="${USAGE_STATS_S3_SECRET_KEY:-usage-stats-secret}"   # MinIO wants >= 8 chars
S3_REGION=us-east-1

PG_PORT="${USAGE_STATS_POSTGRES_PORT:-5433}"
PG_USER=postgres      # system user (made by Debian's package) the server runs as when we are root
PG_ROLE=usage_stats   # role, password and database the tests use
MY_PORT="${USAGE_STATS_MARIADB_PORT:-3307}"
MY_USER=mysql         # system user (made by Debian's package) the server runs as when we are root
MY_DB=matomo          # database, user and password the tests use
MY_BIN=/usr/sbin/mariadbd

RD_PORT="${USAGE_STATS_REDIS_PORT:-6380}"
RD_BIN=/usr/bin/redis-server

OAI_PORT="${USAGE_STATS_OAI_PORT:-8765}"
OAI_MODULE=usage_stats.demo.oai_server
# The project's own interpreter (make's venv) when there is one: the provider needs oai-repo.
PYTHON="${USAGE_STATS_PYTHON:-$ROOT/.venv/bin/python}"
[[ -x $PYTHON ]] || PYTHON="$(command -v python3)"

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

# Without a signal: TERM to the whole process tree. With one: that signal to the server's main
# process only, for servers that shut their own children down (PostgreSQL: INT is its "fast"
# shutdown, and a TERM to one of its auxiliary processes would look like a crash to it).
stop_one() {  # name cmdline-marker [signal]
    local name="$1" signal="${3:-}" pid pids i
    if ! pid="$(live_pid "$1" "$2")"; then
        rm -f "$RUN/$name.pid"
        say "$name: not running"
        return 0
    fi
    # Everything the server spawned, whether or not it stayed in the process group.
    pids="$pid $(descendants "$pid" | tr '\n' ' ')"
    if [[ -n $signal ]]; then
        kill "-$signal" "$pid" 2>/dev/null || true
    else
        kill -TERM -- "-$pid" 2>/dev/null || true
        # shellcheck disable=SC2086
        kill -TERM $pids 2>/dev/null || true
    fi
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
# shellcheck disable=SC2016  # $1 is the inner shell's
listening() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }  # port

fail_with_log() {  # name message
    local log="$LOGS/$1.log"
    echo "services: $1: $2; last lines of $log:" >&2
    tail -n 30 "$log" >&2 || true
    # A Java stack trace fills the tail; the cause is usually in the first error lines.
    if grep -qE '\[ERROR\]|Exception|Caused by|FATAL' "$log"; then
        echo "services: first error lines of $log:" >&2
        grep -E '\[ERROR\]|Exception|Caused by|FATAL' "$log" | grep -v 'JVM arguments' | head -n 6 | cut -c1-400 >&2
    fi
    echo "services: (the other servers, if they started, keep running: scripts/services.sh stop)" >&2
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

# ---------------------------------------------------------------- OpenSearch cluster (2 nodes)

# A second, separate cluster of two nodes of the same unpacked distribution, for the tests of
# replicas and of a node lost mid-write (never started by a plain `start`: `start cluster`).
# Each node has its own config dir (OPENSEARCH_PATH_CONF), data, logs and ports. Node 1 is the
# only cluster-manager-eligible node (a fixed voting configuration of one: with two eligible
# nodes OpenSearch keeps only one of them voting anyway, and which one would be chance); node
# 2 holds data. With one replica, each node holds a copy of every shard: stopping node 2 leaves
# a working cluster (yellow); stopping node 1 leaves node 2 without a cluster manager, which
# still serves reads (cluster.no_cluster_manager_block: write, OpenSearch's default) and
# refuses writes until node 1 is back. A production cluster has three manager-eligible nodes.
OSC_NAME=usage-stats-cluster
OSC_VAR="$SD/opensearch-cluster"

osc_http_port() { echo "${USAGE_STATS_OPENSEARCH_CLUSTER_PORT:-9201}" | awk -v n="$1" '{print $1 + n - 1}'; }
osc_transport_port() { echo "${USAGE_STATS_OPENSEARCH_CLUSTER_TRANSPORT_PORT:-19301}" | awk -v n="$1" '{print $1 + n - 1}'; }
osc_pid() { live_pid "opensearch-node$1" "$OS_HOME"; }

launch_os_node() {  # node number (1 or 2)
    local n="$1" java_home conf dir roles
    java_home="$(find_java_home)" || die "no JDK 11..23 found (OpenSearch $OPENSEARCH_VERSION needs one)"
    dir="$OSC_VAR/node$n"
    conf="$dir/config"
    mkdir -p "$dir/data" "$dir/logs" "$dir/tmp" "$conf"
    # The distribution's jvm.options and log4j2.properties, our own opensearch.yml.
    cp -r "$OS_HOME/config/jvm.options" "$OS_HOME/config/jvm.options.d" \
        "$OS_HOME/config/log4j2.properties" "$conf/"
    if ((n == 1)); then roles='[cluster_manager, data, ingest]'; else roles='[data, ingest]'; fi
    cat >"$conf/opensearch.yml" <<EOF
# Written by scripts/services.sh on every start; edit the script, not this file.
cluster.name: $OSC_NAME
node.name: $OSC_NAME-node$n
node.roles: $roles
network.host: 127.0.0.1
http.port: $(osc_http_port "$n")
transport.port: $(osc_transport_port "$n")
discovery.seed_hosts: ["127.0.0.1:$(osc_transport_port 1)", "127.0.0.1:$(osc_transport_port 2)"]
cluster.initial_cluster_manager_nodes: ["$OSC_NAME-node1"]
path.data: $dir/data
path.logs: $dir/logs
cluster.routing.allocation.disk.threshold_enabled: false
action.auto_create_index: true
EOF

    local -a as_user=()
    if [[ $(id -u) -eq 0 ]]; then
        ensure_os_user
        chown -R "$OS_USER:$OS_USER" "$OS_HOME" "$dir"
        as_user=(setpriv --reuid="$OS_USER" --regid="$OS_USER" --init-groups --)
    fi
    launch "opensearch-node$n" "${as_user[@]}" env \
        HOME="$dir" \
        OPENSEARCH_JAVA_HOME="$java_home" \
        OPENSEARCH_PATH_CONF="$conf" \
        OPENSEARCH_JAVA_OPTS="-Xms${OSC_HEAP} -Xmx${OSC_HEAP}" \
        OPENSEARCH_TMPDIR="$dir/tmp" \
        "$OS_HOME/bin/opensearch"
    say "opensearch-node$n: starting (pid $(<"$RUN/opensearch-node$n.pid"), http://127.0.0.1:$(osc_http_port "$n"))"
}

# Up when the node answers and sees a cluster manager with the nodes started so far.
wait_os_node() {  # node number
    local n="$1" port deadline=$((SECONDS + TIMEOUT)) health
    port="$(osc_http_port "$n")"
    while ((SECONDS < deadline)); do
        still_running "opensearch-node$n" || fail_with_log "opensearch-node$n" "exited during startup"
        health="$(curl -s --max-time 2 "http://127.0.0.1:$port/_cluster/health" || true)"
        if [[ $health =~ \"status\":\"(green|yellow)\" && $health =~ \"number_of_nodes\":([0-9]+) ]]; then
            say "opensearch-node$n: up, cluster $OSC_NAME of ${BASH_REMATCH[1]} node(s), http://127.0.0.1:$port"
            return 0
        fi
        sleep 1
    done
    fail_with_log "opensearch-node$n" "not in a green/yellow cluster within ${TIMEOUT}s"
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

# ---------------------------------------------------------------- Debian packages

# PostgreSQL and MariaDB come from apt. Installing needs root; the lists may be missing (a
# slim image) or stale (a 404 for a superseded .deb): then update them and try once more.
apt_install() {  # package...
    [[ $(id -u) -eq 0 ]] || die "not installed: $* (as root: apt-get install $*)"
    command -v apt-get >/dev/null || die "not installed: $* (and no apt-get here)"
    say "installing Debian packages: $* (first time only)"
    local started=$SECONDS log="$LOGS/apt.log"
    local -a apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
    # fd 9 (our lock) closed: a service the package starts must not hold it.
    if ! "${apt[@]}" install -y "$@" >"$log" 2>&1 9>&-; then
        say "apt-get install failed; updating the package lists and retrying"
        { "${apt[@]}" update && "${apt[@]}" install -y "$@"; } >>"$log" 2>&1 9>&- \
            || { tail -n 30 "$log" >&2; die "apt-get install $* failed (log: $log)"; }
    fi
    say "installed $* in $((SECONDS - started))s"
}

# Where PostgreSQL or MariaDB keeps data, socket and pid file: $SD/<name>, unless we are root
# and the server's system user cannot reach $SD (a parent directory closed to others, e.g. a
# checkout under /root), or the path is too long for a unix socket (108 bytes with the file
# name): then a per-checkout directory in /var/tmp (kept across reboots, unlike /tmp) keyed by
# a hash of $SD. Decided anew by every command, after the package (and user) exists.
server_var() {  # name system-user
    local dir="$SD/$1"
    if ((${#dir} > 80)) || { [[ $(id -u) -eq 0 ]] && id -u "$2" >/dev/null 2>&1 \
        && ! setpriv --reuid="$2" --regid="$2" --init-groups -- test -x "$SD"; }; then
        dir="/var/tmp/usage-stats-$(printf '%s' "$SD" | sha256sum | cut -c1-16)/$1"
    fi
    echo "$dir"
}

# Commands run as the server's system user when we are root (setpriv execs, so a launched pid
# stays the server's), from / (initdb and psql complain about a cwd they cannot enter, such as
# /root): "${PG_AS[@]}" / "${MY_AS[@]}" in front, empty when we are not root.
as_user() {  # system-user: prints the prefix, one word a line
    if [[ $(id -u) -eq 0 ]]; then
        printf '%s\n' setpriv "--reuid=$1" "--regid=$1" --init-groups -- env -C /
    fi
}

# A server dir of our own, 0700: the unix sockets in it let in PostgreSQL's superuser without
# a password and MariaDB's root with an empty one; clients use TCP with passwords.
prepare_var() {  # dir system-user
    mkdir -p "$1"
    if [[ $(id -u) -eq 0 ]]; then
        id -u "$2" >/dev/null 2>&1 || die "system user $2 missing (it comes with the Debian package)"
        chown -R "$2:" "$1"
    fi
    chmod 700 "$1"
}

# ---------------------------------------------------------------- PostgreSQL

PG_VAR='' PG_DATA='' PG_AS=()
pg_paths() {
    PG_VAR="$(server_var postgres "$PG_USER")"
    PG_DATA="$PG_VAR/data"
    mapfile -t PG_AS < <(as_user "$PG_USER")
}

# The /usr/lib/postgresql/<major>/bin our data dir was made with, else the newest one.
pg_bindir() {
    local major="" bin
    [[ -f $PG_DATA/PG_VERSION ]] && major="$(<"$PG_DATA/PG_VERSION")"
    if [[ -n $major ]]; then
        bin="/usr/lib/postgresql/$major/bin"
    else
        bin="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null \
            | sort -V | tail -n 1)"
        bin="${bin%/postgres}"
    fi
    [[ -n $bin && -x $bin/postgres && -x $bin/initdb && -x $bin/psql && -x $bin/pg_isready ]] || return 1
    echo "$bin"
}

pg_pid() { live_pid postgres "$PG_DATA"; }

pg_sql() {  # psql args...: as the superuser over our unix socket
    "${PG_AS[@]}" "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_VAR" -p "$PG_PORT" \
        -U postgres -d postgres "$@"
}

launch_postgres() {
    local bin major
    if ! bin="$(pg_bindir)"; then
        major="$(cat "$PG_DATA/PG_VERSION" 2>/dev/null)" \
            && die "$PG_DATA was made by PostgreSQL $major, whose binaries are missing (apt-get install postgresql-$major, or remove it)"
        die "no PostgreSQL binaries under /usr/lib/postgresql/*/bin"
    fi
    prepare_var "$PG_VAR" "$PG_USER"
    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
        say "postgres: creating $PG_DATA (initdb, first time only)"
        rm -rf "$PG_DATA.new"  # what an interrupted initdb left
        "${PG_AS[@]}" "$bin/initdb" -D "$PG_DATA.new" --username=postgres --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 >"$LOGS/postgres-initdb.log" 2>&1 \
            || { tail -n 30 "$LOGS/postgres-initdb.log" >&2; die "initdb failed (log: $LOGS/postgres-initdb.log)"; }
        mv "$PG_DATA.new" "$PG_DATA"  # the data dir is whole or absent
    fi
    # After a crash (or kill -9) postgres removes a stale postmaster.pid itself, but not while
    # that pid still exists, and a killed postmaster stays a zombie until init reaps it (which
    # took seconds on a CI VM): give that up to 10 s.
    local old i
    old="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null)" || true
    for ((i = 0; i < 100; i++)); do
        [[ $old =~ ^[0-9]+$ && $(ps -o stat= -p "$old" 2>/dev/null) == Z* ]] || break
        sleep 0.1
    done
    # Written on every start (keeps initdb's owner and mode). The socket (in a 0700 dir) is how
    # this script gets in as the superuser; TCP clients need their password.
    cat >"$PG_DATA/pg_hba.conf" <<EOT
# Written by scripts/services.sh on every start; edit the script, not this file.
local all all              trust
host  all all 127.0.0.1/32 scram-sha-256
EOT
    # Settings on the command line, so a port change needs no edit of postgresql.conf.
    # synchronous_commit=off: faster commits for tests; a crash loses the last ones, no more.
    launch postgres "${PG_AS[@]}" "$bin/postgres" -D "$PG_DATA" \
        -c listen_addresses=127.0.0.1 -c port="$PG_PORT" -c unix_socket_directories="$PG_VAR" \
        -c synchronous_commit=off
    say "postgres: starting (pid $(<"$RUN/postgres.pid"), $bin, data $PG_DATA)"
}

wait_postgres() {
    local deadline=$((SECONDS + TIMEOUT)) bin version
    bin="$(pg_bindir)"
    while ((SECONDS < deadline)); do
        still_running postgres || fail_with_log postgres "exited during startup"
        if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; then
            # Idempotent, on every start: the role (its password and CREATEDB for tests that
            # make databases of their own) and its database.
            pg_sql <<EOT || fail_with_log postgres "creating role and database $PG_ROLE failed"
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
        CREATE ROLE $PG_ROLE;
    END IF;
END \$\$;
ALTER ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_ROLE';
SELECT 'CREATE DATABASE $PG_ROLE OWNER $PG_ROLE'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_ROLE') \gexec
EOT
            version="$(pg_sql -tAc 'SHOW server_version')"
            say "postgres: up, PostgreSQL $version, postgresql://$PG_ROLE@127.0.0.1:$PG_PORT/$PG_ROLE"
            return 0
        fi
        sleep 0.3
    done
    fail_with_log postgres "not accepting connections within ${TIMEOUT}s"
}

# ---------------------------------------------------------------- MariaDB

MY_VAR='' MY_DATA='' MY_SOCK='' MY_AS=()
my_paths() {
    MY_VAR="$(server_var mariadb "$MY_USER")"
    MY_DATA="$MY_VAR/data"
    MY_SOCK="$MY_VAR/mysqld.sock"
    mapfile -t MY_AS < <(as_user "$MY_USER")
}

mariadb_installed() {
    local tool
    [[ -x $MY_BIN ]] || return 1
    for tool in mariadb-install-db mariadb mariadb-admin; do
        command -v "$tool" >/dev/null || return 1
    done
}

my_pid() { live_pid mariadb "--datadir=$MY_DATA"; }

my_sql() {  # mariadb args...: as root (empty password) over our unix socket
    mariadb --no-defaults --socket="$MY_SOCK" --user=root "$@"
}

launch_mariadb() {
    prepare_var "$MY_VAR" "$MY_USER"
    mkdir -p "$MY_VAR/tmp"
    [[ $(id -u) -eq 0 ]] && chown "$MY_USER:" "$MY_VAR/tmp"
    if [[ ! -d $MY_DATA/mysql ]]; then
        say "mariadb: creating $MY_DATA (mariadb-install-db, first time only)"
        rm -rf "$MY_DATA.new"  # what an interrupted run left
        "${MY_AS[@]}" mariadb-install-db --no-defaults --datadir="$MY_DATA.new" \
            --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
            >"$LOGS/mariadb-init.log" 2>&1 \
            || { tail -n 30 "$LOGS/mariadb-init.log" >&2; die "mariadb-install-db failed (log: $LOGS/mariadb-init.log)"; }
        mv "$MY_DATA.new" "$MY_DATA"  # the data dir is whole or absent
    fi
    # --no-defaults: none of /etc/mysql, so say what Debian's config would (utf8mb4, as Matomo
    # uses, instead of the compiled-in latin1). No name resolution: accounts are per IP.
    launch mariadb "${MY_AS[@]}" "$MY_BIN" --no-defaults --datadir="$MY_DATA" \
        --socket="$MY_SOCK" --port="$MY_PORT" --bind-address=127.0.0.1 \
        --pid-file="$MY_VAR/mariadbd.pid" --tmpdir="$MY_VAR/tmp" --skip-name-resolve \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
    say "mariadb: starting (pid $(<"$RUN/mariadb.pid"), data $MY_DATA)"
}

# The way the tests come in: TCP, as the test user.
my_tcp_sql() {  # mariadb args...
    MYSQL_PWD="$MY_DB" mariadb --no-defaults --protocol=TCP --host=127.0.0.1 --port="$MY_PORT" \
        --user="$MY_DB" --connect-timeout=2 "$@"
}

wait_mariadb() {
    local deadline=$((SECONDS + TIMEOUT)) version host
    while ((SECONDS < deadline)); do
        still_running mariadb || fail_with_log mariadb "exited during startup"
        if mariadb-admin --no-defaults --socket="$MY_SOCK" --user=root --connect-timeout=2 \
            ping >/dev/null 2>&1; then
            # Idempotent, on every start. All privileges on everything (throwaway server):
            # tests create and drop databases of their own (matomo_test_...). root keeps only
            # its account for the socket: mariadb-install-db also made passwordless ones for
            # 127.0.0.1, ::1 and the host name (the latter warned about on every start).
            {
                echo "CREATE DATABASE IF NOT EXISTS $MY_DB;"
                for host in 127.0.0.1 localhost; do
                    echo "CREATE USER IF NOT EXISTS '$MY_DB'@'$host' IDENTIFIED BY '$MY_DB';"
                    echo "ALTER USER '$MY_DB'@'$host' IDENTIFIED BY '$MY_DB';"
                    echo "GRANT ALL PRIVILEGES ON *.* TO '$MY_DB'@'$host' WITH GRANT OPTION;"
                done
                my_sql -N -B -e "SELECT CONCAT('DROP USER ', QUOTE(user), '@', QUOTE(host), ';')
                    FROM mysql.user WHERE user = 'root' AND host <> 'localhost'"
            } | my_sql || fail_with_log mariadb "creating database and user $MY_DB failed"
            version="$(my_tcp_sql -N -B -e 'SELECT VERSION()')" \
                || fail_with_log mariadb "user $MY_DB cannot log in over TCP"
            say "mariadb: up, MariaDB $version, mysql://$MY_DB@127.0.0.1:$MY_PORT/$MY_DB"
            return 0
        fi
        sleep 0.3
    done
    fail_with_log mariadb "not answering within ${TIMEOUT}s"
}

# ---------------------------------------------------------------- Redis (Celery broker)

# Runs as whoever runs this script (Redis does not mind root); its own config on the command
# line, never Debian's /etc/redis or its system service (which, where apt may start services,
# listens on 6379).
rd_pid() { live_pid redis "$RD_BIN 127.0.0.1:$RD_PORT"; }

launch_redis() {
    [[ -x $RD_BIN ]] || die "no $RD_BIN (apt-get install redis-server)"
    mkdir -p "$SD/redis"
    # No persistence (save "" and no AOF): a broker's queue lives as long as the server, as
    # the tests need; protected mode stays on (loopback only anyway).
    launch redis "$RD_BIN" --bind 127.0.0.1 --port "$RD_PORT" --dir "$SD/redis" \
        --save "" --appendonly no --daemonize no --logfile ""
    say "redis: starting (pid $(<"$RUN/redis.pid"))"
}

wait_redis() {
    local deadline=$((SECONDS + TIMEOUT)) version
    while ((SECONDS < deadline)); do
        still_running redis || fail_with_log redis "exited during startup"
        if [[ $(redis-cli -h 127.0.0.1 -p "$RD_PORT" ping 2>/dev/null) == PONG ]]; then
            version="$(redis-cli -h 127.0.0.1 -p "$RD_PORT" info server \
                | sed -nE 's/^redis_version:([^[:space:]]+).*/\1/p')"
            say "redis: up, Redis ${version:-?}, redis://127.0.0.1:$RD_PORT"
            return 0
        fi
        sleep 0.2
    done
    fail_with_log redis "not answering within ${TIMEOUT}s"
}

# ---------------------------------------------------------------- OAI-PMH test provider

oai_pid() { live_pid oai "$OAI_MODULE"; }

launch_oai() {
    "$PYTHON" -c 'import oai_repo' 2>/dev/null \
        || die "oai: $PYTHON cannot import oai_repo (pip install -e '.[dev]', or make install)"
    launch oai env -C "$ROOT" PYTHONPATH="$ROOT" "$PYTHON" -m "$OAI_MODULE" \
        --host 127.0.0.1 --port "$OAI_PORT"
    say "oai: starting (pid $(<"$RUN/oai.pid"))"
}

wait_oai() {
    local deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        still_running oai || fail_with_log oai "exited during startup"
        if curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$OAI_PORT/health"; then
            say "oai: up, oai-repo $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("oai-repo"))'), http://127.0.0.1:$OAI_PORT/oai/demo/<source key>"
            return 0
        fi
        sleep 0.3
    done
    fail_with_log oai "not answering within ${TIMEOUT}s"
}

# ---------------------------------------------------------------- commands

# Which servers a command acts on: all, or the one named after the command (the fault tests
# stop and restart OpenSearch alone).
wants() { [[ -z $ONLY || $ONLY == "$1" ]]; }

# The cluster's nodes a command acts on: both for `cluster`, one for `cluster-node<n>`.
cluster_nodes() {
    case "$ONLY" in
        cluster) echo 1 2 ;;
        cluster-node1) echo 1 ;;
        cluster-node2) echo 2 ;;
    esac
}

cluster_start() {
    local n port
    local -a new=()
    for n in $(cluster_nodes); do
        port="$(osc_http_port "$n")"
        if osc_pid "$n" >/dev/null; then
            say "opensearch-node$n: already running (pid $(osc_pid "$n"))"
            continue
        fi
        answers "http://127.0.0.1:$port/" \
            && die "port $port answers but is not our cluster node $n; stop that or set USAGE_STATS_OPENSEARCH_CLUSTER_PORT"
        install_opensearch
        launch_os_node "$n"
        new+=("$n")
    done
    for n in "${new[@]}"; do wait_os_node "$n"; done
}

cluster_stop() {
    local n
    for n in $(cluster_nodes); do stop_one "opensearch-node$n" "$OS_HOME"; done
}

cluster_status() {
    local n pid port rc=0
    for n in $(cluster_nodes); do
        port="$(osc_http_port "$n")"
        if pid="$(osc_pid "$n")"; then
            say "opensearch-node$n: running (pid $pid), http://127.0.0.1:$port, $(curl -s --max-time 2 \
                "http://127.0.0.1:$port/_cat/health?h=status,node.total" || echo 'not answering')"
        else
            say "opensearch-node$n: not running"; rc=3
        fi
    done
    return "$rc"
}

cmd_start() {
    [[ -n $(cluster_nodes) ]] && { cluster_start; return 0; }
    local os_new=0 minio_new=0 pg_new=0 my_new=0 rd_new=0 oai_new=0
    local -a packages=()

    # Start OpenSearch first, then build MinIO, install and start PostgreSQL and MariaDB while
    # the JVM warms up; wait for all of them after.
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

    # One apt-get run for all packages. The paths are decided after it: it makes the users.
    pg_paths
    my_paths
    if wants postgres && ! pg_pid >/dev/null && ! pg_bindir >/dev/null; then packages+=(postgresql); fi
    if wants mariadb && ! my_pid >/dev/null && ! mariadb_installed; then packages+=(mariadb-server); fi
    if wants redis && ! rd_pid >/dev/null && { ! [[ -x $RD_BIN ]] || ! command -v redis-cli >/dev/null; }; then
        packages+=(redis-server)  # brings redis-tools (redis-cli)
    fi
    if ((${#packages[@]})); then
        apt_install "${packages[@]}"
        pg_paths
        my_paths
    fi

    if ! wants postgres; then
        :
    elif pg_pid >/dev/null; then
        say "postgres: already running (pid $(pg_pid))"
    else
        listening "$PG_PORT" \
            && die "port $PG_PORT is taken but not by our PostgreSQL; stop that or set USAGE_STATS_POSTGRES_PORT"
        launch_postgres
        pg_new=1
    fi

    if ! wants mariadb; then
        :
    elif my_pid >/dev/null; then
        say "mariadb: already running (pid $(my_pid))"
    else
        listening "$MY_PORT" \
            && die "port $MY_PORT is taken but not by our MariaDB; stop that or set USAGE_STATS_MARIADB_PORT"
        launch_mariadb
        my_new=1
    fi

    if ! wants redis; then
        :
    elif rd_pid >/dev/null; then
        say "redis: already running (pid $(rd_pid))"
    else
        listening "$RD_PORT" \
            && die "port $RD_PORT is taken but not by our Redis; stop that or set USAGE_STATS_REDIS_PORT"
        launch_redis
        rd_new=1
    fi

    if ! wants oai; then
        :
    elif oai_pid >/dev/null; then
        say "oai: already running (pid $(oai_pid))"
    else
        listening "$OAI_PORT" \
            && die "port $OAI_PORT is taken but not by our OAI-PMH provider; stop that or set USAGE_STATS_OAI_PORT"
        launch_oai
        oai_new=1
    fi

    ((os_new)) && wait_opensearch
    ((minio_new)) && wait_minio
    ((pg_new)) && wait_postgres
    ((my_new)) && wait_mariadb
    ((rd_new)) && wait_redis
    ((oai_new)) && wait_oai
    return 0
}

cmd_stop() {
    [[ -n $(cluster_nodes) ]] && { cluster_stop; return 0; }
    pg_paths
    my_paths
    if wants opensearch; then stop_one opensearch "$OS_HOME"; fi
    if wants minio; then stop_one minio "$MINIO_BIN server"; fi
    if wants postgres; then stop_one postgres "$PG_DATA" INT; fi
    if wants mariadb; then stop_one mariadb "--datadir=$MY_DATA"; fi  # TERM: clean shutdown
    if wants redis; then stop_one redis "$RD_BIN 127.0.0.1:$RD_PORT"; fi  # TERM: clean shutdown
    if wants oai; then stop_one oai "$OAI_MODULE"; fi
    # A plain `stop` stops the 2-node cluster too, when it was started.
    if [[ -z $ONLY ]] && compgen -G "$RUN/opensearch-node*.pid" >/dev/null; then
        local ONLY=cluster
        cluster_stop
    fi
}

cmd_status() {
    [[ -n $(cluster_nodes) ]] && { cluster_status; return; }
    local pid rc=0
    pg_paths
    my_paths
    if ! wants opensearch; then
        :
    elif pid="$(os_pid)"; then
        say "opensearch: running (pid $pid), http://127.0.0.1:$OS_PORT, $(curl -s --max-time 2 \
            "http://127.0.0.1:$OS_PORT/_cat/health?h=status" || echo 'not answering')"
    else
        say "opensearch: not running"; rc=3
    fi
    if ! wants minio; then
        :
    elif pid="$(minio_pid)"; then
        say "minio: running (pid $pid), http://127.0.0.1:$S3_PORT, $(curl -sf -o /dev/null --max-time 2 \
            "http://127.0.0.1:$S3_PORT/minio/health/ready" && echo ready || echo 'not answering')"
    else
        say "minio: not running"; rc=3
    fi
    if ! wants postgres; then
        :
    elif pid="$(pg_pid)"; then
        say "postgres: running (pid $pid), 127.0.0.1:$PG_PORT, $("$(pg_bindir)/pg_isready" \
            -h 127.0.0.1 -p "$PG_PORT" -t 2 | sed 's/.* - //')"
    else
        say "postgres: not running"; rc=3
    fi
    if ! wants mariadb; then
        :
    elif pid="$(my_pid)"; then
        say "mariadb: running (pid $pid), 127.0.0.1:$MY_PORT, $(my_tcp_sql -e 'SELECT 1' \
            >/dev/null 2>&1 && echo 'accepting connections' || echo 'not answering')"
    else
        say "mariadb: not running"; rc=3
    fi
    if ! wants redis; then
        :
    elif pid="$(rd_pid)"; then
        say "redis: running (pid $pid), redis://127.0.0.1:$RD_PORT, $(redis-cli -h 127.0.0.1 \
            -p "$RD_PORT" ping 2>/dev/null || echo 'not answering')"
    else
        say "redis: not running"; rc=3
    fi
    if ! wants oai; then
        :
    elif pid="$(oai_pid)"; then
        say "oai: running (pid $pid), http://127.0.0.1:$OAI_PORT, $(curl -sf --max-time 2 \
            "http://127.0.0.1:$OAI_PORT/health" >/dev/null && echo answering || echo 'not answering')"
    else
        say "oai: not running"; rc=3
    fi
    return "$rc"  # 0 only when every server asked about runs (like LSB status codes)
}

cmd_env() {
    cat <<EOF
export USAGE_STATS_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_DEFAULT_REGION=$S3_REGION
export USAGE_STATS_OPENSEARCH_URL=http://127.0.0.1:$OS_PORT
export USAGE_STATS_ADMIN_DB_TEST_POSTGRES_URL=postgresql+psycopg://$PG_ROLE:$PG_ROLE@127.0.0.1:$PG_PORT/$PG_ROLE
export USAGE_STATS_MATOMO_TEST_URL=mysql+pymysql://$MY_DB:$MY_DB@127.0.0.1:$MY_PORT/$MY_DB
export USAGE_STATS_TEST_OAI_URL=http://127.0.0.1:$OAI_PORT
export USAGE_STATS_TEST_REDIS_URL=redis://127.0.0.1:$RD_PORT
export USAGE_STATS_TEST_OPENSEARCH_CLUSTER_URL=http://127.0.0.1:$(osc_http_port 1),http://127.0.0.1:$(osc_http_port 2)
EOF
}

USAGE="usage: $0 start|stop|status|env [opensearch|minio|postgres|mariadb|redis|oai|cluster|cluster-node1|cluster-node2]"
ONLY="${2:-}"
case "${1:-}" in
    env) cmd_env; exit 0 ;;  # needs no directory and no lock
    start | stop | status) ;;
    *) echo "$USAGE" >&2; exit 2 ;;
esac
case "$ONLY" in
    "" | opensearch | minio | postgres | mariadb | redis | oai | cluster | cluster-node[12]) ;;
    *) echo "$USAGE" >&2; exit 2 ;;
esac

mkdir -p "$SD/downloads" "$RUN" "$LOGS"
# One start/stop at a time (e.g. two terminals, or make -j).
exec 9>"$SD/.lock"
flock 9

"cmd_$1"
