#!/usr/bin/env bash
# Prefect server on PostgreSQL with several process workers on one work pool
# (docs/architecture.md §10).
#
#   scripts/scaleout.sh up       PostgreSQL cluster, prefect server, work pool, N workers
#   scripts/scaleout.sh env      prints `export PREFECT_API_URL=…` for this shell
#   scripts/scaleout.sh status   what runs (by PID file)
#   scripts/scaleout.sh down     stops workers, server and PostgreSQL by PID; keeps the data
#   scripts/scaleout.sh purge    down + removes the state directory (database included)
#
# Settings (environment):
#   HG_STATE        state directory (default .scaleout in the repo root): pid files, logs,
#                   the PostgreSQL data directory, the password file (0600)
#   HG_API_HOST     address the Prefect API listens on (default 127.0.0.1)
#   HG_API_PORT     Prefect API port (default 4210; `auto` picks a free one)
#   HG_PG_PORT      PostgreSQL port (default: a free one, chosen once, remembered)
#   HG_WORKERS      process workers to start (default 2)
#   HG_WORKER_LIMIT flow runs one worker runs at a time (default 2)
#   HG_POOL         work pool (default: the one prefect.yaml's deployments name, else hybridgrid)
#   HG_DEPLOY       1 = also `prefect deploy --all` from the repo root (default 0)
#   HG_PREFECT_FILE deployments file for HG_DEPLOY (default prefect.yaml)
#
# PostgreSQL listens on 127.0.0.1 only, password (scram-sha-256) from a random file; the
# connection URL reaches the server through its environment, never its argv. The Prefect
# server reads it from PREFECT_API_DATABASE_CONNECTION_URL. More machines: run `up` with
# HG_WORKERS=0 on the server host (HG_API_HOST set to an address the others reach), and on
# each worker host `PREFECT_API_URL=http://<server>:<port>/api prefect worker start --pool P`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${HG_PYTHON:-$ROOT/.venv/bin/python}
PREFECT=${HG_PREFECT:-$ROOT/.venv/bin/prefect}
STATE=${HG_STATE:-$ROOT/.scaleout}
API_HOST=${HG_API_HOST:-127.0.0.1}
WORKERS=${HG_WORKERS:-2}
WORKER_LIMIT=${HG_WORKER_LIMIT:-2}
PG_BIN=${HG_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}

say() { echo "scaleout: $*"; }
die() { echo "scaleout: $*" >&2; exit 1; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user.
as_pg() {
    if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Ends a process group we started (setsid: group id = the leader's PID): TERM, then KILL.
stop_group() {
    local file=$1 pid i
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        # Workers started from a script may ignore TERM (prefect-facts): KILL by PID.
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

pool_name() {
    if [[ -n ${HG_POOL:-} ]]; then echo "$HG_POOL"; return; fi
    if [[ -f $ROOT/prefect.yaml ]]; then
        "$PY" - "$ROOT/prefect.yaml" <<'EOF'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1])) or {}
pools = []
for d in doc.get("deployments") or []:
    wp = d.get("work_pool") or {}
    if isinstance(wp, dict) and wp.get("name") and not str(wp["name"]).startswith("{{"):
        pools.append(wp["name"])
print(pools[0] if pools else "hybridgrid")
EOF
    else
        echo hybridgrid
    fi
}

api_port() {
    mkdir -p "$STATE"
    if [[ -f $STATE/api.port ]]; then cat "$STATE/api.port"; return; fi
    local p=${HG_API_PORT:-4210}
    [[ $p == auto ]] && p=$(free_port)
    echo "$p" > "$STATE/api.port"
    echo "$p"
}

api_url() { echo "http://$API_HOST:$(api_port)/api"; }

start_postgres() {
    local pgdir=$STATE/pg port pass
    [[ -x $PG_BIN/initdb ]] || die "PostgreSQL not found (apt-get install postgresql)"
    if [[ ! -f $STATE/pg.port ]]; then echo "${HG_PG_PORT:-$(free_port)}" > "$STATE/pg.port"; fi
    port=$(cat "$STATE/pg.port")
    if [[ ! -f $STATE/pg.pass ]]; then
        (umask 077; "$PY" -c 'import secrets; print(secrets.token_hex(24))' > "$STATE/pg.pass")
    fi
    if [[ ! -f $pgdir/PG_VERSION ]]; then
        say "initdb in $pgdir (superuser prefect, scram-sha-256, loopback only)"
        mkdir -p "$pgdir"
        local pwfile=$pgdir.pwfile
        (umask 077; cp "$STATE/pg.pass" "$pwfile")
        if [[ $EUID -eq 0 ]]; then chown postgres: "$pgdir" "$pwfile"; fi
        chmod 700 "$pgdir"
        as_pg "$PG_BIN/initdb" -D "$pgdir" -U prefect --pwfile="$pwfile" \
            --auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 >"$STATE/logs/initdb.log" 2>&1 \
            || { rm -f "$pwfile"; tail -20 "$STATE/logs/initdb.log" >&2; die "initdb failed"; }
        rm -f "$pwfile"
        cat >>"$pgdir/postgresql.conf" <<EOF
# written by scripts/scaleout.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
fsync = off
synchronous_commit = off
EOF
    fi
    if ! as_pg "$PG_BIN/pg_ctl" -D "$pgdir" status >/dev/null 2>&1; then
        say "PostgreSQL on 127.0.0.1:$port"
        # its log lives in its own directory (the postgres user cannot write to logs/)
        as_pg "$PG_BIN/pg_ctl" -D "$pgdir" -o "-p $port" -l "$pgdir/postgres.log" -w -t 60 start >/dev/null \
            || { tail -20 "$pgdir/postgres.log" >&2; die "PostgreSQL did not start"; }
    fi
    head -1 "$pgdir/postmaster.pid" > "$STATE/pids/postgres.pid"
    # The database `prefect` (the role exists since initdb); CREATE DATABASE is not idempotent.
    PGPASSWORD=$(cat "$STATE/pg.pass") "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U prefect -d postgres -qAt \
        -c "SELECT 1 FROM pg_database WHERE datname='prefect'" | grep -q 1 \
        || PGPASSWORD=$(cat "$STATE/pg.pass") "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U prefect -d postgres -q \
            -c "CREATE DATABASE prefect"
}

# Quiet, non-tracking Prefect settings shared by the server and the workers.
prefect_env() {
    export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
    export PREFECT_HOME=$STATE/prefect-home
    export PREFECT_API_URL
    PREFECT_API_URL=$(api_url)
    export PREFECT_WORKER_QUERY_SECONDS=${PREFECT_WORKER_QUERY_SECONDS:-2}
}

start_server() {
    local port url
    port=$(api_port)
    url=$(api_url)
    if pid_alive "$STATE/pids/server.pid"; then say "server already runs ($url)"; return; fi
    say "prefect server on $url (PostgreSQL)"
    (
        prefect_env
        PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://prefect:$(cat "$STATE/pg.pass")@127.0.0.1:$(cat "$STATE/pg.port")/prefect"
        export PREFECT_API_DATABASE_CONNECTION_URL
        export PREFECT_SERVER_API_HOST=$API_HOST PREFECT_SERVER_API_PORT=$port
        export PREFECT_UI_API_URL=$url
        trap - INT  # background jobs of a script start with SIGINT ignored
        exec setsid "$PREFECT" server start --host "$API_HOST" --port "$port" --analytics-off \
            </dev/null >>"$STATE/logs/server.log" 2>&1
    ) &
    echo $! > "$STATE/pids/server.pid"
    for _ in $(seq 120); do
        if "$PY" -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('$url/health', timeout=2).status != 200)" 2>/dev/null; then
            return
        fi
        pid_alive "$STATE/pids/server.pid" || { tail -30 "$STATE/logs/server.log" >&2; die "server exited"; }
        sleep 0.5
    done
    tail -30 "$STATE/logs/server.log" >&2
    die "server did not answer within 60 s"
}

ensure_pool() {
    local pool=$1
    ( prefect_env
      cd "$ROOT"
      if "$PY" -c 'import hybridgrid.deployments.setup' 2>/dev/null; then
          # the project's idempotent set-up: the pool and the concurrency limits
          "$PY" -m hybridgrid.deployments.setup --pool "$pool" >/dev/null
      else
          "$PREFECT" work-pool inspect "$pool" >/dev/null 2>&1 \
            || "$PREFECT" work-pool create "$pool" --type process >/dev/null
      fi )
}

start_workers() {
    local pool=$1 n
    for n in $(seq 1 "$WORKERS"); do
        local file=$STATE/pids/worker-$n.pid
        if pid_alive "$file"; then continue; fi
        say "worker scaleout-worker-$n on pool $pool (limit $WORKER_LIMIT)"
        (
            prefect_env
            cd "$ROOT"
            trap - INT
            exec setsid "$PREFECT" worker start --pool "$pool" --name "scaleout-worker-$n" \
                --type process --limit "$WORKER_LIMIT" </dev/null >>"$STATE/logs/worker-$n.log" 2>&1
        ) &
        echo $! > "$file"
    done
}

cmd_up() {
    mkdir -p "$STATE/pids" "$STATE/logs"
    chmod 711 "$STATE"  # the postgres user must reach $STATE/pg
    chmod 700 "$STATE/logs" "$STATE/pids"
    local pool
    pool=$(pool_name)
    start_postgres
    start_server
    ensure_pool "$pool"
    if [[ ${HG_DEPLOY:-0} == 1 ]]; then
        say "prefect deploy --all"
        ( prefect_env; cd "$ROOT"
          "$PREFECT" --no-prompt deploy --all --prefect-file "${HG_PREFECT_FILE:-$ROOT/prefect.yaml}" \
            >"$STATE/logs/deploy.log" 2>&1 ) \
            || { tail -30 "$STATE/logs/deploy.log" >&2; die "deploy failed"; }
    fi
    start_workers "$pool"
    say "up: UI ${PREFECT_UI_URL:-http://$API_HOST:$(api_port)}  (eval \"\$(scripts/scaleout.sh env)\")"
}

cmd_down() {
    local f
    for f in "$STATE"/pids/worker-*.pid; do [[ -e $f ]] && stop_group "$f"; done
    stop_group "$STATE/pids/server.pid"
    if [[ -f $STATE/pg/PG_VERSION ]] && as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg" status >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg" -m fast -w -t 30 stop >/dev/null \
            || { [[ -f $STATE/pids/postgres.pid ]] && kill -KILL "$(cat "$STATE/pids/postgres.pid")" 2>/dev/null; } || true
    fi
    rm -f "$STATE/pids/postgres.pid"
    say "down"
}

cmd_status() {
    local f
    [[ -d $STATE/pids ]] || { say "not set up ($STATE)"; return 0; }
    for f in "$STATE"/pids/*.pid; do
        [[ -e $f ]] || continue
        if pid_alive "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"
        else echo "$(basename "$f" .pid): not running"; fi
    done
    [[ -f $STATE/api.port ]] && echo "api: $(api_url)"
    return 0
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    purge)
        # only a directory this script made (it has pids/ and api.port) is removed
        if [[ -d $STATE && ! ( -d $STATE/pids && -f $STATE/api.port ) ]]; then
            die "$STATE does not look like a scaleout state directory: left alone"
        fi
        cmd_down; rm -rf "$STATE" ;;
    status) cmd_status ;;
    env) echo "export PREFECT_API_URL=$(api_url)" ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
