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
#   STRATUSLAB-APPLIANCE-READY hostname=<h> disk=<ok|none> kernel=<uname -r>
# on the console (disk=ok: /dev/vda mounted read-only and the marker read),
# then keeps a shell on the console forever. Kernel command-line options read
# by /init:
#   hostname=NAME           hostname (default: appliance)
#   appliance.ip=ADDR/LEN   static IPv4/IPv6 address for eth0 (default: none)
#   appliance.gw=ADDR       default gateway (with appliance.ip)
# An ACPI power-button press (virsh shutdown) powers the guest off.
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
readonly CMDLINE="console=ttyS0 quiet"
# Fixed timestamp for reproducible outputs (2024-01-01T00:00:00Z).
readonly EPOCH=1704067200
# Fixed filesystem UUID for a reproducible disk image.
readonly FS_UUID=5a1e5e1f-0000-4000-8000-57a7a51ab000
# Modules needed for virtio block and net, then ACPI power button + evdev (for
# acpid). Any of them may be built into the kernel. Dependencies are resolved
# from each module's own modinfo, so the order here does not matter.
readonly REQUIRED_MODULES=(virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev
    virtio_pci virtio_blk failover net_failover virtio_net)
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
hostname "$host" || say "warning: could not set hostname to '$host'"

ip link set lo up
if [ -n "$ip" ]; then
    ip link set eth0 up && ip addr add "$ip" dev eth0 || say "warning: could not configure eth0 with $ip"
    [ -z "$gw" ] || ip route add default via "$gw" || say "warning: could not add default route via $gw"
fi

# ACPI power button (virsh shutdown) -> /etc/acpi/PWRF/00000080 -> power off.
[ -e /dev/input/event0 ] && acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid

# The image disk: wait (bounded) for /dev/vda if a virtio block device exists.
disk=none
has_vblk=
for d in /sys/bus/virtio/devices/*; do
    [ "$(cat "$d/device" 2>/dev/null)" = 0x0002 ] && has_vblk=1
done
if [ -n "$has_vblk" ]; then
    i=0
    while [ ! -b /dev/vda ] && [ "$i" -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
fi
if [ -b /dev/vda ]; then
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
echo "STRATUSLAB-APPLIANCE-READY hostname=$(hostname) disk=$disk kernel=$kver"
echo "$printk" >/proc/sys/kernel/printk

while :; do
    setsid cttyhack sh -l
    sleep 1
done
INIT
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
    local pkgs=("$META_PKG" "$kpkg" busybox-static)
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
    for d in bin sbin usr/bin usr/sbin dev proc sys mnt tmp run root etc/acpi/PWRF; do
        mkdir -p "$initramfs/$d"
    done
    chmod 1777 "$initramfs/tmp"
    cp "$BUSYBOX" "$initramfs/bin/busybox"
    if [[ $(id -u) -eq 0 ]]; then
        # Lets the kernel open an initial console before /init mounts devtmpfs.
        mknod -m 0600 "$initramfs/dev/console" c 5 1
    fi
    install_modules "$root" "$kver" "$initramfs"
    write_init "$initramfs/init"
    write_poweroff_handler "$initramfs/etc/acpi/PWRF/00000080"
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
