#!/bin/sh
# User data of the life-cycle tests (tests/tests/power.rs, the Libcloud live tests), run in
# the test appliance at every boot: finds the mark it wrote at the end of its root disk on
# its first boot and prints DISK-KEPT <mark>, or writes one and prints DISK-MARKED <mark>.
size=$(blockdev --getsize64 /dev/vda)
last=$((size / 512 - 1))
found=$(dd if=/dev/vda bs=512 skip=$last count=1 2>/dev/null | head -c 19)
case "$found" in
STRATUS-MARK-*) echo "DISK-KEPT $found" ;;
*)
    mark="STRATUS-MARK-$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    printf '%s' "$mark" | dd of=/dev/vda bs=512 seek=$last count=1 conv=notrunc,sync 2>/dev/null
    sync
    echo "DISK-MARKED $mark"
    ;;
esac
