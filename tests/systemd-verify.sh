#!/bin/sh
# systemd-analyze verify of pvd's units, with ExecStart pointing at the pvd
# given: pvd.service as it is, a template (pvd@.service) as instance vm3.
# Any message of systemd-analyze (a setting it ignores) is a failure too.
# Skipped (77) where systemd-analyze does not exist.
#   systemd-verify.sh PVD UNIT...
set -eu
pvd="$1"; shift
command -v systemd-analyze >/dev/null 2>&1 || { echo "no systemd-analyze: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in "$@"; do
    name=$(basename "$unit")
    sed "s|^ExecStart=[^ ]*|ExecStart=$pvd|" "$unit" > "$tmp/$name"
    grep -q '^Type=notify' "$tmp/$name"
    grep -q '^EnvironmentFile=' "$tmp/$name"
    case "$name" in
    *@.service)
        grep -q '^RuntimeDirectory=pvd/%i$' "$tmp/$name"
        grep -q '^EnvironmentFile=.*/pvd/%i.conf$' "$tmp/$name"
        grep -q -- '--vm %i --runtime-dir /run/pvd/%i ' "$tmp/$name"
        what="$tmp/${name%@.service}@vm3.service" ;;
    *)
        grep -q '^RuntimeDirectory=pvd$' "$tmp/$name"
        what="$tmp/$name" ;;
    esac
    if ! systemd-analyze verify --man=no "$what" > "$tmp/out" 2>&1 || [ -s "$tmp/out" ]; then
        echo "systemd-analyze verify $(basename "$what"):"; cat "$tmp/out"; exit 1
    fi
    echo "$(basename "$what") verified"
done
