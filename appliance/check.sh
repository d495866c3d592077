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

log() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

SCRIPT_DIR=$(dirname "$(realpath -e "${BASH_SOURCE[0]}")")
REPO_ROOT=$(dirname "$SCRIPT_DIR")
readonly SCRIPT_DIR REPO_ROOT

[[ $# -le 1 ]] || die "usage: $0 [OUT_DIR]"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "CHECK_TIMEOUT must be a number of seconds"
OUT_DIR=$(realpath -m "${1:-$REPO_ROOT/build/appliance}")
readonly OUT_DIR

for c in virsh qemu-img sha256sum; do
    command -v "$c" >/dev/null || die "'$c' not found; run scripts/install-deps.sh first"
done
for f in vmlinuz initrd.img disk.qcow2 image.json; do
    [[ -s $OUT_DIR/$f ]] || die "$OUT_DIR/$f is missing; run appliance/build.sh first"
done

# The command line recorded by build.sh (a plain JSON string without escapes).
CMDLINE=$(sed -n 's/^ *"cmdline": "\([^"\\]*\)",\{0,1\}$/\1/p' "$OUT_DIR/image.json")
[[ -n $CMDLINE ]] || die "no cmdline in $OUT_DIR/image.json"
SHA=$(sed -n 's/^ *"sha256": "\([0-9a-f]*\)",\{0,1\}$/\1/p' "$OUT_DIR/image.json")
[[ $(sha256sum "$OUT_DIR/disk.qcow2" | cut -d' ' -f1) == "$SHA" ]] ||
    die "$OUT_DIR/disk.qcow2 does not match the sha256 in image.json; rebuild it"

CONSOLE=$RUN_DIR/console.log
OVERLAY=$RUN_DIR/overlay.qcow2
readonly CMDLINE CONSOLE OVERLAY

domain_exists() { virsh -c "$URI" domstate "$NAME" >/dev/null 2>&1; }

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

xml_escape() {
    local s=$1
    s=${s//&/&amp;}
    s=${s//</&lt;}
    s=${s//>/&gt;}
    s=${s//\'/&apos;}
    s=${s//\"/&quot;}
    printf '%s' "$s"
}

cat >"$RUN_DIR/domain.xml" <<EOF
<domain type='qemu'>
  <name>$NAME</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>$(xml_escape "$OUT_DIR/vmlinuz")</kernel>
    <initrd>$(xml_escape "$OUT_DIR/initrd.img")</initrd>
    <cmdline>$(xml_escape "$CMDLINE hostname=$NAME")</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$(xml_escape "$OVERLAY")'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='$(xml_escape "$CONSOLE")'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$(xml_escape "$CONSOLE")'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
EOF

log "booting $NAME (type qemu, 1 vCPU, 256 MiB) from $OUT_DIR"
start=$(date +%s.%N)
virsh -c "$URI" create "$RUN_DIR/domain.xml" >/dev/null || die "virsh create failed"

banner=""
deadline=$((SECONDS + TIMEOUT))
while ((SECONDS < deadline)); do
    if [[ -f $CONSOLE ]]; then
        banner=$(tr -d '\r' <"$CONSOLE" | grep -a -m1 '^STRATUSLAB-APPLIANCE-READY ' || true)
        [[ -z $banner ]] || break
    fi
    domain_exists || die "domain $NAME stopped before printing its banner"
    sleep 0.2
done
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

[[ -n $banner ]] || die "no STRATUSLAB-APPLIANCE-READY banner within ${TIMEOUT}s"
log "banner after ${elapsed}s: $banner"
[[ $banner == *" disk=ok "* ]] || die "the appliance did not read its disk (expected disk=ok)"
[[ $banner == *" hostname=$NAME "* ]] || die "unexpected hostname in the banner (expected $NAME)"
[[ $banner == *" ip=none ssh=none" ]] || die "unexpected network facts in the banner (expected ip=none ssh=none)"
log "OK"
