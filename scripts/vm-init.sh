#!/bin/busybox sh
# /init of a guest booted by scripts/vm.sh: mounts what programs need, loads
# the vfio modules, binds every ivshmem device (1af4:1110) to vfio-pci,
# brings up the network if vm.sh gave it one, starts pvd --hv ivshmem and
# waits until its vlinks are ON, then runs the command between two marker
# lines that vm.sh looks for (or a shell, or serves commands that come on
# the second serial port: vm.sh --serve), and powers off. vm.sh writes
# /etc/pvd-vm/boot.env and /etc/pvd-vm/cmd.

/bin/busybox --install -s
export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
# Only emergencies from the kernel from here on: the console is the
# command's output.
echo 1 >/proc/sys/kernel/printk
mkdir -p /dev/pts /dev/shm /run/pvd
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm

off() {
        sync
        poweroff -f
        sleep 5
        exit 1
}

# vm.sh's trial of an accelerator: the guest came up, that is all.
if grep -qw pvdvm.trial /proc/cmdline; then
        echo "pvd-vm: trial boot ok"
        off
fi

. /etc/pvd-vm/boot.env
hostname "$VM"
export HOME=/root PVD_VM="$VM" PVD_RUNTIME_DIR=/run/pvd PVRUN_LIBRARY=/usr/lib/pvd/libpvrun.so

fail() {
        echo "PVDVM-$TOKEN FAIL $*"
        off
}

for ko in /lib/modules/pvd-vm/*.ko; do
        insmod "$ko" || fail "insmod ${ko##*/} failed"
done
ip link set lo up

# vm.sh --tcp-fwd: QEMU's user network on a virtio-net NIC, at the address
# its DHCP would give (10.0.2.15), without waiting for DHCP.
if [ "${NET:-0}" = 1 ]; then
        for ko in /lib/modules/pvd-vm/net/*.ko; do
                insmod "$ko" || fail "insmod ${ko##*/} failed"
        done
        n=0
        until [ -e /sys/class/net/eth0 ]; do
                n=$((n + 1))
                [ $n -lt 100 ] || fail "no eth0 after loading virtio_net"
                sleep 0.1
        done
        ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 ||
                fail "cannot configure eth0"
fi

# Every ivshmem device to vfio-pci: its MSI-X vectors then reach user space
# as eventfds (uio_pci_generic gives none; see QEMU-NOTES).
echo "1af4 1110" >/sys/bus/pci/drivers/vfio-pci/new_id || fail "cannot give ivshmem devices to vfio-pci"
for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ] || continue
        drv=$(readlink "$d/driver" 2>/dev/null)
        [ "${drv##*/}" = vfio-pci ] ||
                fail "ivshmem device ${d##*/} is not bound to vfio-pci (no IOMMU group? the guest needs -M q35 -device intel-iommu and intel_iommu=on)"
done

# True when pvd answers and each of its vlinks is ON.
links_on() {
        j=$(pvctl status --json 2>/dev/null) || return 1
        all=$(echo "$j" | grep -o '"state": *"[A-Z]*"' | wc -l)
        on=$(echo "$j" | grep -o '"state": *"ON"' | wc -l)
        [ "$all" -gt 0 ] && [ "$all" = "$on" ]
}

pvd_pid=""
if [ "$NO_PVD" != 1 ]; then
        pvd --hv ivshmem --vm "$VM" --config /etc/pvd/platform.dtb --runtime-dir "/run/pvd/$VM" \
                2>/var/log/pvd.log &
        pvd_pid=$!
        n=0
        until links_on; do
                if ! kill -0 "$pvd_pid" 2>/dev/null; then
                        tail -n 20 /var/log/pvd.log
                        fail "pvd exited before its vlinks were ON (its log is above)"
                fi
                n=$((n + 1))
                if [ $n -ge "${LINK_WAIT:-600}" ]; then
                        pvctl status
                        tail -n 20 /var/log/pvd.log
                        fail "the vlinks of $VM were not all ON after $((n / 10)) s"
                fi
                sleep 0.1
        done
fi

# vm.sh --serve: commands come on the second serial port (the host's FIFO
# pair) as lines "RUN ID BASE64-SCRIPT", "KILL ID SIGNAL" and "OFF". Each
# command runs in the background in a session of its own (so that KILL
# reaches all it started), its output in a file; when it ends, its output
# (base64) and status go back between marker lines, one command at a time.
ctl=/dev/ttyS1
spool=/run/pvd-vm
run_one() {  # ID BASE64-SCRIPT
        echo "$2" | base64 -d >$spool/$1.cmd
        (cd /root && exec setsid sh $spool/$1.cmd) </dev/null >$spool/$1.out 2>&1 &
        echo $! >$spool/$1.pid
        wait $!
        st=$?
        until mkdir $spool/lock 2>/dev/null; do usleep 20000; done
        { echo "PVDVM-$TOKEN OUT $1"; base64 $spool/$1.out; echo "PVDVM-$TOKEN END $1 $st"; } >$ctl
        rmdir $spool/lock
        rm -f $spool/$1.cmd $spool/$1.out $spool/$1.pid
}
serve() {
        mkdir -p $spool
        exec 3<>$ctl || fail "no second serial port ($ctl) for vm.sh --serve"
        stty raw -echo <&3 || fail "cannot set $ctl raw"
        echo "PVDVM-$TOKEN READY"
        while read -r kind id arg <&3; do
                case $id in *[!A-Za-z0-9]*) continue ;; esac
                case $kind in
                RUN) run_one "$id" "$arg" & ;;
                KILL) p=$(cat $spool/$id.pid 2>/dev/null) && kill -"$arg" -"$p" 2>/dev/null ;;
                OFF) break ;;
                esac
        done
        exec 3<&-
        echo "PVDVM-$TOKEN END 0"
}

if [ "${SERVE:-0}" = 1 ]; then
        serve
elif [ "$HAVE_CMD" = 1 ]; then
        # Output bytes as the command wrote them (no CR added before LF).
        stty -onlcr 2>/dev/null
        echo "PVDVM-$TOKEN BEGIN"
        (cd /root && sh /etc/pvd-vm/cmd </dev/null)
        echo "PVDVM-$TOKEN END $?"
else
        echo "pvd-vm: $VM is up; leave the shell to power off"
        setsid cttyhack sh -l
fi

if [ -n "$pvd_pid" ]; then
        kill -TERM "$pvd_pid" 2>/dev/null
        n=0
        while kill -0 "$pvd_pid" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
fi
off
