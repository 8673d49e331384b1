#!/bin/sh
# systemd-analyze verify of the built pvhv.service, with ExecStart pointing
# at the built pvhv. Skipped (77) where systemd-analyze does not exist.
set -eu
unit="$1"; pvhv="$2"
command -v systemd-analyze >/dev/null 2>&1 || { echo "no systemd-analyze: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|^ExecStart=[^ ]*|ExecStart=$pvhv|" "$unit" > "$tmp/pvhv.service"
grep -q '^Type=notify' "$tmp/pvhv.service"
grep -q '^RuntimeDirectory=pvhv' "$tmp/pvhv.service"
grep -q -- '--dir /run/pvhv ' "$tmp/pvhv.service"
systemd-analyze verify --man=no "$tmp/pvhv.service"
echo "pvhv.service verified"
