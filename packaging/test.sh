#!/usr/bin/env bash
# The packages as a site installs them (run by `make test`, as root, on Debian, after
# `make packages` or `packaging/build.sh --test-build`, and `make appliance`):
#
#   1. static checks: lintian and rpmlint (what is left is explained in packaging/README.md),
#      `rpm -K`, the .rpm's files, dependencies and scriptlets against the .deb's;
#   2. `apt-get install ./...deb` (dependencies from Debian): the user, directories, token and
#      enabled (not started) units; `systemd-analyze verify` and `security` of the installed units;
#   3. the controller and the agent run from the installed files exactly as their units'
#      ExecStart= says, as their User= (there is no systemd as PID 1 here), on loopback only,
#      and a real VM through the installed CLI;
#   4. an upgrade to packages of a higher version while the VM runs: the configuration the
#      admin edited is kept, the daemons restarted from the new files find their state (the
#      instance is still listed) and the VM still runs (same libvirt domain ID and QEMU pid);
#   5. remove and purge: nothing is left but the stratuslab user (Debian keeps system users);
#   6. the Libcloud driver's wheel installs into a fresh virtualenv (Libcloud and paramiko from
#      PyPI) and registers its driver.
#
# It refuses to run on a host where StratusLab is installed or configured. Everything it makes
# (packages, daemons, domains, files, the user) is removed at the end, also on failure.
set -euo pipefail

readonly ROOT=$(cd "$(dirname "$0")/.." && pwd)
readonly PACKAGES_DIR=$ROOT/build/packages
readonly APPLIANCE=$ROOT/build/appliance
readonly NAMES=(stratuslab-controller stratuslab-agent stratuslab-cli)
readonly API=127.0.0.1:18440
readonly PEER=127.0.0.1:18450
readonly LIBVIRT=qemu:///system
# The appliance where the QEMU user can read it.
readonly IMAGES=/var/lib/stratuslab-pkgtest
readonly BANNER=STRATUSLAB-APPLIANCE-READY
# libvirt's NBD certificate directory, where the agent installs its client certificate.
readonly LIBVIRT_NBD=/etc/pki/qemu
# The agent names its host by the system host name (its first label), as an unedited agent.toml says.
HOST=$(uname -n)
readonly HOST=${HOST%%.*}
WORK=
PIDS=()
CLUSTER=

log() { printf 'packaging test: %s\n' "$*"; }
die() { printf 'packaging test: FAILED: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/wait-for.sh
source "$ROOT/scripts/wait-for.sh"

running() { [[ -e /proc/$1 ]] && [[ $(cut -d' ' -f3 "/proc/$1/stat") != Z ]]; }

# stop PID: SIGTERM, then SIGKILL after 20 s.
stop() {
    local pid=$1 deadline=$((SECONDS + 20))
    kill "$pid" 2>/dev/null || return 0
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

installed() { dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^.i'; }

cleanup() {
    local status=$? pid domain
    set +e
    for pid in "${PIDS[@]}"; do stop "$pid"; done
    if [[ -n $CLUSTER ]]; then
        for domain in $(virsh -c "$LIBVIRT" list --all --name 2>/dev/null | grep "^stratus-${CLUSTER:0:8}-"); do
            virsh -c "$LIBVIRT" destroy "$domain" >/dev/null 2>&1
            virsh -c "$LIBVIRT" undefine "$domain" >/dev/null 2>&1
        done
    fi
    local name purge=()
    for name in "${NAMES[@]}"; do
        dpkg-query -W "$name" >/dev/null 2>&1 && purge+=("$name")
    done
    ((${#purge[@]} == 0)) || apt-get purge -y -q "${purge[@]}" >/dev/null 2>&1 </dev/null
    getent passwd stratuslab >/dev/null && userdel stratuslab
    getent group stratuslab >/dev/null && groupdel stratuslab
    rm -rf /etc/stratuslab /var/lib/stratuslab "$IMAGES" "$WORK"
    rm -f "$LIBVIRT_NBD"/{ca-cert,client-cert,client-key}.pem
    rmdir "$LIBVIRT_NBD" /etc/pki 2>/dev/null
    ((status == 0)) || log "cleaned up after the failure"
    exit "$status"
}

# ---- 1. static checks -----------------------------------------------------------------------

deb_of() { compgen -G "$1/$2_*.deb" | head -n1; }
rpm_of() { compgen -G "$1/$2-[0-9]*.rpm" | head -n1; }

# lint: lintian and rpmlint leave nothing that packaging/README.md does not explain (the
# explained lintian tags are overridden in the packages, the rpmlint ones filtered by
# packaging/rpm/rpmlint.toml).
lint() {
    local name out
    for name in "${NAMES[@]}"; do
        out=$(lintian --fail-on error,warning --tag-display-limit 0 "$(deb_of "$PACKAGES_DIR" "$name")" 2>&1) ||
            die "lintian $name:"$'\n'"$out"
        out=$(grep -v 'running with root privileges' <<<"$out" || true)
        [[ -z $out ]] || log "lintian $name (information only):"$'\n'"$out"
        out=$(rpmlint -c "$ROOT/packaging/rpm/rpmlint.toml" "$(rpm_of "$PACKAGES_DIR" "$name")" 2>&1) ||
            die "rpmlint $name:"$'\n'"$out"
        grep -q ' 0 errors, 0 warnings' <<<"$out" || die "rpmlint $name:"$'\n'"$out"
        rpm -K "$(rpm_of "$PACKAGES_DIR" "$name")" >/dev/null || die "rpm -K $name"
    done
    log "lintian, rpmlint and rpm -K: clean"
}

# Files of a .deb and of a .rpm under one naming: the .deb's units are under /lib (Debian
# 12), zsh completions go where each family's zsh looks; documentation and lintian overrides
# are each family's own. The CLI's stratus-* links are made by the .rpm's scriptlet.
deb_files() {
    dpkg-deb --fsys-tarfile "$1" | tar -t | sed -e 's|^\./|/|' -e 's|^/lib/|/usr/lib/|' \
        -e 's|/zsh/vendor-completions/|/zsh/site-functions/|' | grep -v '/$' |
        grep -v -e '^/usr/share/doc/' -e '^/usr/share/lintian/' | sort
}

rpm_files() {
    {
        rpm -qpl "$1" | grep -v '^/usr/share/doc/'
        rpm -qp --scripts "$1" | sed -n 's|.*for name in \(.*\) ; do ln .*|\1|p' | tr ' ' '\n' |
            sed -n 's|^stratus-|/usr/bin/stratus-|p'
    } | sort
}

# The Debian name of each RHEL-family dependency of the .rpm (what the .deb must depend on).
readonly RPM_TO_DEB="libvirt-daemon-driver-qemu:libvirt-daemon-driver-qemu
libvirt-daemon-config-network:libvirt-daemon-system
qemu-kvm:qemu-system-x86
qemu-img:qemu-utils
/usr/bin/qemu-storage-daemon:qemu-system-x86
nftables:nftables
shadow-utils:adduser"

compare_rpm_with_deb() {
    local name deb rpm diff requires depends dep
    for name in "${NAMES[@]}"; do
        deb=$(deb_of "$PACKAGES_DIR" "$name")
        rpm=$(rpm_of "$PACKAGES_DIR" "$name")
        diff=$(diff <(deb_files "$deb") <(rpm_files "$rpm")) || die "$name: the .deb and .rpm files differ:"$'\n'"$diff"
        depends=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//')
        requires=$(rpm -qpR "$rpm" | awk '{print $1}' | grep -v -e '^rpmlib(' -e '^rtld(' -e '^config(' -e '^/bin/sh$' -e '^systemd$' -e '\.so' || true)
        for dep in $requires; do
            grep -qxF "$(sed -n "s|^$dep:||p" <<<"$RPM_TO_DEB")" <<<"$depends" ||
                die "$name: the .rpm requires $dep, the .deb has no Debian counterpart of it ($(tr '\n' ' ' <<<"$depends"))"
        done
        for dep in $depends; do
            [[ $dep =~ ^lib[a-z0-9.+-]*[0-9]$ ]] && continue # shared libraries (cargo-deb's $auto)
            grep -q ":$dep$" <<<"$RPM_TO_DEB" && grep -qxF "$(grep ":$dep$" <<<"$RPM_TO_DEB" | head -n1 | cut -d: -f1)" <<<"$requires" ||
                die "$name: the .deb depends on $dep, the .rpm requires no counterpart of it"
        done
        compare_scripts "$name" "$deb" "$rpm"
    done
    log "the .rpm files, dependencies and scriptlets match the .deb's"
}

# What both families' scripts must do: the same user and directories, the unit enabled.
compare_scripts() {
    local name=$1 deb=$2 rpm=$3 deb_scripts rpm_scripts want
    deb_scripts=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO --wildcards './p*' 2>/dev/null || true)
    rpm_scripts=$(rpm -qp --scripts "$rpm")
    case $name in
    stratuslab-controller) want=("stratuslab" "install -d -m 0700 -o stratuslab -g stratuslab /var/lib/stratuslab/controller"
        "install -d -m 0755 -o root -g root /var/lib/stratuslab" "enable") ;;
    stratuslab-agent) want=("install -d -m 0755 -o root -g root /var/lib/stratuslab" "enable") ;;
    *) want=() ;;
    esac
    local text
    for text in "${want[@]}"; do
        grep -qF -- "$text" <<<"$deb_scripts" || die "$name: the .deb's scripts lack: $text"
        grep -qF -- "$text" <<<"$rpm_scripts" || die "$name: the .rpm's scriptlets lack: $text"
    done
    grep -q adduser <<<"$deb_scripts" || [[ $name != stratuslab-controller ]] || die "$name: the .deb makes no user"
    grep -q useradd <<<"$rpm_scripts" || [[ $name != stratuslab-controller ]] || die "$name: the .rpm makes no user"
}

# ---- 2. install -----------------------------------------------------------------------------

apt_install() { # DIR: the three .deb files of DIR, dependencies from Debian
    local files=() name
    for name in "${NAMES[@]}"; do files+=("$(deb_of "$1" "$name")"); done
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${files[@]}" </dev/null >"$WORK/apt.log" 2>&1 ||
        die "apt-get install ${files[*]}:"$'\n'"$(tail -n 20 "$WORK/apt.log")"
}

mode_owner() { stat -c '%a %U:%G' "$1"; }

check_installed() {
    getent passwd stratuslab >/dev/null || die "no stratuslab user"
    [[ $(mode_owner /var/lib/stratuslab) == "755 root:root" ]] || die "/var/lib/stratuslab is $(mode_owner /var/lib/stratuslab)"
    [[ $(mode_owner /var/lib/stratuslab/controller) == "700 stratuslab:stratuslab" ]] ||
        die "/var/lib/stratuslab/controller is $(mode_owner /var/lib/stratuslab/controller)"
    local unit
    for unit in stratus-controller stratus-agent; do
        [[ -L /etc/systemd/system/multi-user.target.wants/$unit.service ]] || die "$unit is not enabled"
        ! pgrep -f "^/usr/bin/$unit" >/dev/null || die "$unit was started by the package"
        systemd-analyze verify "/usr/lib/systemd/system/$unit.service" >"$WORK/verify.log" 2>&1 ||
            die "systemd-analyze verify $unit:"$'\n'"$(cat "$WORK/verify.log")"
        log "$unit: $(systemd-analyze security --offline=yes "/usr/lib/systemd/system/$unit.service" 2>/dev/null |
            sed -n 's/.*Overall exposure level for .*: */exposure /p')"
    done
    local name
    for name in $(dpkg-deb -c "$(deb_of "$PACKAGES_DIR" stratuslab-cli)" | sed -n 's|.*\./usr/bin/\(stratus-[^ ]*\) -> stratus$|\1|p'); do
        man -w "$name" >/dev/null 2>&1 || die "no man page for $name"
    done
    /usr/bin/stratus-describe-instance --help >/dev/null || die "stratus-describe-instance --help"
    log "installed: user, directories, enabled units (not started), man pages"
}

# ---- 3. run as the units say ----------------------------------------------------------------

# unit_key UNIT KEY: the value of KEY= in the installed unit.
unit_key() { sed -n "s/^$2=//p" "/usr/lib/systemd/system/$1.service" | tail -n1; }

start_unit() { # UNIT: in the background as its User=, with its UMask=; its pid goes to PIDS
    local unit=$1 exec user umask command=()
    exec=$(unit_key "$unit" ExecStart)
    user=$(unit_key "$unit" User)
    umask=$(unit_key "$unit" UMask)
    read -r -a command <<<"$exec"
    [[ -z $user ]] || command=(setpriv --reuid="$user" --regid="$user" --init-groups -- "${command[@]}")
    (
        umask "${umask:-0022}"
        exec "${command[@]}"
    ) >>"$WORK/$unit.log" 2>&1 &
    PIDS+=($!)
    log "$unit: pid $! runs: ${command[*]}"
}

admin_password() { cat /var/lib/stratuslab/controller/admin-password; }

api() { # METHOD PATH [JSON]
    local args=(-fsS --max-time 10 --cacert /var/lib/stratuslab/controller/ca.pem -u "admin:$(admin_password)" -X "$1" "https://$API/api/v1$2")
    [[ $# -ge 3 ]] && args+=(-H 'content-type: application/json' -d "$3")
    curl "${args[@]}"
}

# The admin's edits, kept across the upgrade: loopback ports of the test, TCG guests, the
# appliance as a file:// image.
# prepend FILE: standard input goes before FILE's first table.
prepend() {
    local text
    text=$(cat)
    printf '%s\n\n%s\n' "$text" "$(cat "$1")" >"$1"
}

edit_configs() {
    prepend /etc/stratuslab/controller.toml <<EOF
# Edited by the administrator (packaging test).
listen = "$API"
peer_listen = "$PEER"
EOF
    prepend /etc/stratuslab/agent.toml <<EOF
# Edited by the administrator (packaging test).
controller = "https://$API"
domain_type = "qemu"
file_location_roots = ["$IMAGES"]
EOF
    sha256sum /etc/stratuslab/controller.toml /etc/stratuslab/agent.toml >"$WORK/configs.sha256"
}

start_daemons() {
    start_unit stratus-controller
    wait_for 30 "the controller's API" api GET /cluster
    CLUSTER=$(api GET /cluster | sed -n 's/.*"cluster_id":"\([^"]*\)".*/\1/p')
    # As the install guide says: the site CA's certificate, copied to every agent host, and a
    # join token for the host.
    install -m 0644 /var/lib/stratuslab/controller/ca.pem /etc/stratuslab/ca.pem
    (
        umask 077
        api POST "/hosts/$HOST/join-tokens" '{}' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p' >/etc/stratuslab/join-token
    )
    [[ -s /etc/stratuslab/join-token ]] || die "no join token for host $HOST"
    start_unit stratus-agent
    wait_for 60 "the agent to register" host_up
    # Its certificate is QEMU's NBD client certificate, the key readable by QEMU's group only.
    cmp -s "$LIBVIRT_NBD/client-cert.pem" /var/lib/stratuslab/tls/host.pem || die "the agent did not install its NBD client certificate in $LIBVIRT_NBD"
    cmp -s "$LIBVIRT_NBD/ca-cert.pem" /etc/stratuslab/ca.pem || die "no site CA in $LIBVIRT_NBD"
    [[ $(mode_owner "$LIBVIRT_NBD/client-key.pem") == "640 root:libvirt-qemu" ]] || die "$LIBVIRT_NBD/client-key.pem is $(mode_owner "$LIBVIRT_NBD/client-key.pem")"
    log "the agent installed its NBD client certificate for libvirt ($LIBVIRT_NBD, key 640 root:libvirt-qemu)"
}

register_image() {
    mkdir -p "$IMAGES"
    chmod 0755 "$IMAGES"
    cp "$APPLIANCE"/{vmlinuz,initrd.img,disk.qcow2} "$IMAGES/"
    chmod 0644 "$IMAGES"/*
    local cmdline
    cmdline=$(sed -n 's/.*"cmdline": *"\([^"]*\)".*/\1/p' "$APPLIANCE/image.json")
    artifact() { printf '{"locations":["file://%s/%s"],"sha256":"%s"}' "$IMAGES" "$1" "$(sha256sum "$IMAGES/$1" | cut -d' ' -f1)"; }
    api POST /images "{\"name\":\"appliance\",\"format\":\"qcow2\",\"disk\":$(artifact disk.qcow2),\"kernel\":$(artifact vmlinuz),\"initrd\":$(artifact initrd.img),\"cmdline\":\"$cmdline\"}" >/dev/null
}

host_up() { api GET /hosts | grep -q '"status":"up"'; }

instance_is() { api GET "/instances/$INSTANCE" | grep -q "\"state\":\"$1\""; }

cli() { STRATUSLAB_CONFIG=$WORK/stratuslab-user.cfg "/usr/bin/stratus-$1" "${@:2}"; }

INSTANCE=
DOMAIN=
run_vm() {
    cat >"$WORK/stratuslab-user.cfg" <<EOF
[default]
endpoint = $API
ca_certificate = /etc/stratuslab/ca.pem
username = admin
password = $(admin_password)
EOF
    local out
    out=$(cli run-instance appliance -t t1.micro)
    INSTANCE=$(sed -n 's/.*(vm ID: \([0-9]*\)).*/\1/p' <<<"$out" | head -n1)
    [[ -n $INSTANCE ]] || die "stratus-run-instance printed no vm ID: $out"
    wait_for 120 "instance $INSTANCE to be Running" instance_is Running
    wait_for 120 "the banner of instance $INSTANCE" grep -q "$BANNER" "/var/lib/stratuslab/instances/$INSTANCE/console.log"
    DOMAIN=stratus-${CLUSTER:0:8}-$INSTANCE
    virsh -c "$LIBVIRT" domid "$DOMAIN" >/dev/null || die "no domain $DOMAIN"
    log "instance $INSTANCE runs as $(domain_identity) through the installed CLI"
}

# The libvirt domain ID and QEMU pid of the instance: the same VM has the same ones.
domain_identity() {
    printf 'domain %s qemu pid %s' "$(virsh -c "$LIBVIRT" domid "$DOMAIN" | head -n1)" "$(cat "/run/libvirt/qemu/$DOMAIN.pid")"
}

# ---- 4. upgrade -----------------------------------------------------------------------------

upgrade() {
    local version before after pid
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
    log "building packages of version $version+upgrade"
    "$ROOT/packaging/build.sh" --test-build --deb-only --version "$version+upgrade" --out "$WORK/upgrade" >/dev/null
    before=$(domain_identity)
    apt_install "$WORK/upgrade"
    local name
    for name in "${NAMES[@]}"; do
        [[ $(dpkg-query -W -f='${Version}' "$name") == "$version+upgrade-1" ]] || die "$name was not upgraded"
    done
    sha256sum --quiet -c "$WORK/configs.sha256" || die "the upgrade changed the edited configuration"
    for pid in "${PIDS[@]}"; do running "$pid" || die "the upgrade stopped pid $pid"; done
    # What systemd does after the upgrade (restart-after-upgrade): the new binaries take over.
    for pid in "${PIDS[@]}"; do stop "$pid"; done
    PIDS=()
    start_daemons
    instance_is Running || die "instance $INSTANCE is not Running after the upgrade"
    cli describe-instance | grep -q "$INSTANCE" || die "instance $INSTANCE is not listed after the upgrade"
    after=$(domain_identity)
    [[ $before == "$after" ]] || die "the VM changed across the upgrade: $before, then $after"
    log "upgraded to $version+upgrade: configuration kept, instance $INSTANCE still Running ($after)"
}

# ---- 5. remove and purge --------------------------------------------------------------------

purge() {
    cli kill-instance "$INSTANCE" >/dev/null
    wait_for 60 "instance $INSTANCE to end" instance_is Done
    local pid files
    for pid in "${PIDS[@]}"; do stop "$pid"; done
    PIDS=()
    files=$(for name in "${NAMES[@]}"; do dpkg -L "$name"; done | sort -u)
    apt-get remove -y -q "${NAMES[@]}" </dev/null >"$WORK/apt.log" 2>&1 || die "apt-get remove failed"
    [[ ! -e /usr/bin/stratus-controller && -e /etc/stratuslab/controller.toml ]] || die "remove: binaries left or conffiles gone"
    apt-get purge -y -q "${NAMES[@]}" </dev/null >"$WORK/apt.log" 2>&1 || die "apt-get purge failed"
    local file left=()
    while read -r file; do
        [[ -n $file && ! -d $file && ( -e $file || -L $file ) ]] && left+=("$file")
    done <<<"$files"
    for file in /etc/stratuslab /var/lib/stratuslab "$LIBVIRT_NBD" /etc/systemd/system/multi-user.target.wants/stratus-controller.service \
        /etc/systemd/system/multi-user.target.wants/stratus-agent.service /usr/lib/systemd/system/stratus-controller.service \
        /usr/lib/systemd/system/stratus-agent.service; do
        [[ -e $file || -L $file ]] && left+=("$file")
    done
    while read -r file; do
        left+=("$file")
    done < <(find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
        -name '*stratus*' 2>/dev/null)
    ((${#left[@]} == 0)) || die "purge left: ${left[*]}"
    getent passwd stratuslab >/dev/null || die "purge removed the stratuslab user (Debian keeps system users)"
    [[ -z $(find /etc /var /usr /run -xdev -user stratuslab 2>/dev/null | head -n1) ]] || die "files of stratuslab left after purge"
    log "removed and purged: nothing left but the stratuslab user, which owns no file"
}

check_wheel() {
    local wheel venv=$WORK/wheel-venv
    wheel=$(compgen -G "$PACKAGES_DIR/stratuslab_libcloud_drivers-*.whl" | head -n1)
    [[ -n $wheel ]] || die "no Libcloud driver wheel: run make packages"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$wheel" ||
        die "the Libcloud driver's wheel does not install"
    "$venv/bin/python" - <<'PY' || die "the installed wheel does not register the driver"
import stratuslab.libcloud.stratuslab_driver
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider
assert get_driver(Provider.STRATUSLAB).__name__ == "StratusLabNodeDriver"
PY
    log "the Libcloud driver's wheel installs and registers Provider.STRATUSLAB"
}

main() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    [[ -f $APPLIANCE/image.json ]] || die "the appliance is missing: run make appliance"
    local name
    for name in "${NAMES[@]}"; do
        [[ -n $(deb_of "$PACKAGES_DIR" "$name") && -n $(rpm_of "$PACKAGES_DIR" "$name") ]] || die "no $name package: run make packages"
        ! installed "$name" || die "$name is installed on this host: the test would remove it"
    done
    [[ ! -e /etc/stratuslab && ! -e /var/lib/stratuslab ]] || die "/etc/stratuslab or /var/lib/stratuslab exists: not a host for this test"
    [[ ! -e $LIBVIRT_NBD ]] || die "$LIBVIRT_NBD exists: not a host for this test (the agent installs its NBD client certificate there)"
    getent passwd stratuslab >/dev/null && die "a stratuslab user exists: not a host for this test"
    WORK=$(mktemp -d)
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    lint
    compare_rpm_with_deb
    apt_install "$PACKAGES_DIR"
    check_installed
    edit_configs
    start_daemons
    register_image
    run_vm
    upgrade
    purge
    check_wheel
    log "passed"
}

main "$@"
