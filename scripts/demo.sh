#!/usr/bin/env bash
# The all-in-one demo cloud: a single-node controller and a local agent on this host, the test
# appliance registered as the image `appliance`, and one instance run through the CLI.
#
#   scripts/demo.sh start   (make demo)   idempotent: a running demo is left as it is
#   scripts/demo.sh stop    (make stop)   kills the demo's instances, stops both daemons and
#                                         removes every file the demo made
#
# Files: build/demo/ (configs, Raft store, logs, pids, secrets) and /var/lib/stratuslab-demo/
# (instance disks and console logs, and a copy of the appliance qemu can read).
set -euo pipefail

readonly ROOT=$(cd "$(dirname "$0")/.." && pwd)
readonly DEMO=$ROOT/build/demo
readonly AGENT_STATE=/var/lib/stratuslab-demo
readonly PORT=${STRATUS_DEMO_PORT:-8440}
readonly ENDPOINT=127.0.0.1:$PORT
readonly BIN=${STRATUS_BIN_DIR:-$ROOT/target/release}
readonly APPLIANCE=$ROOT/build/appliance
readonly BANNER=STRATUSLAB-APPLIANCE-READY

log() { printf ':: %s\n' "$*"; }
die() { printf '[ERROR] %s\n' "$*" >&2; exit 1; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

admin_password() { cat "$DEMO/admin-password"; }

api() { # METHOD PATH [JSON]
    local args=(-sS -u "admin:$(admin_password)" -X "$1" "http://$ENDPOINT/api/v1$2")
    [[ $# -ge 3 ]] && args+=(-H 'content-type: application/json' -d "$3")
    curl "${args[@]}"
}

cli() { # stratus-NAME args..., configured through the demo's config file
    STRATUSLAB_CONFIG=$DEMO/stratuslab-user.cfg "$DEMO/bin/stratus-$1" "${@:2}"
}

wait_for() { # SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out waiting for $what"
        sleep 0.2
    done
}

write_configs() {
    mkdir -p "$DEMO/bin" "$AGENT_STATE/images"
    chmod 0755 "$AGENT_STATE" "$AGENT_STATE/images"
    cat >"$DEMO/controller.toml" <<EOF
listen = "$ENDPOINT"
state_dir = "$DEMO/controller"
agent_token_file = "$DEMO/agent-token"
admin_password_file = "$DEMO/admin-password"
EOF
    cat >"$DEMO/agent.toml" <<EOF
controller = "http://$ENDPOINT"
token_file = "$DEMO/agent-token"
state_dir = "$AGENT_STATE"
domain_type = "auto"
file_location_roots = ["$AGENT_STATE/images"]
probe_kernel = "$AGENT_STATE/images/appliance/vmlinuz"
probe_initrd = "$AGENT_STATE/images/appliance/initrd.img"
EOF
    for name in run-instance describe-instance kill-instance copy-config \
        create-volume describe-volumes update-volume delete-volume attach-volume detach-volume; do
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

write_user_config() {
    cat >"$DEMO/stratuslab-user.cfg" <<EOF
[default]
endpoint = $ENDPOINT
username = admin
password = $(admin_password)
EOF
    chmod 0600 "$DEMO/stratuslab-user.cfg"
}

start_daemons() {
    if ! alive "$DEMO/controller.pid"; then
        log "starting the controller on $ENDPOINT"
        nohup "$BIN/stratus-controller" --config "$DEMO/controller.toml" >>"$DEMO/controller.log" 2>&1 &
        echo $! >"$DEMO/controller.pid"
        wait_for 20 "the controller" test -s "$DEMO/admin-password"
        wait_for 20 "the controller's API" curl -fsS -u "admin:$(admin_password)" "http://$ENDPOINT/api/v1/cluster"
    fi
    write_user_config
    api GET /cluster | sed -n 's/.*"cluster_id":"\([^"]*\)".*/\1/p' >"$DEMO/cluster-id"
    if ! alive "$DEMO/agent.pid"; then
        log "starting the agent (domain type probe: up to a minute the first time)"
        nohup "$BIN/stratus-agent" --config "$DEMO/agent.toml" >>"$DEMO/agent.log" 2>&1 &
        echo $! >"$DEMO/agent.pid"
        wait_for 120 "the agent to register" bash -c \
            "curl -fsS -u admin:$(admin_password) http://$ENDPOINT/api/v1/hosts | grep -q '\"status\":\"up\"'"
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
    wait_for 120 "instance $id to be Running" bash -c "curl -fsS -u admin:$(admin_password) http://$ENDPOINT/api/v1/instances/$id | grep -q '\"state\":\"Running\"'"
    wait_for 120 "the banner of instance $id" grep -q "$BANNER" "$AGENT_STATE/instances/$id/console.log"
    log "instance $id is Running:"
    cli describe-instance "$id"
    log "its console says: $(grep "$BANNER" "$AGENT_STATE/instances/$id/console.log" | tr -d '\r')"
    cat <<EOF

The demo cloud is running. Try:
  export STRATUSLAB_CONFIG=$DEMO/stratuslab-user.cfg PATH=$DEMO/bin:\$PATH
  stratus-run-instance appliance -t t1.micro
  stratus-describe-instance
  stratus-kill-instance $id
  curl -u admin:\$(cat $DEMO/admin-password) http://$ENDPOINT/api/v1/hosts
  tail -f $AGENT_STATE/instances/$id/console.log
Logs: $DEMO/controller.log $DEMO/agent.log
Stop it all with: make stop
EOF
}

stop() {
    if alive "$DEMO/controller.pid" && alive "$DEMO/agent.pid"; then
        local ids
        ids=$(api GET /instances | grep -o '"id":[0-9]*,[^}]*"state":"\(Pending\|Booting\|Running\|Stopping\)"' | sed 's/"id":\([0-9]*\).*/\1/' || true)
        for id in $ids; do
            log "killing instance $id"
            api DELETE "/instances/$id" >/dev/null || true
        done
        for id in $ids; do
            wait_for 60 "instance $id to be Done" bash -c "curl -fsS -u admin:$(admin_password) http://$ENDPOINT/api/v1/instances/$id | grep -q '\"state\":\"\(Done\|Failed\)\"'"
        done
    fi
    for daemon in agent controller; do
        if alive "$DEMO/$daemon.pid"; then
            log "stopping the $daemon"
            kill "$(cat "$DEMO/$daemon.pid")"
            wait_for 30 "the $daemon to stop" bash -c "! kill -0 $(cat "$DEMO/$daemon.pid")"
        fi
    done
    # Domains the demo cloud made and could not kill through the API (e.g. the controller was
    # already gone): they carry the demo cluster's ID in their name.
    if [[ -f $DEMO/cluster-id ]]; then
        local prefix domain
        prefix="stratus-$(cut -c1-8 "$DEMO/cluster-id")-"
        for domain in $(virsh -c qemu:///system list --name | grep "^$prefix" || true); do
            log "destroying leftover domain $domain"
            virsh -c qemu:///system destroy "$domain" >/dev/null || true
        done
    fi
    rm -rf "$DEMO" "$AGENT_STATE"
    log "demo stopped and removed"
}

case ${1:-} in
start) start ;;
stop) stop ;;
*) die "usage: $0 start|stop" ;;
esac
