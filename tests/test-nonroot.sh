#!/usr/bin/env bash
# Programs that are not root: with pvds running as root, a user who is only
# a member of the group pvd runs every example (VRPQ, VUMEM, VBPIPE with
# vbpipeOpen and under pvrun) and pvctl, as the README says; a user outside
# the group is refused. Device nodes are 0660, group pvd, by default.
#
# Needs root (to run pvd as root and the programs as a throw-away user) and
# useradd/setpriv: skipped (77) otherwise. Creates the group pvd when the
# system lacks it and a throw-away user, and removes what it created.
#
#   test-nonroot.sh BUILD
# Environment (tests/meson.build): PVD_BIN, PVCTL_BIN, PV_CONF_DIR.
set -euo pipefail
BUILD=$1
: "${PVD_BIN:?}" "${PVCTL_BIN:?}" "${PV_CONF_DIR:?}"
[ "$(id -u)" = 0 ] || { echo "needs root to add a user and run programs as that user: skipped"; exit 77; }
for c in useradd userdel groupadd groupdel setpriv getent; do
    command -v $c >/dev/null || { echo "no $c here: skipped"; exit 77; }
done
T=20
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

dir=$(mktemp -d "${TMPDIR:-/tmp}/pvd-nonroot.XXXXXX")
user=pvdt$$ made_group=0 made_user=0
pids=() bg=()
# /etc/passwd and /etc/group may be locked a moment by another useradd.
retry() { local i; for i in $(seq 20); do "$@" 2>"$dir/acct.err" && return 0; sleep 0.25; done; cat "$dir/acct.err"; return 1; }
cleanup() {
    for p in "${bg[@]}" "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${bg[@]}" "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    [ $made_user -eq 0 ] || retry userdel "$user" || echo "could not remove user $user"
    [ $made_group -eq 0 ] || retry groupdel pvd || echo "could not remove group pvd"
    rm -rf "$dir"
}
trap cleanup EXIT

if ! getent group pvd >/dev/null; then
    retry groupadd --system pvd; made_group=1
fi
primary=nogroup
getent group nogroup >/dev/null || primary=pvd
retry useradd --no-create-home --no-user-group --gid "$primary" --groups pvd --shell /usr/sbin/nologin "$user"
made_user=1

fails=0 passes=0
check() {
    local name=$1; shift
    if "$@"; then
        passes=$((passes + 1)); echo "ok    $name"
    else
        fails=$((fails + 1)); echo "FAIL  $name"
    fi
}

# The programs where the user can reach them (the build tree may not be).
bin=$dir/bin
mkdir "$bin"
cp -P "$BUILD"/client/libpvclient.so "$BUILD"/client/libpvclient.so.0 "$BUILD"/client/libpvclient.so.0.*[0-9] "$BUILD/client/pvrun" "$BUILD/client/libpvrun.so" "$PVCTL_BIN" "$bin/"
for ex in vrpq-server vrpq-client vumem-server vumem-client vbpipe-echo-server vbpipe-chat-client \
          vbpipe-echo-server-vbpipeopen vbpipe-chat-client-vbpipeopen; do
    cp "$BUILD/examples/$ex" "$bin/"
done
chmod -R a+rX "$dir"

for vm in vm2 vm3 vm4; do
    "$PVD_BIN" --config "$PV_CONF_DIR/demo.dtb" --vm "$vm" --runtime-dir "$dir/$vm" \
        --platform-dir "$dir/platform" --log-level notice 2>>"$dir/$vm.log" &
    pids+=($!)
done
for vm in vm2 vm3 vm4; do
    PVD_RUNTIME_DIR=$dir timeout "$T" "$PVCTL_BIN" --vm "$vm" wait --timeout 10 >/dev/null ||
        { echo "the vlinks of $vm did not come up"; cat "$dir"/vm*.log; exit 1; }
done

as() {  # user vm command...: run command in vm as user
    local who=$1 vm=$2; shift 2
    env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$bin" ASAN_OPTIONS="$ASAN_OPTIONS" PVD_RUNTIME_DIR="$dir" \
        PVD_VM="$vm" timeout -k 2 "$T" setpriv --reuid="$who" --regid="$(id -g "$who")" --init-groups -- "$@"
}
nodes_default() {
    local got
    got=$(stat -c '%G %a' "$dir/vm2/vrpq-srv-vogl0" "$dir/vm3/vumem-clt-vogl0" "$dir/vm4/vbpipe0" | sort -u)
    [ "$got" = "pvd 660" ] || { echo "  nodes: $got"; return 1; }
}
check "device nodes: group pvd, mode 0660 by default" nodes_default
check "the user is in group pvd only, not root" sh -c "
    [ \"\$(setpriv --reuid=$user --regid=\$(id -g $user) --init-groups id -u)\" != 0 ] && id -nG $user | grep -qw pvd"
check "pvctl status as the user (its programs listed by user name)" sh -c "
    $(declare -f as); ASAN_OPTIONS='$ASAN_OPTIONS' bin='$bin' dir='$dir' T=$T
    as $user vm2 '$bin/pvctl' status | grep -q '^[0-9]* *$user *pvctl *control'"

pair() {  # name of the check, user, server vm, client vm, server..., --, client...
    local who=$1 svm=$2 cvm=$3; shift 3
    local srv=() clt=()
    while [ "$1" != -- ]; do srv+=("$1"); shift; done
    shift; clt=("$@")
    as "$who" "$svm" "${srv[@]}" >"$dir/server.out" 2>&1 &
    local s=$! c=0 sr=0
    bg=($s)
    sleep 0.3
    as "$who" "$cvm" "${clt[@]}" <"$dir/lines" >"$dir/client.out" 2>&1 || c=$?
    wait "$s" || sr=$?
    bg=()
    [ $c -eq 0 ] && [ $sr -eq 0 ] || { echo "  client exit $c, server exit $sr"; cat "$dir/client.out" "$dir/server.out"; return 1; }
}
printf 'hello from vm4\nbye\n' >"$dir/lines"
vrpq() {
    pair "$user" vm2 vm3 "$bin/vrpq-server" -- "$bin/vrpq-client" 42 3 &&
        grep -q "received 42" "$dir/server.out" && grep -q "after 3 requests" "$dir/server.out"
}
check "VRPQ: the seed's client (vm3) and server (vm2) as the user" vrpq
vumem() {
    as "$user" vm2 "$bin/vumem-server" >"$dir/server.out" 2>&1 &
    local s=$! c=0
    bg=($s)
    for _ in $(seq 100); do grep -q serving "$dir/server.out" && break; sleep 0.05; done
    as "$user" vm3 "$bin/vumem-client" >"$dir/client.out" 2>&1 || c=$?
    sleep 0.2
    kill -TERM "$s"; wait "$s" || true
    bg=()
    [ $c -eq 0 ] && grep -q "ALLOC" "$dir/server.out" && grep -q "FREE" "$dir/server.out" ||
        { echo "  client exit $c"; cat "$dir/client.out" "$dir/server.out"; return 1; }
}
check "VUMEM: the seed's client (vm3) and server (vm2) as the user" vumem
vbpipe() {
    pair "$user" vm2 vm4 "$@" && [ "$(cat "$dir/client.out")" = "$(cat "$dir/lines")" ]
}
check "VBPIPE: the seed's chat (vm4) and echo server (vm2) with vbpipeOpen, as the user" \
    vbpipe "$bin/vbpipe-echo-server-vbpipeopen" -- "$bin/vbpipe-chat-client-vbpipeopen"
check "VBPIPE: the same unchanged programs under pvrun, as the user" \
    vbpipe "$bin/pvrun" "$bin/vbpipe-echo-server" -- "$bin/pvrun" "$bin/vbpipe-chat-client"
refused() {
    local rc=0
    as nobody vm3 "$bin/vrpq-client" 1 1 >"$dir/client.out" 2>&1 || rc=$?
    [ $rc -ne 0 ] && grep -q "permission denied" "$dir/client.out" || { echo "  exit $rc"; cat "$dir/client.out"; return 1; }
}
check "a user outside group pvd is refused, with a message" refused

for p in "${pids[@]}"; do kill -TERM "$p"; done
stopped=0
for p in "${pids[@]}"; do wait "$p" || stopped=1; done
pids=()
check "pvds stopped cleanly, no socket left" test $stopped -eq 0 -a "$(find "$dir" -type s | wc -l)" -eq 0
echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
