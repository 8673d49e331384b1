#!/usr/bin/env bash
# Boots one VM of a platform as a QEMU guest: a Debian cloud kernel and a
# small busybox initramfs holding this build's pvd, libpvclient, pvctl,
# pvrun and examples. The guest gets one ivshmem-doorbell device per vlink
# (from pvhv), binds them to vfio-pci, starts pvd --hv ivshmem, waits until
# its vlinks are ON, runs COMMAND and powers off; vm.sh exits with
# COMMAND's status. Without COMMAND the console is a shell. With --serve
# the guest stays up and runs the commands that `vm.sh --in DIR` sends it
# on a second serial port, until `vm.sh --poweroff DIR`.
# The kernel and the initramfs are cached (keyed by their inputs), so that a
# repeated boot costs only the boot. See "Running between QEMU guests" in
# README.md.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    cat <<EOF
usage: vm.sh --vm NAME --config FILE.dtb --hv-dir DIR [options] [-- COMMAND ARGS...]
       vm.sh --vm NAME --config FILE.dtb --hv-dir DIR [options] --serve DIR
       vm.sh --in DIR [--timeout SECONDS] -- COMMAND ARGS...
       vm.sh --poweroff DIR
       vm.sh --check

Boots VM NAME of the platform FILE.dtb as a QEMU guest whose ivshmem
devices come from pvhv (serving DIR), runs COMMAND inside (its output on
stdout) and exits with COMMAND's status. Without COMMAND: a shell on the
console (poweroff with exit).

  --vm NAME          the VM of the platform this guest is
  --config FILE.dtb  the platform device tree (also pvd's inside the guest)
  --hv-dir DIR       pvhv's directory (its sockets); pvhv prints the QEMU
                     options (pvhv --qemu-args NAME)
  --add FILE         copy FILE (with its shared libraries) into the guest's
                     /usr/local/bin; repeatable
  --ivshmem SOCKET   one more ivshmem-doorbell device served on SOCKET (an
                     ivshmem server other than pvhv); repeatable
  --no-pvd           do not start pvd in the guest
  --build DIR        the build directory whose programs go in (default:
                     \$PVD_BUILD_DIR or build/ of this checkout)
  --cache DIR        kernel and initramfs cache (default: \$PVD_VM_CACHE or
                     BUILD/vm-cache)
  --accel auto|kvm|tcg  (default auto: KVM only where the CPU has vmx/svm and
                     a trial boot works, else TCG)
  --mem MB           guest memory (default 256)
  --timeout SECONDS  kill the guest after this long (default 600; not the
                     shell): exit 124
  --pidfile FILE     QEMU writes its pid there
  --log FILE         keep the whole console output there
  --tcp-fwd PORT     a virtio-net NIC on QEMU's user network (guest
                     10.0.2.15), host 127.0.0.1:PORT forwarded to the
                     guest's PORT
  --serve DIR        no COMMAND: once the vlinks are ON, DIR/ready appears
                     and the guest runs what vm.sh --in DIR sends, until
                     vm.sh --poweroff DIR (then exit 0)
  --in DIR           run COMMAND in the guest serving DIR (its output on
                     stdout once it ended; SIGTERM or SIGINT to vm.sh is
                     passed on to COMMAND's session in the guest); waits
                     for DIR/ready first
  --poweroff DIR     power the guest serving DIR off and wait for it
  --check            exit 0 if guests can boot here, else say why, exit 77

Exit status: COMMAND's; 77 QEMU cannot run here (the reason on stderr);
124 timeout; 125 vm.sh or the guest failed before COMMAND ended (--serve:
the guest ended without --poweroff).
EOF
}

die() { echo "vm.sh: $*" >&2; exit 125; }
skip() { echo "vm.sh: cannot boot a guest here: $*" >&2; exit 77; }

vm="" config="" hv_dir="" no_pvd=0 accel=auto mem=256 timeout=600
pidfile="" logfile="" check=0 serve="" in_dir="" off_dir="" tcp_fwd="" timeout_given=""
build=${PVD_BUILD_DIR:-$src/build}
cache=${PVD_VM_CACHE:-}
adds=() ivshmem=() cmd=()
have_cmd=0
while [ $# -gt 0 ]; do
    case $1 in
    --vm) vm=${2:?}; shift 2 ;;
    --config) config=${2:?}; shift 2 ;;
    --hv-dir) hv_dir=${2:?}; shift 2 ;;
    --add) adds+=("${2:?}"); shift 2 ;;
    --ivshmem) ivshmem+=("${2:?}"); shift 2 ;;
    --no-pvd) no_pvd=1; shift ;;
    --build) build=${2:?}; shift 2 ;;
    --cache) cache=${2:?}; shift 2 ;;
    --accel) accel=${2:?}; shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; timeout_given=1; shift 2 ;;
    --pidfile) pidfile=${2:?}; shift 2 ;;
    --log) logfile=${2:?}; shift 2 ;;
    --check) check=1; shift ;;
    --serve) serve=${2:?}; shift 2 ;;
    --in) in_dir=${2:?}; shift 2 ;;
    --poweroff) off_dir=${2:?}; shift 2 ;;
    --tcp-fwd) tcp_fwd=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; cmd=("$@"); have_cmd=1; break ;;
    *) usage >&2; exit 125 ;;
    esac
done
[ ${#cmd[@]} -gt 0 ] || have_cmd=0

shquote() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

# --- a guest that serves (--serve DIR): DIR/pid is the serving vm.sh,
# --- DIR/ctl.in the line to the guest, DIR/ID.out and DIR/ID.st what came back

serving() {  # DIR: true while a vm.sh serves it
    local p
    p=$(cat "$1/pid" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null
}

# Runs COMMAND in the guest serving $in_dir; exits with its status.
run_in() {
    local dir=$in_dir id line a script n=0 limit st sent=0
    [ $have_cmd -eq 1 ] || die "--in DIR needs -- COMMAND"
    [ -z "$timeout_given" ] || limit=$((timeout * 10))
    # Waits for the guest to be ready, then for COMMAND's status.
    while [ ! -f "$dir/ready" ]; do
        serving "$dir" || [ $n -lt 100 ] || die "no guest serves $dir (vm.sh --serve $dir)"
        [ -z "${limit:-}" ] || [ $n -lt "$limit" ] || { echo "vm.sh: the guest of $dir was not ready within $timeout s" >&2; exit 124; }
        n=$((n + 1)); sleep 0.1
    done
    id=c$$r$RANDOM$RANDOM
    script=exec
    for a in "${cmd[@]}"; do script+=" $(shquote "$a")"; done
    line="RUN $id $(printf '%s\n' "$script" | base64 -w0)"
    [ ${#line} -lt 4000 ] || die "COMMAND is too long for the guest's command line (put it in a script: --add FILE)"
    rm -f "$dir/$id.out" "$dir/$id.st"
    trap 'sent=$((sent + 1)); [ $sent -gt 1 ] || echo "KILL $id TERM" >>"$dir/ctl.in"' TERM INT HUP
    echo "$line" >>"$dir/ctl.in"
    while [ ! -s "$dir/$id.st" ]; do
        if ! serving "$dir"; then
            [ -s "$dir/$id.st" ] && break
            echo "vm.sh: the guest of $dir went away before COMMAND ended" >&2; exit 125
        fi
        if [ -n "${limit:-}" ] && [ $n -ge "$limit" ]; then
            echo "KILL $id KILL" >>"$dir/ctl.in"
            echo "vm.sh: COMMAND did not end within $timeout s in the guest of $dir: killed" >&2; exit 124
        fi
        n=$((n + 1)); sleep 0.1
    done
    st=$(tr -dc '0-9' <"$dir/$id.st")
    cat "$dir/$id.out" 2>/dev/null
    rm -f "$dir/$id.out" "$dir/$id.st"
    exit "${st:-125}"
}

poweroff_guest() {
    local dir=$off_dir n=0
    serving "$dir" || return 0
    echo "OFF" >>"$dir/ctl.in"
    while serving "$dir"; do
        [ $n -lt 300 ] || die "the guest of $dir did not power off within 30 s"
        n=$((n + 1)); sleep 0.1
    done
}

if [ -n "$in_dir" ]; then run_in; fi
if [ -n "$off_dir" ]; then poweroff_guest; exit 0; fi

qemu=$(command -v qemu-system-x86_64 || true)
[ -n "$qemu" ] || skip "qemu-system-x86_64 is not installed (scripts/setup-deps.sh installs it)"
for t in cpio dpkg-deb apt-get flock timeout; do
    command -v $t >/dev/null || skip "$t is not installed (scripts/setup-deps.sh installs it)"
done
[ -x /bin/busybox ] || skip "busybox is not installed (scripts/setup-deps.sh installs busybox-static)"

if [ $check -eq 0 ]; then
    [[ $vm =~ ^[A-Za-z0-9_.-]+$ ]] || die "--vm NAME is required (letters, digits, _ . -)"
    [ $no_pvd -eq 1 ] || [ -n "$config" ] || die "--config FILE.dtb is required (or --no-pvd)"
    [ -z "$config" ] || [ -r "$config" ] || die "$config: cannot read the platform device tree"
    [ -x "$build/daemon/pvd" ] || die "$build/daemon/pvd: not built (ninja -C $build, or --build DIR)"
    [[ $mem =~ ^[0-9]+$ ]] || die "--mem takes megabytes"
    [[ $timeout =~ ^[0-9]+$ ]] || die "--timeout takes seconds"
    for f in "${adds[@]}"; do [ -f "$f" ] || die "--add $f: no such file"; done
    [ -z "$serve" ] || [ $have_cmd -eq 0 ] || die "--serve DIR takes no COMMAND (vm.sh --in DIR -- COMMAND runs one)"
    [ -z "$tcp_fwd" ] || { [[ $tcp_fwd =~ ^[0-9]+$ ]] && [ "$tcp_fwd" -gt 0 ] && [ "$tcp_fwd" -lt 65536 ]; } ||
        die "--tcp-fwd takes a TCP port"
fi
case $accel in auto|kvm|tcg) ;; *) die "--accel auto, kvm or tcg" ;; esac
[ -n "$cache" ] || cache=$build/vm-cache
mkdir -p "$cache" || die "$cache: cannot create the cache directory"
cache=$(cd "$cache" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/pvd-vm.XXXXXX")
qemu_pid=""
scratch=""     # a cache entry being built: removed if vm.sh stops half-way
demux_pid=""
cleanup() {
    if [ -n "$qemu_pid" ]; then kill -TERM "$qemu_pid" 2>/dev/null || true; wait "$qemu_pid" 2>/dev/null || true; fi
    if [ -n "$demux_pid" ]; then kill -TERM "$demux_pid" 2>/dev/null || true; wait "$demux_pid" 2>/dev/null || true; fi
    if [ -n "$serve" ] && [ "$(cat "$serve/pid" 2>/dev/null)" = $$ ]; then
        rm -f "$serve/ready" "$serve/ctl.in" "$serve/ctl.out" "$serve"/*.b64 "$serve/pid"
    fi
    rm -rf "$work" ${scratch:+"$scratch"}
}
trap cleanup EXIT
# A guest that serves says so at once (DIR/pid), so that vm.sh --in waits
# while this one prepares and boots.
if [ -n "$serve" ]; then
    [[ $serve != *,* ]] || { serve=""; die "--serve DIR: no comma in DIR (QEMU's option syntax)"; }
    mkdir -p "$serve" || { serve=""; die "--serve DIR: cannot create it"; }
    serve=$(cd "$serve" && pwd)
    ! serving "$serve" || { p=$(cat "$serve/pid"); serve=""; die "a guest already serves $serve (vm.sh pid $p)"; }
    echo $$ >"$serve/pid"
fi
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

# One builder of the cache at a time; readers copy out under the same lock.
exec {lockfd}>"$cache/lock"
flock "$lockfd"

# --- the kernel: Debian's cloud kernel package, unpacked, never installed ---

# The vfio modules the guest loads (their dependencies are added in order),
# and those of the NIC it loads with --tcp-fwd.
guest_modules=(vfio_iommu_type1 vfio_pci)
net_modules=(virtio_pci virtio_net)

kernel_pkg() {  # the package linux-image-cloud-amd64 points at ("" if apt knows none)
    local dep
    dep=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
          awk '/Depends: linux-image-/ && !d { d = $2 } END { print d }') || true
    echo "$dep"
}

# Prints the .ko files of the modules in $@ and their dependencies, each
# after what it depends on. $1 is the unpacked modules tree.
module_order() {
    local tree=$1; shift
    local -A seen=()
    local out=()
    visit() {
        local name=${1//-/_} ko deps d
        [ -z "${seen[$name]:-}" ] || return 0
        seen[$name]=1
        ko=$(find "$tree" \( -name "${name}.ko" -o -name "${name//_/-}.ko" \) -print -quit)
        [ -n "$ko" ] || die "module $name is not in the kernel package"
        deps=$(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p')
        deps=${deps%%$'\n'*}
        for d in ${deps//,/ }; do visit "$d"; done
        out+=("$ko")
    }
    for m in "$@"; do visit "$m"; done
    printf '%s\n' "${out[@]}"
}

ensure_kernel() {
    local pkg ver key tmp lists choice attempt
    # Asking apt costs a second: ask again only when its lists changed.
    lists=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo 0)
    choice=$(cat "$cache/kernel.choice" 2>/dev/null || true)
    if [ "${choice%% *}" = "$lists" ] && [ -f "$cache/kernel-${choice#* }/done" ] &&
       [ -d "$cache/kernel-${choice#* }/modules/net" ]; then
        kdir=$cache/kernel-${choice#* }
        return 0
    fi
    tmp=$(mktemp -d "$cache/tmp.XXXXXX"); scratch=$tmp
    # Twice if need be: lists that are missing or older than the mirror
    # (a kernel gone after a point release) are refreshed, as root.
    for attempt in 1 2; do
        pkg=$(kernel_pkg)
        ver=""
        [ -z "$pkg" ] || ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n '/^Version: /{s///p;q}') || true
        if [ -n "$pkg" ] && [ -n "$ver" ]; then
            # The modules taken are part of the key: a cache of another
            # list is built again.
            key="${pkg}_${ver}-$(echo "${guest_modules[*]} / ${net_modules[*]}" | sha256sum | cut -c1-8)"
            kdir=$cache/kernel-$key
            if [ -f "$kdir/done" ]; then
                echo "$lists $key" >"$cache/kernel.choice"; rm -rf "$tmp"; return 0
            fi
            echo "vm.sh: fetching $pkg $ver (once; cached in $cache)" >&2
            if (cd "$tmp" && apt-get download -q "$pkg=$ver" >download.log 2>&1); then break; fi
            sed 's/^/  /' "$tmp/download.log" >&2
        fi
        if [ $attempt -eq 2 ] || [ "$(id -u)" -ne 0 ]; then
            rm -rf "$tmp"
            skip "cannot get Debian's cloud kernel (linux-image-cloud-amd64) with apt-get download; run apt-get update, or give a reachable Debian repository"
        fi
        echo "vm.sh: apt-get update, then trying again" >&2
        apt-get update -q >"$tmp/update.log" 2>&1 || true
        lists=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo 0)
    done
    dpkg-deb -x "$tmp"/*.deb "$tmp/x" || { rm -rf "$tmp"; die "dpkg-deb -x failed on $pkg"; }
    rm -rf "$kdir"; mkdir -p "$kdir/modules/net"
    cp "$tmp"/x/boot/vmlinuz-* "$kdir/vmlinuz"
    module_order "$tmp/x/lib/modules" "${guest_modules[@]}" >"$tmp/order"
    module_order "$tmp/x/lib/modules" "${net_modules[@]}" >"$tmp/order-net"
    local i=0 ko
    while read -r ko; do
        i=$((i + 1))
        cp "$ko" "$kdir/modules/$(printf '%02d' $i)-$(basename "$ko")"
    done <"$tmp/order"
    while read -r ko; do
        i=$((i + 1))
        cp "$ko" "$kdir/modules/net/$(printf '%02d' $i)-$(basename "$ko")"
    done <"$tmp/order-net"
    rm -rf "$tmp"
    # Older kernels of this cache are of no more use.
    find "$cache" -maxdepth 1 -name 'kernel-*' ! -name "kernel-$key" -exec rm -rf {} +
    touch "$kdir/done"
    echo "$lists $key" >"$cache/kernel.choice"
}

# --- initramfs parts, concatenated at boot: base (busybox, modules, /init),
# --- programs (this build's), and one per boot (command, --add files) ---

# A newc cpio entry without a file behind it (a directory or a device
# node), so that /dev/console exists before /init runs, without root.
newc() {  # name mode-octal rdev-major rdev-minor
    local n=$(( ${#1} + 1 ))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
        $((ino++)) $((8#$2)) 0 0 1 0 0 0 0 "$3" "$4" $n 0 "$1"
    head -c $(( (4 - (110 + n) % 4) % 4 )) /dev/zero
}

make_cpio() {  # root-dir out-file
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$2.tmp"
    mv "$2.tmp" "$2"
}

# Copies ELF file $1 to $2/$3 and every shared library it needs into the
# guest's library directory (the dynamic loader's default path).
stage_elf() {
    local file=$1 root=$2 dest=$3 line name path
    mkdir -p "$root/$(dirname "$dest")" "$root/lib/x86_64-linux-gnu" "$root/lib64"
    cp -L "$file" "$root/$dest"
    if ! head -c 4 "$file" | grep -q ELF; then return 0; fi
    while read -r line; do
        case $line in
        *"=> not found"*) die "$file needs ${line%% *}, which is not found" ;;
        *"=> /"*)
            name=${line%% *}; path=${line#*=> }; path=${path%% (*}
            [ -e "$root/lib/x86_64-linux-gnu/$name" ] || cp -L "$path" "$root/lib/x86_64-linux-gnu/$name" ;;
        /*)
            path=${line%% (*}
            mkdir -p "$root/$(dirname "$path")"
            [ -e "$root/$path" ] || cp -L "$path" "$root/$path" ;;
        esac
    done < <(ldd "$file" 2>/dev/null || true)
}

ensure_base() {
    local key r
    key=$( { echo "$kdir"; sha256sum "$src/scripts/vm-init.sh" /bin/busybox; } | sha256sum | cut -c1-16)
    base=$cache/base-$key.cpio
    [ -f "$base" ] && return 0
    r=$(mktemp -d "$cache/tmp.XXXXXX"); scratch=$r
    mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,proc,sys,run,tmp,root,etc/pvd,var/log,lib/modules/pvd-vm}
    stage_elf /bin/busybox "$r" bin/busybox
    cp "$src/scripts/vm-init.sh" "$r/init"; chmod 755 "$r/init"
    cp "$kdir"/modules/*.ko "$r/lib/modules/pvd-vm/"
    mkdir -p "$r/lib/modules/pvd-vm/net"
    cp "$kdir"/modules/net/*.ko "$r/lib/modules/pvd-vm/net/"
    make_cpio "$r" "$base.files"
    rm -rf "$r"
    ino=1
    { newc dev 040755 0 0; newc dev/console 020600 5 1; } >"$base.tmp"
    # Only the last archive needs a trailer; the kernel reads on past one.
    cat "$base.files" >>"$base.tmp"
    rm -f "$base.files"
    find "$cache" -maxdepth 1 -name 'base-*.cpio' -exec rm -f {} +
    mv "$base.tmp" "$base"
}

ensure_programs() {
    local files=() key f r
    files=("$build/daemon/pvd" "$build/client/pvctl" "$build/client/pvrun" "$build/client/libpvrun.so")
    while IFS= read -r f; do files+=("$f"); done < <(find "$build/examples" -maxdepth 1 -type f -perm -u+x | LC_ALL=C sort)
    for f in "${files[@]}"; do [ -f "$f" ] || die "$f: not built (ninja -C $build)"; done
    key=$(stat -L -c '%n %s %Y' "${files[@]}" /lib/x86_64-linux-gnu/libc.so.6 | sha256sum | cut -c1-16)
    programs=$cache/programs-$key.cpio
    [ -f "$programs" ] && return 0
    r=$(mktemp -d "$cache/tmp.XXXXXX"); scratch=$r
    stage_elf "$build/daemon/pvd" "$r" usr/sbin/pvd
    stage_elf "$build/client/pvctl" "$r" usr/bin/pvctl
    stage_elf "$build/client/pvrun" "$r" usr/bin/pvrun
    stage_elf "$build/client/libpvrun.so" "$r" usr/lib/pvd/libpvrun.so
    for f in "${files[@]:4}"; do stage_elf "$f" "$r" "usr/bin/$(basename "$f")"; done
    make_cpio "$r" "$programs"
    rm -rf "$r"
    find "$cache" -maxdepth 1 -name 'programs-*.cpio' ! -name "programs-$key.cpio" -exec rm -f {} +
}

make_boot() {  # this boot's part: settings, platform, command, --add files
    local r=$work/boot f a
    mkdir -p "$r/etc/pvd-vm" "$r/etc/pvd" "$r/usr/local/bin"
    {
        echo "VM=$(shquote "$vm")"
        echo "TOKEN=$token"
        echo "NO_PVD=$no_pvd"
        echo "HAVE_CMD=$have_cmd"
        echo "SERVE=$([ -n "$serve" ] && echo 1 || echo 0)"
        echo "NET=$([ -n "$tcp_fwd" ] && echo 1 || echo 0)"
    } >"$r/etc/pvd-vm/boot.env"
    if [ $have_cmd -eq 1 ]; then
        printf 'exec' >"$r/etc/pvd-vm/cmd"
        for a in "${cmd[@]}"; do printf ' %s' "$(shquote "$a")" >>"$r/etc/pvd-vm/cmd"; done
        echo >>"$r/etc/pvd-vm/cmd"
    fi
    [ -z "$config" ] || cp "$config" "$r/etc/pvd/platform.dtb"
    for f in "${adds[@]}"; do stage_elf "$f" "$r" "usr/local/bin/$(basename "$f")"; done
    make_cpio "$r" "$work/boot.cpio"
}

# --- accelerator: KVM only where it really works (QEMU-NOTES: an openable
# --- /dev/kvm is not proof), decided once per host boot ---

kvm_works() {
    [ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
    grep -qwE 'vmx|svm' /proc/cpuinfo || return 1
    local bootid verdict
    bootid=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)
    verdict=$cache/kvm-$bootid
    if [ ! -f "$verdict" ]; then
        if timeout -k 2 30 "$qemu" -M q35 -accel kvm -cpu host -m 128 -nic none -vga none \
                -display none -serial stdio -monitor none -no-reboot \
                -kernel "$kdir/vmlinuz" -initrd "$base" \
                -append "console=ttyS0 quiet panic=-1 pvdvm.trial" </dev/null 2>/dev/null |
            grep -q 'pvd-vm: trial boot ok'; then
            echo yes >"$verdict"
        else
            echo no >"$verdict"
        fi
    fi
    [ "$(cat "$verdict")" = yes ]
}

ensure_kernel
ensure_base
if [ $check -eq 1 ]; then
    echo "vm.sh: guests can boot here (kernel $(basename "$kdir"), $(kvm_works && echo KVM || echo TCG))"
    exit 0
fi
ensure_programs
token=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
make_boot
cat "$base" "$programs" "$work/boot.cpio" >"$work/initrd"
if [ "$accel" = auto ]; then
    if kvm_works; then accel=kvm; else accel=tcg; fi
fi
flock -u "$lockfd"

# no_timer_check: on a loaded host the kernel's check of the IO-APIC timer
# through the virtual IOMMU's interrupt remapping can fail under TCG, and
# the kernel then panics ("timer doesn't work through Interrupt-remapped
# IO-APIC"); a virtual machine's timer needs no such check.
qargs=(-M q35 -m "$mem" -vga none -nographic -no-reboot -device intel-iommu
       -kernel "$kdir/vmlinuz" -initrd "$work/initrd"
       -append "console=ttyS0 quiet loglevel=1 intel_iommu=on no_timer_check panic=-1")
if [ "$accel" = kvm ]; then qargs+=(-accel kvm -cpu host); else qargs+=(-accel tcg); fi
if [ -z "$tcp_fwd" ]; then
    qargs+=(-nic none)
else
    # No option ROM: the kernel is booted directly, iPXE would only cost time.
    qargs+=(-netdev "user,id=pvdvmnet,hostfwd=tcp:127.0.0.1:$tcp_fwd-:$tcp_fwd"
            -device "virtio-net-pci,netdev=pvdvmnet,romfile=")
fi
[ -z "$pidfile" ] || qargs+=(-pidfile "$pidfile")

# ivshmem devices: pvhv knows which vlinks VM NAME has and where it serves them.
if [ -n "$hv_dir" ]; then
    pvhv=$build/daemon/pvhv/pvhv
    [ -x "$pvhv" ] || die "$pvhv: not built; pvhv gives the guest its ivshmem devices"
    # One line per vlink, options separated by blanks (so no blank in DIR).
    lines=$("$pvhv" --config "$config" --dir "$hv_dir" --qemu-args "$vm") || die "pvhv --qemu-args $vm failed"
    while read -ra words; do qargs+=("${words[@]}"); done <<<"$lines"
fi
i=0
for s in "${ivshmem[@]}"; do
    qargs+=(-chardev "socket,path=$s,id=ivx$i" -device "ivshmem-doorbell,chardev=ivx$i,vectors=2")
    i=$((i + 1))
done


if [ $have_cmd -eq 0 ] && [ -z "$serve" ]; then
    # A shell on the console: QEMU has the terminal (Ctrl-A X quits QEMU),
    # in the foreground (no timeout: it is interactive).
    set +e
    "$qemu" "${qargs[@]}"
    exit $?
fi

# --serve: the second serial port is a FIFO pair in DIR (QEMU's pipe
# chardev: DIR/ctl.in to the guest, DIR/ctl.out from it). vm.sh holds
# both open for reading and writing, so that no writer or reader blocks
# on open whether QEMU is there or not; a demultiplexer turns what comes
# back into DIR/ID.out and DIR/ID.st for the vm.sh --in that waits.
demux() {
    local line id f="" st
    while IFS= read -r line; do
        case $line in
        "PVDVM-$token OUT "*)
            id=${line##* }; f=""
            [[ $id =~ ^[A-Za-z0-9]+$ ]] && f=$serve/$id.b64 && : >"$f" ;;
        "PVDVM-$token END "*)
            read -r _ _ id st <<<"$line"
            if [ -n "$f" ] && [ "$f" = "$serve/$id.b64" ]; then
                base64 -d <"$f" >"$serve/$id.out" 2>/dev/null
                rm -f "$f"
                echo "$st" >"$serve/$id.st"
            fi
            f="" ;;
        *) [ -z "$f" ] || printf '%s\n' "$line" >>"$f" ;;
        esac
    done
}
if [ -n "$serve" ]; then
    rm -f "$serve/ready" "$serve/ctl.in" "$serve/ctl.out"
    mkfifo "$serve/ctl.in" "$serve/ctl.out"
    exec {ctl_in}<>"$serve/ctl.in" {ctl_out}<>"$serve/ctl.out"
    demux <&$ctl_out &
    demux_pid=$!
    qargs+=(-chardev "pipe,id=pvdvmctl,path=$serve/ctl" -device "isa-serial,chardev=pvdvmctl,index=1")
fi

# The console goes through a filter that prints what lies between this
# boot's markers (COMMAND's output), keeps the exit status the guest
# prints, and says when a serving guest is ready.
log=${logfile:-$work/console.log}
mkfifo "$work/console"
# mawk reads a pipe in whole blocks unless told otherwise: the marker lines
# must be seen when they come, not when QEMU ends.
awk_opts=()
# (Not "| grep -q": under pipefail, grep leaving at the first match can
# fail the pipeline with awk's SIGPIPE, and then mawk would buffer.)
case $(awk -W version 2>&1 || true) in *mawk*) awk_opts=(-W interactive) ;; esac
awk "${awk_opts[@]}" -v tok="PVDVM-$token" -v stfile="$work/status" -v logf="$log" -v readyf="${serve:+$serve/ready}" '
    { print > logf; fflush(logf) }
    index($0, tok " BEGIN") > 0 { on = 1; next }
    readyf != "" && index($0, tok " READY") > 0 { printf "" > readyf; close(readyf); next }
    (p = index($0, tok " END ")) > 0 {
        if (on && p > 1) { printf "%s", substr($0, 1, p - 1); fflush() }
        print substr($0, p + length(tok) + 5) > stfile; close(stfile)
        on = 0; next
    }
    (p = index($0, tok " FAIL ")) > 0 { print substr($0, p + length(tok) + 6) > (stfile ".fail"); close(stfile ".fail"); next }
    on { print; fflush() }
' <"$work/console" &
filter_pid=$!
start=$SECONDS
timeout -k 5 "$timeout" "$qemu" "${qargs[@]}" -serial stdio -monitor none \
    </dev/null 2>"$work/qemu.err" >"$work/console" &
qemu_pid=$!
set +e
wait "$qemu_pid" 2>/dev/null   # bash would say "Killed" itself: vm.sh says it below
qst=$?
qemu_pid=""
wait "$filter_pid"
set -e
[ -z "$serve" ] || rm -f "$serve/ready"

show_tail() {
    if [ -s "$log" ]; then
        echo "vm.sh: last console lines of $vm:" >&2
        tail -n 40 "$log" | sed 's/^/  | /' >&2
    fi
    if [ -s "$work/qemu.err" ]; then sed 's/^/  qemu: /' "$work/qemu.err" >&2; fi
    return 0
}
if [ $qst -eq 124 ] || { [ $qst -eq 137 ] && [ $((SECONDS - start)) -ge "$timeout" ]; }; then
    echo "vm.sh: guest $vm did not finish within $timeout s: killed" >&2
    show_tail; exit 124
fi
if [ $qst -ge 128 ]; then
    echo "vm.sh: the QEMU of guest $vm was killed (signal $((qst - 128)))" >&2
    exit 125
fi
if [ -f "$work/status.fail" ]; then
    echo "vm.sh: guest $vm: $(cat "$work/status.fail")" >&2
    show_tail; exit 125
fi
if [ ! -f "$work/status" ]; then
    if [ -n "$serve" ]; then echo "vm.sh: guest $vm ended (QEMU status $qst) without vm.sh --poweroff" >&2
    else echo "vm.sh: guest $vm ended (QEMU status $qst) before COMMAND did" >&2; fi
    show_tail; exit 125
fi
st=$(tr -dc '0-9' <"$work/status")
[ -n "$st" ] || { show_tail; die "guest $vm printed no exit status"; }
exit "$st"
