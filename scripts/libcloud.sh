#!/usr/bin/env bash
# The Libcloud driver (clients/libcloud/): its virtualenv, its tests and its wheel.
#
#   scripts/libcloud.sh venv          build/libcloud-venv with clients/libcloud/requirements-test.txt
#                                     from PyPI and the driver installed in it (made again only
#                                     when the requirements change)
#   scripts/libcloud.sh unit          the unit tests (Libcloud's MockHttp, recorded fixtures)
#   scripts/libcloud.sh live          the live tests: a real controller and agent with real guests
#                                     (stratus-testcloud, from `cargo build --workspace --bins`;
#                                     root, libvirtd, the appliance)
#   scripts/libcloud.sh test          unit, then live
#   scripts/libcloud.sh wheel DIR     the driver's wheel into DIR
set -euo pipefail

readonly ROOT=$(cd "$(dirname "$0")/.." && pwd)
readonly DRIVER=$ROOT/clients/libcloud
readonly VENV=$ROOT/build/libcloud-venv
readonly REQUIREMENTS=$DRIVER/requirements-test.txt

log() { printf 'libcloud: %s\n' "$*"; }
die() { printf 'libcloud: ERROR: %s\n' "$*" >&2; exit 1; }

venv() {
    local stamp=$VENV/.requirements
    if [[ -x $VENV/bin/python && -f $stamp ]] && cmp -s "$REQUIREMENTS" "$stamp"; then
        "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e "$DRIVER"
        return
    fi
    log "making ${VENV#"$ROOT"/} (packages from PyPI)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e "$DRIVER"
    cp "$REQUIREMENTS" "$stamp"
}

unit() {
    (cd "$DRIVER" && "$VENV/bin/pytest" -q -p no:cacheprovider tests --ignore=tests/live)
}

live() {
    (cd "$DRIVER" && "$VENV/bin/pytest" -v -p no:cacheprovider tests/live)
}

wheel() {
    local out=$1
    mkdir -p "$out"
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    local work
    work=$(mktemp -d)
    cp -r "$DRIVER/pyproject.toml" "$DRIVER/README.md" "$DRIVER/stratuslab" "$work/"
    "$VENV/bin/pip" wheel --quiet --no-deps --no-build-isolation -w "$out" "$work"
    rm -rf "$work"
    log "built $(cd "$out" && ls stratuslab_libcloud_drivers-*.whl)"
}

case ${1:-} in
venv) venv ;;
unit) venv && unit ;;
live) venv && live ;;
test) venv && unit && live ;;
wheel) [[ $# -eq 2 ]] || die "usage: $0 wheel DIR"; venv && wheel "$2" ;;
*) die "usage: $0 venv|unit|live|test|wheel DIR" ;;
esac
