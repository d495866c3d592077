# stratuslab-controller: its state directory and the agents' shared token (which the controller
# only reads: its unit keeps /etc read-only); the unit is enabled on first install, not started.
install -d -m 0755 -o root -g root /var/lib/stratuslab
install -d -m 0700 -o stratuslab -g stratuslab /var/lib/stratuslab/controller
if [ ! -e /etc/stratuslab/agent-token ]; then
    (
        umask 077
        token=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)
        printf '%s\n' "$token" >/etc/stratuslab/agent-token.new
        chown root:stratuslab /etc/stratuslab/agent-token.new
        chmod 0640 /etc/stratuslab/agent-token.new
        mv /etc/stratuslab/agent-token.new /etc/stratuslab/agent-token
    )
fi
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
    systemctl enable stratus-controller.service >/dev/null 2>&1 || :
fi
exit 0
