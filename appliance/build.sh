#!/usr/bin/env bash
# Build the tiny StratusLab test appliance from Debian packages (cached).
#
# Usage: appliance/build.sh [OUT_DIR]      (default: <repo>/build/appliance)
#
# Outputs in OUT_DIR (all world-readable: qemu:///system runs QEMU as
# libvirt-qemu):
#   vmlinuz      Debian cloud kernel (linux-image-cloud-amd64)
#   initrd.img   gzip'd newc cpio: static busybox, virtio modules, /init
#   disk.qcow2   32 MiB ext4 image holding /stratuslab-appliance (a marker line)
#   image.json   {"name","format","sha256","kernel","initrd","disk","cmdline"}
#
# Booted with direct kernel boot, /init prints exactly one line
#   STRATUSLAB-APPLIANCE-READY hostname=<h> disk=<ok|none> kernel=<uname -r> ip=<addr|none> ssh=<ok|none>
# on the console (disk=ok: /dev/vda mounted read-only and the marker read;
# ip: eth0's first IPv4/IPv6 address without prefix length; ssh=ok: dropbear
# listens on port 22), then offers a shell on the console (after Enter) forever.
# Tools for data disks: e2fsprogs' mke2fs (mkfs.ext2/3/4) and e2fsck
# (fsck.ext2/3/4) with their libraries, busybox blockdev/mount/umount/sync.
# Contextualization: a cloud-init NoCloud ISO9660 filesystem labelled `cidata`
# (IDE/SATA CD-ROM -> /dev/sr*, or a virtio disk -> /dev/vd*) is read for
# meta-data (hostname), network-config (static address by MAC), and user-data:
# #cloud-config (ssh_authorized_keys -> /root/.ssh/authorized_keys, dropbear),
# a #! script (run once after the banner, in the background, output on the
# console, then `STRATUS-USERDATA-EXIT <status>`), or a MIME multipart of both.
# The exact accepted formats are in appliance/README.md. Kernel command-line
# options read by /init:
#   hostname=NAME           hostname (default: appliance; cidata local-hostname wins)
#   appliance.ip=ADDR/LEN   static IPv4/IPv6 address for eth0 (default: none;
#                           ignored when the cidata network-config configures a NIC)
#   appliance.gw=ADDR       default gateway (with appliance.ip)
# An ACPI power-button press (virsh shutdown) powers the guest off.
# Virtio disks get /dev/disk/by-id/virtio-<serial> links, as udev makes them
# (at boot, and on hot-plug and unplug through busybox mdev -d), and dropbear
# serves SFTP (openssh-sftp-server's sftp-server), which Libcloud's
# deploy_node uses to copy its scripts.
#
# Caching: OUT_DIR holds a stamp with the hash of this script; when the stamp
# matches and the outputs are intact, the script exits at once. The build runs
# in a temporary directory next to OUT_DIR that is renamed into place only when
# complete, under a lock, so a half-finished build is never used.
set -euo pipefail
umask 022

readonly PROG=appliance/build.sh
readonly META_PKG=linux-image-cloud-amd64
readonly DISK_SIZE=32M
# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can miss its
# ticks and panic ("IO-APIC + timer doesn't work", seen in make test); virtual machines' kernels
# are commonly booted without it.
readonly CMDLINE="console=ttyS0 quiet no_timer_check"
# Fixed timestamp for reproducible outputs (2024-01-01T00:00:00Z).
readonly EPOCH=1704067200
# Fixed filesystem UUID for a reproducible disk image.
readonly FS_UUID=5a1e5e1f-0000-4000-8000-57a7a51ab000
# Modules needed for virtio block and net, the IDE CD-ROM of machine type `pc`
# (ata_piix -> libata, scsi_mod; sr_mod -> cdrom) and ISO9660 (the cidata
# filesystem), then ACPI power button + evdev (for acpid). Any of them may be
# built into the kernel. Dependencies are resolved from each module's own
# modinfo; otherwise modules load in this order (sr_mod after ata_piix so the
# CD-ROM is found when sr_mod binds).
readonly REQUIRED_MODULES=(virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev
    virtio_pci virtio_blk failover net_failover virtio_net ata_piix sr_mod isofs)
# dropbear-bin and the packages holding its shared libraries (resolved with the
# packaged dynamic loader's --list, i.e. ldd, at build time).
readonly DROPBEAR_PKGS=(dropbear-bin libc6 libcrypt1 libtomcrypt1 libtommath1 libgmp10 zlib1g)
# e2fsprogs (mke2fs, e2fsck) and the packages holding its shared libraries.
readonly E2FS_PKGS=(e2fsprogs libext2fs2 libcom-err2 libblkid1 libuuid1)
# The SFTP server dropbear runs for the sftp subsystem (needs only libc).
readonly SFTP_PKGS=(openssh-sftp-server)
readonly OPTIONAL_MODULES=(button evdev)

log() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: WARNING: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

SCRIPT_PATH=$(realpath -e "${BASH_SOURCE[0]}")
SCRIPT_DIR=$(dirname "$SCRIPT_PATH")
REPO_ROOT=$(dirname "$SCRIPT_DIR")
RECIPE=$(sha256sum "$SCRIPT_PATH" | cut -c1-16)
readonly SCRIPT_PATH SCRIPT_DIR REPO_ROOT RECIPE

[[ $# -le 1 ]] || die "usage: $0 [OUT_DIR]"
OUT_DIR=${1:-$REPO_ROOT/build/appliance}
[[ -n $OUT_DIR ]] || die "OUT_DIR must not be empty"
mkdir -p "$(dirname "$OUT_DIR")" || die "cannot create the parent directory of $OUT_DIR"
OUT_DIR=$(realpath -m "$OUT_DIR")
PARENT=$(dirname "$OUT_DIR")
readonly OUT_DIR PARENT
readonly STAMP_FILE=.build-stamp

# --- helpers ----------------------------------------------------------------

# JSON string literal for $1 (escapes backslash, double quote and control chars).
json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/\\t}
    s=${s//$'\r'/\\r}
    printf '"%s"' "$s"
}

need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null ||
            die "'$c' not found; run scripts/install-deps.sh (as root) first"
    done
}

# True when OUT_DIR holds a complete build made by this version of the script
# for this location.
cache_valid() {
    local f sum
    [[ -f $OUT_DIR/$STAMP_FILE && $(<"$OUT_DIR/$STAMP_FILE") == "recipe=$RECIPE" ]] || return 1
    for f in vmlinuz initrd.img disk.qcow2 image.json; do
        [[ -s $OUT_DIR/$f ]] || return 1
    done
    # image.json holds absolute paths: a moved directory needs a rebuild.
    grep -qF "\"disk\": $(json_str "$OUT_DIR/disk.qcow2")" "$OUT_DIR/image.json" || return 1
    # Someone may have booted disk.qcow2 itself (not an overlay) and changed it.
    sum=$(sha256sum "$OUT_DIR/disk.qcow2" | cut -d' ' -f1)
    grep -qF "\"sha256\": \"$sum\"" "$OUT_DIR/image.json" || return 1
}

# Canonical module name: file name without .ko[.xz|.zst|.gz], '-' -> '_'.
mod_name() {
    local n=${1##*/}
    n=${n%.xz}
    n=${n%.zst}
    n=${n%.gz}
    n=${n%.ko}
    printf '%s' "${n//-/_}"
}

# decompress_module SRC DEST: copy a kernel module, decompressing it if needed
# (busybox insmod in the guest only loads plain .ko files).
decompress_module() {
    local src=$1 dest=$2
    case $src in
        *.ko) cp "$src" "$dest" ;;
        *.ko.xz) need_cmd xz && xz -dc "$src" >"$dest" ;;
        *.ko.zst) need_cmd zstd && zstd -qdc "$src" >"$dest" ;;
        *.ko.gz) need_cmd gzip && gzip -dc "$src" >"$dest" ;;
        *) die "unknown kernel module format: $src" ;;
    esac
}

# "depends=" field of a plain .ko's .modinfo, as space-separated names.
mod_depends() {
    tr '\0' '\n' <"$1" | awk '/^depends=/ && !done { print substr($0, 9); done = 1 }' | tr ',' ' '
}

# --- the guest's /init and helpers ------------------------------------------

write_init() {
    cat >"$1" <<'INIT'
#!/bin/busybox sh
# /init of the StratusLab test appliance (generated by appliance/build.sh).
# It must never exit: init exiting panics the kernel.
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=vt100
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts

say() { echo "appliance: $*"; }

kver=$(uname -r)
while read -r m; do
    [ -n "$m" ] || continue
    [ -d "/sys/module/$m" ] && continue # built in, or already loaded
    insmod "/lib/modules/$kver/$m.ko" || say "warning: could not load module $m"
done <"/lib/modules/$kver/load-order"

host=appliance
ip=
gw=
for arg in $(cat /proc/cmdline); do
    case $arg in
        hostname=?*) host=${arg#hostname=} ;;
        appliance.ip=?*) ip=${arg#appliance.ip=} ;;
        appliance.gw=?*) gw=${arg#appliance.gw=} ;;
    esac
done
ip link set lo up

# ACPI power button (virsh shutdown) -> /etc/acpi/PWRF/00000080 -> power off.
[ -e /dev/input/event0 ] && acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid

# Block devices: wait (bounded) until every virtio block device has its /dev
# node. IDE CD-ROMs need no wait: insmod ata_piix returns after its
# (async) port probe has finished, and sr_mod binds synchronously.
nvblk=0
for d in /sys/bus/virtio/devices/*; do
    [ "$(cat "$d/device" 2>/dev/null)" = 0x0002 ] && nvblk=$((nvblk + 1))
done
count_vd() {
    n=0
    for b in /sys/block/vd*; do [ -b "/dev/${b##*/}" ] && n=$((n + 1)); done
    echo "$n"
}
i=0
while [ "$(count_vd)" -lt "$nvblk" ] && [ "$i" -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
done

# /dev/disk/by-id/virtio-<serial>, as udev makes them: for the disks there now,
# then for hot-plugged ones (mdev -d runs /lib/mdev/by-id on their uevents).
for b in /sys/block/vd*; do
    [ -e "$b" ] && ACTION=add MDEV=${b##*/} /lib/mdev/by-id
done
mdev -d

# --- cloud-init NoCloud (see appliance/README.md for the accepted formats) ---

# iso9660_label DEV: the ISO9660 volume identifier of DEV (empty if none).
iso9660_label() {
    [ "$(dd if="$1" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || return 0
    dd if="$1" bs=1 skip=32808 count=32 2>/dev/null | sed 's/[[:space:]]*$//'
}

find_cidata() {
    for b in /sys/block/sr* /sys/block/vd*; do
        [ -b "/dev/${b##*/}" ] || continue
        case $(iso9660_label "/dev/${b##*/}") in
            cidata | CIDATA) echo "/dev/${b##*/}"; return 0 ;;
        esac
    done
    return 1
}

# Strip a YAML scalar: surrounding blanks and one level of quotes.
unquote() { sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e "s/^\"\(.*\)\"\$/\1/" -e "s/^'\(.*\)'\$/\1/"; }

# meta_value KEY FILE: the value of a top-level "KEY: value" line.
meta_value() { tr -d '\r' <"$2" | sed -n "s/^$1:[[:space:]]*//p" | head -n1 | unquote; }

# network-config (version 2) -> lines "VERSION v", "IF id", "MAC m", "NAME n",
# "ADDR a/len", "GW g", "DNS d", in file order.
parse_network_config() {
    tr -d '\r' <"$1" | awk '
    function unq(s) {
        sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s)
        if (s ~ /^".*"$/ || s ~ /^\047.*\047$/) s = substr(s, 2, length(s) - 2)
        return s
    }
    function emit_list(kind, v,   n, a, k) {   # inline [a, b] list
        gsub(/^\[|\]$/, "", v); n = split(v, a, ",")
        for (k = 1; k <= n; k++) if (unq(a[k]) != "") print kind, unq(a[k])
    }
    function route_done() {
        if ((rto == "default" || rto == "0.0.0.0/0") && rvia != "") print "GW", rvia
        rto = ""; rvia = ""
    }
    BEGIN { eth_ind = -1; inif = 0 }
    {
        sub(/[ \t]+#.*$/, "")
        if ($0 ~ /^[ \t]*(#.*)?$/) next
        match($0, /^ */); ind = RLENGTH; line = substr($0, ind + 1)
        if (ind == 0) {
            if (list == "routes") route_done()
            in_eth = (line ~ /^ethernets:/); inif = 0; list = ""; ns = 0
            if (line ~ /^version:/) { v = line; sub(/^version:/, "", v); print "VERSION", unq(v) }
            next
        }
        if (!in_eth) next
        if (eth_ind < 0) eth_ind = ind
        if (ind <= eth_ind) {
            if (list == "routes") route_done()
            id = line; sub(/:.*$/, "", id); print "IF", unq(id)
            inif = 1; list = ""; ns = 0; next
        }
        if (!inif) next
        if (line ~ /^-/) {
            item = line; sub(/^-[ \t]*/, "", item)
            if (list == "addr") { if (unq(item) != "") print "ADDR", unq(item); next }
            if (list == "dns") { if (unq(item) != "") print "DNS", unq(item); next }
            if (list != "routes") next
            route_done(); line = item      # "- to: x" starts a route
        } else if (list != "routes" || line !~ /^(to|via|metric|on-link|table):/) {
            if (list == "routes") route_done()
            list = ""
            if (ns && ind <= ns_ind) ns = 0
        }
        key = line; sub(/:.*$/, "", key); key = unq(key)
        val = line; if (!sub(/^[^:]*:/, "", val)) val = ""; val = unq(val)
        if (key == "macaddress") print "MAC", val
        else if (key == "set-name") print "NAME", val
        else if (key == "gateway4" || key == "gateway6") print "GW", val
        else if (key == "nameservers") { ns = 1; ns_ind = ind }
        else if (key == "addresses") {
            list = ns ? "dns" : "addr"
            if (val ~ /^\[/) { emit_list(ns ? "DNS" : "ADDR", val); list = "" }
        }
        else if (key == "routes") list = "routes"
        else if (key == "to") rto = val
        else if (key == "via") rvia = val
    }
    END { if (list == "routes") route_done() }'
}

# A cloud-config (part) -> the entries of the top-level ssh_authorized_keys list.
parse_ssh_keys() {
    tr -d '\r' <"$1" | awk '
    /^[^ \t#-]/ { inkeys = ($0 ~ /^ssh_authorized_keys:[ \t]*$/); next }
    inkeys && /^[ \t]*-[ \t]/ {
        s = $0; sub(/^[ \t]*-[ \t]*/, "", s); sub(/[ \t]+$/, "", s)
        if (s ~ /^".*"$/ || s ~ /^\047.*\047$/) s = substr(s, 2, length(s) - 2)
        if (s != "") print s
    }'
}

# first2 FILE: the first two bytes of FILE ("#!" for a script).
first2() { dd if="$1" bs=2 count=1 2>/dev/null; }

# is_cloud_config FILE: the first line is "#cloud-config".
is_cloud_config() { head -n1 "$1" | tr -d '\r' | grep -q '^#cloud-config[[:space:]]*$'; }

# is_multipart FILE: a MIME document (a "Content-Type: multipart/..." header
# before the first blank line).
is_multipart() {
    tr -d '\r' <"$1" | awk '
    $0 == "" { exit }
    tolower($0) ~ /^content-type:[ \t]*multipart\// { found = 1; exit }
    END { exit !found }'
}

# mime_split FILE DIR: the parts of a MIME multipart document -> DIR/NNN.part
# (the body, without the line break that belongs to the next delimiter); prints
# "NNN TYPE ENCODING" per part (TYPE/ENCODING lower-case, "-" when absent).
mime_split() {
    tr -d '\r' <"$1" | awk -v dir="$2" '
    function hval(line) {
        sub(/^[^:]*:[ \t]*/, "", line); sub(/;.*$/, "", line); sub(/[ \t]+$/, "", line)
        gsub(/"/, "", line); return tolower(line)
    }
    function finish() {
        if (st == "body" && have) printf "%s", prev > f
        if (st == "hdr" || st == "body") {
            close(f); printf "%03d %s %s\n", n, (type == "" ? "-" : type), (enc == "" ? "-" : enc)
        }
        have = 0
    }
    BEGIN { st = "top"; n = 0 }
    st == "top" {
        if ($0 != "") { hdrs = hdrs " " $0; next }
        if (match(hdrs, /[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]="[^"]*"/))
            b = substr(hdrs, RSTART + 10, RLENGTH - 11)
        else if (match(hdrs, /[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=[^ \t;]+/))
            b = substr(hdrs, RSTART + 9, RLENGTH - 9)
        if (b == "") exit 1
        st = "preamble"; next
    }
    {
        d = $0; sub(/[ \t]+$/, "", d)
        if (d == "--" b "--") { finish(); st = "end"; exit }
        if (d == "--" b) {
            finish(); n++; st = "hdr"; type = ""; enc = ""
            f = sprintf("%s/%03d.part", dir, n); printf "" > f
            next
        }
    }
    st == "hdr" {
        if ($0 == "") { st = "body"; next }
        if ($0 ~ /^[ \t]/) next                # folded header continuation
        h = tolower($0)
        if (h ~ /^content-type:/) type = hval($0)
        else if (h ~ /^content-transfer-encoding:/) enc = hval($0)
        next
    }
    st == "body" {
        if (have) print prev > f
        prev = $0; have = 1
    }
    END { if (st != "end") finish() }'
}

# split_user_data FILE DIR: FILE (user-data) -> DIR/NNN.cloud-config and
# DIR/NNN.script, in order. Accepted: #cloud-config, a #! script, or MIME
# multipart/mixed whose parts are text/cloud-config or text/x-shellscript (or
# start with #cloud-config / #!), optionally base64-encoded.
split_user_data() {
    src=$1 dir=$2
    mkdir -p "$dir"
    if [ "$(first2 "$src")" = '#!' ]; then
        cp "$src" "$dir/001.script"
    elif is_cloud_config "$src"; then
        cp "$src" "$dir/001.cloud-config"
    elif is_multipart "$src"; then
        mime_split "$src" "$dir" >"$dir/index" || say "warning: user-data: MIME multipart without a boundary"
        while read -r num type enc; do
            part=$dir/$num.part
            if [ "$enc" = base64 ]; then
                if base64 -d <"$part" >"$part.dec"; then
                    mv "$part.dec" "$part"
                else
                    say "warning: user-data part $num: bad base64"
                fi
            fi
            case $type in
                text/cloud-config) kind=cloud-config ;;
                text/x-shellscript) kind=script ;;
                *)
                    if [ "$(first2 "$part")" = '#!' ]; then kind=script
                    elif is_cloud_config "$part"; then kind=cloud-config
                    else kind=
                    fi ;;
            esac
            if [ -n "$kind" ]; then
                mv "$part" "$dir/$num.$kind"
            else
                say "warning: user-data part $num ($type) is neither cloud-config nor a script: ignored"
            fi
        done <"$dir/index"
    else
        say "warning: user-data is neither #cloud-config, a #! script nor MIME multipart: ignored"
    fi
}

# test_hook NAME FILE: argument of a "#stratus-test: NAME ARG" line (test only).
test_hook() {
    tr -d '\r' <"$2" | awk -v n="$1" '$1 == "#stratus-test:" && $2 == n && $3 != "" { print $3; exit }' | unquote
}

nic_by_mac() {
    want=$(echo "$1" | tr A-F a-f)
    for n in /sys/class/net/*; do
        [ "$(tr A-F a-f <"$n/address" 2>/dev/null)" = "$want" ] && { echo "${n##*/}"; return 0; }
    done
    return 1
}

ipaddr=
net_done=
dns=
# apply_nic: configure the NIC described by nc_* (from network-config).
apply_nic() {
    [ -n "$nc_id" ] || return 0
    dev=
    if [ -n "$nc_mac" ]; then
        dev=$(nic_by_mac "$nc_mac") || { say "warning: network-config $nc_id: no NIC has MAC $nc_mac"; return 0; }
    elif [ -e "/sys/class/net/$nc_id" ]; then
        dev=$nc_id
    else
        say "warning: network-config $nc_id: no such NIC and no match.macaddress"; return 0
    fi
    if [ -n "$nc_name" ] && [ "$nc_name" != "$dev" ]; then
        if [ -e "/sys/class/net/$nc_name" ]; then
            # The wanted name is taken (e.g. eth0 is another NIC): swap names.
            ip link set "$nc_name" down; ip link set "$nc_name" name "$dev.old"
            ip link set "$dev" down; ip link set "$dev" name "$nc_name"
            ip link set "$dev.old" name "$dev"
        else
            ip link set "$dev" down; ip link set "$dev" name "$nc_name"
        fi || say "warning: could not rename $dev to $nc_name"
        [ -e "/sys/class/net/$nc_name" ] && dev=$nc_name
    fi
    ip link set "$dev" up || say "warning: could not bring $dev up"
    for a in $nc_addrs; do
        ip addr add "$a" dev "$dev" || { say "warning: could not add $a to $dev"; continue; }
        [ -n "$ipaddr" ] || ipaddr=${a%/*}
        [ -n "$ipdev" ] || { ipdev=$dev; iplen=${a#*/}; }
    done
    for g in $nc_gw; do
        ip route add default via "$g" dev "$dev" || say "warning: could not add default route via $g"
        [ -n "$gw" ] || gw=$g
    done
    dns="$dns $nc_dns"
    net_done=1
    say "network: $dev mac=$(cat "/sys/class/net/$dev/address") addresses=$(echo $nc_addrs) gateway=$(echo $nc_gw)"
}

ctx=
keys=0
fmac=
fip=
ftarget=
scripts=
if cidev=$(find_cidata); then
    mkdir -p /mnt/cidata /run/cloud-init
    if mount -t iso9660 -o ro "$cidev" /mnt/cidata; then
        for f in meta-data user-data network-config; do
            [ -f "/mnt/cidata/$f" ] && cp "/mnt/cidata/$f" "/run/cloud-init/$f"
        done
        umount /mnt/cidata
        ctx=1
        say "cidata: found on $cidev ($(cd /run/cloud-init && echo *))"
    else
        say "warning: could not mount the cidata filesystem on $cidev"
    fi
fi
ci=/run/cloud-init
gw_cmdline=$gw
if [ -n "$ctx" ] && [ -f $ci/meta-data ]; then
    iid=$(meta_value instance-id $ci/meta-data)
    lh=$(meta_value local-hostname $ci/meta-data)
    [ -z "$iid" ] || echo "$iid" >/run/cloud-init/instance-id
    [ -z "$lh" ] || host=$lh
    say "meta-data: instance-id=$iid local-hostname=$lh"
fi
hostname "$host" || say "warning: could not set hostname to '$host'"
echo "127.0.1.1 $host" >>/etc/hosts

if [ -n "$ctx" ] && [ -f $ci/network-config ]; then
    gw=
    nc_id=
    parse_network_config $ci/network-config >$ci/network-config.parsed
    while read -r k v; do
        case $k in
            VERSION) [ "$v" = 2 ] || say "warning: network-config version '$v' is not 2" ;;
            IF) apply_nic; nc_id=$v nc_mac= nc_name= nc_addrs= nc_gw= nc_dns= ;;
            MAC) nc_mac=$v ;;
            NAME) nc_name=$v ;;
            ADDR) nc_addrs="$nc_addrs $v" ;;
            GW) nc_gw="$nc_gw $v" ;;
            DNS) nc_dns="$nc_dns $v" ;;
        esac
    done <$ci/network-config.parsed
    apply_nic
    [ -n "$net_done" ] || gw=$gw_cmdline
fi
if [ -z "$net_done" ] && [ -n "$ip" ]; then
    if ip link set eth0 up && ip addr add "$ip" dev eth0; then
        ipaddr=${ip%/*} ipdev=eth0 iplen=${ip#*/}
    else
        say "warning: could not configure eth0 with $ip"
    fi
    [ -z "$gw" ] || ip route add default via "$gw" || say "warning: could not add default route via $gw"
fi
for d in $dns; do echo "nameserver $d"; done >/etc/resolv.conf

if [ -n "$ctx" ] && [ -f $ci/user-data ]; then
    mkdir -p /root/.ssh
    chmod 0700 /root /root/.ssh
    split_user_data $ci/user-data $ci/parts
    : >$ci/cloud-config
    for p in "$ci"/parts/*.cloud-config; do
        [ -f "$p" ] && cat "$p" >>$ci/cloud-config
    done
    for p in "$ci"/parts/*.script; do
        [ -f "$p" ] && chmod 0700 "$p" && scripts="$scripts $p"
    done
    for p in "$ci"/parts/*.cloud-config; do
        [ -f "$p" ] && parse_ssh_keys "$p"
    done >/root/.ssh/authorized_keys
    chmod 0600 /root/.ssh/authorized_keys
    keys=$(grep -c . /root/.ssh/authorized_keys)
    fmac=$(test_hook forge-mac $ci/cloud-config)
    fip=$(test_hook forge-ip $ci/cloud-config)
    ftarget=$(test_hook forge-target $ci/cloud-config)
    say "user-data: $keys SSH key(s), $(echo $scripts | wc -w) script(s)"
fi

# SSH server: only when there is a key to log in with.
ssh=none
if [ "$keys" -gt 0 ]; then
    mkdir -p /etc/dropbear
    hk=/etc/dropbear/dropbear_ed25519_host_key
    if dropbearkey -t ed25519 -f $hk >/dev/null 2>&1 &&
        dropbear -r $hk -p 22 -s -P /run/dropbear.pid; then
        i=0
        while [ ! -s /run/dropbear.pid ] && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
        if [ -s /run/dropbear.pid ] && kill -0 "$(cat /run/dropbear.pid)" 2>/dev/null; then
            ssh=ok
        else
            say "warning: dropbear did not stay up"
        fi
    else
        say "warning: could not start dropbear"
    fi
fi

# The image disk (/dev/vda, unless that is the cidata ISO).
disk=none
if [ -b /dev/vda ] && [ "$cidev" != /dev/vda ]; then
    mkdir -p /mnt/disk
    if mount -t ext4 -o ro,noload /dev/vda /mnt/disk; then
        marker=$(cat /mnt/disk/stratuslab-appliance 2>/dev/null)
        if [ -n "$marker" ]; then
            disk=ok
            say "disk marker: $marker"
        else
            say "warning: /dev/vda has no /stratuslab-appliance marker"
        fi
        umount /mnt/disk
    else
        say "warning: could not mount /dev/vda"
    fi
fi

# Keep kernel messages from splitting the banner line.
printk=$(cat /proc/sys/kernel/printk)
echo 1 >/proc/sys/kernel/printk
echo "STRATUSLAB-APPLIANCE-READY hostname=$(hostname) disk=$disk kernel=$kver ip=${ipaddr:-none} ssh=$ssh"
echo "$printk" >/proc/sys/kernel/printk

# TEST ONLY (anti-spoofing tests): say hello honestly to the target (a
# positive control: it learns our real MAC and IP), then forge eth0's MAC
# and/or IPv4 address and keep sending pings and ARP requests to the target
# (forge-target, else the gateway, else the first nameserver).
if [ -n "$fmac$fip" ]; then
    (
        dev=${ipdev:-eth0}
        target=${ftarget:-${gw:-$(echo $dns | cut -d' ' -f1)}}
        if [ -n "$target" ] && [ -n "$ipaddr" ]; then
            honest=no
            i=0
            while [ "$i" -lt 20 ]; do
                ping -c1 -W1 "$target" >/dev/null 2>&1 && { honest=yes; break; }
                i=$((i + 1))
            done
            # Stay honest a while: the target's neighbour entry for us goes
            # DELAY -> PROBE (a unicast ARP request after 5 s) -> REACHABLE
            # only if we still answer then.
            if [ "$honest" = yes ]; then
                end=$(($(date +%s) + 8))
                while [ "$(date +%s)" -lt "$end" ]; do
                    ping -c1 -W1 "$target" >/dev/null 2>&1
                    sleep 1
                done
            fi
            arping -c2 -w3 -I "$dev" -s "$ipaddr" "$target" >/dev/null 2>&1
            say "test hook: honest ping of $target from $ipaddr mac=$(cat "/sys/class/net/$dev/address"): $honest"
        fi
        if [ -n "$fmac" ]; then
            ip link set "$dev" down && ip link set "$dev" address "$fmac" && ip link set "$dev" up ||
                say "warning: test hook: could not set MAC $fmac"
        fi
        src=$ipaddr
        if [ -n "$fip" ]; then
            case $fip in */*) ;; *) fip=$fip/${iplen:-24} ;; esac
            ip addr flush dev "$dev" && ip addr add "$fip" dev "$dev" ||
                say "warning: test hook: could not set address $fip"
            src=${fip%/*}
        fi
        [ -z "$gw" ] || ip route replace default via "$gw" dev "$dev" 2>/dev/null
        say "test hook: $dev forged mac=$(cat "/sys/class/net/$dev/address") ip=$src; pinging ${target:-nothing}"
        [ -n "$target" ] || exit 0
        while :; do
            ping -c1 -W1 "$target" >/dev/null 2>&1
            arping -c1 -w1 -I "$dev" -s "$src" "$target" >/dev/null 2>&1
            sleep 1
        done
    ) &
fi

# The console shell waits for Enter (like busybox init's askfirst): no prompt
# is printed into what the user-data scripts write on the console.
echo "Please press Enter to activate this console."

# User-data scripts (cloud-init's scripts-user): once, in order, in the
# background, output on the console; then one line with the exit status (the
# last non-zero one, else 0).
if [ -n "$scripts" ]; then
    (
        cd / || exit
        rc=0
        for s in $scripts; do
            say "user-data: running ${s##*/}"
            "$s" </dev/null
            r=$?
            [ "$r" -eq 0 ] || rc=$r
        done
        echo "STRATUS-USERDATA-EXIT $rc"
    ) &
fi

while :; do
    if read -r _; then
        setsid cttyhack sh -l
        echo "Please press Enter to activate this console."
    fi
    sleep 1
done
INIT
}

# write_by_id_links INITRAMFS: /etc/mdev.conf and the script it runs for virtio
# disks, keeping /dev/disk/by-id/virtio-<serial> as udev does.
write_by_id_links() {
    mkdir -p "$1/lib/mdev"
    printf '%s\n' 'vd[a-z]+ 0:0 660 */lib/mdev/by-id' >"$1/etc/mdev.conf"
    cat >"$1/lib/mdev/by-id" <<'EOF'
#!/bin/sh
# Run by mdev (and /init at boot) with ACTION and MDEV (e.g. vdb): keeps
# /dev/disk/by-id/virtio-<serial> pointing at the disk, as udev does.
mkdir -p /dev/disk/by-id
case $ACTION in
add)
    serial=$(cat "/sys/block/$MDEV/serial" 2>/dev/null)
    [ -n "$serial" ] && ln -sfn "../../$MDEV" "/dev/disk/by-id/virtio-$serial"
    ;;
remove)
    for link in /dev/disk/by-id/virtio-*; do
        [ "$(readlink "$link")" = "../../$MDEV" ] && rm -f "$link"
    done
    ;;
esac
exit 0
EOF
    chmod 0755 "$1/lib/mdev/by-id"
}

write_poweroff_handler() {
    cat >"$1" <<'EOF'
#!/bin/sh
# Run by busybox acpid on an ACPI power-button press (virsh shutdown).
echo "appliance: ACPI power button pressed, powering off" >/dev/console
sync
poweroff -f
EOF
}

# --- build steps ------------------------------------------------------------

download_packages() {
    local dir=$1 meta kpkg
    # The candidate meta package and the concrete kernel package it depends on.
    meta=$(apt-cache show --no-all-versions "$META_PKG" 2>/dev/null) || true
    kpkg=$(sed -n 's/^Depends: .*\(linux-image-[0-9][^ ,]*\) (= \([^)]*\)).*/\1=\2/p' <<<"$meta" | head -n1)
    [[ -n $kpkg ]] || die "cannot resolve the kernel package behind $META_PKG (run apt-get update?)"
    local pkgs=("$META_PKG" "$kpkg" busybox-static "${DROPBEAR_PKGS[@]}" "${E2FS_PKGS[@]}"
        "${SFTP_PKGS[@]}")
    log "downloading ${pkgs[*]}"
    local apt_opts=(-q)
    # As root, apt drops privileges to _apt, which cannot write into our
    # private temp dir.
    [[ $(id -u) -ne 0 ]] || apt_opts+=(-o APT::Sandbox::User=root)
    if ! (cd "$dir" && apt-get "${apt_opts[@]}" download "${pkgs[@]}" >/dev/null); then
        [[ $(id -u) -eq 0 ]] || die "apt-get download failed (stale package lists? run apt-get update)"
        log "apt-get download failed; running apt-get update and retrying"
        apt-get -q update >/dev/null || die "apt-get update failed"
        (cd "$dir" && apt-get "${apt_opts[@]}" download "${pkgs[@]}" >/dev/null) ||
            die "apt-get download ${pkgs[*]} failed"
    fi
}

# install_modules ROOT KVER INITRAMFS: copy the needed modules (decompressed)
# and write lib/modules/KVER/load-order in dependency order.
install_modules() {
    local root=$1 kver=$2 initramfs=$3
    local moddir=$root/lib/modules/$kver
    local dest=$initramfs/lib/modules/$kver
    mkdir -p "$dest"
    : >"$dest/load-order"

    local -A path=() builtin=() state=()
    local f n
    while IFS= read -r -d '' f; do
        path[$(mod_name "$f")]=$f
    done < <(find "$moddir/kernel" -name '*.ko*' -print0)
    if [[ -f $moddir/modules.builtin ]]; then
        while IFS= read -r f; do
            [[ -z $f ]] || builtin[$(mod_name "$f")]=1
        done <"$moddir/modules.builtin"
    fi

    # Depth-first: dependencies are written to load-order before dependants.
    add_module() {
        local m=$1 optional=$2 d
        [[ -z ${state[$m]:-} ]] || return 0
        state[$m]=visiting
        if [[ -n ${builtin[$m]:-} ]]; then
            log "module $m: built in"
        elif [[ -n ${path[$m]:-} ]]; then
            decompress_module "${path[$m]}" "$dest/$m.ko"
            for d in $(mod_depends "$dest/$m.ko"); do
                [[ ${state[$d]:-} != visiting ]] || die "module dependency cycle at $m -> $d"
                add_module "$d" no
            done
            printf '%s\n' "$m" >>"$dest/load-order"
        elif [[ $optional == yes ]]; then
            warn "optional module $m not found in the kernel package, skipping"
        else
            die "module $m is neither built in nor shipped by the kernel package"
        fi
        state[$m]=finished
    }
    for n in "${REQUIRED_MODULES[@]}"; do add_module "$n" no; done
    for n in "${OPTIONAL_MODULES[@]}"; do add_module "$n" yes; done
    log "modules (load order): $(paste -sd' ' "$dest/load-order")"
}

# install_dynamic ROOT INITRAMFS WHAT BIN...: copy the dynamically linked
# programs BIN (paths relative to ROOT, kept in INITRAMFS) with the shared
# libraries they need, found like ldd does (the packaged dynamic loader's
# --list) and restricted to the downloaded packages (WHAT names them in errors).
install_dynamic() {
    local root=$1 initramfs=$2 what=$3
    shift 3
    local multiarch=lib/x86_64-linux-gnu
    local ld=$root/$multiarch/ld-linux-x86-64.so.2
    local libpath=$root/$multiarch:$root/usr/$multiarch
    [[ -x $ld ]] || die "dynamic loader $multiarch/ld-linux-x86-64.so.2 not found in libc6"
    mkdir -p "$initramfs/$multiarch" "$initramfs/lib64"
    cp -L "$ld" "$initramfs/$multiarch/ld-linux-x86-64.so.2"
    ln -sf "/$multiarch/ld-linux-x86-64.so.2" "$initramfs/lib64/ld-linux-x86-64.so.2"
    local bin listing lib libs=()
    for bin in "$@"; do
        [[ -x $root/$bin ]] || die "$bin not found in $what"
        mkdir -p "$initramfs/$(dirname "$bin")"
        cp "$root/$bin" "$initramfs/$bin"
        listing=$("$ld" --library-path "$libpath" --list "$root/$bin") ||
            die "cannot list the shared libraries of $bin"
        while read -r lib; do
            [[ $lib == "$root"/* ]] ||
                die "$bin needs $lib, which is not in the downloaded packages ($what)"
            libs+=("$lib")
        done < <(awk '$2 == "=>" { if ($3 ~ /^\//) print $3; else print "missing:" $1 }' <<<"$listing")
    done
    for lib in "${libs[@]}"; do
        cp -L "$lib" "$initramfs/$multiarch/${lib##*/}"
    done
    log "${*##*/}: $(printf '%s\n' "${libs[@]##*/}" | sort -u | paste -sd' ')"
}

# install_dropbear ROOT INITRAMFS: dropbear + dropbearkey with their shared
# libraries, plus the /etc files it relies on.
install_dropbear() {
    local root=$1 initramfs=$2
    mkdir -p "$initramfs/etc/dropbear"
    install_dynamic "$root" "$initramfs" "${DROPBEAR_PKGS[*]}" usr/sbin/dropbear usr/bin/dropbearkey
    # Dropbear runs /usr/lib/sftp-server for the sftp subsystem (Debian's link to it).
    install_dynamic "$root" "$initramfs" "${SFTP_PKGS[*]} libc6" usr/lib/openssh/sftp-server
    ln -sf openssh/sftp-server "$initramfs/usr/lib/sftp-server"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$initramfs/etc/passwd"
    printf 'root:*:19723:0:99999:7:::\n' >"$initramfs/etc/shadow"
    printf 'root:x:0:\n' >"$initramfs/etc/group"
    printf '/bin/sh\n' >"$initramfs/etc/shells"
    printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$initramfs/etc/nsswitch.conf"
    printf '127.0.0.1 localhost\n' >"$initramfs/etc/hosts"
    chmod 0600 "$initramfs/etc/shadow"
    chmod 0700 "$initramfs/root"
    # Sanity check: the copied tree alone runs dropbearkey.
    if [[ $(id -u) -eq 0 ]] && command -v chroot >/dev/null; then
        chroot "$initramfs" /usr/bin/dropbearkey -t ed25519 -f /tmp/k >/dev/null 2>&1 ||
            die "dropbearkey does not run inside the initramfs tree (missing libraries?)"
        rm -f "$initramfs/tmp/k"
    fi
}

# install_e2fsprogs ROOT INITRAMFS: e2fsprogs' mke2fs and e2fsck (ext2/3/4,
# unlike busybox's ext2-only mke2fs) as /sbin/mke2fs, mkfs.ext{2,3,4}, e2fsck
# and fsck.ext{2,3,4}, with /etc/mke2fs.conf. In /sbin, where busybox would put
# its own mke2fs: `busybox --install -s` keeps existing files.
install_e2fsprogs() {
    local root=$1 initramfs=$2 t
    install_dynamic "$root" "$initramfs" "${E2FS_PKGS[*]}" sbin/mke2fs sbin/e2fsck
    for t in ext2 ext3 ext4; do
        ln -sf mke2fs "$initramfs/sbin/mkfs.$t"
        ln -sf e2fsck "$initramfs/sbin/fsck.$t"
    done
    [[ -f $root/etc/mke2fs.conf ]] || die "etc/mke2fs.conf not found in e2fsprogs"
    cp "$root/etc/mke2fs.conf" "$initramfs/etc/mke2fs.conf"
    ln -sf /proc/mounts "$initramfs/etc/mtab"
    # Sanity check: the copied tree alone formats an ext4 filesystem.
    if [[ $(id -u) -eq 0 ]] && command -v chroot >/dev/null; then
        truncate -s 8M "$initramfs/tmp/fs"
        if ! chroot "$initramfs" /sbin/mkfs.ext4 -q -F /tmp/fs >/dev/null 2>&1 ||
            ! chroot "$initramfs" /sbin/fsck.ext4 -fn /tmp/fs >/dev/null 2>&1; then
            die "mkfs.ext4/fsck.ext4 do not run inside the initramfs tree (missing libraries?)"
        fi
        rm -f "$initramfs/tmp/fs"
    fi
}

# make_initrd INITRAMFS_DIR OUT: pack a gzip'd newc cpio, reproducibly.
make_initrd() {
    local dir=$1 out=$2
    find "$dir" -exec touch -h -d "@$EPOCH" {} +
    if command -v cpio >/dev/null; then
        (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort |
            cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n >"$out"
    else
        (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort |
            "$BUSYBOX" cpio -o -H newc 2>/dev/null) | gzip -9n >"$out"
    fi
}

# make_disk WORK OUT VERSION_LINE: ext4 image (no loop mount) -> qcow2.
make_disk() {
    local work=$1 out=$2 line=$3
    local content=$work/disk-root raw=$work/disk.raw
    mkdir -p "$content"
    printf '%s\n' "$line" >"$content/stratuslab-appliance"
    chmod 0755 "$content"
    chmod 0644 "$content/stratuslab-appliance"
    touch -d "@$EPOCH" "$content/stratuslab-appliance" "$content"
    truncate -s "$DISK_SIZE" "$raw"
    E2FSPROGS_FAKE_TIME=$EPOCH mke2fs -q -F -t ext4 -L appliance -U "$FS_UUID" \
        -E "hash_seed=$FS_UUID,root_owner=0:0" -d "$content" "$raw" ||
        die "mke2fs failed"
    # mke2fs -d copies each file's ctime, which cannot be set on the host.
    E2FSPROGS_FAKE_TIME=$EPOCH debugfs -w -R "set_inode_field /stratuslab-appliance ctime @$EPOCH" \
        "$raw" 2>/dev/null || die "debugfs failed"
    e2fsck -fn "$raw" >/dev/null 2>&1 || die "the new filesystem does not pass e2fsck"
    qemu-img convert -f raw -O qcow2 "$raw" "$out" || die "qemu-img convert failed"
}

# Warn if libvirt-qemu (QEMU under qemu:///system) cannot read the outputs,
# e.g. because an ancestor directory is not world-searchable.
check_qemu_can_read() {
    [[ $(id -u) -eq 0 ]] && id libvirt-qemu >/dev/null 2>&1 && command -v runuser >/dev/null || return 0
    local f
    for f in vmlinuz initrd.img disk.qcow2; do
        if ! runuser -u libvirt-qemu -- test -r "$OUT_DIR/$f"; then
            warn "user libvirt-qemu cannot read $OUT_DIR/$f (is every parent directory o+x?);" \
                "qemu:///system will fail to boot it"
            return 0
        fi
    done
}

build() {
    local work=$1
    local stage=$work/out root=$work/root initramfs=$work/initramfs
    mkdir -p "$stage" "$work/debs" "$root" "$initramfs"

    download_packages "$work/debs"
    local deb
    for deb in "$work"/debs/*.deb; do
        dpkg-deb -x "$deb" "$root" || die "dpkg-deb -x $deb failed"
    done

    local kvers=("$root"/lib/modules/*)
    [[ ${#kvers[@]} -eq 1 && -d ${kvers[0]} ]] || die "expected exactly one kernel in the packages"
    local kver=${kvers[0]##*/}
    [[ -f $root/boot/vmlinuz-$kver ]] || die "kernel image boot/vmlinuz-$kver not found"
    BUSYBOX=$root/bin/busybox
    [[ -x $BUSYBOX ]] || die "busybox not found in busybox-static"
    log "kernel $kver"

    cp "$root/boot/vmlinuz-$kver" "$stage/vmlinuz"

    local d
    for d in bin sbin usr/bin usr/sbin dev proc sys mnt tmp run root etc/acpi/PWRF etc/dropbear; do
        mkdir -p "$initramfs/$d"
    done
    chmod 1777 "$initramfs/tmp"
    cp "$BUSYBOX" "$initramfs/bin/busybox"
    if [[ $(id -u) -eq 0 ]]; then
        # Lets the kernel open an initial console before /init mounts devtmpfs.
        mknod -m 0600 "$initramfs/dev/console" c 5 1
    fi
    install_modules "$root" "$kver" "$initramfs"
    install_dropbear "$root" "$initramfs"
    install_e2fsprogs "$root" "$initramfs"
    # The chroot sanity checks above leave a random seed in a plain file
    # dev/urandom (hidden by devtmpfs at boot): drop it, for a reproducible initrd.
    find "$initramfs/dev" -type f -delete
    write_init "$initramfs/init"
    write_poweroff_handler "$initramfs/etc/acpi/PWRF/00000080"
    write_by_id_links "$initramfs"
    chmod 0755 "$initramfs/init" "$initramfs/etc/acpi/PWRF/00000080"
    make_initrd "$initramfs" "$stage/initrd.img"

    local version_line="stratuslab-appliance recipe=$RECIPE kernel=$kver"
    make_disk "$work" "$stage/disk.qcow2" "$version_line"

    local sum
    sum=$(sha256sum "$stage/disk.qcow2" | cut -d' ' -f1)
    {
        printf '{\n'
        printf '  "name": "appliance",\n'
        printf '  "format": "qcow2",\n'
        printf '  "sha256": "%s",\n' "$sum"
        printf '  "kernel": %s,\n' "$(json_str "$OUT_DIR/vmlinuz")"
        printf '  "initrd": %s,\n' "$(json_str "$OUT_DIR/initrd.img")"
        printf '  "disk": %s,\n' "$(json_str "$OUT_DIR/disk.qcow2")"
        printf '  "cmdline": %s\n' "$(json_str "$CMDLINE")"
        printf '}\n'
    } >"$stage/image.json"
    printf 'recipe=%s\n' "$RECIPE" >"$stage/$STAMP_FILE"
    chmod 0755 "$stage"
    chmod 0644 "$stage"/* "$stage/$STAMP_FILE"
}

main() {
    if cache_valid; then
        log "up to date: $OUT_DIR (recipe $RECIPE)"
        return 0
    fi
    # Never replace a directory that this script did not make.
    if [[ -e $OUT_DIR && ! -f $OUT_DIR/$STAMP_FILE ]] &&
        ! { [[ -d $OUT_DIR ]] && [[ -z $(ls -A "$OUT_DIR") ]]; }; then
        die "$OUT_DIR exists and is not an appliance build (no $STAMP_FILE); remove it or choose another OUT_DIR"
    fi
    need_cmd apt-get apt-cache dpkg-deb qemu-img mke2fs debugfs e2fsck gzip sha256sum flock find realpath truncate

    # One build at a time per OUT_DIR; re-check the cache once we hold the lock.
    exec 9>"$OUT_DIR.lock"
    flock -w 900 9 || die "timed out waiting for the lock $OUT_DIR.lock"
    if cache_valid; then
        log "up to date: $OUT_DIR (built by a concurrent run)"
        return 0
    fi

    # Leftovers of builds that were killed (we hold the lock: none is running).
    local stale
    for stale in "$PARENT/.${OUT_DIR##*/}.build."??????; do
        [[ ! -d $stale ]] || rm -rf -- "$stale"
    done

    local start=$SECONDS work
    work=$(mktemp -d "$PARENT/.${OUT_DIR##*/}.build.XXXXXX")
    # shellcheck disable=SC2064 # expand $work now
    trap "rm -rf -- '$work'" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    log "building $OUT_DIR (recipe $RECIPE) in $work"
    build "$work"

    # Swap the finished build into place.
    if [[ -e $OUT_DIR ]]; then
        mv -- "$OUT_DIR" "$work/previous"
    fi
    mv -- "$work/out" "$OUT_DIR"
    check_qemu_can_read
    log "built $OUT_DIR in $((SECONDS - start)) s:" \
        "$(cd "$OUT_DIR" && du -h vmlinuz initrd.img disk.qcow2 | awk '{printf "%s %s  ", $2, $1}')"
}

main
