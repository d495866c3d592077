# stratuslab-controller: the system user the controller runs as.
getent group stratuslab >/dev/null || groupadd -r stratuslab
getent passwd stratuslab >/dev/null ||
    useradd -r -g stratuslab -d /var/lib/stratuslab/controller -M -s /sbin/nologin \
        -c "StratusLab controller" stratuslab
exit 0
