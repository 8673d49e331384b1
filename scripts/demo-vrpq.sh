#!/usr/bin/env bash
# VRPQ on the demo platform (run by scripts/demo.sh with $B, the build
# directory, and $DEMO, the platform directory where $DEMO/vm2 and
# $DEMO/vm3 are the runtime directories of running pvds): the user guide's
# walkthrough, a synchronous call, callbacks, and `pvctl stat vrpq` watching
# a busy channel. Servers run "in" vm2, clients "in" vm3.
set -euo pipefail
: "${B:?build directory}" "${DEMO:?platform directory}"

ex="$B/examples"
in_vm() { local vm=$1; shift; PVD_RUNTIME_DIR="$DEMO/$vm" "$@"; }
pvctl() { "$B/client/pvctl" --runtime-dir "$DEMO/$1" "${@:2}"; }

# pair N SERVER-COMMAND(N words) CLIENT-COMMAND...: the server in vm2, the
# client in vm3; then the server's output.
pair() {
    local n=$1 out="$DEMO/vrpq-server.out" srv
    shift
    local server=("${@:1:n}") client=("${@:n+1}")
    in_vm vm2 "${server[@]}" >"$out" 2>&1 & srv=$!
    sleep 0.2
    in_vm vm3 "${client[@]}"
    wait "$srv"
    cat "$out"
}

echo
echo "==> VRPQ: the user guide's walkthrough (vm3 posts ints with VRPQ_PROC_ID(2,2), vm2 receives them)"
pair 1 "$ex/vrpq-server" "$ex/vrpq-client" 42 3

echo
echo "==> VRPQ: synchronous calls (vrpqCall / vrpqReply)"
pair 2 "$ex/vrpq-sync" server "$ex/vrpq-sync" client 10000

echo
echo "==> VRPQ: callbacks from the server VM (vrpqCallbackPerform / vrpqCallbackHandle)"
pair 2 "$ex/vrpq-callback" server "$ex/vrpq-callback" client 3

echo
echo "==> VRPQ: pvctl stat vrpq in vm2, then --watch in vm3, while vm3 posts 3 million requests to a slow server"
out="$DEMO/vrpq-server.out"
in_vm vm2 "$ex/vrpq-server" >"$out" 2>&1 & srv=$!
sleep 0.2
in_vm vm3 "$ex/vrpq-client" 0 3000000 >/dev/null & clt=$!
sleep 0.2
pvctl vm2 stat vrpq
echo
timeout 1.6 "$B/client/pvctl" --runtime-dir "$DEMO/vm3" stat vrpq --watch 0.25 || true
wait "$clt"
wait "$srv"
tail -n 1 "$out"
