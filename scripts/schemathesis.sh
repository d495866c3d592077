#!/usr/bin/env bash
# The virtualenv of schemathesis (PyPI), which the e2e test tests/tests/openapi.rs runs against
# a live controller and its own OpenAPI document.
#
#   scripts/schemathesis.sh venv    build/schemathesis-venv with tests/schemathesis/requirements.txt
#                                   (made again only when the requirements change)
set -euo pipefail

readonly ROOT=$(cd "$(dirname "$0")/.." && pwd)
readonly VENV=$ROOT/build/schemathesis-venv
readonly REQUIREMENTS=$ROOT/tests/schemathesis/requirements.txt

log() { printf 'schemathesis: %s\n' "$*"; }
die() { printf 'schemathesis: ERROR: %s\n' "$*" >&2; exit 1; }

venv() {
    local stamp=$VENV/.requirements
    if [[ -x $VENV/bin/schemathesis && -f $stamp ]] && cmp -s "$REQUIREMENTS" "$stamp"; then
        return
    fi
    log "making ${VENV#"$ROOT"/} (packages from PyPI)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    cp "$REQUIREMENTS" "$stamp"
}

case ${1:-} in
venv) venv ;;
*) die "usage: $0 venv" ;;
esac
