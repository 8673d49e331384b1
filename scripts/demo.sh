#!/usr/bin/env bash
# The demo platform: installs what is missing, builds pvd, starts the three
# VMs of conf/demo.dts (vm2 serves vOpenGL to vm3 and has a vbpipe to vm4)
# as pvd processes in a temporary directory, shows that every vlink is up
# with `pvctl status` in each VM, runs the examples across the VMs, and
# stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-deps.sh
if [ -f build/build.ninja ]; then meson setup --reconfigure build >/dev/null; else meson setup build >/dev/null; fi
ninja -C build >/dev/null
echo "built pvd $(build/daemon/pvd --version | cut -d' ' -f2)"

B=build
demo=$(mktemp -d "${TMPDIR:-/tmp}/pvd-demo.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$demo"
}
trap cleanup EXIT

pvctl() { "$B/client/pvctl" --runtime-dir "$demo/$1" "${@:2}"; }
in_vm() { local vm=$1; shift; PVD_RUNTIME_DIR="$demo/$vm" "$@"; }

echo
echo "==> starting the demo platform in $demo"
for vm in vm2 vm3 vm4; do
    "$B/daemon/pvd" --config "$B/conf/demo.dtb" --vm "$vm" \
        --runtime-dir "$demo/$vm" --platform-dir "$demo/platform" \
        --log-level notice 2>>"$demo/$vm.log" &
    pids+=($!)
done

# Wait until every vlink of every VM is ON.
for vm in vm2 vm3 vm4; do
    if ! pvctl "$vm" wait --timeout 10; then
        echo "demo: the vlinks of $vm did not come up; its log:" >&2
        cat "$demo/$vm.log" >&2
        exit 1
    fi
done

for vm in vm2 vm3 vm4; do
    echo
    echo "==> pvctl status in $vm"
    pvctl "$vm" status
done

# Each driver's examples, across the VMs (scripts/demo-vrpq.sh, ...): they
# get the build directory in $B and the platform directory in $DEMO.
for ex in scripts/demo-*.sh; do
    [ -x "$ex" ] || continue
    B="$B" DEMO="$demo" "$ex"
done

echo
echo "==> stopping the platform"
for p in "${pids[@]}"; do kill -TERM "$p"; done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
pids=()
left=$(find "$demo" -type s | wc -l)
echo "pvds stopped (exit status ok: $([ $status -eq 0 ] && echo yes || echo no)), sockets left: $left"
[ $status -eq 0 ] && [ "$left" -eq 0 ]
