#!/usr/bin/env bash
# The figures across the guest boundary: pvhv serves the demo platform, vm2
# is a host process (pvd --hv ivshmem), vm3 and vm4 QEMU guests
# (scripts/vm.sh, KVM where it really works, else TCG) each with a
# virtio-net NIC on QEMU's user network and a forwarded port. bench-guest
# measures, in the same run:
#   VRPQ async posts/s and sync round trip, vm2 <-> guest vm3, beside the
#     same messages over TCP between vm2 and vm3 (16-byte messages, a call
#     answered with 8 bytes; TCP_NODELAY);
#   VBPIPE 64 KiB throughput and 1-byte round trip, vm2 <-> guest vm4
#     (vbpipe0), beside TCP between vm2 and vm4;
# and prints them with the ratios. The guest times, the host answers.
# Under TCG the absolute figures say little (the guest's CPU is emulated,
# every figure is mostly its cost); the ratios are the point.
#
# usage: bench/guests.sh [BUILD-DIR]   (default: build/ of this checkout)
#   POSTS, CALLS, MIB, ECHOES in the environment scale the runs.
set -uo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd) || exit 2
vm_sh=$src/scripts/vm.sh dtb=$build/conf/demo.dtb bg=$build/bench/bench-guest
POSTS=${POSTS:-20000} CALLS=${CALLS:-2000} MIB=${MIB:-32} ECHOES=${ECHOES:-2000}
[ -x "$bg" ] || { echo "bench/guests.sh: no $bg: build with -Dbench=true" >&2; exit 2; }
. "$src/tests/qemu-lib.sh"
qlib_init   # exits 77 where no guest can boot, saying why
accel=$("$vm_sh" --build "$build" --check 2>&1 | sed -n 's/.*, \([A-Z]*\))$/\1/p')

port=$((20000 + $$ % 20000))
host_pvd_start vm2
say "booting guests vm3 and vm4 ($accel)"
adds=(--add "$bg" --tcp-fwd "$port") && boot vm3
adds=(--add "$bg" --tcp-fwd "$((port + 1))") && boot vm4
run_in vm2 pvctl wait --timeout 60 >/dev/null || fail "the vlinks of host vm2 are not ON with guests vm3 and vm4"
figs=$tmp/figures

say "VRPQ: server in host vm2, client in guest vm3"
run_bg vm2 "$tmp/srv.out" "$bg" server vrpq
wait_prog vm2 bench-guest
run_in vm3 bench-guest client vrpq "$POSTS" "$CALLS" >>"$figs" || { cat "$figs"; fail "bench-guest in vm3 (vrpq)"; }
wait $bgp || { cat "$tmp/srv.out"; fail "bench-guest in vm2 (vrpq)"; }

say "TCP: the same messages between host vm2 and guest vm3"
run_bg vm3 "$tmp/clt.out" bench-guest client tcp-listen "$port" "$POSTS" "$CALLS" 0 0
run_in vm2 "$bg" server tcp 127.0.0.1 "$port" || fail "bench-guest in vm2 (tcp to vm3)"
wait $bgp || { cat "$tmp/clt.out"; fail "bench-guest in vm3 (tcp)"; }
cat "$tmp/clt.out" >>"$figs"

say "VBPIPE: vbpipe0 between host vm2 and guest vm4"
run_bg vm2 "$tmp/srv.out" "$bg" server vbpipe
run_in vm4 bench-guest client vbpipe "$MIB" "$ECHOES" >>"$figs" || { cat "$figs"; fail "bench-guest in vm4 (vbpipe)"; }
wait $bgp || { cat "$tmp/srv.out"; fail "bench-guest in vm2 (vbpipe)"; }

say "TCP: the same bytes between host vm2 and guest vm4"
run_bg vm4 "$tmp/clt.out" bench-guest client tcp-listen "$((port + 1))" 0 0 "$MIB" "$ECHOES"
run_in vm2 "$bg" server tcp 127.0.0.1 "$((port + 1))" || fail "bench-guest in vm2 (tcp to vm4)"
wait $bgp || { cat "$tmp/clt.out"; fail "bench-guest in vm4 (tcp)"; }
cat "$tmp/clt.out" >>"$figs"
poweroff vm3 vm4
host_pvd_stop vm2
kill -TERM "$pvhv_pid"; wait "$pvhv_pid"
pvhv_pid=""

fig() { awk -v n="$1" '$1 == "FIG" && $2 == n { print $3 }' "$figs"; }
row() {  # LABEL PVD-FIG TCP-FIG UNIT TARGET: ratio pvd/tcp
    local p t
    p=$(fig "$2") t=$(fig "$3")
    awk -v l="$1" -v p="$p" -v t="$t" -v u="$4" -v g="$5" \
        'BEGIN { printf "%-30s %12s %12s %-8s %8.2fx   %s\n", l, p, t, u, (t > 0 ? p / t : 0), g }'
}
echo
echo "Across the guest boundary: host-process vm2 <-> QEMU guest ($accel), pvd vs TCP over virtio-net"
printf "%-30s %12s %12s %-8s %9s   %s\n" "figure" "pvd" "TCP" "unit" "pvd/TCP" "target"
row "VRPQ async posts (vm3)" vrpq_posts tcp_posts posts/s ""
row "VRPQ sync round trip (vm3)" vrpq_call tcp_call us "<= 0.5x"
row "VBPIPE 64 KiB writes (vm4)" vbpipe_64k tcp_64k MiB/s ">= 5x"
row "VBPIPE 1-byte round trip (vm4)" vbpipe_1b tcp_1b us "<= 0.5x"
echo "($POSTS posts, $CALLS calls, $MIB MiB, $ECHOES round trips; the guest times, the host answers)"
