#!/usr/bin/env bash
# pvctl for operators, on a demo platform of real pvds: wait (all vlinks,
# named ones, a timeout naming what is down, an unknown name), status's
# exit codes, JSON that every parser accepts whatever bytes a program's
# name holds, --watch --json as one document per line, owners and groups
# by name, the message for an unknown driver, and top on a terminal and
# into a pipe while VRPQ requests flow.
#
# Also bash completion of pvctl's commands, drivers, VMs and vlinks.
#
#   test-pvctl.sh VRPQ_SERVER VRPQ_CLIENT SOURCE_DIR
# Environment (tests/meson.build): PVD_BIN, PVCTL_BIN, PV_CONF_DIR.
set -euo pipefail
SERVER=$1 CLIENT=$2 SRC=$3
: "${PVD_BIN:?}" "${PVCTL_BIN:?}" "${PV_CONF_DIR:?}"
command -v python3 >/dev/null || { echo "no python3 to check the JSON: skipped"; exit 77; }
T=20

dir=$(mktemp -d "${TMPDIR:-/tmp}/pvctl-test.XXXXXX")
pids=()
odd_pid=
cleanup() {
    [ -z "$odd_pid" ] || kill -TERM "$odd_pid" 2>/dev/null || true
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

fails=0 passes=0
check() {
    local name=$1; shift
    if "$@"; then
        passes=$((passes + 1)); echo "ok    $name"
    else
        fails=$((fails + 1)); echo "FAIL  $name"
    fi
}
pvctl() { PVD_RUNTIME_DIR=$dir timeout "$T" "$PVCTL_BIN" "$@"; }
start() {  # vm
    "$PVD_BIN" --config "$PV_CONF_DIR/demo.dtb" --vm "$1" --runtime-dir "$dir/$1" \
        --platform-dir "$dir/platform" --log-level notice 2>>"$dir/$1.log" &
    pids+=($!)
    eval "pid_$1=$!"
}
status_of() {  # what, expected exit status, command...
    local want=$1 rc=0; shift
    "$@" >"$dir/out" 2>"$dir/err" || rc=$?
    [ "$rc" = "$want" ] || { echo "  exit $rc, expected $want"; cat "$dir/out" "$dir/err"; return 1; }
}
err_has() { grep -qF -- "$1" "$dir/err" || { echo "  stderr lacks \"$1\":"; cat "$dir/err"; return 1; }; }
out_has() { grep -qF -- "$1" "$dir/out" || { echo "  stdout lacks \"$1\":"; cat "$dir/out"; return 1; }; }

# 1. wait: vm2 and vm3 up, vm4 not started: vogl comes up, vbpipe0 does not.
check "wait: no pvd yet, times out saying why" status_of 1 pvctl --vm vm2 wait --timeout 0.3
check "... naming the runtime directory" err_has "no pvd is running in $dir/vm2"
start vm2; start vm3
check "wait VLINK: vm2-vm3-vogl0 comes up" status_of 0 pvctl --vm vm2 wait --timeout 10 vm2-vm3-vogl0
check "wait (all): vbpipe0 is down, exit 1" status_of 1 pvctl --vm vm2 wait --timeout 0.5
check "... saying which vlink is not ON" err_has "not ON: vm2-vm4-vbpipe0 (OFF)"
check "wait for a vlink this VM does not have: exit 2" status_of 2 pvctl --vm vm2 wait nope
check "... listing its vlinks" err_has "no vlink nope in this VM (its vlinks: vm2-vm3-vogl0, vm2-vm4-vbpipe0)"
check "status with a vlink OFF: exit 3" status_of 3 pvctl --vm vm2 status
check "status --json with a vlink OFF: exit 3" status_of 3 pvctl --vm vm2 status --json
start vm4
check "wait (all) once vm4 is up" status_of 0 pvctl --vm vm2 wait --timeout 10
check "status with every vlink ON: exit 0" status_of 0 pvctl --vm vm2 status
check "status: owner and group by name" out_has "0660  $(id -un)       $(id -gn)"
check "status: programs by user name" out_has "$(id -un)       pvctl"
check "pvd not reachable: exit 1" status_of 1 pvctl --runtime-dir "$dir/none" status
check "stat foo: exit 2" status_of 2 pvctl --vm vm2 stat foo
check "... naming the drivers" err_has 'no driver "foo"; pvctl stat takes vrpq, vumem or vbpipe'

# 2. A server whose name is not UTF-8 and holds JSON's special characters.
odd=$(printf 'odd\377\376"\\\t\001x')
cp "$SERVER" "$dir/$odd"
PVD_RUNTIME_DIR=$dir/vm2 "$dir/$odd" >"$dir/odd.log" 2>&1 &
odd_pid=$!
for _ in $(seq 100); do pvctl --vm vm2 status | grep -q "^$odd_pid " && break; sleep 0.05; done
json_ok() {  # the comm of odd_pid, parsed
    pvctl --vm vm2 status --json >"$dir/json" || true
    python3 - "$dir/json" "$odd_pid" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1], encoding="utf-8", errors="strict"))
comm = [p["comm"] for p in doc["programs"] if p["pid"] == int(sys.argv[2])]
want = 'odd\ufffd\ufffd"\\\t\x01x'
assert comm == [want], (comm, want)
PY
}
check "status --json: valid JSON, other bytes as U+FFFD, specials escaped" json_ok
check "status: the name shown with '?' for what a terminal should not get" \
    sh -c "PVD_RUNTIME_DIR='$dir' '$PVCTL_BIN' --vm vm2 status | grep -q '^$odd_pid .* odd??\"\\\\??x '"
watch_lines() {  # --watch --json: one compact, valid document per line
    pvctl --vm vm2 stat vrpq --json --watch 0.1 --count 3 >"$dir/lines"
    python3 - "$dir/lines" "$odd_pid" <<'PY'
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
assert len(lines) == 3, lines
for line in lines:
    doc = json.loads(line)
    assert doc["driver"] == "vrpq" and doc["vm"] == "vm2", doc
PY
}
check "stat --watch --json --count 3: three lines, each a JSON document" watch_lines
kill "$odd_pid"; wait "$odd_pid" 2>/dev/null || true
odd_pid=

# 3. top while the seed's client posts requests to the server.
PVD_RUNTIME_DIR=$dir/vm2 timeout "$T" "$SERVER" >/dev/null 2>&1 &
srv=$!
sleep 0.2
PVD_RUNTIME_DIR=$dir/vm3 timeout "$T" "$CLIENT" 1 20000000 >/dev/null 2>&1 &
clt=$!
sleep 0.3
top_lines() {
    pvctl --vm vm2 top --watch 0.3 --count 3 >"$dir/top"
    [ "$(grep -c '^VLINK ' "$dir/top")" = 3 ] &&
        grep -q '^vm2-vm3-vogl0 *vrpq *vm3 *ON ' "$dir/top" &&
        grep -q '^vm2-vm3-vogl0 *vumem *vm3 *ON ' "$dir/top" &&
        grep -q '^vm2-vm4-vbpipe0 *vbpipe *vm4 *ON ' "$dir/top" &&
        # a later sample shows requests per second and both programs
        grep -Eq '^vm2-vm3-vogl0 +vrpq +vm3 +ON +[0-9.]+[kM]? .*vrpq-server\[[0-9]+\] vrpq-client\[[0-9]+\]' \
            "$dir/top" && ! grep -q $'\033' "$dir/top" ||
        { cat "$dir/top"; return 1; }
}
check "top into a pipe: a block of lines per sample, rates, programs" top_lines
top_tty() {
    command -v script >/dev/null || { echo "  (no script(1): not checked)"; return 0; }
    PVD_RUNTIME_DIR=$dir timeout "$T" script -qec "'$PVCTL_BIN' --vm vm2 top --watch 0.2 --count 2" /dev/null \
        </dev/null >"$dir/tty"
    grep -q $'\033\\[?1049h' "$dir/tty" && grep -q $'\033\\[H' "$dir/tty" && grep -q $'\033\\[?1049l' "$dir/tty" &&
        grep -q '(every 0.2s' "$dir/tty" || { cat -v "$dir/tty"; return 1; }
}
check "top on a terminal: drawn in place on the alternate screen" top_tty
kill "$clt" 2>/dev/null || true; wait "$clt" 2>/dev/null || true
kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true

# 4. bash completion, with the running pvds.
complete_words() {  # words of the command line...: what completes the last
    PATH="$(dirname "$PVCTL_BIN"):$PATH" PVD_RUNTIME_DIR=$dir bash -c '
        source /usr/share/bash-completion/bash_completion; source "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
        _pvctl; echo "${COMPREPLY[*]}"' _ "$SRC/completions/pvctl" "$@"
}
completion() {
    local got
    got=$(complete_words pvctl st) && [ "$got" = "status stat" ] || { echo "  pvctl st: $got"; return 1; }
    got=$(complete_words pvctl stat v) && [ "$got" = "vrpq vumem vbpipe" ] || { echo "  stat: $got"; return 1; }
    got=$(complete_words pvctl --vm "") && [ "$got" = "vm2 vm3 vm4" ] || { echo "  --vm: $got"; return 1; }
    got=$(complete_words pvctl --vm vm2 wait "") && [ "$got" = "vm2-vm3-vogl0 vm2-vm4-vbpipe0" ] ||
        { echo "  wait: $got"; return 1; }
}
if [ -f /usr/share/bash-completion/bash_completion ]; then
    check "bash completion: commands, drivers, VMs, vlinks" completion
else
    echo "--    bash completion not checked: bash-completion is not installed"
fi

for p in "${pids[@]}"; do kill -TERM "$p"; done
stopped=0
for p in "${pids[@]}"; do wait "$p" || stopped=1; done
pids=()
check "pvds stopped cleanly, no socket left" test $stopped -eq 0 -a "$(find "$dir" -type s | wc -l)" -eq 0
echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
