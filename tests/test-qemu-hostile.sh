#!/usr/bin/env bash
# The qemu suite: a hostile guest. vm2 is a host process (pvd --hv
# ivshmem on pvhv), vm3 a QEMU guest holding ivshmem-hostile-guest:
#   a) beside the guest's own pvd, it maps BAR2 through sysfs and scribbles
#      both sides' areas, the regions and pvhv's header for 3 s;
#   b) with the guest's pvd stopped, it takes the device through VFIO and
#      plays a lying pvd: a doorbell storm through BAR0, a grant outside its
#      heap, no heartbeat while ON, a generation it was not offered,
#      scribbles; it checks itself that the host's pvd leaves the generation
#      after each lie and offers a fresh one.
# After each part: the host's pvd and pvhv still run, the vlink is ON again
# (with the guest's honest pvd), and the seed's VRPQ and VUMEM examples run
# across it.
# Exits 77 where QEMU cannot run (vm.sh --check says why).
#
# usage: test-qemu-hostile.sh VM.SH BUILD-DIR PLATFORM.dtb HOSTILE-GUEST
set -uo pipefail

vm_sh=$1 build=$2 dtb=$3 hostile=$4
adds=(--add "$hostile")
link=vm2-vm3-vogl0
. "$(dirname "$0")/qemu-lib.sh"
qlib_init

alive() {  # WHEN: the host's pvd and pvhv still run
    kill -0 "${host_pid[vm2]}" 2>/dev/null || fail "the host's pvd vm2 died $1"
    kill -0 "$pvhv_pid" 2>/dev/null || fail "pvhv died $1"
}

wait_on() {  # VM WHEN: VM's pvd sees $link ON within 30 s
    if is_guest "$1"; then
        run_in "$1" pvctl wait --timeout 30 >/dev/null || fail "$1 does not see $link ON $2"
        return
    fi
    local end=$((SECONDS + 30))
    until [ "$(vlink_state "$1" $link)" = ON ]; do
        [ $SECONDS -lt $end ] || fail "$1 does not see $link ON $2"
        sleep 0.1
    done
}

honest() {  # WHEN: the seed's VRPQ and VUMEM examples across $link
    run_bg vm2 "$tmp/srv.out" vrpq-server
    wait_prog vm2 vrpq-server
    run_in vm3 vrpq-client 42 3 >"$tmp/clt.out" 2>&1 || { cat "$tmp/clt.out"; fail "vrpq-client in vm3 failed $1"; }
    wait $bgp || { cat "$tmp/srv.out"; fail "vrpq-server in vm2 failed $1"; }
    expect "$tmp/srv.out" "closed the channel after 3 requests" "vrpq-server did not see 3 requests $1"
    run_bg vm2 "$tmp/srv.out" vumem-server
    local srv=$bgp
    wait_prog vm2 vumem-server
    run_in vm3 vumem-client >"$tmp/clt.out" 2>&1 || { cat "$tmp/clt.out"; fail "vumem-client in vm3 failed $1"; }
    expect "$tmp/clt.out" 'the buffer says "hello from the server VM' "vumem-client did not read the buffer $1"
    kill -TERM $srv
    local st=0
    wait $srv || st=$?
    [ $st -eq 0 ] || { cat "$tmp/srv.out"; fail "vumem-server did not stop cleanly $1 (exit status $st)"; }
    echo "honest VRPQ and VUMEM examples across $link $1: ok"
}

stop_guest_pvd() {
    # Stopped is a zombie: the guest's init reaps only when it powers off.
    run_in vm3 sh -c "p=\$(pidof pvd); kill -TERM \$p; n=0; while ! grep -q '^State:.*Z' /proc/\$p/status 2>/dev/null &&
        [ -e /proc/\$p ]; do
        n=\$((n + 1)); [ \$n -lt 300 ] || { cat /proc/\$p/wchan /proc/\$p/status; exit 1; }; sleep 0.1; done" ||
        fail "the guest's pvd did not stop within 30 s of SIGTERM"
}

guest_pvd='pvd --hv ivshmem --vm vm3 --config /etc/pvd/platform.dtb --runtime-dir /run/pvd/vm3'

host_pvd_start vm2
boot vm3
wait_on vm2 "with guest vm3 booted"
honest "before the hostile guest"

say "a) the guest scribbles BAR2 beside its own pvd"
run_in vm3 ivshmem-hostile-guest $link scribble 3 >"$tmp/h.out" 2>&1 || { cat "$tmp/h.out"; fail "the scribbler failed"; }
cat "$tmp/h.out"
alive "while the guest scribbled"
run_in vm3 sh -c "grep -q '^State:.*[RS]' /proc/\$(pidof pvd)/status" ||
    fail "the guest's own pvd died of the scribbles in its BAR"
# Each pvd reset the vlink on what it read; pvhv writes its header again;
# the vlink comes back ON by itself.
wait_on vm3 "after the scribbles"
wait_on vm2 "after the scribbles"
alive "after the scribbles"
honest "after the scribbles"

say "b) the guest's pvd stops and the guest lies in its place"
resets_before=$(grep -c "resetting the link\|left the link\|no heartbeat\|outside its heap\|in a storm" "$tmp/vm2.log")
stop_guest_pvd
run_in vm3 ivshmem-hostile-guest $link lies >"$tmp/h.out" 2>&1
st=$?
cat "$tmp/h.out"
[ $st -eq 0 ] || fail "the lying guest says a lie did not reset $link or it did not come back (exit $st)"
alive "while the guest lied"
expect "$tmp/vm2.log" "outside its heap" "the host's pvd did not name the grant outside the heap"
expect "$tmp/vm2.log" "no heartbeat" "the host's pvd did not name the missing heartbeat"
resets=$(grep -c "resetting the link\|left the link\|no heartbeat\|outside its heap\|in a storm" "$tmp/vm2.log")
echo "the host's pvd logged $((resets - resets_before)) resets of $link caused by the lying guest:"
grep "resetting the link\|left the link\|no heartbeat\|outside its heap\|in a storm" "$tmp/vm2.log" | tail -n +$((resets_before + 1))
say "b) the guest's honest pvd again"
run_in vm3 sh -c "setsid $guest_pvd </dev/null >/dev/null 2>>/var/log/pvd.log & pvctl wait --timeout 60" >/dev/null ||
    fail "the guest's pvd did not bring $link back ON after the lies"
wait_on vm2 "after the lies"
honest "after the lies"
alive "at the end"

poweroff vm3
host_pvd_stop vm2
kill -TERM "$pvhv_pid"; wait "$pvhv_pid" || fail "pvhv did not stop cleanly"
pvhv_pid=""
say "PASS"
