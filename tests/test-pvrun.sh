#!/usr/bin/env bash
# pvrun across two real pvds (conf/test-2clients.dts: vbpipe0 and vbpipe1
# between vm2 and vm4): programs that know nothing of vbpipes -- cat, dd, a
# shell's < and > redirections, a test program using fortified open/openat
# and fopen, the seed's chat examples -- move bytes between the VMs; the
# halves, flags, EBUSY and paths that are not vbpipes are checked too.
#
#   test-pvrun.sh PVRUN PVRUN_OPEN ECHO_SERVER CHAT_CLIENT ECHO_SERVER_VBPIPEOPEN CHAT_CLIENT_VBPIPEOPEN
# Environment (tests/meson.build): PVD_BIN, PVCTL_BIN, PV_CONF_DIR.
set -euo pipefail
PVRUN=$1 OPENER=$2 SERVER=$3 CLIENT=$4 SERVER_VO=$5 CLIENT_VO=$6
: "${PVD_BIN:?}" "${PVCTL_BIN:?}" "${PV_CONF_DIR:?}"
# Sanitized programs under pvrun: libpvrun (built without sanitizers) is
# preloaded, so the ASan runtime cannot be the first library.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
T=20   # seconds any one step may take

dir=$(mktemp -d "${TMPDIR:-/tmp}/pvrun-test.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

fails=0 passes=0
check() {  # name, command...: the command must succeed
    local name=$1; shift
    if "$@"; then
        passes=$((passes + 1)); echo "ok    $name"
    else
        fails=$((fails + 1)); echo "FAIL  $name"
    fi
}
in_vm() { local vm=$1; shift; PVD_RUNTIME_DIR="$dir/$vm" timeout -k 2 "$T" "$@"; }
run() { local vm=$1; shift; in_vm "$vm" "$PVRUN" "$@"; }

for vm in vm2 vm4; do
    "$PVD_BIN" --config "$PV_CONF_DIR/test-2clients.dtb" --vm "$vm" --runtime-dir "$dir/$vm" \
        --platform-dir "$dir/platform" --log-level notice 2>>"$dir/$vm.log" &
    pids+=($!)
done
# vm2's other vlinks (to vm3) stay down: wait for these two only.
if ! "$PVCTL_BIN" --runtime-dir "$dir/vm2" wait --timeout 20 vm2-vm4-vbpipe0 vm2-vm4-vbpipe1; then
    cat "$dir"/vm*.log; exit 1
fi

had_dev_file=0
[ -e /dev/vbpipe0 ] && had_dev_file=1
head -c 3000000 /dev/urandom >"$dir/big"
head -c 100000 /dev/urandom >"$dir/small"

# 1. cat > /dev/vbpipe0 in vm2, dd if=/dev/vbpipe0 in vm4; then the other way
#    with dd of= and a shell's < redirection.
transfer() {  # name, writer vm, writer command, reader vm, reader command, file
    local name=$1 wvm=$2 wcmd=$3 rvm=$4 rcmd=$5 file=$6
    rm -f "$dir/out"
    run "$rvm" sh -c "$rcmd" >"$dir/reader.log" 2>&1 &
    local r=$!
    local w=0
    run "$wvm" sh -c "$wcmd" >"$dir/writer.log" 2>&1 || w=$?
    local rc=0
    wait $r || rc=$?
    if [ $w -ne 0 ] || [ $rc -ne 0 ]; then
        echo "  writer exit $w, reader exit $rc"; cat "$dir/writer.log" "$dir/reader.log"; return 1
    fi
    cmp "$file" "$dir/out"
}
check "cat FILE > /dev/vbpipe0 | dd if=/dev/vbpipe0" \
    transfer cat vm2 "cat '$dir/big' > /dev/vbpipe0" vm4 "dd if=/dev/vbpipe0 of='$dir/out' bs=64k 2>/dev/null" "$dir/big"
check "dd of=/dev/vbpipe0 | sh: cat < /dev/vbpipe0" \
    transfer dd vm4 "dd if='$dir/big' of=/dev/vbpipe0 bs=4096 2>/dev/null" vm2 "cat < /dev/vbpipe0 > '$dir/out'" "$dir/big"
check "vbpipe1 (flag a): sh: cat < FILE > /dev/vbpipe1 | cat /dev/vbpipe1" \
    transfer a vm4 "cat < '$dir/small' > /dev/vbpipe1" vm2 "cat /dev/vbpipe1 > '$dir/out'" "$dir/small"
# Children and grandchildren inherit the preload.
check "a shell's child's child writes, a pipeline reads" \
    transfer child vm2 "sh -c \"sh -c 'cat \\\"$dir/small\\\"' > /dev/vbpipe0\"" \
    vm4 "cat /dev/vbpipe0 | cat > '$dir/out'" "$dir/small"

# 2. Fortified open/openat, fopen and creat, each half checked.
if command -v nm >/dev/null; then
    check "pvrun-open calls __open64_2 and __openat64_2" \
        sh -c "nm -D '$OPENER' | grep -q ' __open64_2' && nm -D '$OPENER' | grep -q ' __openat64_2'"
fi
for pair in "open openat" "openat fopen" "fopen open" "creat open"; do
    set -- $pair
    check "pvrun-open write $1 | read $2" \
        transfer "$1-$2" vm2 "'$OPENER' write $1 /dev/vbpipe0 < '$dir/small'" \
        vm4 "'$OPENER' read $2 /dev/vbpipe0 > '$dir/out'" "$dir/small"
done

# 3. EBUSY, O_CLOEXEC and O_NONBLOCK, paths that are not vbpipes.
expect() {  # expected output, vm, command...
    local want=$1 vm=$2; shift 2
    local got
    got=$(run "$vm" "$@" 2>"$dir/stderr") || true
    [ "$got" = "$want" ] || { echo "  expected \"$want\", got \"$got\""; cat "$dir/stderr"; return 1; }
}
said() {  # what stderr of the last expect must hold, once
    [ "$(grep -cF -- "$1" "$dir/stderr")" = 1 ] || { echo "  stderr lacks \"$1\" once:"; cat "$dir/stderr"; return 1; }
}
check "a second open of an end is EBUSY" expect EBUSY vm2 "$OPENER" busy /dev/vbpipe0
check "O_CLOEXEC and O_NONBLOCK are honoured" expect "cloexec nonblock
-" vm4 "$OPENER" flags /dev/vbpipe1
check "a VRPQ device node is not a vbpipe" expect ENOENT vm2 "$OPENER" errno /dev/vrpq-srv-vogl0
check "... and pvrun says so" said "/dev/vrpq-srv-vogl0 is not a vbpipe: $dir/vm2/vrpq-srv-vogl0 is a device node of another driver"
check "an unknown /dev name is the C library's" expect ENOENT vm2 "$OPENER" errno /dev/no-such-vbpipe
check "... and pvrun says the pvd serves no such node" said "the pvd in $dir/vm2 serves no device node no-such-vbpipe"
check "/dev/null is the real one" expect ok vm2 "$OPENER" errno /dev/null
check "... and pvrun says nothing" test ! -s "$dir/stderr"
check "no pvd: cat says ENOENT and pvrun says once where it looked and why" sh -c "
    ! PVD_RUNTIME_DIR='$dir/none' timeout $T '$PVRUN' sh -c 'cat /dev/vbpipe0 /dev/vbpipe0' 2>'$dir/stderr' &&
    grep -q 'cat: /dev/vbpipe0: No such file or directory' '$dir/stderr'" &&
    said "pvrun: /dev/vbpipe0 is not a vbpipe: no pvd answers in $dir/none ($dir/none/control: No such file or directory)"
check "PVD_VM: the nodes of VM in PVD_RUNTIME_DIR/VM" expect ENOENT vm4 env PVD_RUNTIME_DIR="$dir" PVD_VM=vm2 \
    "$OPENER" errno /dev/vrpq-srv-vogl0
check "... looked up in PVD_RUNTIME_DIR/VM" said "$dir/vm2/vrpq-srv-vogl0 is a device node of another driver"
check "pvrun --vm VM: vbpipe0 of $dir/VM" sh -c "
    PVD_RUNTIME_DIR='$dir' timeout $T '$PVRUN' --vm vm2 sh -c 'echo via-vm > /dev/vbpipe0' &
    got=\$(PVD_RUNTIME_DIR='$dir' PVD_VM=vm4 timeout $T '$PVRUN' head -c 7 /dev/vbpipe0); wait \$! && [ \"\$got\" = via-vm ]"
check "other files are untouched" sh -c "run() { PVD_RUNTIME_DIR='$dir/vm2' timeout $T '$PVRUN' \"\$@\"; };
    [ \"\$(run cat /etc/passwd)\" = \"\$(cat /etc/passwd)\" ] && run sh -c 'echo x > /dev/null' &&
    run dd if='$dir/small' of='$dir/copy' bs=1000 2>/dev/null && cmp '$dir/small' '$dir/copy'"
[ $had_dev_file -eq 1 ] || check "no pvd running: the C library's answer" expect ENOENT vm2 env PVD_RUNTIME_DIR="$dir/none" \
    "$OPENER" errno /dev/vbpipe0
if [ $had_dev_file -eq 0 ]; then
    check "nothing was created in /dev" test ! -e /dev/vbpipe0
fi

# 4. The seed's chat examples: the client's lines come back from the server.
printf 'hello from vm4\nthe seed listings\n\n%0300d\nlast line without newline' 0 >"$dir/lines"
expected=$(printf 'hello from vm4\nthe seed listings\n%0255d\n%045d\nlast line without newline\n' 0 0)
chat() {  # name, server command..., --, client command...
    local srv=() clt=()
    while [ "$1" != -- ]; do srv+=("$1"); shift; done
    shift
    clt=("$@")
    in_vm vm2 "${srv[@]}" >"$dir/server.log" 2>&1 &
    local s=$!
    local got rc=0
    got=$(in_vm vm4 "${clt[@]}" <"$dir/lines" 2>&1) || rc=$?
    local src=0
    wait $s || src=$?
    [ $rc -eq 0 ] && [ $src -eq 0 ] || { echo "  client exit $rc, server exit $src"; cat "$dir/server.log"; return 1; }
    [ "$got" = "$expected" ] || { echo "  client printed:"; echo "$got"; return 1; }
    grep -q "echo 14 bytes: hello from vm4" "$dir/server.log" &&
        grep -q "the client closed after 5 messages" "$dir/server.log" ||
        { echo "  server printed:"; cat "$dir/server.log"; return 1; }
}
check "seed examples under pvrun" chat "$PVRUN" "$SERVER" -- "$PVRUN" "$CLIENT"
check "seed examples with vbpipeOpen" chat "$SERVER_VO" -- "$CLIENT_VO"
check "pvrun server, vbpipeOpen client" chat "$PVRUN" "$SERVER" -- "$CLIENT_VO"

# 5. Both pvds stop cleanly and leave no socket.
for p in "${pids[@]}"; do kill -TERM "$p"; done
stopped=0
for p in "${pids[@]}"; do wait "$p" || stopped=1; done
pids=()
check "pvds stopped cleanly" test $stopped -eq 0
check "no socket left" test "$(find "$dir" -type s | wc -l)" -eq 0

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
