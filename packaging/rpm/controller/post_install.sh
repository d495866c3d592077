# stratuslab-controller: its state directory (where a new cluster's first controller makes the
# site CA); the unit is enabled on first install, not started.
install -d -m 0755 -o root -g root /var/lib/stratuslab
install -d -m 0700 -o stratuslab -g stratuslab /var/lib/stratuslab/controller
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
    systemctl enable stratus-controller.service >/dev/null 2>&1 || :
fi
exit 0
