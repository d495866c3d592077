#!/usr/bin/env bash
# Boot the test appliance with a user-data shell script that uses data disks:
# the guest formats, mounts, writes and reads back a virtio disk it finds by its
# serial, and sees a second disk hot-plugged and hot-unplugged.
#
# Usage: appliance/check-disks.sh [OUT_DIR]     (default: <repo>/build/appliance)
#
# For each user-data form in CHECK_USERDATA_FORM (default "plain mime"):
#   plain  user-data is the `#!/bin/sh` script itself;
#   mime   a MIME multipart/mixed document (a text/cloud-config part, then the
#          script as a text/x-shellscript part), as the agent writes it when a
#          user's data is not cloud-config;
# it boots a transient domain (type qemu) with the cidata ISO as an IDE CD-ROM
# and a 64 MiB raw data disk (virtio vdb, serial sl-d1-<pid>) and checks:
#   1. the script (run by the appliance after its banner) finds /dev/vdX by
#      /sys/block/vdX/serial, formats it with mkfs.ext4, mounts it, writes a
#      token, syncs, unmounts, mounts it again and prints what it reads back;
#   2. `virsh attach-disk --live --targetbus virtio --serial sl-d2-<pid>` of a
#      second disk (vdc) shows up in the guest under that serial;
#   3. `virsh detach-disk vdc --live` completes and the disk vanishes from the guest;
#   4. the script ends with STRATUS-USERDATA-EXIT 0;
#   5. after the domain is gone, the data disk holds a clean ext4 filesystem
#      (e2fsck -fn) whose probe file holds the token (debugfs).
# Everything it creates (domain, files under /var/lib/stratuslab-appliance-check/)
# is removed, also on failure.
#
# Environment: CHECK_TIMEOUT (seconds per boot, default 90), LIBVIRT_URI
#   (default qemu:///system), CHECK_USERDATA_FORM, KEEP_CONSOLE=1.
set -euo pipefail
umask 022

readonly PROG=appliance/check-disks.sh
readonly BASE_DIR=/var/lib/stratuslab-appliance-check
readonly URI=${LIBVIRT_URI:-qemu:///system}
readonly TIMEOUT=${CHECK_TIMEOUT:-90}
readonly FORMS=${CHECK_USERDATA_FORM:-plain mime}
readonly NAME=appliance-disks-$$
readonly RUN_DIR=$BASE_DIR/$NAME
readonly SERIAL1=sl-d1-$$ SERIAL2=sl-d2-$$
readonly DATA_MIB=64 HOTPLUG_MIB=16
readonly TOKEN=token-$$-$RANDOM

SCRIPT_DIR=$(dirname "$(realpath -e "${BASH_SOURCE[0]}")")
REPO_ROOT=$(dirname "$SCRIPT_DIR")
readonly SCRIPT_DIR REPO_ROOT
# shellcheck source=appliance/check-lib.sh
. "$SCRIPT_DIR/check-lib.sh"

[[ $# -le 1 ]] || die "usage: $0 [OUT_DIR]"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "CHECK_TIMEOUT must be a number of seconds"
OUT_DIR=$(realpath -m "${1:-$REPO_ROOT/build/appliance}")
readonly OUT_DIR

require_commands virsh qemu-img genisoimage sha256sum debugfs e2fsck truncate
read_appliance "$OUT_DIR"
readonly CMDLINE
CONSOLE=$RUN_DIR/console.log

teardown() {
    if domain_exists; then
        virsh -c "$URI" destroy "$NAME" >/dev/null 2>&1 || log "warning: could not destroy $NAME"
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    teardown
    if [[ $rc -ne 0 && -s $CONSOLE ]]; then
        printf '%s: --- last console lines ---\n' "$PROG" >&2
        tail -n 40 "$CONSOLE" | tr -d '\r' >&2
        printf '%s: --------------------------\n' "$PROG" >&2
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

# The guest's script: every step prints one "CHECK-DISKS ..." line; any failure
# prints "CHECK-DISKS FAIL: ..." and exits 1.
guest_script() {
    cat <<EOF
#!/bin/sh
fail() { echo "CHECK-DISKS FAIL: \$*"; exit 1; }
# disk_by_serial SERIAL SECONDS: the vdX whose virtio serial is SERIAL.
disk_by_serial() {
    i=0
    while [ "\$i" -lt \$((\$2 * 10)) ]; do
        for s in /sys/block/vd*/serial; do
            [ -f "\$s" ] && [ "\$(cat "\$s")" = "\$1" ] || continue
            d=\${s%/serial}
            d=\${d##*/}
            [ -b "/dev/\$d" ] && { echo "\$d"; return 0; }
        done
        sleep 0.1
        i=\$((i + 1))
    done
    return 1
}
dev=\$(disk_by_serial $SERIAL1 30) || fail "no disk with serial $SERIAL1"
echo "CHECK-DISKS data disk: /dev/\$dev serial=$SERIAL1 bytes=\$(blockdev --getsize64 "/dev/\$dev")"
mkfs.ext4 -q -F -L stratus-data "/dev/\$dev" || fail "mkfs.ext4 /dev/\$dev"
mkdir -p /mnt/data
mount -t ext4 "/dev/\$dev" /mnt/data || fail "mount /dev/\$dev"
echo $TOKEN >/mnt/data/probe.txt || fail "write"
sync
umount /mnt/data || fail "umount"
mount -t ext4 -o ro "/dev/\$dev" /mnt/data || fail "mount again"
echo "CHECK-DISKS read back: \$(cat /mnt/data/probe.txt) files=\$(ls /mnt/data | tr '\n' ' ')"
umount /mnt/data || fail "umount again"
echo "CHECK-DISKS waiting for hot-plug"
hp=\$(disk_by_serial $SERIAL2 60) || fail "no hot-plugged disk with serial $SERIAL2"
echo "CHECK-DISKS hot-plugged: /dev/\$hp serial=$SERIAL2 bytes=\$(blockdev --getsize64 "/dev/\$hp")"
i=0
while [ -e "/sys/block/\$hp" ] || [ -e "/dev/\$hp" ]; do
    [ "\$i" -lt 600 ] || fail "/dev/\$hp still there 60 s after the hot-plug"
    sleep 0.1
    i=\$((i + 1))
done
echo "CHECK-DISKS unplugged: /dev/\$hp gone"
EOF
}

# write_cidata FORM: cidata.iso whose user-data is the script in FORM.
write_cidata() {
    local form=$1 dir=$RUN_DIR/cidata boundary="==check-disks-$$=="
    rm -rf "$dir"
    mkdir -p "$dir"
    printf 'instance-id: i-disks-%s\nlocal-hostname: %s\n' "$$" "$NAME" >"$dir/meta-data"
    case $form in
        plain) guest_script >"$dir/user-data" ;;
        mime)
            {
                printf 'Content-Type: multipart/mixed; boundary="%s"\nMIME-Version: 1.0\n\n' "$boundary"
                printf -- '--%s\nContent-Type: text/cloud-config; charset="utf-8"\n\n' "$boundary"
                printf '#cloud-config\n# (nothing else)\n\n'
                printf -- '--%s\nContent-Type: text/x-shellscript; charset="utf-8"\n\n' "$boundary"
                guest_script
                printf -- '\n--%s--\n' "$boundary"
            } >"$dir/user-data"
            ;;
        *) die "unknown user-data form '$form' (plain or mime)" ;;
    esac
    genisoimage -quiet -o "$RUN_DIR/cidata.iso" -V cidata -J -r "$dir" 2>/dev/null ||
        die "genisoimage failed"
    chmod 0644 "$RUN_DIR/cidata.iso"
}

disk_xml() {
    local file=$1 dev=$2 serial=$3
    printf "    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='%s'/><target dev='%s' bus='virtio'/><serial>%s</serial></disk>" \
        "$(xml_escape "$file")" "$dev" "$serial"
}

# field LINE KEY: the value of "KEY=value" in LINE.
field() { sed -n "s/.* $2=\\([^ ]*\\).*/\\1/p" <<<"$1"; }

# has_target DEV: the running domain has a disk with target DEV.
has_target() { virsh -c "$URI" domblklist "$NAME" | awk -v d="$1" '$1 == d { f = 1 } END { exit !f }'; }

# boot_once FORM: one boot, all checks, full teardown.
boot_once() {
    local form=$1 data=$RUN_DIR/data1.raw hot=$RUN_DIR/data2.raw
    rm -f "$CONSOLE" "$RUN_DIR/overlay.qcow2" "$data" "$hot"
    write_cidata "$form"
    qemu-img create -q -f qcow2 -F qcow2 -b "$OUT_DIR/disk.qcow2" "$RUN_DIR/overlay.qcow2" ||
        die "qemu-img create of the overlay failed"
    truncate -s "${DATA_MIB}M" "$data"
    truncate -s "${HOTPLUG_MIB}M" "$hot"
    domain_xml "$OUT_DIR" "$RUN_DIR/overlay.qcow2" "$CONSOLE" "    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <source file='$(xml_escape "$RUN_DIR/cidata.iso")'/><target dev='hdc' bus='ide'/><readonly/></disk>
$(disk_xml "$data" vdb "$SERIAL1")" >"$RUN_DIR/domain.xml"

    log "[$form] booting $NAME: data disk vdb (serial $SERIAL1, ${DATA_MIB} MiB), cidata on ide"
    local start line fail='CHECK-DISKS FAIL|STRATUS-USERDATA-EXIT'
    start=$(date +%s.%N)
    virsh -c "$URI" create "$RUN_DIR/domain.xml" >/dev/null || die "virsh create failed"
    line=$(wait_banner "$CONSOLE" "$TIMEOUT")
    log "[$form] banner after $(elapsed_since "$start")s: $line"

    line=$(wait_line "$CONSOLE" 'CHECK-DISKS data disk: ' 60 "$fail")
    log "[$form] guest: ${line#*CHECK-DISKS }"
    [[ $(field "$line" serial) == "$SERIAL1" ]] || die "wrong serial: $line"
    [[ $(field "$line" bytes) == $((DATA_MIB << 20)) ]] || die "wrong size: $line"
    line=$(wait_line "$CONSOLE" 'CHECK-DISKS read back: ' 60 "$fail")
    log "[$form] guest: ${line#*CHECK-DISKS }"
    [[ $line == *"read back: $TOKEN files="* ]] || die "the guest did not read back $TOKEN: $line"

    wait_line "$CONSOLE" 'CHECK-DISKS waiting for hot-plug' 30 "$fail" >/dev/null
    local t0
    t0=$(date +%s.%N)
    virsh -c "$URI" attach-disk "$NAME" "$hot" vdc --live --targetbus virtio --subdriver raw \
        --serial "$SERIAL2" >/dev/null || die "virsh attach-disk failed"
    line=$(wait_line "$CONSOLE" 'CHECK-DISKS hot-plugged: ' 60 "$fail")
    log "[$form] guest after attach-disk ($(elapsed_since "$t0")s): ${line#*CHECK-DISKS }"
    [[ $(field "$line" serial) == "$SERIAL2" ]] || die "wrong serial: $line"
    [[ $(field "$line" bytes) == $((HOTPLUG_MIB << 20)) ]] || die "wrong size: $line"

    t0=$(date +%s.%N)
    virsh -c "$URI" detach-disk "$NAME" vdc --live >/dev/null || die "virsh detach-disk failed"
    local deadline=$((SECONDS + 30))
    while has_target vdc; do
        ((SECONDS < deadline)) || die "vdc is still attached 30 s after detach-disk"
        sleep 0.1
    done
    log "[$form] detach-disk completed in $(elapsed_since "$t0")s"
    line=$(wait_line "$CONSOLE" 'CHECK-DISKS unplugged: ' 60 "$fail")
    log "[$form] guest: ${line#*CHECK-DISKS }"
    line=$(wait_line "$CONSOLE" 'STRATUS-USERDATA-EXIT ' 30)
    [[ $line == *"STRATUS-USERDATA-EXIT 0" ]] || die "the script failed: $line"
    log "[$form] $line after $(elapsed_since "$start")s"

    if [[ ${KEEP_CONSOLE:-0} == 1 ]]; then tr -d '\r' <"$CONSOLE"; fi
    teardown
    # What the guest wrote is on the disk (QEMU has exited: the file is quiescent).
    e2fsck -fn "$data" >/dev/null 2>&1 || die "the data disk's filesystem does not pass e2fsck"
    local got
    got=$(debugfs -R 'cat /probe.txt' "$data" 2>/dev/null) || die "debugfs cannot read /probe.txt"
    [[ $got == "$TOKEN" ]] || die "the data disk holds '$got', expected $TOKEN"
    log "[$form] host: data disk is clean ext4, /probe.txt = $got"
}

for form in $FORMS; do
    boot_once "$form"
done
log "OK"
