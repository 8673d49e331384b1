#!/usr/bin/env bash
# The install as an integrator sees it: `meson install` into a DESTDIR, then
# programs built outside the tree with nothing but what was installed
# (pkg-config pvclient with PKG_CONFIG_LIBDIR limited to the DESTDIR): the
# user guide's VRPQ client and server in C, linked with the shared and with
# the static library, and a C++ program over a vbpipe, all run against a
# platform of the installed pvd and DTB, with the installed pvctl and pvrun.
# Then the installed units (systemd-analyze verify), tmpfiles.d and
# sysusers.d entries, man pages and shell completions.
#
#   test-install.sh BUILD SRC PREFIX BINDIR SBINDIR LIBDIR DATADIR UNITDIR SANITIZE
# (directories as meson's options; SANITIZE is b_sanitize, or "none")
set -euo pipefail
BUILD=$1 SRC=$2 PREFIX=$3 BINDIR=$4 SBINDIR=$5 LIBDIR=$6 DATADIR=$7 UNITDIR=$8 SANITIZE=$9
T=20   # seconds any one step may take
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PREFIX/$1" ;; esac; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/pvd-install.XXXXXX")
D=$dir/dest
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

# 1. Install.
if ! meson install -C "$BUILD" --no-rebuild --destdir "$D" --quiet >"$dir/install.log" 2>&1; then
    cat "$dir/install.log"; echo "meson install failed"; exit 1
fi
bindir=$D$(abs "$BINDIR") sbindir=$D$(abs "$SBINDIR") libdir=$D$(abs "$LIBDIR")
datadir=$D$(abs "$DATADIR") unitdir=$D$(abs "$UNITDIR") prefix=$D$PREFIX
check "installed: pvd, pvctl, pvrun, libpvrun.so, DTBs" \
    test -x "$sbindir/pvd" -a -x "$bindir/pvctl" -a -x "$bindir/pvrun" -a -f "$libdir/pvd/libpvrun.so" \
    -a -f "$datadir/pvd/demo.dtb"
check "installed: libpvclient.so.0 (soname), libpvclient.a, headers, pvclient.pc" sh -c "
    objdump -p '$libdir/libpvclient.so' | grep -q 'SONAME *libpvclient.so.0\$' &&
    test -f '$libdir/libpvclient.a' -a -f '$prefix/include/pv/vrpq.h' -a -f '$libdir/pkgconfig/pvclient.pc'"

# 2. Only the public API is global, in the shared and in the static library.
public='^(vrpq|vumem|vbpipe)[A-Za-z0-9_]*$|^pv(StrError|LastError|Version)$'
check "libpvclient.a: no internal symbol is global" sh -c "
    left=\$(nm -g --defined-only '$libdir/libpvclient.a' | awk 'NF == 3 { print \$3 }' | grep -Ev '$public' || true)
    [ -z \"\$left\" ] || { echo \"  global in libpvclient.a: \$(echo \$left | head -c 300)\"; exit 1; }
    nm -g --defined-only '$libdir/libpvclient.a' | grep -q ' T vrpqSessionCreate\$'"
check "libpvclient.so: no internal symbol is exported" sh -c "
    left=\$(nm -D --defined-only '$libdir/libpvclient.so' | awk 'NF == 3 { print \$3 }' | sed 's/@.*//' |
            grep -Ev '$public' | grep -v '^PVCLIENT_0\$' || true)
    [ -z \"\$left\" ] || { echo \"  exported: \$left\"; exit 1; }"

check "debian/libpvclient0.symbols lists exactly the exported symbols" bash -c "
    diff <(nm -D --defined-only '$libdir/libpvclient.so' | awk '{ print \$3 }' | sed 's/@.*//' | sort) \
         <(tail -n +3 '$SRC/debian/libpvclient0.symbols' | awk '{ print \$1 }' | sed 's/@.*//' | sort)"

# 3. Programs built outside the tree through pkg-config, seeing only the DESTDIR.
export PKG_CONFIG_LIBDIR=$libdir/pkgconfig PKG_CONFIG_PATH= PKG_CONFIG_SYSROOT_DIR=$D
mkdir "$dir/prog"
cp "$SRC/examples/vrpq-client.c" "$SRC/examples/vrpq-server.c" "$SRC/tests/install-cxx.cc" "$dir/prog/"
san=()
[ "$SANITIZE" = none ] || san=("-fsanitize=$SANITIZE")
check "pkg-config pvclient: cflags and libs, also --static, with no msgpack.pc" sh -c "
    pkg-config --cflags --libs pvclient > '$dir/pc' && pkg-config --static --libs pvclient >> '$dir/pc' &&
    ! grep -q msgpack '$dir/pc' && grep -q -- -lpvclient '$dir/pc' && grep -q -- -pthread '$dir/pc'"
check "libpvclient.a needs nothing of libmsgpackc" sh -c "! nm -u '$libdir/libpvclient.a' | grep -q msgpack"
build() {  # compiler, output, source, extra...
    local cc=$1 out=$2 src=$3; shift 3
    # shellcheck disable=SC2046
    (cd "$dir/prog" && "$cc" -Wall -Wextra -Werror "${san[@]}" -o "$out" "$src" \
        $(pkg-config --cflags pvclient) "$@") >"$dir/cc.log" 2>&1 || { cat "$dir/cc.log"; return 1; }
}
# shellcheck disable=SC2046  # pkg-config's words are meant to split
c_shared() {
    build cc vrpq-server vrpq-server.c $(pkg-config --libs pvclient) &&
        build cc vrpq-client vrpq-client.c $(pkg-config --libs pvclient)
}
# shellcheck disable=SC2046
c_static() {
    build cc vrpq-client-static vrpq-client.c $(pkg-config --static --libs pvclient | sed 's/-lpvclient/-l:libpvclient.a/') &&
        ! objdump -p "$dir/prog/vrpq-client-static" | grep 'NEEDED *libpvclient' >/dev/null
}
# shellcheck disable=SC2046
cxx_build() { build c++ install-cxx install-cxx.cc $(pkg-config --libs pvclient); }
check "C: the seed's VRPQ server and client, shared library" c_shared
check "C: the VRPQ client, static library" c_static
check "C++: every public header, a vbpipe program" cxx_build

# 4. A platform from the installed pvd and DTB; programs find their VM's
#    nodes with PVD_VM, as under pvd@VM.service.
export LD_LIBRARY_PATH=$libdir
run=$dir/run
for vm in vm2 vm3 vm4; do
    "$sbindir/pvd" --config "$datadir/pvd/demo.dtb" --vm "$vm" --runtime-dir "$run/$vm" \
        --platform-dir "$dir/platform" --log-level notice 2>>"$dir/$vm.log" &
    pids+=($!)
done
pvctl() { PVD_RUNTIME_DIR=$run timeout "$T" "$bindir/pvctl" "$@"; }
for vm in vm2 vm3 vm4; do
    pvctl --vm "$vm" wait --timeout 10 >/dev/null || { echo "the vlinks of $vm did not come up"; cat "$dir"/vm*.log; exit 1; }
done
check "installed pvctl: every vlink of vm2 is ON (pvctl --vm vm2 status)" pvctl --vm vm2 status

in_vm() { local vm=$1; shift; PVD_RUNTIME_DIR=$run PVD_VM=$vm timeout -k 2 "$T" "$@"; }
pair() {  # client program: the seed's VRPQ server in vm2, the client in vm3
    in_vm vm2 "$dir/prog/vrpq-server" >"$dir/server.out" 2>&1 &
    local s=$! c=0 sr=0
    in_vm vm3 "$dir/prog/$1" 7 5 >"$dir/client.out" 2>&1 || c=$?
    wait $s || sr=$?
    [ $c -eq 0 ] && [ $sr -eq 0 ] && grep -q "received 7" "$dir/server.out" &&
        grep -q "the client closed the channel after 5 requests" "$dir/server.out" ||
        { echo "  client exit $c, server exit $sr"; cat "$dir/client.out" "$dir/server.out"; return 1; }
}
check "VRPQ vm3 -> vm2, shared library" pair vrpq-client
check "VRPQ vm3 -> vm2, static library" pair vrpq-client-static
cxx() {  # the C++ program writes in vm4, reads in vm2 (the reader under the installed pvrun)
    in_vm vm4 "$dir/prog/install-cxx" write vbpipe0 "hello from C++" &
    local w=$! got rc=0
    got=$(in_vm vm2 env PVRUN_LIBRARY="$libdir/pvd/libpvrun.so" "$bindir/pvrun" head -c 14 /dev/vbpipe0) || rc=$?
    wait $w || rc=$?
    [ $rc -eq 0 ] && [ "$got" = "hello from C++" ] || { echo "  exit $rc, read \"$got\""; return 1; }
    in_vm vm2 "$dir/prog/install-cxx" write vbpipe0 "and back" &
    w=$!
    got=$(in_vm vm4 "$dir/prog/install-cxx" read /dev/vbpipe0 8) || rc=$?
    wait $w || rc=$?
    [ $rc -eq 0 ] && [ "$got" = "and back (libpvclient $("$bindir/pvctl" --version | cut -d' ' -f2))" ] ||
        { echo "  exit $rc, read \"$got\""; return 1; }
}
check "C++ vbpipe vm4 <-> vm2, with the installed pvrun" cxx
for p in "${pids[@]}"; do kill -TERM "$p"; done
stopped=0
for p in "${pids[@]}"; do wait "$p" || stopped=1; done
pids=()
check "pvds stopped cleanly, no socket left" test $stopped -eq 0 -a "$(find "$dir" -type s | wc -l)" -eq 0

# 5. Units, tmpfiles.d, sysusers.d, man pages, completions.
check "systemd-analyze verify: the installed pvd.service and pvd@.service" \
    "$SRC/tests/systemd-verify.sh" "$sbindir/pvd" "$unitdir/pvd.service" "$unitdir/pvd@.service"
check "tmpfiles.d makes the platform directory, sysusers.d the pvd group" sh -c "
    grep -q '^d /run/pvd-platform ' '$prefix/lib/tmpfiles.d/pvd.conf' &&
    grep -q '^g pvd ' '$prefix/lib/sysusers.d/pvd.conf'"
check "man pages: pvd(8), pvctl(1), pvrun(1), pvd-platform(5), pvclient(3), one per function" sh -c "
    m='$prefix/share/man'
    for p in man8/pvd.8 man1/pvctl.1 man1/pvrun.1 man5/pvd-platform.5 man3/pvclient.3 man3/vrpqSessionCreate.3 \
             man3/vumemBufferAlloc.3 man3/vbpipeOpen.3 man3/pvLastError.3; do
        test -f \"\$m/\$p\" || { echo \"  no \$p\"; exit 1; }
    done"
man_complete() {  # a page for every exported function; every SEE ALSO of ours names a page that exists
    local m=$prefix/share/man f page sec missing=0
    for f in $(nm -D --defined-only "$libdir/libpvclient.so" | awk '$2 == "T" { print $3 }' | sed 's/@.*//'); do
        [ -f "$m/man3/$f.3" ] || { echo "  no man page for $f"; missing=1; }
    done
    for f in "$m"/man*/*; do
        sed -n '/^\.SH SEE ALSO/,/^\.SH/p' "$f" | sed -n 's/^\.BR \([^ ]*\) (\([1-8]\)).*/\1 \2/p' |
        while read -r page sec; do
            page=${page//\\-/-}
            case "$page" in dtc|ld.so|systemd.service|pw-top) continue ;; esac
            [ -f "$m/man$sec/$page.$sec" ] || { echo "  $(basename "$f"): SEE ALSO $page($sec) is no page"; exit 1; }
        done || missing=1
    done
    return $missing
}
check "man: a page for every exported function, every SEE ALSO names a page" man_complete
check "bash completion for pvctl, pvd and pvrun" sh -c "
    for c in pvctl pvd pvrun; do test -f '$prefix/share/bash-completion/completions/'\$c || exit 1; done"

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
