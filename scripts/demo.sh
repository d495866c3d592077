#!/usr/bin/env bash
# The all-in-one demo cloud: a controller (or a cluster of STRATUS_DEMO_NODES controllers, node N
# on 127.0.0.1:(8439+N), peers on 127.0.0.1:(8449+N)) and a local agent on this host, the test
# appliance registered as the image `appliance`, a site network whose far side (the gateway)
# lives in a network namespace the demo makes, a volume pool for persistent disks, and one
# instance on that network, run through the CLI with the demo's SSH key.
#
#   scripts/demo.sh start   (make demo)   idempotent: a running demo is left as it is
#   scripts/demo.sh stop    (make stop)   always stops the demo, whatever state it is in: asks
#                                         the cloud to kill its instances (bounded wait), stops
#                                         the daemons by pid, destroys the demo cluster's leftover
#                                         domains, stops its NBD exports, removes its taps, nft
#                                         rules, bridge and namespace and every file it made;
#                                         exits 0, warning about what did not stop cleanly
#
# Files: build/demo/ (configs, Raft stores, logs, pids as controller-N.pid, secrets, SSH key) and
# /var/lib/stratuslab-demo/ (instance disks, console logs, the volume pool, and a copy of the
# appliance qemu can read).
set -euo pipefail

readonly ROOT=$(cd "$(dirname "$0")/.." && pwd)
readonly DEMO=$ROOT/build/demo
readonly AGENT_STATE=/var/lib/stratuslab-demo
readonly PORT=${STRATUS_DEMO_PORT:-8440}
readonly NODES=${STRATUS_DEMO_NODES:-1}
[[ $NODES =~ ^[1-9]$ ]] || { printf '[ERROR] STRATUS_DEMO_NODES must be 1 to 9 (3 or 5 for a cluster), not %s\n' "$NODES" >&2; exit 1; }
api_of() { echo "127.0.0.1:$((PORT - 1 + $1))"; }
peer_of() { echo "127.0.0.1:$((PORT + 9 + $1))"; }
# The first node's API; the user's and the agent's configurations name every node.
readonly ENDPOINT=$(api_of 1)
ENDPOINTS=$ENDPOINT
for ((n = 2; n <= NODES; n++)); do ENDPOINTS+=",$(api_of "$n")"; done
readonly ENDPOINTS
readonly BIN=${STRATUS_BIN_DIR:-$ROOT/target/release}
readonly APPLIANCE=$ROOT/build/appliance
readonly BANNER=STRATUSLAB-APPLIANCE-READY
# The demo host's name in the cloud (what its join token is made for).
HOST_NAME=$(uname -n)
readonly HOST_NAME=${HOST_NAME%%.*}
# The demo's network: its bridge (same name on the host and in the namespace, joined by the
# agent's veth pair <bridge>-v0/-v1) and the namespace holding the gateway address.
readonly NETNS=stratusdemo
readonly BRIDGE=sdemo0
readonly SUBNET=10.254.1
# Bounded waits of `stop`.
readonly STOP_INSTANCES_SECS=${STRATUS_DEMO_STOP_SECS:-60}
readonly STOP_DAEMON_SECS=15

log() { printf ':: %s\n' "$*"; }
warn() { printf '[WARNING] %s\n' "$*" >&2; }
die() { printf '[ERROR] %s\n' "$*" >&2; exit 1; }

# running PID: the process exists and is not a zombie (a daemon the demo started and that died
# stays a zombie until init reaps it, and kill -0 still succeeds on it).
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${stat##*) } != Z* ]]
}

alive() { [[ -f $1 ]] && running "$(cat "$1")"; }

admin_password() { cat "$DEMO/admin-password"; }

# The API of the first controller node that is running (any node answers).
live_endpoint() {
    local pid
    for pid in "$DEMO"/controller-*.pid; do
        if alive "$pid"; then
            local n=${pid##*controller-}
            api_of "${n%.pid}"
            return
        fi
    done
    echo "$ENDPOINT"
}

api() { # METHOD PATH [JSON]
    local args=(-sS --max-time 10 --cacert "$DEMO/ca.pem" -u "admin:$(admin_password)" -X "$1" "https://$(live_endpoint)/api/v1$2")
    [[ $# -ge 3 ]] && args+=(-H 'content-type: application/json' -d "$3")
    curl "${args[@]}"
}

cli() { # stratus-NAME args..., configured through the demo's config file
    STRATUSLAB_CONFIG=$DEMO/stratuslab-user.cfg "$DEMO/bin/stratus-$1" "${@:2}"
}

# shellcheck source=scripts/wait-for.sh
source "$ROOT/scripts/wait-for.sh"

write_configs() {
    mkdir -p "$DEMO/bin" "$AGENT_STATE/images"
    chmod 0755 "$AGENT_STATE" "$AGENT_STATE/images"
    local n agents=""
    for ((n = 1; n <= NODES; n++)); do
        cat >"$DEMO/controller-$n.toml" <<EOF
node_id = $n
listen = "$(api_of "$n")"
peer_listen = "$(peer_of "$n")"
join = $( ((n == 1)) && echo false || echo true)
state_dir = "$DEMO/controller-$n"
admin_password_file = "$DEMO/admin-password"

[tls]
ca_certificate = "$DEMO/ca.pem"
ca_key = "$DEMO/ca.key"

[[networks]]
name = "public"
cidr = "$SUBNET.0/24"
gateway = "$SUBNET.1"
bridge = "$BRIDGE"
EOF
        agents+="${agents:+,}https://$(api_of "$n")"
    done
    cat >"$DEMO/agent.toml" <<EOF
controller = "$agents"
ca_certificate = "$DEMO/ca.pem"
join_token_file = "$DEMO/join-token"
host_name = "$HOST_NAME"
state_dir = "$AGENT_STATE"
domain_type = "auto"
file_location_roots = ["$AGENT_STATE/images"]
probe_kernel = "$AGENT_STATE/images/appliance/vmlinuz"
probe_initrd = "$AGENT_STATE/images/appliance/initrd.img"
network_netns = "$NETNS"
volume_pool = "$AGENT_STATE/volumes"
nbd_listen = "127.0.0.1"
# One host: every disk is local, so libvirt's NBD client directory is left alone.
nbd_client_tls_dir = ""
EOF
    for name in run-instance describe-instance kill-instance stop-instance start-instance \
        reboot-instance console-instance events create-group describe-groups delete-group copy-config \
        create-volume describe-volumes update-volume delete-volume attach-volume detach-volume \
        describe-images delete-image create-user describe-users update-user delete-user \
        create-join-token revoke-host describe-hosts update-host remove-host fence-host; do
        ln -sf "$BIN/stratus" "$DEMO/bin/stratus-$name"
    done
    # The appliance where the qemu user can read it, whatever the checkout's permissions.
    local file stale=0
    for file in vmlinuz initrd.img disk.qcow2 image.json; do
        cmp -s "$APPLIANCE/$file" "$AGENT_STATE/images/appliance/$file" || stale=1
    done
    if ((stale)); then
        rm -rf "$AGENT_STATE/images/appliance"
        mkdir -p "$AGENT_STATE/images/appliance.tmp"
        cp "$APPLIANCE"/{vmlinuz,initrd.img,disk.qcow2,image.json} "$AGENT_STATE/images/appliance.tmp/"
        chmod 0755 "$AGENT_STATE/images/appliance.tmp"
        mv "$AGENT_STATE/images/appliance.tmp" "$AGENT_STATE/images/appliance"
    fi
}

# The far side of the demo network: a namespace with the bridge holding the gateway address.
# The agent makes the host's bridge and joins it to this one with a veth pair.
make_network() {
    if [[ ! -e /run/netns/$NETNS ]]; then
        log "making network namespace $NETNS (gateway $SUBNET.1)"
        ip netns add "$NETNS"
    fi
    ip -n "$NETNS" link show "$BRIDGE" >/dev/null 2>&1 || ip -n "$NETNS" link add "$BRIDGE" type bridge
    ip -n "$NETNS" addr replace "$SUBNET.1/24" dev "$BRIDGE"
    ip -n "$NETNS" link set "$BRIDGE" up
    ip -n "$NETNS" link set lo up
    [[ -f $DEMO/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C stratuslab-demo -f "$DEMO/id_ed25519"
}

write_user_config() {
    cat >"$DEMO/stratuslab-user.cfg" <<EOF
[default]
endpoint = $ENDPOINTS
ca_certificate = $DEMO/ca.pem
username = admin
password = $(admin_password)
user_public_key_file = $DEMO/id_ed25519.pub
EOF
    chmod 0600 "$DEMO/stratuslab-user.cfg"
}

start_controller() { # NODE
    local n=$1
    alive "$DEMO/controller-$n.pid" && return 0
    log "starting controller node $n on $(api_of "$n") (peers on $(peer_of "$n"))"
    nohup "$BIN/stratus-controller" --config "$DEMO/controller-$n.toml" >>"$DEMO/controller-$n.log" 2>&1 &
    echo $! >"$DEMO/controller-$n.pid"
}

start_daemons() {
    start_controller 1
    wait_for 20 "controller node 1" test -s "$DEMO/admin-password"
    wait_for 20 "controller node 1's API" curl -fsS --cacert "$DEMO/ca.pem" -u "admin:$(admin_password)" "https://$ENDPOINT/api/v1/cluster"
    local n
    for ((n = 2; n <= NODES; n++)); do
        start_controller "$n"
        # A node waiting to be added answers (401: it has no users yet) once it listens.
        wait_for 20 "controller node $n's API" curl -sS -o /dev/null --cacert "$DEMO/ca.pem" "https://$(api_of "$n")/api/v1/cluster"
        if ! api GET /cluster/members | grep -q "\"id\":$n,"; then
            log "adding controller node $n to the cluster"
            api POST /cluster/members "{\"id\":$n,\"address\":\"$(peer_of "$n")\",\"api_address\":\"$(api_of "$n")\"}" >/dev/null
        fi
        wait_for 60 "controller node $n to be a voter" bash -c \
            "curl -fsS --cacert $DEMO/ca.pem -u admin:$(admin_password) https://$ENDPOINT/api/v1/cluster/members | grep -q '\"id\":$n,[^}]*\"role\":\"\(voter\|leader\)\"'"
    done
    if ((NODES > 1)); then
        log "controller cluster of $NODES: $(api GET /cluster | sed -n 's/.*"leader":\([0-9]*\).*/leader node \1/p')"
    fi
    write_user_config
    api GET /cluster | sed -n 's/.*"cluster_id":"\([^"]*\)".*/\1/p' >"$DEMO/cluster-id"
    if ! alive "$DEMO/agent.pid"; then
        # As an administrator would: a one-time join token the agent enrols with.
        api POST "/hosts/$HOST_NAME/join-tokens" '{}' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p' >"$DEMO/join-token"
        [[ -s $DEMO/join-token ]] || die "no join token for host $HOST_NAME"
        chmod 0600 "$DEMO/join-token"
        log "starting the agent (domain type probe: up to a minute the first time)"
        nohup "$BIN/stratus-agent" --config "$DEMO/agent.toml" >>"$DEMO/agent.log" 2>&1 &
        echo $! >"$DEMO/agent.pid"
        wait_for 120 "the agent to register" bash -c \
            "curl -fsS --cacert $DEMO/ca.pem -u admin:$(admin_password) https://$ENDPOINT/api/v1/hosts | grep -q '\"status\":\"up\"'"
    fi
}

register_image() {
    if api GET /images | grep -q '"name":"appliance"'; then
        return
    fi
    local dir=$AGENT_STATE/images/appliance cmdline
    cmdline=$(sed -n 's/.*"cmdline": *"\([^"]*\)".*/\1/p' "$dir/image.json")
    artifact() { printf '{"locations":["file://%s/%s"],"sha256":"%s"}' "$dir" "$1" "$(sha256sum "$dir/$1" | cut -d' ' -f1)"; }
    log "registering the appliance image"
    api POST /images "{\"name\":\"appliance\",\"format\":\"qcow2\",\"disk\":$(artifact disk.qcow2),\"kernel\":$(artifact vmlinuz),\"initrd\":$(artifact initrd.img),\"cmdline\":\"$cmdline\"}" >/dev/null
}

start() {
    [[ -x $BIN/stratus-controller ]] || die "$BIN/stratus-controller is missing: run make release"
    [[ -f $APPLIANCE/image.json ]] || die "the appliance is missing: run make appliance"
    mkdir -p "$DEMO"
    write_configs
    make_network
    start_daemons
    register_image
    local id
    id=$(api GET /instances | grep -o '"id":[0-9]*,[^}]*"state":"\(Pending\|Booting\|Running\)"' | head -1 | sed 's/"id":\([0-9]*\).*/\1/' || true)
    if [[ -z $id ]]; then
        local out
        out=$(cli run-instance appliance -t t1.micro)
        printf '%s\n' "$out"
        id=$(sed -n 's/.*(vm ID: \([0-9]*\)).*/\1/p' <<<"$out" | head -1)
        [[ -n $id ]] || die "stratus-run-instance printed no vm ID"
    fi
    wait_for 120 "instance $id to be Running" bash -c "curl -fsS --cacert $DEMO/ca.pem -u admin:$(admin_password) https://$ENDPOINT/api/v1/instances/$id | grep -q '\"state\":\"Running\"'"
    wait_for 120 "the banner of instance $id" grep -q "$BANNER" "$AGENT_STATE/instances/$id/console.log"
    log "instance $id is Running:"
    cli describe-instance "$id"
    local banner ip
    banner=$(grep "$BANNER" "$AGENT_STATE/instances/$id/console.log" | tail -n1 | tr -d '\r')
    log "its console says: $banner"
    ip=$(sed -n 's/.* ip=\([0-9.]*\).*/\1/p' <<<"$banner")
    if [[ -n $ip ]]; then
        local login
        if login=$(ip netns exec "$NETNS" ssh -i "$DEMO/id_ed25519" -o StrictHostKeyChecking=no \
            -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10 "root@$ip" hostname 2>&1); then
            log "ssh root@$ip from namespace $NETNS: the guest says its name is $login"
        else
            warn "ssh root@$ip from namespace $NETNS failed: $login"
        fi
    fi
    cat <<EOF

The demo cloud is running. Try:
  export STRATUSLAB_CONFIG=$DEMO/stratuslab-user.cfg PATH=$DEMO/bin:\$PATH
  stratus-describe-instance
  ip netns exec $NETNS ssh -i $DEMO/id_ed25519 -o StrictHostKeyChecking=no root@${ip:-<ip>}
  stratus-run-instance appliance -t t1.micro
  stratus-create-volume --size=1 --tag=mydisk        # DISK <uuid>
  stratus-attach-volume -i $id <uuid>                # ATTACHED <uuid> in VM $id on /dev/vdb
  stratus-describe-volumes
  stratus-detach-volume -i $id <uuid>
  stratus-reboot-instance $id; stratus-console-instance -f $id   # the guest boots again
  stratus-stop-instance $id; stratus-start-instance $id          # same host, disk and address
  stratus-kill-instance $id
  curl --cacert $DEMO/ca.pem -u admin:\$(cat $DEMO/admin-password) https://$ENDPOINT/api/v1/hosts
  curl --cacert $DEMO/ca.pem -u admin:\$(cat $DEMO/admin-password) https://$ENDPOINT/api/v1/cluster
  stratus-events -f                                  # what happens, as it happens
Dashboard: https://$ENDPOINT/ as admin, password $(cat "$DEMO/admin-password")
  (the site CA is $DEMO/ca.pem: import it in the browser, or accept the warning)
Logs: $DEMO/controller-*.log $DEMO/agent.log
Stop it all with: make stop
EOF
}

# ---- stop: always succeeds, never touches what is not the demo's ----------------------------

PROBLEMS=()

# Asks the cloud to kill every instance still alive and waits, bounded, for them to end (an
# instance on a host whose agent died never ends: the domain is destroyed below instead).
kill_instances() {
    local pid up=0
    for pid in "$DEMO"/controller-*.pid; do alive "$pid" && up=1; done
    ((up)) && [[ -f $DEMO/admin-password ]] || return 0
    local ids id deadline=$((SECONDS + STOP_INSTANCES_SECS))
    ids=$(api GET /instances 2>/dev/null | grep -o '"id":[0-9]*,[^}]*"state":"\(Pending\|Booting\|Running\|Stopping\)"' |
        sed 's/"id":\([0-9]*\).*/\1/' || true)
    for id in $ids; do
        log "killing instance $id"
        api DELETE "/instances/$id" >/dev/null 2>&1 || true
    done
    if ! alive "$DEMO/agent.pid"; then
        [[ -z $ids ]] || PROBLEMS+=("the agent is not running: instances $(tr '\n' ' ' <<<"$ids")were not stopped by it (their domains are destroyed directly)")
        return 0
    fi
    for id in $ids; do
        until api GET "/instances/$id" 2>/dev/null | grep -q '"state":"\(Done\|Failed\)"'; do
            if ((SECONDS >= deadline)); then
                PROBLEMS+=("instance $id did not end within ${STOP_INSTANCES_SECS}s (its domain is destroyed directly)")
                break
            fi
            sleep 0.5
        done
    done
}

# stop_pid FILE NAME: SIGTERM the pid in FILE, SIGKILL it after a bounded wait.
stop_pid() {
    local file=$1 name=$2 pid deadline
    alive "$file" || return 0
    pid=$(cat "$file")
    log "stopping the $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_DAEMON_SECS))
    while running "$pid"; do
        if ((SECONDS >= deadline)); then
            PROBLEMS+=("the $name (pid $pid) ignored SIGTERM for ${STOP_DAEMON_SECS}s and was killed")
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
}

# Domains of the demo's cluster that are still running: named stratus-<cluster prefix>-<id>,
# and carrying the whole cluster ID in their metadata.
destroy_domains() {
    [[ -s $DEMO/cluster-id ]] || return 0
    local cluster prefix domain
    cluster=$(cat "$DEMO/cluster-id")
    prefix="stratus-${cluster:0:8}-"
    for domain in $(virsh -c qemu:///system list --all --name 2>/dev/null | grep "^$prefix" || true); do
        virsh -c qemu:///system dumpxml "$domain" 2>/dev/null | grep -qF "$cluster" || continue
        PROBLEMS+=("domain $domain was still running: destroyed")
        virsh -c qemu:///system destroy "$domain" >/dev/null 2>&1 || true
        virsh -c qemu:///system undefine "$domain" >/dev/null 2>&1 || true
    done
}

# The agent's NBD servers (qemu-storage-daemon), by the pids its export records name, when the
# process really is a daemon of the demo's export directory.
stop_exports() {
    local record pid
    for record in "$AGENT_STATE"/exports/*.json; do
        [[ -f $record ]] || continue
        pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$record")
        [[ -n $pid ]] || continue
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$AGENT_STATE/exports/"; then
            PROBLEMS+=("NBD export server (pid $pid) was still running: killed")
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

# The demo instances' taps (s<4 hex of the cluster ID><instance>n<nic>, on the demo bridge or
# on none), their anti-spoofing chains, the bridge, its veth pair and the namespace.
remove_network() {
    local tap master
    if [[ -s $DEMO/cluster-id ]]; then
        local tag
        tag=$(tr -cd '0-9a-fA-F' <"$DEMO/cluster-id" | cut -c1-4 | tr 'A-F' 'a-f')
        for tap in $(ls /sys/class/net 2>/dev/null | grep -E "^s${tag}[0-9]+n[0-9]+$" || true); do
            master=$(basename "$(readlink "/sys/class/net/$tap/master" 2>/dev/null)" 2>/dev/null || true)
            [[ -z $master || $master == "$BRIDGE" ]] || continue
            ip link del "$tap" 2>/dev/null || true
            nft delete element bridge stratus taps "{ \"$tap\" }" 2>/dev/null || true
            nft delete chain bridge stratus "tap_$tap" 2>/dev/null || true
        done
    fi
    # The shared table goes only when no tap of anyone else is left in it.
    if nft list table bridge stratus >/dev/null 2>&1 && ! nft list chains bridge 2>/dev/null | grep -q 'chain tap_'; then
        nft delete table bridge stratus 2>/dev/null || true
    fi
    ip link del "$BRIDGE-v0" 2>/dev/null || true
    ip link del "$BRIDGE" 2>/dev/null || true
    if [[ -e /run/netns/$NETNS ]]; then
        ip netns del "$NETNS" || PROBLEMS+=("network namespace $NETNS could not be deleted")
    fi
}

stop() {
    kill_instances
    stop_pid "$DEMO/agent.pid" agent
    local file n
    for file in "$DEMO"/controller-*.pid; do
        [[ -f $file ]] || continue
        n=${file##*controller-}
        stop_pid "$file" "controller node ${n%.pid}"
    done
    # A demo started before controllers were numbered.
    stop_pid "$DEMO/controller.pid" controller
    destroy_domains
    stop_exports
    remove_network
    rm -rf "$DEMO" "$AGENT_STATE" || PROBLEMS+=("could not remove $DEMO or $AGENT_STATE")
    local problem
    for problem in "${PROBLEMS[@]}"; do
        warn "$problem"
    done
    log "demo stopped and removed"
}

case ${1:-} in
start) start ;;
stop) stop ;;
*) die "usage: $0 start|stop" ;;
esac
