# stratuslab-agent: after an upgrade, restart the agent if it runs (guests keep running).
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 1 ]; then
    systemctl try-restart stratus-agent.service >/dev/null 2>&1 || :
fi
exit 0
