#!/usr/bin/env bash
# make demo: the seed scenario. Runs every part that exists today and says plainly what
# does not exist yet (it never pretends).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

if [[ ${1:-} == down ]]; then
    if [[ -f .venv/bin/localcloud ]] && localcloud --help >/dev/null 2>&1; then
        localcloud down || true
    fi
    exit 0
fi

echo "== hybridgrid demo: the seed (home bielefeld 192.168.66.0/24 ⇄ site giessen 192.168.77.0/24)"
echo
echo "-- the plan (no cloud touched):"
hybridgrid plan examples/seed.yaml
echo
echo "Not built yet: localcloud (issues 4, 5) and the add_remote_site flow (issue 7)."
echo "This demo will run them on two local clouds once they land."
