#!/bin/sh
# ctk `check` for upstream.conf: test the *staged* fragment inside the real nginx.conf, so a
# broken upstream is refused before it replaces the live file (nginx -t cannot test a fragment
# on its own, and testing the live nginx.conf would test the old file).
#
#   nginx-check.sh STAGED [PREFIX]     PREFIX = nginx's -p directory (default: current directory)
#
# ctk runs checks in the destination's directory, which is the prefix in this example.
set -eu
staged=$1
prefix=$(cd "${2:-.}" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctk-nginx-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$prefix/nginx.conf" "$tmp/nginx.conf"
ln -s "$staged" "$tmp/upstream.conf"   # nginx resolves `include upstream.conf` next to nginx.conf
exec "${NGINX:-nginx}" -t -q -p "$prefix/" -e "$prefix/logs/error.log" -c "$tmp/nginx.conf"
