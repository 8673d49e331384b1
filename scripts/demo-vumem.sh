#!/usr/bin/env bash
# VUMEM across the demo platform (run by scripts/demo.sh with $B, the build
# directory, and $DEMO, the platform directory): the seed's server skeleton
# in vm2 hands a buffer to the seed's client in vm3, which maps it without
# copies; each reads what the other wrote; pvctl shows the driver.
set -euo pipefail
: "${B:?build directory}" "${DEMO:?platform directory}"

echo
echo "==> VUMEM: examples/vumem-server in vm2, examples/vumem-client in vm3"
PVD_RUNTIME_DIR="$DEMO/vm2" "$B/examples/vumem-server" /dev/vumem-srv-vogl0 &
srv=$!
trap 'kill -TERM $srv 2>/dev/null || true; wait $srv 2>/dev/null || true' EXIT

# The client's session waits for the server program (VUMEM_SERVER_WAIT_MS);
# waiting here too keeps the output in order.
for _ in $(seq 50); do
    "$B/client/pvctl" --runtime-dir "$DEMO/vm2" stat vumem --json | grep '"running": true' >/dev/null && break
    sleep 0.1
done

# The client holds its buffer mapped for a second: pvctl shows it meanwhile.
PVD_RUNTIME_DIR="$DEMO/vm3" "$B/examples/vumem-client" /dev/vumem-clt-vogl0 1000 &
clt=$!
sleep 0.5
echo
echo "==> pvctl stat vumem in vm2 and vm3, while the client holds its buffer"
"$B/client/pvctl" --runtime-dir "$DEMO/vm2" stat vumem
"$B/client/pvctl" --runtime-dir "$DEMO/vm3" stat vumem
echo
wait $clt
sleep 0.2

kill -TERM $srv
wait $srv
trap - EXIT
