# shellcheck shell=bash
# Every program the code, tests, scripts, demo and benchmarks run, each with the Debian package
# that provides it. scripts/install-deps.sh installs every package named here (and its quick
# "everything is present" path checks each command, not only the packages); make test runs
# scripts/check-tools.py, which fails when the repository runs a program that is not listed here
# and is not part of the base system (an Essential or required package) or the Rust toolchain.
# A package that provides no command we run (a library, a driver) has "-" as its command.
# The qemu packages (qemu-system-x86, qemu-system-common, qemu-utils) are pinned to one version
# by install-deps.sh (see there).
#
# Sourced by install-deps.sh and read by check-tools.py: the table is the value of TOOLS, one
# program a line; the rest of a line after its package says who runs it (no quotes in it).
# shellcheck disable=SC2034
TOOLS='
# command               package                      who runs it
-                       libvirt-daemon-system        libvirt configuration, groups and default storage
libvirtd                libvirt-daemon               install-deps.sh starts it; the hypervisor of the agent
virtlogd                libvirt-daemon               install-deps.sh starts it (console logs of qemu)
-                       libvirt-daemon-driver-qemu   the qemu:///system driver of libvirtd
virsh                   libvirt-clients              tests, demo, benchmarks, appliance checks
-                       libvirt-dev                  the virt crate links libvirt
pkg-config              pkgconf                      the build script of the virt crate
qemu-system-x86_64      qemu-system-x86              libvirt runs it for every guest
qemu-img                qemu-utils                   tests, benchmarks, appliance/build.sh
qemu-io                 qemu-utils                   agent tests (writes through NBD exports)
qemu-storage-daemon     qemu-system-common           the agent (NBD exports of volumes)
strip                   binutils                     packaging/build.sh --test-build (the dev build, stripped)
qemu-nbd                qemu-utils                   tests (lists NBD exports)
busybox                 busybox-static               appliance/build.sh (the userland of the guest)
cpio                    cpio                         appliance/build.sh (initramfs)
mke2fs                  e2fsprogs                    appliance/build.sh (the appliance disk)
chattr                  e2fsprogs                    agent tests (an undeletable file)
xz                      xz-utils                     appliance/build.sh, image tests
zstd                    zstd                         image tests
bzip2                   bzip2                        image tests (an unsupported compression)
pgrep                   procps                       install-deps.sh
kill                    procps                       agent tests (stop a process by its pid)
sysctl                  procps                       appliance/check-network.sh
flock                   util-linux                   appliance/build.sh
losetup                 mount                        appliance checks
ip                      iproute2                     network tests, benchmarks, demo
bridge                  iproute2                     network tests
nft                     nftables                     the agent (anti-spoofing rules), tests
genisoimage             genisoimage                  appliance checks (cloud-init NoCloud ISO of their guests)
isoinfo                 genisoimage                  agent tests (read the cidata ISO the agent writes)
ssh                     openssh-client               network tests (log into a guest)
ssh-keygen              openssh-client               network tests, appliance checks
ping                    iputils-ping                 network tests, appliance checks
openssl                 openssl                      CLI tests (a PKCS#12 file)
curl                    curl                         demo.sh
shfmt                   shfmt                        check-tools.py (parses the shell scripts)
python3                 python3                      check-tools.py, scripts/libcloud.sh (the virtualenv of the driver)
-                       python3-venv                 scripts/libcloud.sh (python3 -m venv, with pip)
make                    make                         .ci/run, the commands of README
gzip                    gzip                         packaging/build.sh (man pages)
lintian                 lintian                      packaging/test.sh (the .deb files)
rpm                     rpm                          packaging/test.sh (rpm -K, rpm -qp of the .rpm files)
rpmlint                 rpmlint                      packaging/test.sh (the .rpm files)
systemd-analyze         systemd                      packaging/test.sh (verify and security of the units)
systemctl               systemd                      the RPM scriptlets (packaging/rpm), on the hosts installing them
adduser                 adduser                      the postinst of stratuslab-controller (the stratuslab user)
man                     man-db                       packaging/test.sh (the installed man pages)
setpriv                 util-linux                   packaging/test.sh (a daemon as the User= of its unit)
userdel                 passwd                       packaging/test.sh (removes the user the packages made)
groupdel                passwd                       packaging/test.sh
dpkg-deb                dpkg                         packaging/test.sh
prometheus              prometheus                   tests/tests/metrics.rs (scrapes a controller)
chromium                chromium                     tests/tests/dashboard.rs (the dashboard in a real browser)
chromedriver            chromium-driver              tests/tests/dashboard.rs (WebDriver)
certutil                libnss3-tools                tests/tests/dashboard.rs (the browser trusts the site CA)
'
