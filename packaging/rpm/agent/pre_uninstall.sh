# stratuslab-agent: on removal (not upgrade), stop and disable the unit (guests keep running:
# they belong to libvirtd).
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now stratus-agent.service >/dev/null 2>&1 || :
fi
exit 0
