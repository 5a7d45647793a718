#!/usr/bin/env bash
# make demo: the live control plane. It starts and LEAVES RUNNING:
#
#   1. a Prefect server on 127.0.0.1:$HYBRIDGRID_DEMO_PORT (4200; SQLite under .demo/prefect),
#      unless one answers there                                   → .demo/prefect.pid
#   2. the Prefect profile hybridgrid-demo (PREFECT_API_URL of that server), made active in
#      your profiles file: `hybridgrid …` in any new shell talks to this server
#   3. the process work pool `hybridgrid` (python -m hybridgrid.deployments.setup), every
#      deployment of prefect.yaml (`prefect --no-prompt deploy --all`; check-drift's
#      schedule active) and a process worker polling every second → .demo/worker.pid
#   4. localcloud with clouds bielefeld + giessen and the spares heidelberg + tuebingen
#      (state in .localcloud, real namespaces, WireGuard, sshd; port
#      $HYBRIDGRID_DEMO_LOCALCLOUD_PORT), a credentials block for each cloud whose access is
#      localcloud's proxy (the flows make the sites' SSH key blocks themselves)
#   5. bootstrap-home and add-remote-site giessen as runs OF THE DEPLOYMENTS (made by the
#      CLI, which follows them): each shows Retry and "Run again" in the UI
#   6. the checks: `wg show` on both ends, a Bielefeld worker pinging a Gießen worker, and
#      Slurm from the master: `sinfo`, `srun -p giessen hostname`, a job that returns the
#      checksum of a file only the Gießen worker has
#
# A second run finds everything in place (reuses server, worker and localcloud; the flows
# converge without a mutating cloud API call) and is fast.
# `make demo-down` (scripts/demo.sh down) stops the worker and the server (by PID), removes
# localcloud with everything in it, the demo's Prefect database and its profile (the profile
# active before comes back): the next `make demo` starts clean.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$ROOT/.venv/bin:$PATH"

# the demo's own state; tests point these elsewhere (tests/test_demo_down.py)
DEMO=${HYBRIDGRID_DEMO_DIR:-$ROOT/.demo}
PORT=${HYBRIDGRID_DEMO_PORT:-4200}
LC_PORT=${HYBRIDGRID_DEMO_LOCALCLOUD_PORT:-8780}
UI=http://127.0.0.1:$PORT
SPEC=examples/demo.yaml
BOOT_DELAY=${HYBRIDGRID_DEMO_BOOT_DELAY:-5}
CLOUDS=(bielefeld giessen heidelberg tuebingen)
PROFILE=hybridgrid-demo
# the user's profiles file, as Prefect finds it, before this script points PREFECT_HOME at .demo
PROFILES=${PREFECT_PROFILES_PATH:-${PREFECT_HOME:-$HOME/.prefect}/profiles.toml}
export PREFECT_API_URL=$UI/api PREFECT_UI_URL=$UI
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
export LOCALCLOUD_STATE_DIR=${HYBRIDGRID_DEMO_LOCALCLOUD_DIR:-$ROOT/.localcloud} LOCALCLOUD_DATAPLANE=1
unset HYBRIDGRID_KILL_AFTER PREFECT_PROFILE

answers() {
    python - "$UI/api/health" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
EOF
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Start "$@" in its own session (setsid: demo-down ends it and its children by its PID) with
# SIGINT/SIGQUIT back to their defaults: a script's background children inherit them
# ignored, and a Prefect worker then does not stop on TERM either.
detach() {
    local log=$1 pidfile=$2
    shift 2
    setsid python -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGQUIT, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])' "$@" >"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

# TERM the process group of the PID in $1, KILL it after 15 s (bounded either way).
stop_pid() {
    local pidfile=$1 what=$2 pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            echo "stopped the demo's $what (pid $pid, SIGKILL after 15 s)"
        else
            echo "stopped the demo's $what (pid $pid)"
        fi
    fi
    rm -f "$pidfile"
}

down() {
    stop_pid "$DEMO/worker.pid" "Prefect worker"
    stop_pid "$DEMO/prefect.pid" "Prefect server"
    localcloud down
    env -u PREFECT_HOME -u PREFECT_API_URL python -m hybridgrid.demo_profile deactivate \
        --name "$PROFILE" --profiles "$PROFILES" --previous "$DEMO/previous-profile"
    # the demo's Prefect state: database, blocks, registry, pinned keys, results, logs
    rm -rf "$DEMO"
    echo "removed the demo's Prefect state ($DEMO)"
}

if [[ ${1:-} == down ]]; then
    down
    exit 0
fi

if [[ $EUID -ne 0 ]]; then
    echo "demo: run as root (localcloud makes network namespaces)" >&2
    exit 1
fi

T0=$SECONDS
say() { printf '\n\033[1m== %s\033[0m  [+%d s]\n' "$*" "$((SECONDS - T0))"; }

# The names among "$@" (blocks of type slug $1) that the server does not hold yet: a rerun
# saves nothing it already has.
missing_blocks() {
    python - "$@" <<'EOF'
import asyncio, sys

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError


async def main(slug: str, names: list[str]) -> None:
    async with get_client() as client:
        try:
            docs = await client.read_block_documents_by_type(slug, include_secrets=False)
        except (ObjectNotFound, PrefectHTTPStatusError) as exc:
            if getattr(getattr(exc, "response", None), "status_code", 404) != 404:
                raise
            docs = []  # the block type is not registered yet: no block of it
    have = {d.name for d in docs}
    print(" ".join(n for n in names if n not in have))


asyncio.run(main(sys.argv[1], sys.argv[2:]))
EOF
}

say "Prefect server at $UI"
mkdir -p "$DEMO/prefect"
if answers; then
    echo "already running: using it"
else
    detach "$DEMO/prefect-server.log" "$DEMO/prefect.pid" \
        env -u PREFECT_API_URL PREFECT_HOME="$DEMO/prefect" \
        PREFECT_SERVER_API_PORT="$PORT" PREFECT_UI_API_URL="$UI/api" \
        prefect server start --host 127.0.0.1 --port "$PORT" --analytics-off
    for _ in $(seq 120); do answers && break; sleep 0.5; done
    answers || { tail -20 "$DEMO/prefect-server.log" >&2; echo "demo: Prefect server did not start" >&2; exit 1; }
    echo "started (pid $(cat "$DEMO/prefect.pid"), SQLite in $DEMO/prefect, log $DEMO/prefect-server.log)"
fi
export PREFECT_HOME=$DEMO/prefect

say "Prefect profile $PROFILE (every new shell talks to $UI)"
env -u PREFECT_HOME -u PREFECT_API_URL python -m hybridgrid.demo_profile activate \
    --name "$PROFILE" --api-url "$UI/api" --profiles "$PROFILES" --previous "$DEMO/previous-profile"

say "work pool hybridgrid and the deployments of prefect.yaml"
python -m hybridgrid.deployments.setup
# prefect.yaml as deployed last (its hash): a rerun with the same file registers nothing anew
DEPLOYED=$(sha256sum prefect.yaml | cut -d' ' -f1)
if [[ -f $DEMO/deployed.sha256 && $(cat "$DEMO/deployed.sha256") == "$DEPLOYED" ]]; then
    echo "deployments of prefect.yaml: registered already (file unchanged)"
else
    prefect --no-prompt deploy --all >"$DEMO/deploy.log" 2>&1 || {
        tail -30 "$DEMO/deploy.log" >&2
        echo "demo: prefect deploy --all failed (log $DEMO/deploy.log)" >&2
        exit 1
    }
    grep -o "Deployment '[^']*' successfully created" "$DEMO/deploy.log" | sed 's/^/  /' || true
    echo "$DEPLOYED" >"$DEMO/deployed.sha256"
fi

say "process worker for pool hybridgrid (polls every 1 s)"
if alive "$DEMO/worker.pid"; then
    echo "already running (pid $(cat "$DEMO/worker.pid")): using it"
else
    # poll every second; runs due within 10 s are fetched early (the UI's Run is due now)
    detach "$DEMO/worker.log" "$DEMO/worker.pid" \
        env PREFECT_WORKER_QUERY_SECONDS=1 PREFECT_WORKER_PREFETCH_SECONDS=10 \
        prefect worker start --pool hybridgrid --type process --name hybridgrid-demo
    echo "started (pid $(cat "$DEMO/worker.pid"), log $DEMO/worker.log)"
fi

say "localcloud: clouds ${CLOUDS[*]} on port $LC_PORT (boot delay ${BOOT_DELAY} s)"
printf '"*": {boot_delay: %s}\n' "$BOOT_DELAY" >"$DEMO/faults.yaml"
cloud_args=()
for cloud in "${CLOUDS[@]}"; do cloud_args+=(--cloud "$cloud"); done
localcloud up "${cloud_args[@]}" --port "$LC_PORT" --faults "$DEMO/faults.yaml"

say "credentials blocks, access through localcloud's proxy"
# localcloud's floating IPs are reached through its proxy: that is each cloud's access
# setting. The flows make the sites' SSH key blocks themselves.
PROXY=$(python -c 'import sys; from localcloud.dataplane.cli import proxy_command; print(proxy_command(sys.argv[1]))' "$LOCALCLOUD_STATE_DIR")
read -ra new_clouds <<<"$(missing_blocks hybridgrid-openstack-credentials "${CLOUDS[@]}")"
for cloud in "${new_clouds[@]}"; do
    hybridgrid cloud import "$cloud" --clouds-yaml "$LOCALCLOUD_STATE_DIR/clouds.yaml" \
        --proxy-command "$PROXY"
done
((${#new_clouds[@]})) || echo "every cloud has its credentials block already"

say "bootstrap-home: the Bielefeld cluster from $SPEC (a run of deployment bootstrap-home)"
t=$SECONDS
hybridgrid home bootstrap "$SPEC"
echo "(bootstrap-home: $((SECONDS - t)) s including the command's start-up)"

say "add-remote-site giessen (a run of deployment add-remote-site)"
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

say "Slurm from the master: the partitions, then a job in partition giessen"
localcloud exec --cloud bielefeld hg-bielefeld-master -- sinfo
localcloud exec --cloud bielefeld hg-bielefeld-master -- srun -p giessen -t 1 hostname
say "a job next to the data: a file only the Gießen worker has, its checksum back at the master"
localcloud exec --cloud giessen hg-giessen-worker-1 -- sh -c \
    'test -s /srv/giessen-sample.txt || seq 1 100000 > /srv/giessen-sample.txt; sha256sum /srv/giessen-sample.txt'
localcloud exec --cloud bielefeld hg-bielefeld-master -- srun -p giessen -t 1 sha256sum /srv/giessen-sample.txt

say "the registry"
hybridgrid sites

say "check-drift's schedule"
python - <<'EOF'
import asyncio

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort


async def main() -> None:
    async with get_client() as client:
        dep = await client.read_deployment_by_name("check-drift/check-drift")
        for s in dep.schedules:
            cron = getattr(s.schedule, "cron", s.schedule)
            print(f"check-drift: {cron} ({'active' if s.active else 'PAUSED'})")
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=1,
        )
        if runs:
            print(f"next scheduled run: {runs[0].expected_start_time:%H:%M:%S} UTC")


asyncio.run(main())
EOF

say "done in $((SECONDS - T0)) s"
cat <<EOF
Left running: Prefect server (pid $(cat "$DEMO/prefect.pid" 2>/dev/null || echo "not ours")), worker (pid $(cat "$DEMO/worker.pid")), localcloud.
Prefect profile '$PROFILE' is active: \`hybridgrid sites\` / \`hybridgrid drift\` work in any new shell.

Next steps:
  1. Open the UI: $UI
  2. Add a site from the UI: Deployments → add-remote-site → Run → Custom run;
     type site name heidelberg, pick cloud heidelberg from the dropdown → Submit
     (tuebingen is a spare cloud too). Its workers join Slurm as partition heidelberg:
     localcloud exec --cloud bielefeld hg-bielefeld-master -- srun -p heidelberg hostname
  3. Watch the drift schedule: Deployments → check-drift (every 15 minutes), or run
     \`hybridgrid drift\` now.

Run it again: a fast no-op rerun.   Clean up: make demo-down
EOF
