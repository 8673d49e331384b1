#!/bin/busybox sh
# /init of a guest booted by scripts/vm.sh: mounts what programs need, loads
# the vfio modules, binds every ivshmem device (1af4:1110) to vfio-pci,
# starts pvd --hv ivshmem and waits until its vlinks are ON, then runs the
# command between two marker lines that vm.sh looks for (or a shell), and
# powers off. vm.sh writes /etc/pvd-vm/boot.env and /etc/pvd-vm/cmd.

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

if [ "$HAVE_CMD" = 1 ]; then
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
