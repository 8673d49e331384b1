#!/usr/bin/env bash
# The demo across a real guest boundary (run by scripts/demo.sh with $B, the
# build directory, and $DEMO, a directory of its own to use): pvhv serves
# the demo platform, vm2 is a host process (pvd --hv ivshmem), vm3 a QEMU
# guest booted by scripts/vm.sh running the same pvd; pvctl status on both
# sides, then the VRPQ walkthrough and the VUMEM example with the server on
# the host and the client in the guest. Where QEMU cannot run, one line
# says why and the part is skipped.
set -euo pipefail
: "${B:?build directory}" "${DEMO:?platform directory}"

vm_sh=$(dirname "$0")/vm.sh
ex=$B/examples
d=$DEMO/guests
echo
if ! why=$("$vm_sh" --build "$B" --check 2>&1); then
    echo "==> QEMU guests: skipped: ${why#vm.sh: }"
    exit 0
fi
echo "==> QEMU guests: pvhv, vm2 a host process, vm3 a QEMU guest (${why##*, }"
mkdir -p "$d"
pids=()
cleanup() {
    [ ! -f "$d/g/ready" ] || "$vm_sh" --poweroff "$d/g" >/dev/null 2>&1 || true
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

"$B/daemon/pvhv/pvhv" --config "$B/conf/demo.dtb" --dir "$d/hv" --log-level notice 2>>"$d/pvhv.log" &
pids+=($!)
n=0
until [ -S "$d/hv/vm2-vm3-vogl0.vm2.sock" ]; do
    n=$((n + 1)); [ $n -lt 100 ] || { echo "demo: pvhv did not listen; its log:" >&2; cat "$d/pvhv.log" >&2; exit 1; }
    sleep 0.1
done
"$B/daemon/pvd" --config "$B/conf/demo.dtb" --vm vm2 --runtime-dir "$d/vm2" --hv ivshmem \
    --ivshmem-dir "$d/hv" --log-level info 2>>"$d/vm2.log" &
pids+=($!)
"$vm_sh" --build "$B" --vm vm3 --config "$B/conf/demo.dtb" --hv-dir "$d/hv" --serve "$d/g" \
    --log "$d/vm3-console.log" >>"$d/vm3-vmsh.log" 2>&1 &
pids+=($!)
in_guest() { "$vm_sh" --in "$d/g" --timeout 120 -- "$@"; }
# Until program NAME is connected to host vm2's pvd (30 s at most).
wait_prog() {
    local n=0
    # pvctl status exits 3 while vm4's vlink is down: its output is what counts.
    until { "$B/client/pvctl" --runtime-dir "$d/vm2" status --json || true; } | grep -q "\"comm\": \"$1\""; do
        n=$((n + 1))
        [ $n -lt 300 ] || { echo "demo: $1 did not connect to vm2's pvd; its log:" >&2; tail "$d/vm2.log" >&2; exit 1; }
        sleep 0.1
    done
}
in_guest true || { echo "demo: guest vm3 did not come up; its console:" >&2; tail -n 20 "$d/vm3-console.log" >&2; exit 1; }

echo
echo "==> pvctl status in host vm2 (vm4 is not started: its vlink waits)"
"$B/client/pvctl" --runtime-dir "$d/vm2" status || true   # exit 3: not every vlink is ON
echo
echo "==> pvctl status in guest vm3"
in_guest pvctl status

echo
echo "==> VRPQ: vrpq-server in host vm2, vrpq-client in guest vm3"
PVD_RUNTIME_DIR=$d/vm2 "$ex/vrpq-server" >"$d/srv.out" 2>&1 & srv=$!
wait_prog vrpq-server
in_guest vrpq-client 42 3
wait $srv
cat "$d/srv.out"

echo
echo "==> VUMEM: vumem-server in host vm2, vumem-client in guest vm3"
PVD_RUNTIME_DIR=$d/vm2 "$ex/vumem-server" >"$d/srv.out" 2>&1 & srv=$!
wait_prog vumem-server
in_guest vumem-client
kill -TERM $srv
wait $srv
cat "$d/srv.out"

echo
echo "==> powering guest vm3 off"
"$vm_sh" --poweroff "$d/g"
