#!/usr/bin/env bash
# Installs Tempest (OpenStack's API test suite, from PyPI) into its own virtualenv, .venv-tempest,
# for scripts/conformance.sh. Kept apart from the product's .venv: Tempest brings oslo.*,
# stestr and friends, whose pins must not decide hybridgrid's dependencies.
# A second run finds it in place and returns at once. Run it while no localcloud with a data
# plane is up (its unreachable routes can hide the package mirror).
set -euo pipefail
cd "$(dirname "$0")/.."

TEMPEST_VERSION=47.0.0
VENV=.venv-tempest
stamp_want="tempest==$TEMPEST_VERSION"

if [[ "$(cat "$VENV/.stamp" 2>/dev/null)" == "$stamp_want" && -x "$VENV/bin/tempest" ]]; then
    exit 0
fi
PY=""
for cand in python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        PY=$(command -v "$cand"); break
    fi
done
[[ -n $PY ]] || { echo "tempest_venv: needs Python >= 3.10" >&2; exit 1; }
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
echo "tempest_venv: installing $stamp_want into $VENV (a few minutes the first time)"
log="$VENV/pip-install.log"
echo '*' > "$VENV/.gitignore"  # never committed (the repo's .gitignore knows only .venv/)
if ! "$VENV/bin/python" -m pip install -q "$stamp_want" >"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "tempest_venv: pip install failed (full log: $log)" >&2
    if ip route show type unreachable | grep -q .; then
        echo "tempest_venv: a localcloud with a data plane is up; stop it and run this again" >&2
    fi
    exit 1
fi
"$VENV/bin/tempest" --version >/dev/null || { echo "tempest_venv: tempest does not start" >&2; exit 1; }
echo "$stamp_want" > "$VENV/.stamp"
