# stratuslab-controller: after an upgrade, restart the controller if it runs. The Raft store
# under /var/lib/stratuslab/controller and the stratuslab user are kept on removal.
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 1 ]; then
    systemctl try-restart stratus-controller.service >/dev/null 2>&1 || :
fi
exit 0
