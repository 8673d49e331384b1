#!/usr/bin/env bash
# VBPIPE across the demo platform (run by scripts/demo.sh with $B, the build
# directory, and $DEMO, the platform directory): vbpipe0 joins vm2 and vm4.
# The seed's echo server in vm2 and chat client in vm4, first as written
# (open("/dev/vbpipe0") under pvrun), then built with vbpipeOpen; then
# programs no one wrote for vbpipe (cat, dd, a shell's redirections) move a
# file between the VMs, checked byte for byte; pvctl stat vbpipe at the end.
set -euo pipefail
: "${B:?build directory}" "${DEMO:?platform directory}"

B=$(cd "$B" && pwd)   # the file moves run in $DEMO
ex="$B/examples"
pvrun="$B/client/pvrun"
T=30   # seconds any one program may take
in_vm() { local vm=$1; shift; PVD_RUNTIME_DIR="$DEMO/$vm" timeout -k 2 "$T" "$@"; }
pvctl() { "$B/client/pvctl" --runtime-dir "$DEMO/$1" "${@:2}"; }
fail() { echo "demo-vbpipe: $*" >&2; exit 1; }

bg=()
trap 'for p in "${bg[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done' EXIT

lines=$'hello from vm4\nthe seed\'s Listings 1-6, unchanged\nbye'
# chat TITLE SERVER-COMMAND... -- CLIENT-COMMAND...: the server in vm2, the
# client in vm4 fed $lines; what the client prints must be $lines.
chat() {
    local title=$1; shift
    local srv=() clt=()
    while [ "$1" != -- ]; do srv+=("$1"); shift; done
    shift; clt=("$@")
    echo
    echo "==> VBPIPE: $title"
    local out="$DEMO/vbpipe-server.out" s got
    in_vm vm2 "${srv[@]}" >"$out" 2>&1 & s=$!; bg+=($s)
    echo "vm4 \$ ${clt[*]##*/} (stdin: $(wc -l <<<"$lines") lines)"
    got=$(in_vm vm4 "${clt[@]}" <<<"$lines") || fail "the chat client failed"
    echo "$got" | sed 's/^/  vm4 prints: /'
    wait "$s" || fail "the echo server failed: $(cat "$out")"
    bg=()
    sed 's/^/  vm2 prints: /' "$out"
    [ "$got" = "$lines" ] || fail "the client did not get its lines back"
}
chat "the seed's echo server (vm2) and chat client (vm4), open(\"/dev/vbpipe0\") under pvrun" \
    "$pvrun" "$ex/vbpipe-echo-server" -- "$pvrun" "$ex/vbpipe-chat-client"
chat "the same examples built with vbpipeOpen" \
    "$ex/vbpipe-echo-server-vbpipeopen" -- "$ex/vbpipe-chat-client-vbpipeopen"

# move WRITER-SHELL-COMMAND READER-SHELL-COMMAND: vm2 writes, vm4 reads (or
# the other way round with "rev"), both under pvrun; then cmp.
file="$DEMO/vbpipe-file" out="$DEMO/vbpipe-out"
head -c 4194304 /dev/urandom >"$file"
move() {
    local wvm=$1 wcmd=$2 rvm=$3 rcmd=$4 r
    echo "$rvm \$ pvrun sh -c '$rcmd'"
    echo "$wvm \$ pvrun sh -c '$wcmd'"
    rm -f "$out"
    in_vm "$rvm" "$pvrun" sh -c "$rcmd" & r=$!; bg+=($r)
    in_vm "$wvm" "$pvrun" sh -c "$wcmd" || fail "the writer in $wvm failed"
    wait "$r" || fail "the reader in $rvm failed"
    bg=()
    cmp "$file" "$out" || fail "the file changed on its way"
    echo "  $(stat -c %s "$out") bytes arrived, identical (cmp)"
}
echo
echo "==> VBPIPE: a 4 MiB file from vm2 to vm4 and back with cat, dd and a shell's redirections"
cd "$DEMO"
move vm2 "cat vbpipe-file > /dev/vbpipe0" vm4 "dd if=/dev/vbpipe0 of=vbpipe-out bs=64k 2>/dev/null"
move vm4 "dd if=vbpipe-file of=/dev/vbpipe0 bs=4k 2>/dev/null" vm2 "cat < /dev/vbpipe0 > vbpipe-out"
cd - >/dev/null
rm -f "$file" "$out" "$DEMO/vbpipe-server.out"

echo
echo "==> pvctl stat vbpipe in vm2 and vm4"
pvctl vm2 stat vbpipe
pvctl vm4 stat vbpipe
trap - EXIT
