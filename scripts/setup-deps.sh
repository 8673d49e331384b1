#!/usr/bin/env bash
# Installs the Debian packages pvd needs to build and test, if any is missing;
# with --deb also what building its Debian packages and checking them takes
# (scripts/build-debs.sh). Non-interactive; needs root (or sudo) only when
# something is missing.
set -euo pipefail

pkgs=(build-essential pkg-config meson ninja-build device-tree-compiler
      libuv1-dev libfdt-dev libmsgpack-dev libcunit1-dev
      systemd python3 bsdutils bash-completion
      qemu-system-x86 busybox-static cpio)  # QEMU: pvhv's test, scripts/vm.sh's guests
[ "${1:-}" = --deb ] && pkgs+=(dpkg-dev debhelper fakeroot lintian)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup-deps: need root to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
