#!/usr/bin/env bash
# make demo: the seed on two local clouds, every step a Prefect flow run you can open in the UI.
#
#   1. a Prefect server on 127.0.0.1:4200 (SQLite under .demo/), unless one answers there
#   2. localcloud with clouds bielefeld + giessen (state in .localcloud, real network
#      namespaces, WireGuard, sshd; each server takes HYBRIDGRID_DEMO_BOOT_DELAY s to boot)
#   3. credentials blocks from localcloud's clouds.yaml, SSH key blocks that reach the
#      floating IPs through localcloud's proxy
#   4. bootstrap-home: hg-bielefeld-master + hg-bielefeld-worker-1 on 192.168.66.0/24
#   5. add-remote-site giessen: hg-giessen-vpn + hg-giessen-worker-1 on 192.168.77.0/24
#   6. the checks: verification table, `wg show` on both ends, a Bielefeld worker pinging a
#      Gießen worker
#
# A second run finds everything in place (no API call that changes anything) and is fast.
# `make demo-down` (scripts/demo.sh down) stops the Prefect server this script started and
# removes localcloud with everything in it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$ROOT/.venv/bin:$PATH"

DEMO=$ROOT/.demo
PORT=${HYBRIDGRID_DEMO_PORT:-4200}
UI=http://127.0.0.1:$PORT
SPEC=examples/demo.yaml
BOOT_DELAY=${HYBRIDGRID_DEMO_BOOT_DELAY:-5}
export PREFECT_API_URL=$UI/api PREFECT_UI_URL=$UI
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
export LOCALCLOUD_STATE_DIR=$ROOT/.localcloud LOCALCLOUD_DATAPLANE=1
unset HYBRIDGRID_KILL_AFTER

answers() {
    python - "$UI/api/health" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
EOF
}

stop_prefect() {
    [[ -f $DEMO/prefect.pid ]] || return 0
    local pid
    pid=$(cat "$DEMO/prefect.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "stopped the demo's Prefect server (pid $pid)"
    fi
    rm -f "$DEMO/prefect.pid"
}

if [[ ${1:-} == down ]]; then
    stop_prefect
    localcloud down
    exit 0
fi

if [[ $EUID -ne 0 ]]; then
    echo "demo: run as root (localcloud makes network namespaces)" >&2
    exit 1
fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
T0=$SECONDS

say "Prefect server at $UI"
mkdir -p "$DEMO/prefect"
if answers; then
    echo "already running: using it"
else
    # its own session (setsid) so `make demo-down` can end it and its children by its PID
    env -u PREFECT_API_URL PREFECT_HOME="$DEMO/prefect" \
        setsid prefect server start --host 127.0.0.1 --port "$PORT" --analytics-off \
        >"$DEMO/prefect-server.log" 2>&1 </dev/null &
    echo $! >"$DEMO/prefect.pid"
    for _ in $(seq 120); do answers && break; sleep 0.5; done
    answers || { tail -20 "$DEMO/prefect-server.log" >&2; echo "demo: Prefect server did not start" >&2; exit 1; }
    echo "started (pid $(cat "$DEMO/prefect.pid"), SQLite in $DEMO/prefect, log $DEMO/prefect-server.log)"
fi
export PREFECT_HOME=$DEMO/prefect

say "localcloud: clouds bielefeld and giessen (boot delay ${BOOT_DELAY} s)"
printf '"*": {boot_delay: %s}\n' "$BOOT_DELAY" >"$DEMO/faults.yaml"
localcloud up --faults "$DEMO/faults.yaml"

say "credentials and SSH key blocks"
for cloud in bielefeld giessen; do
    hybridgrid cloud import "$cloud" --clouds-yaml "$LOCALCLOUD_STATE_DIR/clouds.yaml"
done
PROXY=$(python -c 'import sys; from localcloud.dataplane.cli import proxy_command; print(proxy_command(sys.argv[1]))' "$LOCALCLOUD_STATE_DIR")
for block in hg-bielefeld-ssh hg-giessen-ssh; do
    hybridgrid key create "$block" --proxy-command "$PROXY"
done

say "bootstrap-home: the Bielefeld cluster from $SPEC"
t=$SECONDS
hybridgrid home bootstrap "$SPEC"
echo "(bootstrap-home: $((SECONDS - t)) s including the command's start-up)"

say "add-remote-site giessen"
t=$SECONDS
hybridgrid site add "$SPEC" --site giessen
echo "(hybridgrid site add: $((SECONDS - t)) s including the command's start-up)"

say "wg show on the hub (hg-bielefeld-master)"
localcloud exec --cloud bielefeld hg-bielefeld-master -- wg show wg0
say "wg show on the spoke (hg-giessen-vpn)"
localcloud exec --cloud giessen hg-giessen-vpn -- wg show wg0

say "a Bielefeld worker pings a Gießen worker (through the tunnel)"
GIESSEN_WORKER=$(localcloud status --json | python -c '
import json, sys
info = json.load(sys.stdin)
for s in info["clouds"]["giessen"]["servers"]:
    if s["name"] == "hg-giessen-worker-1":
        print(s["addresses"][0].split()[0])
')
echo "hg-bielefeld-worker-1 → hg-giessen-worker-1 ($GIESSEN_WORKER)"
localcloud exec --cloud bielefeld hg-bielefeld-worker-1 -- ping -c 3 -W 2 "$GIESSEN_WORKER"

say "the registry"
hybridgrid sites

say "done in $((SECONDS - T0)) s"
echo "Prefect UI:  $UI   (flow runs: $UI/runs, links above)"
echo "Run it again: a fast no-op rerun.   Clean up: make demo-down"
