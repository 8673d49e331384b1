#!/usr/bin/env bash
# The qemu suite: one real QEMU guest booted by scripts/vm.sh. pvhv serves
# the demo platform; a host process joins vlink vm2-vm3-vogl0 as vm2
# (ivshmem-peer) and guest vm3 runs ivshmem-pci-probe: it finds the
# vlink's ivshmem device by the header in its BAR, rings vm2 through BAR0
# and gets each answer as an MSI-X eventfd (daemon/hv/ivshmem-pci.c), twice
# (the device opens again after a close), and is told clearly that vm3 has
# no device for vm2-vm4-vbpipe0. The guest's command then exits 3, and
# vm.sh must exit 3. Exits 77 where QEMU cannot run (vm.sh --check says why).
#
# usage: test-qemu-guest.sh VM.SH BUILD-DIR PVHV PROBE PEER PLATFORM.dtb
set -uo pipefail

vm_sh=$1 build=$2 pvhv=$3 probe=$4 peer=$5 dtb=$6
link=vm2-vm3-vogl0

"$vm_sh" --build "$build" --check
rc=$?
if [ $rc -ne 0 ]; then
    [ $rc -eq 77 ] && echo "SKIP: no QEMU guest can boot here (vm.sh --check above says why)"
    exit $rc
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qemu-guest.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$pvhv" --config "$dtb" --dir "$tmp/hv" --log-level notice 2>"$tmp/pvhv.log" &
pids+=($!)
sock=$tmp/hv/$link.vm2.sock
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { cat "$tmp/pvhv.log"; fail "pvhv did not listen on $sock within 10 s"; }

"$peer" "$sock" >"$tmp/peer.out" 2>&1 &
peer_pid=$!
pids+=($peer_pid)
for _ in $(seq 100); do grep -q '^ready' "$tmp/peer.out" && break; sleep 0.1; done
grep -q '^ready' "$tmp/peer.out" || { cat "$tmp/peer.out"; fail "ivshmem-peer did not join $link"; }

cat >"$tmp/guest-check" <<EOF
#!/bin/sh
ivshmem-pci-probe $link 200 || exit 1
ivshmem-pci-probe $link 5 || exit 1
if ivshmem-pci-probe vm2-vm4-vbpipe0 1; then echo "found a device vm3 does not have"; exit 1; fi
exit 3
EOF
chmod +x "$tmp/guest-check"

start=$(date +%s.%N)
"$vm_sh" --build "$build" --vm vm3 --config "$dtb" --hv-dir "$tmp/hv" --no-pvd --timeout 240 \
    --add "$probe" --add "$tmp/guest-check" -- guest-check >"$tmp/out" 2>"$tmp/err"
st=$?
end=$(date +%s.%N)
echo "--- guest output (vm.sh exit status $st, $(awk "BEGIN { printf \"%.1f\", $end - $start }") s)"
cat "$tmp/out"
echo "--- vm.sh stderr"
cat "$tmp/err"
kill -TERM "$peer_pid"
wait "$peer_pid"
peer_st=$?
echo "--- host peer"
cat "$tmp/peer.out"

[ $st -eq 3 ] || fail "vm.sh exited $st, the guest's command exited 3 (or failed before)"
grep -q "ivshmem-pci-probe: 200 round trips ok" "$tmp/out" || fail "the first probe did not complete"
grep -q "ivshmem-pci-probe: 5 round trips ok" "$tmp/out" || fail "the device did not open again"
grep -q "199 round trips .*, each ended by MSI-X vector 1" "$tmp/out" || fail "the rounds did not each end by an interrupt"
grep -q "no ivshmem PCI device names vlink vm2-vm4-vbpipe0" "$tmp/out" ||
    fail "a vlink without a device was not refused with its sentence"
[ $peer_st -eq 0 ] || fail "ivshmem-peer exited $peer_st"
n=$(sed -n 's/^answered \([0-9]*\) rings.*/\1/p' "$tmp/peer.out")
[ "${n:-0}" -ge 205 ] || fail "the host peer answered ${n:-0} rings, the probes needed 205"
echo "PASS"
