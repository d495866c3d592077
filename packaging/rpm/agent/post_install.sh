# stratuslab-agent: the state directory QEMU must traverse (instance disks, the image cache);
# the unit is enabled on first install, not started. The site CA's certificate is copied from a
# controller to /etc/stratuslab/ca.pem, an administrator's join token to /etc/stratuslab/join-token.
install -d -m 0755 -o root -g root /var/lib/stratuslab
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
    systemctl enable stratus-agent.service >/dev/null 2>&1 || :
fi
exit 0
