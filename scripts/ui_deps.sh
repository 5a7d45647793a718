#!/usr/bin/env bash
# What the browser and scale-out tests need beyond scripts/bootstrap.sh, installed only when
# missing (a second run returns at once): Debian's Chromium + ChromeDriver and PostgreSQL, and
# Playwright for Python in .venv, which drives the SYSTEM Chromium (no browser download:
# never `playwright install`).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(chromium chromium-driver postgresql)
PIP=(playwright)

if [[ $EUID -ne 0 ]]; then
    echo "ui_deps: run as root (it installs Debian packages)" >&2
    exit 1
fi

missing=()
for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "ui_deps: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # the Debian package starts a cluster on 5432; the tests run their own, on loopback
    if [[ " ${missing[*]} " == *" postgresql "* ]] && command -v pg_ctlcluster >/dev/null; then
        for c in /etc/postgresql/*/main; do
            [[ -d $c ]] || continue
            v=$(basename "$(dirname "$c")")
            pg_ctlcluster "$v" main stop 2>/dev/null || true
        done
    fi
fi

for p in "${PIP[@]}"; do
    if ! .venv/bin/python -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$p" 2>/dev/null; then
        echo "ui_deps: installing $p into .venv"
        .venv/bin/python -m pip install -q "$p"
    fi
done
