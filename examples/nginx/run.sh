#!/bin/sh
# The nginx example, end to end, on 127.0.0.1 only:
#   ctk agent -dev (HTTP :18500) with two backend services (services/*.json, HTTP checks),
#   two tiny backends (:19101, :19102), nginx (:18080) proxying to the healthy ones,
#   and ctk template keeping nginx's upstream list in sync (check before install, reload after).
#
#   examples/nginx/run.sh            # Ctrl-C stops everything it started
#
# Try, in another terminal:
#   curl -s -H 'X-Forwarded-For: 10.0.1.1' 127.0.0.1:18080/   # "backend a" or "backend b"
#   kill <pid of one backend>  →  upstream.conf loses it, nginx reloads (see ctk's log)
#   edit $WORK/upstream.ctmpl to produce a broken config  →  refused by the check, nginx untouched
#   cat $WORK/status.json
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
CTK=${CTK:-$root/.venv/bin/ctk}
PYTHON=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/ctk-nginx.XXXXXX")}
HTTP_PORT=${CTK_HTTP_PORT:-18500}
export PATH="$PATH:/usr/sbin:/sbin"   # nginx lives in /usr/sbin on Debian

pids=""
cleanup() {
    trap - EXIT INT TERM
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    i=0   # give everything 5s to exit cleanly, then SIGKILL what is left (only our own pids)
    while [ "$i" -lt 50 ]; do
        alive=""
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
        [ -n "$alive" ] || break
        i=$((i + 1)); sleep 0.1
    done
    for pid in $pids; do kill -9 "$pid" 2>/dev/null || true; done
    echo "stopped; files are in $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/logs" "$WORK/tmp"
cp "$here/nginx.conf" "$here/ctk-template.hcl" "$here/nginx-check.sh" "$WORK/"
ln -sf "$here/upstream.ctmpl" "$WORK/upstream.ctmpl"   # edit the example's file: ctk picks it up live
# nginx needs a valid upstream.conf to start; ctk replaces it with the real list right away.
printf 'upstream backend {\n    ip_hash;\n    server 127.0.0.1:65535 down;\n}\n' > "$WORK/upstream.conf"

"$CTK" agent -dev -node n1 -http-port "$HTTP_PORT" -dns-port -1 -config-dir "$here/services" \
    > "$WORK/logs/agent.log" 2>&1 &
pids="$pids $!"
"$PYTHON" "$here/backend.py" --name a --port 19101 & pids="$pids $!"
"$PYTHON" "$here/backend.py" --name b --port 19102 & pids="$pids $!"

i=0
until curl -sf "http://127.0.0.1:$HTTP_PORT/v1/status/leader" | grep -q .; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { echo "agent did not start; see $WORK/logs/agent.log"; exit 1; }
    sleep 0.1
done

nginx -p "$WORK/" -e "$WORK/logs/error.log" -c "$WORK/nginx.conf" -g 'daemon off;' &
pids="$pids $!"

echo "work dir: $WORK   nginx: http://127.0.0.1:18080/   agent: http://127.0.0.1:$HTTP_PORT/"
cd "$WORK"
"$CTK" template -config ctk-template.hcl -consul-addr "127.0.0.1:$HTTP_PORT" -status-file status.json &
pids="$pids $!"
wait
