#!/usr/bin/env bash
# Builds the Debian packages of pvd (pvd, libpvclient0, libpvclient-dev)
# with dpkg-buildpackage from a copy of the tracked files, checks them with
# lintian (any error fails) and unpacks them into a scratch root to run the
# packaged pvd and pvctl. The .debs land in build-deb/ (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh --deb

out=$(mkdir -p "${1:-build-deb}" && cd "${1:-build-deb}" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/pvd-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The tracked files as they are now (committed or not), without build trees.
mkdir "$work/pvd"
git ls-files -z | xargs -0 cp --parents -t "$work/pvd"
echo "==> dpkg-buildpackage -b -us -uc"
(cd "$work/pvd" && dpkg-buildpackage -b -us -uc -j"$(nproc)") >"$work/build.log" 2>&1 ||
    { tail -n 60 "$work/build.log"; echo "dpkg-buildpackage failed (log above)"; exit 1; }
rm -f "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo
cp "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$out/"
ls -l "$out"

echo "==> lintian"
lintian --fail-on error --info --display-level ">=warning" "$out"/*.changes | tee "$out/lintian.txt"

echo "==> the packages, unpacked into a scratch root"
root=$work/root
for d in "$out"/*.deb; do dpkg-deb -x "$d" "$root"; done
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
LD_LIBRARY_PATH=$root/usr/lib/$multiarch "$root/usr/sbin/pvd" --version
"$root/usr/bin/pvctl" --version
dpkg-deb -f "$out"/pvd_*.deb Depends
dpkg-deb -f "$out"/libpvclient0_*.deb Depends
for f in lib/systemd/system/pvd.service lib/systemd/system/pvd@.service usr/lib/sysusers.d/pvd.conf \
         usr/lib/tmpfiles.d/pvd.conf usr/share/pvd/demo.dtb usr/include/pv/vrpq.h usr/lib/$multiarch/libpvclient.a \
         usr/lib/$multiarch/pkgconfig/pvclient.pc usr/share/man/man3/vrpqSessionCreate.3.gz; do
    [ -e "$root/$f" ] || { echo "missing from the packages: $f"; exit 1; }
done
dpkg-deb -I "$out"/pvd_*.deb postinst | grep systemd-sysusers >/dev/null ||
    { echo "pvd's postinst does not create the group pvd"; exit 1; }
echo "==> built and checked: $(cd "$out" && ls ./*.deb | tr '\n' ' ')"
