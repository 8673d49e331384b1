#!/bin/sh
# Builds the installed libpvclient.a: the library's objects linked into one
# relocatable object in which only the public API (the global: patterns of
# libpvclient.map) stays global. A program that links libpvclient.a then
# sees no internal name (pvc_conn_*, pv_msg_*, vbpd_*, ...) that could
# clash with one of its own, as with the shared library's version script.
#
#   mkstatic.sh OUT.a LD OBJCOPY AR MAP IN.a...
set -eu
out=$1 ld=$2 objcopy=$3 ar=$4 map=$5
shift 5
tmp="$out.tmp.o"
trap 'rm -f "$tmp"' EXIT
"$ld" -r -o "$tmp" --whole-archive "$@" --no-whole-archive
# The patterns between "global:" and "local:", one per line, without ';'.
keep=$(sed -n '/global:/,/local:/p' "$map" | sed -e '/global:/d' -e '/local:/d' -e 's/[;[:space:]]//g' -e '/^$/d')
[ -n "$keep" ] || { echo "mkstatic.sh: no global: patterns in $map" >&2; exit 1; }
set --
for k in $keep; do set -- "$@" "--keep-global-symbol=$k"; done
"$objcopy" --wildcard "$@" "$tmp"
rm -f "$out"
"$ar" rcsD "$out" "$tmp"
