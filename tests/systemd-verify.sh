#!/bin/sh
# systemd-analyze verify of the built pvd.service, with ExecStart pointing at
# the built pvd. Skipped (77) where systemd-analyze does not exist.
set -eu
unit="$1"; pvd="$2"
command -v systemd-analyze >/dev/null 2>&1 || { echo "no systemd-analyze: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|^ExecStart=[^ ]*|ExecStart=$pvd|" "$unit" > "$tmp/pvd.service"
grep -q '^Type=notify' "$tmp/pvd.service"
grep -q '^RuntimeDirectory=pvd' "$tmp/pvd.service"
grep -q '^EnvironmentFile=' "$tmp/pvd.service"
systemd-analyze verify --man=no "$tmp/pvd.service"
echo "pvd.service verified"
