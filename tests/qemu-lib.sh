# Shared by the guest tests of suite qemu (test-qemu-guests.sh,
# test-qemu-hostile.sh) and sourced by them: pvhv and host-process pvds in
# a temporary directory, guests booted by scripts/vm.sh --serve, and the
# same command run "in" a VM whether that VM is a host process or a guest.
#
# The caller sets vm_sh, build, dtb and adds (vm.sh --add arguments), then
# calls qlib_init. Every VM's runtime directory is $tmp/VM; a guest serves
# $tmp/g/VM. Nothing here asserts: the callers do, with fail.

ex=$build/examples
T=${QLIB_STEP_SECONDS:-120}   # any one step
T0=$SECONDS
declare -A host_pid=() serve_pid=()
bg_pids=()

say() { echo "--- $* ($((SECONDS - T0)) s)"; }

dump_logs() {
    local f vm
    for f in "$tmp"/*.log; do
        [ -s "$f" ] || continue
        echo "=== ${f##*/} (last 30 lines)"; tail -n 30 "$f"
    done
    echo "=== QEMU processes of this test:"
    pgrep -af "qemu-system.*$tmp" | cut -c1-120
    for vm in "${!serve_pid[@]}"; do
        echo "=== guest $vm: vm.sh pid ${serve_pid[$vm]} $(kill -0 "${serve_pid[$vm]}" 2>/dev/null && echo running || echo gone); $tmp/g/$vm:" $(ls "$tmp/g/$vm")
        if [ -f "$tmp/g/$vm/ready" ]; then
            echo "=== pvd log in guest $vm"
            "$vm_sh" --in "$tmp/g/$vm" --timeout 20 -- tail -n 30 /var/log/pvd.log 2>&1
        fi
    done
}

fail() { echo "FAIL: $*"; dump_logs; exit 1; }

qlib_cleanup() {
    local vm p
    for vm in "${!serve_pid[@]}"; do kill -TERM "${serve_pid[$vm]}" 2>/dev/null; done
    for p in "${bg_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for vm in "${!host_pid[@]}"; do kill -TERM "${host_pid[$vm]}" 2>/dev/null; done
    for p in "${serve_pid[@]}" "${bg_pids[@]}" "${host_pid[@]}"; do wait "$p" 2>/dev/null; done
    [ -z "${pvhv_pid:-}" ] || { kill -TERM "$pvhv_pid" 2>/dev/null; wait "$pvhv_pid" 2>/dev/null; }
    rm -rf "$tmp"
}

# Exits 77 where no guest can boot (vm.sh --check says why), else makes
# $tmp and starts pvhv on the platform.
qlib_init() {
    local rc
    "$vm_sh" --build "$build" --check
    rc=$?
    if [ $rc -ne 0 ]; then
        [ $rc -eq 77 ] && echo "SKIP: no QEMU guest can boot here (vm.sh --check above says why)"
        exit $rc
    fi
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/qemu-guests.XXXXXX")
    trap qlib_cleanup EXIT
    "$build/daemon/pvhv/pvhv" --config "$dtb" --dir "$tmp/hv" --log-level info 2>"$tmp/pvhv.log" &
    pvhv_pid=$!
    local n=0
    until [ -S "$tmp/hv/vm2-vm3-vogl0.vm2.sock" ]; do
        n=$((n + 1)); [ $n -lt 100 ] || fail "pvhv did not listen within 10 s"
        sleep 0.1
    done
}

is_guest() { [ -n "${serve_pid[$1]:-}" ]; }

host_pvd_start() {  # VM
    "$build/daemon/pvd" --config "$dtb" --vm "$1" --runtime-dir "$tmp/$1" --hv ivshmem \
        --ivshmem-dir "$tmp/hv" --log-level info 2>>"$tmp/$1.log" &
    host_pid[$1]=$!
}

host_pvd_stop() {  # VM: SIGTERM, a clean stop
    kill -TERM "${host_pid[$1]}"
    wait "${host_pid[$1]}" || fail "pvd $1 did not stop cleanly"
    unset "host_pid[$1]"
}

# Boots each VM as a guest (all at once) and waits until each is up with
# its vlinks ON.
boot() {
    local vm
    for vm in "$@"; do
        "$vm_sh" --build "$build" --vm "$vm" --config "$dtb" --hv-dir "$tmp/hv" --serve "$tmp/g/$vm" \
            --log "$tmp/$vm-console.log" --pidfile "$tmp/$vm.qemu.pid" --timeout 1200 "${adds[@]}" \
            >>"$tmp/$vm-vmsh.log" 2>&1 &
        serve_pid[$vm]=$!
    done
    for vm in "$@"; do
        "$vm_sh" --in "$tmp/g/$vm" --timeout 240 -- true || fail "guest $vm did not come up with its vlinks ON"
    done
}

poweroff() {  # VM...
    local vm
    for vm in "$@"; do
        "$vm_sh" --poweroff "$tmp/g/$vm" || fail "guest $vm did not power off"
        wait "${serve_pid[$vm]}" || fail "vm.sh of guest $vm exited $? after its power-off"
        unset "serve_pid[$vm]"
    done
}

# Runs COMMAND in VM (a guest, or a host process: there the examples,
# pvctl, pvrun and the test programs are found by PATH, and it runs in
# $tmp as a guest's runs in /root). Its status.
run_in() {  # VM COMMAND...
    local vm=$1; shift
    if is_guest "$vm"; then
        "$vm_sh" --in "$tmp/g/$vm" --timeout "$T" -- "$@"
    else
        (cd "$tmp" && PATH="$ex:$build/client:$build/tests:$PATH" PVD_RUNTIME_DIR="$tmp/$vm" exec timeout --foreground -k 30 "$T" "$@")
    fi
}

# Starts COMMAND in VM in the background, its output in FILE; $bgp is the
# process to wait for or kill (SIGTERM reaches a guest's command too). On
# the host, timeout runs in the foreground mode so that a SIGTERM reaches the
# program once: timeout's usual second SIGTERM, to its whole process group,
# can come while a sanitized program's leak check has stopped it at exit,
# which then hangs until the SIGKILL.
run_bg() {  # VM FILE COMMAND...
    local vm=$1 out=$2; shift 2
    if is_guest "$vm"; then
        "$vm_sh" --in "$tmp/g/$vm" --timeout "$T" -- "$@" >"$out" 2>&1 &
    else
        (cd "$tmp" && PATH="$ex:$build/client:$build/tests:$PATH" PVD_RUNTIME_DIR="$tmp/$vm" exec timeout --foreground -k 30 "$T" "$@") \
            >"$out" 2>&1 &
    fi
    bgp=$!
    bg_pids+=($bgp)
}

# Waits until program NAME (its comm) is connected to VM's pvd.
wait_prog() {  # VM NAME
    run_in "$1" sh -c "n=0; until pvctl status --json | grep -q '\"comm\": \"$2\"'; do
        n=\$((n + 1)); [ \$n -lt 300 ] || exit 1; sleep 0.1; done" ||
        fail "$2 did not connect to the pvd of $1"
}

vlink_state() {  # VM VLINK: its state as VM's pvd says
    run_in "$1" pvctl status --json 2>/dev/null | tr -d '\n ' |
        sed -n "s/.*\"name\":\"$2\",[^}]*\"state\":\"\([A-Z]*\)\".*/\1/p"
}

expect() {  # FILE PATTERN WHAT: FILE has a line matching PATTERN
    grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "$3"; }
}
