# shellcheck shell=bash
# Shared by appliance/check.sh, check-network.sh and check-disks.sh (sourced, not run).
# The caller sets PROG, URI and NAME first.

log() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

require_commands() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null || die "'$c' not found; run scripts/install-deps.sh first"
    done
}

# read_appliance OUT_DIR: checks the build's files and sets CMDLINE from its image.json.
read_appliance() {
    local dir=$1 f sha
    for f in vmlinuz initrd.img disk.qcow2 image.json; do
        [[ -s $dir/$f ]] || die "$dir/$f is missing; run appliance/build.sh first"
    done
    # The command line recorded by build.sh (a plain JSON string without escapes).
    CMDLINE=$(sed -n 's/^ *"cmdline": "\([^"\\]*\)",\{0,1\}$/\1/p' "$dir/image.json")
    [[ -n $CMDLINE ]] || die "no cmdline in $dir/image.json"
    sha=$(sed -n 's/^ *"sha256": "\([0-9a-f]*\)",\{0,1\}$/\1/p' "$dir/image.json")
    [[ $(sha256sum "$dir/disk.qcow2" | cut -d' ' -f1) == "$sha" ]] ||
        die "$dir/disk.qcow2 does not match the sha256 in image.json; rebuild it"
}

xml_escape() {
    local s=$1
    s=${s//&/&amp;}
    s=${s//</&lt;}
    s=${s//>/&gt;}
    s=${s//\'/&apos;}
    s=${s//\"/&quot;}
    printf '%s' "$s"
}

elapsed_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

domain_exists() { virsh -c "$URI" domstate "$NAME" >/dev/null 2>&1; }

# domain_xml OUT_DIR OVERLAY CONSOLE [EXTRA_DEVICES]: the appliance's transient domain
# (type qemu, 1 vCPU, 256 MiB, direct kernel boot, overlay on vda, serial console to a file).
domain_xml() {
    local dir=$1 overlay=$2 console=$3 extra=${4:-}
    cat <<XML
<domain type='qemu'>
  <name>$NAME</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$(xml_escape "$dir/vmlinuz")</kernel>
    <initrd>$(xml_escape "$dir/initrd.img")</initrd>
    <cmdline>$(xml_escape "$CMDLINE hostname=$NAME")</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$(xml_escape "$overlay")'/>
      <target dev='vda' bus='virtio'/>
    </disk>
$extra
    <serial type='file'>
      <source path='$(xml_escape "$console")'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$(xml_escape "$console")'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
XML
}

# wait_line CONSOLE ERE TIMEOUT [FAIL_ERE]: prints the first console line (CRs
# removed) matching ERE; dies after TIMEOUT seconds, when the domain stops, or
# when a line matching FAIL_ERE appears first.
wait_line() {
    local console=$1 ere=$2 timeout=$3 fail=${4:-} line="" deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        if [[ -f $console ]]; then
            line=$(tr -d '\r' <"$console" | grep -a -m1 -E "$ere" || true)
            [[ -z $line ]] || break
            if [[ -n $fail ]] && line=$(tr -d '\r' <"$console" | grep -a -m1 -E "$fail"); then
                die "the guest said: $line (while waiting for /$ere/)"
            fi
        fi
        domain_exists || die "domain $NAME stopped while waiting for /$ere/ on its console"
        sleep 0.2
    done
    [[ -n $line ]] || die "no console line matching /$ere/ within ${timeout}s"
    printf '%s\n' "$line"
}

# wait_banner CONSOLE TIMEOUT: prints the READY banner, or dies if it does not come.
wait_banner() {
    local console=$1 timeout=$2 banner="" deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        if [[ -f $console ]]; then
            banner=$(tr -d '\r' <"$console" | grep -a -m1 '^STRATUSLAB-APPLIANCE-READY ' || true)
            [[ -z $banner ]] || break
        fi
        domain_exists || die "domain $NAME stopped before printing its banner"
        sleep 0.2
    done
    [[ -n $banner ]] || die "no STRATUSLAB-APPLIANCE-READY banner within ${timeout}s"
    printf '%s\n' "$banner"
}
