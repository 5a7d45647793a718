#!/usr/bin/env bash
# Installs everything hybridgrid needs on a fresh Debian machine, then gets out of the way:
# Debian packages (only the missing ones), the .venv, the project with its test extra.
# A second run finds all of it in place and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(wireguard-go wireguard-tools openssh-server nftables iproute2 iputils-ping conntrack
      procps util-linux netcat-openbsd sudo python3 slurm-wlm munge)

if [[ $EUID -ne 0 ]]; then
    echo "hybridgrid: run as root (it installs Debian packages and makes network namespaces)" >&2
    exit 1
fi

missing=()
for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # No recommends: wireguard-tools would pull a kernel image for a module we cannot load.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python >= 3.11 with venv support.
PY=""
for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        PY=$(command -v "$cand"); break
    fi
done
if [[ -z $PY ]]; then
    echo "bootstrap: needs Python >= 3.11 (apt-get install python3)" >&2; exit 1
fi
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi

stamp_want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -x .venv/bin/python ]]; then
    echo "bootstrap: creating .venv with $PY"
    "$PY" -m venv .venv
fi
if [[ "$(cat .venv/.hybridgrid-stamp 2>/dev/null)" != "$stamp_want" ]]; then
    echo "bootstrap: installing hybridgrid and its test extra into .venv (a few minutes the first time)"
    log=.venv/pip-install.log
    if ! .venv/bin/python -m pip install -q -e '.[test]' >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log" | tail -30 >&2
        echo "bootstrap: pip install failed (full log: $log)" >&2
        # localcloud's safety-net routes make the simulated public ranges unreachable from
        # the root namespace; a package mirror inside them is then out of reach too
        if ip route show type unreachable | grep -q .; then
            echo "bootstrap: localcloud is up (ip route show type unreachable); stop it" \
                 "(make demo-down / localcloud down) and run this again" >&2
        fi
        exit 1
    fi
    .venv/bin/python -c 'import hybridgrid, localcloud, prefect, openstack, asyncssh' \
        || { echo "bootstrap: install of the project failed" >&2; exit 1; }
    echo "$stamp_want" > .venv/.hybridgrid-stamp
fi

# The browser (Chromium) and scale-out (PostgreSQL) tests' extra Debian packages.
scripts/ui_deps.sh
scripts/tempest_venv.sh  # Tempest for the conformance step, in .venv-tempest (not .venv)
