# stratuslab-controller: on removal (not upgrade), stop and disable the unit.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now stratus-controller.service >/dev/null 2>&1 || :
fi
exit 0
