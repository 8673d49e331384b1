#!/usr/bin/env bash
# The qemu suite: the drivers across the guest boundary, with the same pvd
# and the same programs inside real QEMU guests (scripts/vm.sh --serve) as
# on the host. pvhv serves the demo platform (vm2 serves vOpenGL to vm3,
# vbpipe0 joins vm2 and vm4).
#   a) vm2 a host process, vm3 and vm4 guests: the VRPQ examples (async,
#      sync, callbacks), VUMEM (server on the host, client in the guest),
#      VBPIPE's echo and chat examples both ways, and a 16 MiB checksummed
#      stream each way over vbpipe0 with pvrun cat and dd in the guest;
#   c) SIGKILL of both guests' QEMU while the host's programs are busy with
#      them: the host pvd sees both vlinks OFF within 1 s (pvhv tells it),
#      the host programs get -ECONNRESET (VRPQ), EOF and EPIPE (VBPIPE);
#      the guests boot again, their vlinks come back ON and work;
#   b) all three as guests: the examples between two guests with no host
#      pvd between them; then vm3 as a host process again with vm2 still a
#      guest: VUMEM and VRPQ with the server in the guest and the client on
#      the host.
# Exits 77 where QEMU cannot run (vm.sh --check says why).
#
# usage: test-qemu-guests.sh VM.SH BUILD-DIR PLATFORM.dtb VBPIPE-DUPLEX
set -uo pipefail

vm_sh=$1 build=$2 dtb=$3 duplex=$4
adds=(--add "$(command -v dd)" --add "$(command -v cat)" --add "$duplex")
# Sanitized programs under pvrun: libpvrun (built without sanitizers) is
# preloaded, so the ASan runtime cannot be the first library.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
asan="ASAN_OPTIONS=verify_asan_link_order=0"
. "$(dirname "$0")/qemu-lib.sh"
qlib_init

# --- the examples, between any two VMs (host process or guest) ---

vrpq_examples() {  # SERVER-VM CLIENT-VM
    local s=$1 c=$2 o=$tmp/srv.out
    run_bg "$s" "$o" vrpq-server
    wait_prog "$s" vrpq-server
    run_in "$c" vrpq-client 42 3 >"$tmp/clt.out" 2>&1 || { cat "$tmp/clt.out"; fail "vrpq-client in $c failed"; }
    wait $bgp || { cat "$o"; fail "vrpq-server in $s failed"; }
    expect "$o" "received 44" "vrpq-server in $s did not receive the requests of $c"
    expect "$o" "closed the channel after 3 requests" "vrpq-server in $s did not see 3 requests and the close"

    run_bg "$s" "$o" vrpq-sync server
    wait_prog "$s" vrpq-sync
    run_in "$c" vrpq-sync client 300 >"$tmp/clt.out" 2>&1 || { cat "$tmp/clt.out"; fail "vrpq-sync client in $c failed"; }
    wait $bgp || { cat "$o"; fail "vrpq-sync server in $s failed"; }
    expect "$tmp/clt.out" "300 synchronous calls, every answer right" "vrpq-sync: wrong answers across $s/$c"
    expect "$o" "answered 300 calls" "vrpq-sync server in $s did not answer 300 calls"

    run_bg "$s" "$o" vrpq-callback server
    wait_prog "$s" vrpq-callback
    run_in "$c" vrpq-callback client 4 >"$tmp/clt.out" 2>&1 || { cat "$tmp/clt.out"; fail "vrpq-callback client in $c failed"; }
    wait $bgp || { cat "$o"; fail "vrpq-callback server in $s failed"; }
    expect "$tmp/clt.out" "4 ticks, question answered" "vrpq-callback: the client in $c missed callbacks"
    expect "$o" "sent 4 ticks; the client says it saw 4" "vrpq-callback server in $s"
    echo "VRPQ async, sync and callbacks: server in $s, client in $c: ok"
}

vumem_example() {  # SERVER-VM CLIENT-VM
    local s=$1 c=$2 o=$tmp/srv.out
    run_bg "$s" "$o" vumem-server
    local srv=$bgp
    wait_prog "$s" vumem-server
    run_in "$c" vumem-client >"$tmp/clt.out" 2>&1 || { cat "$tmp/clt.out"; fail "vumem-client in $c failed"; }
    expect "$tmp/clt.out" 'the buffer says "hello from the server VM (640x480)"' \
        "vumem-client in $c did not read what the server in $s wrote in the buffer"
    kill -TERM $srv
    wait $srv || { cat "$o"; fail "vumem-server in $s did not stop cleanly"; }
    expect "$o" 'the client left: "hello from the client VM"' \
        "vumem-server in $s did not read what the client in $c wrote in the buffer"
    echo "VUMEM buffer: server in $s, client in $c, each read what the other wrote: ok"
}

chat() {  # ECHO-VM CHAT-VM SUFFIX: the seed's VBPIPE walkthrough
    local s=$1 c=$2 v=$3 o=$tmp/srv.out
    local pv="env $asan pvrun"
    [ -z "$v" ] || pv="env $asan"
    run_bg "$s" "$o" $pv "vbpipe-echo-server$v"
    run_in "$c" sh -c "printf 'hello from $c\nbye\n' | $pv vbpipe-chat-client$v" >"$tmp/clt.out" 2>&1 ||
        { cat "$tmp/clt.out"; fail "vbpipe-chat-client$v in $c failed"; }
    wait $bgp || { cat "$o"; fail "vbpipe-echo-server$v in $s failed"; }
    [ "$(cat "$tmp/clt.out")" = "$(printf 'hello from %s\nbye' "$c")" ] ||
        { cat "$tmp/clt.out"; fail "the chat client in $c did not get its lines back from $s"; }
    expect "$o" "the client closed after 2 messages" "vbpipe-echo-server$v in $s"
    echo "VBPIPE chat${v:+ ($v)}: echo server in $s, chat client in $c: ok"
}

# A checksummed stream of MIB MiB from FROM to TO over vbpipe0, with
# programs that know nothing of vbpipes, under pvrun.
stream() {  # FROM TO MIB
    local f=$1 t=$2 mib=$3 o=$tmp/recv.out sum_sent sum_got start
    start=$(date +%s%N)
    run_bg "$t" "$o" sh -c "pvrun cat /dev/vbpipe0 | sha256sum"
    run_in "$f" sh -c "head -c $((mib << 20)) /dev/urandom >stream.data && sha256sum <stream.data &&
        pvrun dd if=stream.data of=/dev/vbpipe0 bs=64k 2>/dev/null; st=\$?; rm -f stream.data; exit \$st" \
        >"$tmp/send.out" 2>&1 || { cat "$tmp/send.out"; fail "the writer in $f failed"; }
    wait $bgp || { cat "$o"; fail "the reader in $t failed"; }
    sum_sent=$(cut -d' ' -f1 "$tmp/send.out") sum_got=$(cut -d' ' -f1 "$o")
    [ -n "$sum_sent" ] && [ "$sum_sent" = "$sum_got" ] ||
        fail "$mib MiB from $f to $t: sha256 $sum_sent sent, $sum_got received"
    echo "VBPIPE: $mib MiB from $f to $t, sha256 identical ($(awk -v b=$((mib << 20)) -v ns=$(($(date +%s%N) - start)) \
        'BEGIN { printf "%.1f MiB/s, a figure, not a check", b / 1048576 / (ns / 1e9) }'))"
}

# The xIRQs of host vm2's end of vbpipe0 so far: "SENT SUPPRESSED".
vbpipe_xirqs() {
    run_in vm2 pvctl stat vbpipe --json | tr -d '\n ' |
        sed -n 's/.*"xirq_sent":\([0-9]*\),"xirq_suppressed":\([0-9]*\).*/\1 \2/p'
}

# One-byte round trips between a guest (one CPU) and the host over an
# O_DIRECT end. A program never polls on one CPU for a peer of its own
# kernel, but this peer runs on the host (pvd says VBPIPE_INFO_REMOTE):
# the guest's reads poll the ring for the answer, so most of the host's
# answers find the guest watching and need no xIRQ. Without that poll every
# answer needs one (xirq_sent counts the program's own). The host answers
# each byte 5 ms after it came, so that the guest is surely in its read by
# then: a host that answers at once may beat a TCG guest from its write to
# its read, and the answer then needs an xIRQ however the guest polls. The
# guest may poll up to 100 ms (PVCLIENT_VBPIPE_REMOTE_SPIN_US; 1 ms by
# default, and a guest that finds the host slower than its budget stops
# polling, as it should). This checks that the guest polls, not how fast
# the host answers (bench-guest measures that).
ping_remote() {  # GUEST ROUNDS
    local g=$1 rounds=$2 s0 s1 sent saved
    read -r -a s0 <<<"$(vbpipe_xirqs)"
    run_bg vm2 "$tmp/echo.out" vbpipe-duplex echo /dev/vbpipe0 5000
    run_in "$g" sh -c "PVCLIENT_VBPIPE_REMOTE_SPIN_US=100000 vbpipe-duplex ping $rounds" >"$tmp/ping.out" 2>&1 ||
        { cat "$tmp/ping.out"; fail "vbpipe-duplex ping in $g failed"; }
    wait $bgp || { cat "$tmp/echo.out"; fail "vbpipe-duplex echo in vm2 failed"; }
    expect "$tmp/ping.out" "round trips: $rounds bytes" "vbpipe-duplex ping in $g: not every round trip came back"
    read -r -a s1 <<<"$(vbpipe_xirqs)"
    [ ${#s0[@]} -eq 2 ] && [ ${#s1[@]} -eq 2 ] || fail "pvctl stat vbpipe in vm2 shows no xirq counters"
    sent=$((s1[0] - s0[0])) saved=$((s1[1] - s0[1]))
    [ $((sent * 2)) -lt "$rounds" ] ||
        fail "$rounds round trips with $g: the host's answers needed $sent xIRQs, $saved did not: the guest did not poll"
    echo "VBPIPE: $rounds one-byte round trips with $g over O_DIRECT ends: $saved answers without an xIRQ, $sent with"
}

# --- a) vm2 on the host, vm3 and vm4 guests ---

say "a) vm2 a host process, vm3 and vm4 guests"
host_pvd_start vm2
boot vm3 vm4
run_in vm2 pvctl wait --timeout 30 >/dev/null || fail "the vlinks of host vm2 are not ON with guests vm3 and vm4"
for vm in vm3 vm4; do
    run_in $vm pvctl status >"$tmp/status.out" || { cat "$tmp/status.out"; fail "pvctl status in guest $vm: not all ON"; }
    expect "$tmp/status.out" "face=guest" "pvd in guest $vm does not use the guest face"
done
vrpq_examples vm2 vm3
vumem_example vm2 vm3
chat vm2 vm4 ""
chat vm4 vm2 "-vbpipeopen"
stream vm2 vm4 16
stream vm4 vm2 16
ping_remote vm4 500

# --- c) SIGKILL of the guests' QEMU while host programs use them ---

say "c) SIGKILL of the QEMU of vm3 and vm4"
run_bg vm2 "$tmp/sync.out" vrpq-sync server
sync_srv=$bgp
wait_prog vm2 vrpq-sync
run_bg vm3 "$tmp/sync-clt.out" vrpq-sync client 1000000000
sync_clt=$bgp
run_bg vm2 "$tmp/dup.out" vbpipe-duplex
dup=$bgp
run_bg vm4 "$tmp/dup-guest.out" vbpipe-duplex
dup_guest=$bgp
n=0
until grep -q '^open' "$tmp/dup.out" && run_in vm2 pvctl stat vrpq --json | grep -q '"peer_program"'; do
    n=$((n + 1)); [ $n -lt 300 ] || fail "the programs across vm3 and vm4 did not start within 30 s"
    sleep 0.1
done
sleep 0.5   # calls and bytes flow both ways
left_before=$(grep -c "the peer VM left" "$tmp/vm2.log")
t0=$(date +%s%N)
kill -KILL "$(cat "$tmp/vm3.qemu.pid")" "$(cat "$tmp/vm4.qemu.pid")"
n=0
until [ "$(vlink_state vm2 vm2-vm3-vogl0)" = OFF ] && [ "$(vlink_state vm2 vm2-vm4-vbpipe0)" = OFF ]; do
    n=$((n + 1)); [ $n -lt 200 ] || fail "host vm2 did not see the vlinks of the killed guests OFF"
    sleep 0.01
done
took=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "host vm2 saw both vlinks OFF $took ms after the SIGKILL"
[ $took -le 1000 ] || fail "host vm2 saw the vlinks OFF after $took ms, not within 1 s"
[ "$(grep -c "the peer VM left" "$tmp/vm2.log")" -eq $((left_before + 2)) ] ||
    fail "host vm2 did not learn from pvhv that both guests left"
wait $sync_srv || { cat "$tmp/sync.out"; fail "vrpq-sync server on the host did not end with -ECONNRESET"; }
expect "$tmp/sync.out" "the client closed" "vrpq-sync server on the host"
wait $dup; dst=$?
cat "$tmp/dup.out"
expect "$tmp/dup.out" "then EOF" "vbpipe-duplex on the host did not read EOF"
expect "$tmp/dup.out" "then EPIPE" "vbpipe-duplex on the host did not get EPIPE"
[ $dst -eq 0 ] || fail "vbpipe-duplex on the host exited $dst"
wait $sync_clt; wait $dup_guest
for vm in vm3 vm4; do
    wait "${serve_pid[$vm]}"
    st=$?
    [ $st -eq 125 ] || fail "vm.sh of the killed guest $vm exited $st, not 125"
    unset "serve_pid[$vm]"
done
kill -0 "${host_pid[vm2]}" 2>/dev/null || fail "host pvd vm2 died with its guests"
kill -0 "$pvhv_pid" 2>/dev/null || fail "pvhv died with the guests"
say "c) the killed guests boot again"
boot vm3 vm4
run_in vm2 pvctl wait --timeout 30 >/dev/null || fail "the vlinks of host vm2 did not come back ON"
run_bg vm2 "$tmp/srv.out" vrpq-server
wait_prog vm2 vrpq-server
run_in vm3 vrpq-client 7 2 >/dev/null || fail "vrpq-client in the restarted guest vm3 failed"
wait $bgp && expect "$tmp/srv.out" "closed the channel after 2 requests" "vrpq after the restart"
chat vm2 vm4 ""
poweroff vm3 vm4
host_pvd_stop vm2

# --- b) all three as guests ---

say "b) vm2, vm3 and vm4 guests: no host pvd"
boot vm2 vm3 vm4
vrpq_examples vm2 vm3
vumem_example vm2 vm3
chat vm4 vm2 ""
chat vm2 vm4 "-vbpipeopen"
stream vm2 vm4 4
say "b) vm3 a host process again, vm2 still a guest"
poweroff vm3
host_pvd_start vm3
run_in vm3 pvctl wait --timeout 30 >/dev/null || fail "host vm3's vlink to guest vm2 is not ON"
vumem_example vm2 vm3
vrpq_examples vm2 vm3
poweroff vm2 vm4
host_pvd_stop vm3
kill -TERM "$pvhv_pid"; wait "$pvhv_pid" || fail "pvhv did not stop cleanly"
pvhv_pid=""
say "PASS"
