#!/usr/bin/env bash
# Boot the test appliance with a cloud-init NoCloud `cidata` ISO and a NIC on a
# bridge inside a private network namespace; then ping it and SSH into it from
# that namespace.
#
# Usage: appliance/check-network.sh [OUT_DIR]   (default: <repo>/build/appliance)
#
# For each cidata attachment in CHECK_CIDATA_BUS (default "ide virtio"):
#   ide     the ISO is a CD-ROM on the IDE bus of machine type `pc` (hdc)
#   virtio  the ISO is a second virtio disk (vdb, read-only)
# it:
#   1. creates the netns sl-appl-<pid> holding bridge br0 = 10.250.<x>.1/24;
#   2. creates tap slt<pid> in the root namespace (QEMU opens it there by name),
#      boots a transient libvirt domain (type qemu, machine pc) with
#      <interface type='ethernet'><target dev='slt<pid>' managed='no'/>, and
#      connects the tap to br0 according to CHECK_TAP_MODE:
#        move  (default) after `virsh create`, move the tap into the netns
#              (`ip link set TAP netns NS`) and enslave it to br0 there;
#        veth  keep the tap in the root namespace on a bridge slb<pid> (no
#              address, IPv6 off) joined to br0 by a veth pair;
#   3. waits for  STRATUSLAB-APPLIANCE-READY hostname=<ctx> disk=ok ... ip=<vm> ssh=ok
#   4. runs, inside the netns only: ping -c1 <vm>; ssh -i <throwaway key> root@<vm> hostname.
# Traffic goes only to the VM's address inside the namespace. Everything it
# creates (domain, netns, bridges, tap, veth, files) is removed, also on failure.
#
# Environment: CHECK_TIMEOUT (seconds per boot, default 90), LIBVIRT_URI
#   (default qemu:///system), CHECK_CIDATA_BUS, CHECK_TAP_MODE, KEEP_CONSOLE=1.
set -euo pipefail
umask 022

readonly PROG=appliance/check-network.sh
readonly BASE_DIR=/var/lib/stratuslab-appliance-check
readonly URI=${LIBVIRT_URI:-qemu:///system}
readonly TIMEOUT=${CHECK_TIMEOUT:-90}
readonly BUSES=${CHECK_CIDATA_BUS:-ide virtio}
readonly TAP_MODE=${CHECK_TAP_MODE:-move}
readonly NAME=appliance-net-$$
readonly RUN_DIR=$BASE_DIR/$NAME
readonly NS=sl-appl-$$
readonly TAP=slt$$
readonly RBR=slb$$   # root-namespace bridge (veth mode)
readonly VETH_R=slv$$r VETH_N=slv$$n
readonly SUBNET=10.250.$(($$ % 250 + 1))
readonly GW=$SUBNET.1 VM_IP=$SUBNET.10
MAC=52:54:00:$(printf '%02x:%02x:%02x' $((($$ >> 16) & 255)) $((($$ >> 8) & 255)) $(($$ & 255)))
readonly MAC
readonly CTX_HOST=ctx-$$

SCRIPT_DIR=$(dirname "$(realpath -e "${BASH_SOURCE[0]}")")
REPO_ROOT=$(dirname "$SCRIPT_DIR")
readonly SCRIPT_DIR REPO_ROOT
# shellcheck source=appliance/check-lib.sh
. "$SCRIPT_DIR/check-lib.sh"

[[ $# -le 1 ]] || die "usage: $0 [OUT_DIR]"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "CHECK_TIMEOUT must be a number of seconds"
[[ $TAP_MODE == move || $TAP_MODE == veth ]] || die "CHECK_TAP_MODE must be 'move' or 'veth'"
OUT_DIR=$(realpath -m "${1:-$REPO_ROOT/build/appliance}")
readonly OUT_DIR
[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, taps)"

require_commands virsh qemu-img ip ssh ssh-keygen genisoimage sha256sum
read_appliance "$OUT_DIR"
readonly CMDLINE
CONSOLE=$RUN_DIR/console.log

# Remove the domain and every network object of this run (wherever it is).
teardown() {
    if domain_exists; then
        virsh -c "$URI" destroy "$NAME" >/dev/null 2>&1 || log "warning: could not destroy $NAME"
    fi
    ip netns exec "$NS" true 2>/dev/null && {
        ip -n "$NS" link del "$TAP" 2>/dev/null || true
        ip netns del "$NS" || log "warning: could not delete netns $NS"
    }
    local l
    for l in "$TAP" "$VETH_R" "$RBR"; do
        # (a veth end vanishes with its peer's namespace: re-check on failure)
        if ip link show "$l" >/dev/null 2>&1 && ! ip link del "$l" 2>/dev/null &&
            ip link show "$l" >/dev/null 2>&1; then
            log "warning: could not delete link $l"
        fi
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    teardown
    if [[ $rc -ne 0 && -s $CONSOLE ]]; then
        printf '%s: --- last console lines ---\n' "$PROG" >&2
        tail -n 30 "$CONSOLE" | tr -d '\r' >&2
        printf '%s: --------------------------\n' "$PROG" >&2
    fi
    rm -rf -- "$RUN_DIR"
    rmdir -- "$BASE_DIR" 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


for _ in 1 2 3; do mkdir -p "$RUN_DIR" 2>/dev/null && break; done
[[ -d $RUN_DIR ]] || die "cannot create $RUN_DIR"
chmod 0755 "$BASE_DIR" "$RUN_DIR"

# Throwaway SSH key and the NoCloud files (the format of appliance/README.md).
ssh-keygen -q -t ed25519 -N '' -C "check-network-$$" -f "$RUN_DIR/id_ed25519" || die "ssh-keygen failed"
mkdir -p "$RUN_DIR/cidata"
cat >"$RUN_DIR/cidata/meta-data" <<EOF
instance-id: i-check-$$
local-hostname: $CTX_HOST
EOF
cat >"$RUN_DIR/cidata/user-data" <<EOF
#cloud-config
ssh_authorized_keys:
  - "$(cat "$RUN_DIR/id_ed25519.pub")"
EOF
cat >"$RUN_DIR/cidata/network-config" <<EOF
version: 2
ethernets:
  eth0:
    match:
      macaddress: "$MAC"
    set-name: eth0
    addresses:
      - $VM_IP/24
    gateway4: $GW
    nameservers:
      addresses:
        - $GW
EOF
genisoimage -quiet -o "$RUN_DIR/cidata.iso" -V cidata -J -r "$RUN_DIR/cidata" 2>/dev/null ||
    die "genisoimage failed"
chmod 0644 "$RUN_DIR/cidata.iso"

SSH_OPTS=(-i "$RUN_DIR/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o BatchMode=yes -o ConnectTimeout=10 -o LogLevel=ERROR)

# boot_once BUS: one boot with the ISO on BUS, all checks, full teardown.
boot_once() {
    local bus=$1 cidata_xml
    case $bus in
        ide) cidata_xml="<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <source file='$(xml_escape "$RUN_DIR/cidata.iso")'/><target dev='hdc' bus='ide'/><readonly/></disk>" ;;
        virtio) cidata_xml="<disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='$(xml_escape "$RUN_DIR/cidata.iso")'/><target dev='vdb' bus='virtio'/><readonly/></disk>" ;;
        *) die "unknown cidata bus '$bus' (ide or virtio)" ;;
    esac
    rm -f "$CONSOLE" "$RUN_DIR/overlay.qcow2"
    qemu-img create -q -f qcow2 -F qcow2 -b "$OUT_DIR/disk.qcow2" "$RUN_DIR/overlay.qcow2" ||
        die "qemu-img create of the overlay failed"

    # The namespace side: br0 with the gateway address.
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip -n "$NS" link add br0 type bridge
    ip -n "$NS" addr add "$GW/24" dev br0
    ip -n "$NS" link set br0 up
    # The tap, in the root namespace where libvirt/QEMU open it by name.
    ip tuntap add dev "$TAP" mode tap
    sysctl -qw "net.ipv6.conf.$TAP.disable_ipv6=1"
    if [[ $TAP_MODE == veth ]]; then
        ip link add "$RBR" type bridge
        sysctl -qw "net.ipv6.conf.$RBR.disable_ipv6=1"
        ip link add "$VETH_R" type veth peer name "$VETH_N" netns "$NS"
        sysctl -qw "net.ipv6.conf.$VETH_R.disable_ipv6=1"
        ip link set "$VETH_R" master "$RBR" up
        ip link set "$TAP" master "$RBR" up
        ip link set "$RBR" up
        ip -n "$NS" link set "$VETH_N" master br0 up
    fi

    local nic_xml="    <interface type='ethernet'>
      <mac address='$MAC'/>
      <target dev='$TAP' managed='no'/>
      <model type='virtio'/>
    </interface>"
    domain_xml "$OUT_DIR" "$RUN_DIR/overlay.qcow2" "$CONSOLE" "    $cidata_xml
$nic_xml" >"$RUN_DIR/domain.xml"

    log "[$bus/$TAP_MODE] booting $NAME: mac $MAC, cidata on $bus, tap $TAP, netns $NS ($GW/24)"
    local start banner
    start=$(date +%s.%N)
    virsh -c "$URI" create "$RUN_DIR/domain.xml" >/dev/null || die "virsh create failed"
    log "[$bus/$TAP_MODE] virsh create took $(elapsed_since "$start")s"
    if [[ $TAP_MODE == move ]]; then
        ip link set "$TAP" netns "$NS"
        ip -n "$NS" link set "$TAP" master br0 up
    fi
    banner=$(wait_banner "$CONSOLE" "$TIMEOUT")
    log "[$bus/$TAP_MODE] banner after $(elapsed_since "$start")s: $banner"
    local want="hostname=$CTX_HOST disk=ok kernel="
    [[ $banner == *" $want"* ]] || die "banner lacks '$want'"
    [[ $banner == *" ip=$VM_IP ssh=ok" ]] || die "banner lacks 'ip=$VM_IP ssh=ok'"

    local t0
    t0=$(date +%s.%N)
    ip netns exec "$NS" ping -c1 -W10 "$VM_IP" >/dev/null || die "ping $VM_IP from $NS failed"
    log "[$bus/$TAP_MODE] ping $VM_IP from $NS: ok ($(elapsed_since "$t0")s)"
    local got
    t0=$(date +%s.%N)
    got=$(ip netns exec "$NS" ssh "${SSH_OPTS[@]}" "root@$VM_IP" hostname) ||
        die "ssh root@$VM_IP from $NS failed"
    [[ $got == "$CTX_HOST" ]] || die "ssh hostname returned '$got', expected $CTX_HOST"
    log "[$bus/$TAP_MODE] ssh root@$VM_IP hostname -> $got ($(elapsed_since "$t0")s)"
    if [[ ${KEEP_CONSOLE:-0} == 1 ]]; then tr -d '\r' <"$CONSOLE"; fi
    teardown
}

for bus in $BUSES; do
    boot_once "$bus"
done
log "OK"
