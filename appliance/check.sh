#!/usr/bin/env bash
# Boot the test appliance under qemu:///system and wait for its banner.
#
# Usage: appliance/check.sh [OUT_DIR]      (default: <repo>/build/appliance)
#
# Creates a transient libvirt domain (type 'qemu', i.e. TCG: KVM is not usable
# on our machines) named appliance-check-<pid>: 1 vCPU, 256 MiB, direct kernel
# boot of OUT_DIR's vmlinuz + initrd.img, disk = a qcow2 overlay on
# OUT_DIR/disk.qcow2 (virtio, vda), serial console to a file. Exits 0 only if
#   STRATUSLAB-APPLIANCE-READY hostname=<domain name> disk=ok kernel=... ip=none ssh=none
# appears on the console within CHECK_TIMEOUT seconds (default 60). The domain
# and its files under /var/lib/stratuslab-appliance-check/ are always removed.
#
# (No NIC and no cidata ISO: the pre-contextualization behaviour. The network
# and cloud-init NoCloud path is checked by appliance/check-network.sh.)
#
# Environment: CHECK_TIMEOUT (seconds), LIBVIRT_URI (default qemu:///system),
#              KEEP_CONSOLE=1 prints the whole console log at the end.
set -euo pipefail
umask 022

readonly PROG=appliance/check.sh
readonly BASE_DIR=/var/lib/stratuslab-appliance-check
readonly URI=${LIBVIRT_URI:-qemu:///system}
readonly TIMEOUT=${CHECK_TIMEOUT:-60}
readonly NAME=appliance-check-$$
readonly RUN_DIR=$BASE_DIR/$NAME

SCRIPT_DIR=$(dirname "$(realpath -e "${BASH_SOURCE[0]}")")
REPO_ROOT=$(dirname "$SCRIPT_DIR")
readonly SCRIPT_DIR REPO_ROOT
# shellcheck source=appliance/check-lib.sh
. "$SCRIPT_DIR/check-lib.sh"

[[ $# -le 1 ]] || die "usage: $0 [OUT_DIR]"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "CHECK_TIMEOUT must be a number of seconds"
OUT_DIR=$(realpath -m "${1:-$REPO_ROOT/build/appliance}")
readonly OUT_DIR

require_commands virsh qemu-img sha256sum
read_appliance "$OUT_DIR"

CONSOLE=$RUN_DIR/console.log
OVERLAY=$RUN_DIR/overlay.qcow2
readonly CMDLINE CONSOLE OVERLAY

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if domain_exists; then
        virsh -c "$URI" destroy "$NAME" >/dev/null 2>&1 || log "warning: could not destroy $NAME"
    fi
    if [[ $rc -ne 0 && -s $CONSOLE ]]; then
        printf '%s: --- last console lines ---\n' "$PROG" >&2
        tail -n 25 "$CONSOLE" | tr -d '\r' >&2
        printf '%s: --------------------------\n' "$PROG" >&2
    elif [[ ${KEEP_CONSOLE:-0} == 1 && -s $CONSOLE ]]; then
        tr -d '\r' <"$CONSOLE"
    fi
    rm -rf -- "$RUN_DIR"
    rmdir -- "$BASE_DIR" 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Another check may rmdir $BASE_DIR between mkdir -p's two steps: retry.
for _ in 1 2 3; do mkdir -p "$RUN_DIR" 2>/dev/null && break; done
[[ -d $RUN_DIR ]] || die "cannot create $RUN_DIR"
chmod 0755 "$BASE_DIR" "$RUN_DIR"
qemu-img create -q -f qcow2 -F qcow2 -b "$OUT_DIR/disk.qcow2" "$OVERLAY" ||
    die "qemu-img create of the overlay failed"

domain_xml "$OUT_DIR" "$OVERLAY" "$CONSOLE" >"$RUN_DIR/domain.xml"

log "booting $NAME (type qemu, 1 vCPU, 256 MiB) from $OUT_DIR"
start=$(date +%s.%N)
virsh -c "$URI" create "$RUN_DIR/domain.xml" >/dev/null || die "virsh create failed"

banner=$(wait_banner "$CONSOLE" "$TIMEOUT")
elapsed=$(elapsed_since "$start")
log "banner after ${elapsed}s: $banner"
[[ $banner == *" disk=ok "* ]] || die "the appliance did not read its disk (expected disk=ok)"
[[ $banner == *" hostname=$NAME "* ]] || die "unexpected hostname in the banner (expected $NAME)"
[[ $banner == *" ip=none ssh=none" ]] || die "unexpected network facts in the banner (expected ip=none ssh=none)"
log "OK"
