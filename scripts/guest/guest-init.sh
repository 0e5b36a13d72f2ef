#!/bin/sh
# /init of virtwire's test guest (built into the initramfs by scripts/guest/build.sh).
#
# Kernel command line parameters:
#   vw.ip=ADDR/PLEN   configure eth0 with this address (optional)
#   vw.mac=MAC        set eth0's MAC (optional; QEMU's device mac= is the usual way)
#   vw.mtu=N          set eth0's MTU (optional)
#   vw.queues=N       ethtool -L eth0 combined N when N > 1 (optional)
#   vw.name=NAME      hostname (optional)
#   vw.cmd=BASE64     the test script; without it /test.sh is run when present (e.g. from
#                     a second cpio archive appended to the initramfs)
# Console protocol (serial): `VW-READY ...` once eth0 is configured, the test script's
# output, then `VW-EXIT <status>` on a line of its own; then the guest powers off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root

mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null

finish() {
    echo
    echo "VW-EXIT $1"
    sync
    poweroff -f
    sleep 2
    reboot -f
    # Still alive: let the kernel panic (QEMU runs with -no-reboot and panic=-1).
    exit "$1"
}

vw_ip=
vw_mac=
vw_mtu=
vw_queues=
vw_cmd=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    vw.ip=*) vw_ip="${arg#vw.ip=}" ;;
    vw.mac=*) vw_mac="${arg#vw.mac=}" ;;
    vw.mtu=*) vw_mtu="${arg#vw.mtu=}" ;;
    vw.queues=*) vw_queues="${arg#vw.queues=}" ;;
    vw.name=*) hostname "${arg#vw.name=}" ;;
    vw.cmd=*) vw_cmd="${arg#vw.cmd=}" ;;
    esac
done

while read -r mod; do
    insmod "$mod" || echo "VW-INIT: insmod $mod failed"
done </etc/modules.order

ip link set lo up

i=0
while [ ! -e /sys/class/net/eth0 ]; do
    i=$((i + 1))
    if [ "$i" -gt 200 ]; then
        echo "VW-INIT: eth0 did not appear"
        ls /sys/bus/virtio/devices/ 2>&1
        finish 125
    fi
    usleep 50000
done

[ -n "$vw_mac" ] && ip link set eth0 address "$vw_mac"
[ -n "$vw_mtu" ] && ip link set eth0 mtu "$vw_mtu"
if [ -n "$vw_queues" ] && [ "$vw_queues" -gt 1 ]; then
    ethtool -L eth0 combined "$vw_queues" || echo "VW-INIT: ethtool -L eth0 combined $vw_queues failed"
fi
[ -n "$vw_ip" ] && ip addr add "$vw_ip" dev eth0
ip link set eth0 up

if [ -n "$vw_cmd" ]; then
    echo "$vw_cmd" | base64 -d >/test.sh || finish 126
fi

# Kernel messages no longer interleave with the script's output from here on.
dmesg -n 1
read -r up _ </proc/uptime
echo "VW-READY uptime=$up kernel=$(uname -r) mac=$(cat /sys/class/net/eth0/address)"

status=0
if [ -f /test.sh ]; then
    cd /tmp || true
    sh /test.sh </dev/null
    status=$?
    cd / || true
fi
finish "$status"
