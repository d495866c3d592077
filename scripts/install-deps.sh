#!/usr/bin/env bash
# Idempotent system set-up for building, testing and demoing StratusLab on
# Debian 12 (bookworm), run as root. Used by `make demo`, `make test` and CI.
#
#   1. installs every package named in scripts/tools.sh, the one list of the programs the
#      code, tests, demo and benchmarks run (skipped entirely when every package is installed,
#      every listed command is found and the qemu versions match: re-runs take well under 1 s);
#   2. starts virtlogd and libvirtd when they are not running (there is no
#      systemd on the target machines);
#   3. waits (bounded) until qemu:///system answers (`virsh list`).
#
# qemu-utils and qemu-system-common are pinned to the same version as qemu-system-x86: some
# images ship qemu-utils 10 from bookworm-backports, which conflicts with bookworm's
# qemu-system-x86 7.2, so it is downgraded to the bookworm build.
#
# Environment:
#   LIBVIRT_WAIT_SECS   how long to wait for libvirtd to answer (default 30)
#   SKIP_LIBVIRTD=1     install packages only; do not start/check the daemons
set -euo pipefail

readonly PROG=install-deps
readonly LIBVIRT_URI=qemu:///system
LIBVIRT_WAIT_SECS=${LIBVIRT_WAIT_SECS:-30}

readonly MANIFEST=$(dirname "$0")/tools.sh
# The qemu packages are installed at one version together (see above).
readonly QEMU_PINNED=(qemu-system-x86 qemu-system-common qemu-utils)

log() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

# "<status-abbrev>|<version>" of an installed package, empty when unknown.
pkg_state() {
    dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null || true
}

pkg_installed() {
    local state
    state=$(pkg_state "$1")
    [[ ${state%%|*} == "ii "* ]]
}

pkg_version() {
    local state
    state=$(pkg_state "$1")
    printf '%s' "${state#*|}"
}

# "command package" pairs of the manifest, one per line ("-" for a package without a command).
manifest() {
    [[ -f $MANIFEST ]] || die "$MANIFEST is missing"
    local TOOLS
    # shellcheck source=scripts/tools.sh
    source "$MANIFEST"
    sed -e 's/#.*//' <<<"$TOOLS" | awk 'NF >= 2 {print $1, $2}'
}

# Names of required packages that are not installed, or whose command is not found, one per
# line (each package once).
missing_packages() {
    local command package
    while read -r command package; do
        if ! pkg_installed "$package" || { [[ $command != - ]] && ! command -v "$command" >/dev/null; }; then
            printf '%s\n' "$package"
        fi
    done < <(manifest) | sort -u
}

# True when the pinned qemu packages are all installed at one version.
qemu_versions_match() {
    local p want
    want=$(pkg_version qemu-system-x86)
    for p in "${QEMU_PINNED[@]}"; do
        pkg_installed "$p" && [[ $(pkg_version "$p") == "$want" ]] || return 1
    done
}

# Human-readable list of unmet requirements; empty when all are satisfied.
unmet_requirements() {
    local missing problems=()
    missing=$(missing_packages | paste -sd' ' -)
    [[ -z $missing ]] || problems+=("missing: $missing")
    if [[ -z $missing ]] && ! qemu_versions_match; then
        problems+=("qemu packages at different versions: $(for p in "${QEMU_PINNED[@]}"; do printf '%s=%s ' "$p" "$(pkg_version "$p")"; done)")
    fi
    local item out=""
    for item in "${problems[@]}"; do out+="${out:+; }$item"; done
    printf '%s' "$out"
}

# Versions to pin the qemu pair to: the version apt would pick for
# qemu-system-x86 when qemu-utils is available at that version too, else the
# version in bookworm/main for both. Prints "<qemu-utils> <qemu-system-x86>".
choose_qemu_versions() {
    local cand available
    cand=$(apt-cache policy qemu-system-x86 | awk '$1 == "Candidate:" {print $2; exit}')
    [[ -n $cand && $cand != "(none)" ]] ||
        die "no installation candidate for qemu-system-x86 (check /etc/apt/sources.list*)"
    available=$(apt-cache madison qemu-utils | awk -F'|' '{gsub(/ /, "", $2); print $2}')
    if grep -qxF -- "$cand" <<<"$available"; then
        printf '%s %s\n' "$cand" "$cand"
        return
    fi
    # Fall back to the version in bookworm/main and pin qemu-system-x86 to it.
    local bw
    bw=$(apt-cache madison qemu-utils | awk -F'|' '$3 ~ /bookworm\/main/ {gsub(/ /, "", $2); print $2; exit}')
    [[ -n $bw ]] || die "qemu-utils is not available from bookworm/main (check /etc/apt/sources.list*)"
    printf '%s %s\n' "$bw" "$bw"
}

install_packages() {
    local unmet
    unmet=$(unmet_requirements)
    if [[ -z $unmet ]]; then
        log "packages: all present (qemu-utils $(pkg_version qemu-utils)), skipping apt"
        return
    fi
    log "packages: $unmet"

    command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 only"
    export DEBIAN_FRONTEND=noninteractive
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null || die "apt-get update failed"

    # Install only what is missing (no gratuitous upgrades), but always pin the
    # qemu pair so that apt resolves them together.
    local versions qu qs
    versions=$(choose_qemu_versions)
    read -r qu qs <<<"$versions"
    local args=() p
    while read -r p; do
        [[ -z $p || " ${QEMU_PINNED[*]} " == *" $p "* ]] || args+=("$p")
    done < <(missing_packages)
    args+=("qemu-system-x86=$qs" "qemu-system-common=$qs" "qemu-utils=$qu")
    log "apt-get install ${args[*]}"
    # Packages must not start their own services here (prometheus would listen on :9090; this
    # script starts what the tests need itself): invoke-rc.d asks policy-rc.d, which forbids
    # it for the time of the install unless the machine already has one.
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# install-deps.sh: no service starts during its apt-get install\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        made_policy=1
    fi
    local status=0
    apt-get install -y -q --no-install-recommends --allow-downgrades -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${args[@]}" >/dev/null || status=$?
    [[ -z $made_policy ]] || rm -f "$policy"
    ((status == 0)) || die "apt-get install failed (re-run 'apt-get install ${args[*]}' to see why)"

    unmet=$(unmet_requirements)
    [[ -z $unmet ]] || die "packages still unmet after apt-get install: $unmet"
    log "packages: installed (qemu-utils $(pkg_version qemu-utils))"
}

# start_daemon NAME: start NAME -d unless a process of that exact name runs.
start_daemon() {
    local name=$1
    if pgrep -x "$name" >/dev/null; then
        log "$name: already running (pid $(pgrep -x "$name" | tr '\n' ' ' | sed 's/ $//'))"
        return
    fi
    command -v "$name" >/dev/null || die "$name not found in PATH (is libvirt installed?)"
    "$name" -d || die "failed to start $name"
    log "$name: started"
}

wait_for_libvirt() {
    local deadline=$((SECONDS + LIBVIRT_WAIT_SECS))
    local out=""
    while :; do
        # `virsh list` exercises the QEMU driver but is cheap; `virsh version`
        # is not (it re-probes QEMU capabilities here: 8-12 s per call).
        if out=$(timeout 10 virsh -c "$LIBVIRT_URI" list --all 2>&1); then
            log "libvirt: $LIBVIRT_URI answers"
            return
        fi
        if ((SECONDS >= deadline)); then
            die "libvirt: $LIBVIRT_URI did not answer within ${LIBVIRT_WAIT_SECS}s: $(tail -n1 <<<"$out")"
        fi
        sleep 0.5
    done
}

# Without udev, /dev/kvm stays root:root 0600; libvirt then finds KVM unusable for the
# libvirt-qemu user and re-probes QEMU's capabilities on every lookup, which made each
# domain start take 48-68 s here instead of 0.4 s. Give it what Debian's udev rule gives it.
fix_kvm_device() {
    [[ -e /dev/kvm ]] || return 0
    if getent group kvm >/dev/null; then
        chgrp kvm /dev/kvm && chmod 0660 /dev/kvm || die "cannot set /dev/kvm to root:kvm 0660"
        log "kvm: /dev/kvm is root:kvm 0660"
    fi
}

main() {
    [[ $# -eq 0 ]] || die "usage: $0 (no arguments)"
    [[ $(id -u) -eq 0 ]] || die "must be run as root"
    [[ $LIBVIRT_WAIT_SECS =~ ^[0-9]+$ ]] || die "LIBVIRT_WAIT_SECS must be a number of seconds"

    install_packages
    if [[ ${SKIP_LIBVIRTD:-0} == 1 ]]; then
        log "libvirt: SKIP_LIBVIRTD=1, not starting daemons"
        return
    fi
    fix_kvm_device
    start_daemon virtlogd
    start_daemon libvirtd
    wait_for_libvirt
    log "done"
}

main "$@"
