#!/usr/bin/env bash
# Runs every test of pvd: installs what is missing, builds, runs all suites
# (unit, integration, stress, fuzz, qemu) in the normal build, then again in a
# build with AddressSanitizer and UndefinedBehaviorSanitizer, and checks that
# nothing (process, socket, temporary directory) is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
start=$(date +%s)
# The tests' platforms live in a directory of this run only, so that the
# leftover check below sees this run's leftovers and no one else's.
base_tmp=${TMPDIR:-/tmp}
export TMPDIR
TMPDIR=$(mktemp -d "$base_tmp/pvd-tests.XXXXXX")
chmod 755 "$TMPDIR"   # test-access reaches a node as nobody

configure() {  # dir, options...
    local dir=$1; shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
}

echo "==> build"
configure build
ninja -C build
echo "==> tests (build)"
meson test -C build --print-errorlogs --num-processes "$jobs"
echo "==> tests (build, every hypervisor capability off: the drivers' fallbacks)"
PVD_HV_CAPS_OFF=all meson test -C build --print-errorlogs --num-processes "$jobs" --suite integration --suite stress
echo "==> tests (build, on the ivshmem backend: pvhv serves the platforms)"
PVT_HV=ivshmem meson test -C build --print-errorlogs --num-processes "$jobs" --suite integration --suite stress

echo "==> build with AddressSanitizer + UndefinedBehaviorSanitizer"
configure build-san -Db_sanitize=address,undefined -Db_lundef=false -Dbench=false
ninja -C build-san
echo "==> tests (build-san)"
# The sanitizers make the stress tests slower: fewer messages, same checks.
PV_STRESS_MSGS=${PV_STRESS_MSGS_SAN:-300000} PV_STRESS_BYTES=${PV_STRESS_BYTES_SAN:-33554432} \
PV_FUZZ_ITERS=${PV_FUZZ_ITERS_SAN:-50000} \
    meson test -C build-san --print-errorlogs --num-processes "$jobs" --timeout-multiplier 3

echo "==> tests (build-san, on the ivshmem backend)"
PVT_HV=ivshmem PV_STRESS_MSGS=${PV_STRESS_MSGS_SAN:-300000} PV_STRESS_BYTES=${PV_STRESS_BYTES_SAN:-33554432} \
PV_FUZZ_ITERS=${PV_FUZZ_ITERS_SAN:-50000} \
    meson test -C build-san --print-errorlogs --num-processes "$jobs" --timeout-multiplier 3 --suite integration \
    --suite stress

echo "==> leftovers"
left=0
# The tests start pvd and pvhv by their absolute paths in this checkout.
pat="^$(pwd)/build(-san)?/daemon/(pvd|pvhv/pvhv) "
if pgrep -f "$pat" >/dev/null; then
    echo "pvd processes left behind:"; pgrep -af "$pat"; left=1
fi
# QEMU started by pvhv's test (sockets) or scripts/vm.sh (initrd) in this
# run's directory.
if pgrep -f "qemu-system.*$TMPDIR" >/dev/null; then
    echo "QEMU processes left behind:"; pgrep -af "qemu-system.*$TMPDIR"; left=1
fi
if [ -n "$(ls -A "$TMPDIR")" ]; then
    echo "left behind in $TMPDIR:"; ls -A "$TMPDIR"; left=1
fi
[ $left -eq 0 ] || exit 1
rmdir "$TMPDIR"
echo "no process, socket or test directory left behind"
echo "==> all tests passed in $(( $(date +%s) - start )) s"
