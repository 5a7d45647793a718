#!/usr/bin/env bash
# The conformance step of `make test` (and so CI): OpenStack's own API tests (Tempest 47) against
# an API-only localcloud on its own state directory and port, with pre-provisioned credentials.
# Subsets: tempest.api.network (networks, ports, security groups, allowed-address pairs,
# routers, floating IPs, extensions), tempest.api.compute (servers, server actions, keypairs,
# flavors), tempest.api.image.v2 (list). Prints passed/failed/skipped per subset and fails on
# any failure; the tests left out are in scripts/conformance_skips.yaml, each for an omission
# documented in localcloud/README.md. Everything it starts it stops again.
#   scripts/conformance.sh [--keep]      # --keep: keep the workspace (tempest.conf, logs)
# Tempest lives in .venv-tempest (scripts/tempest_venv.sh, run by `make bootstrap`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv-tempest/bin/tempest ]]; then
    echo "conformance: .venv-tempest has no tempest: run scripts/tempest_venv.sh (make bootstrap)" >&2
    exit 2
fi
exec .venv/bin/python scripts/conformance.py "$@"
