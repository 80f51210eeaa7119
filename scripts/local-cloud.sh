#!/usr/bin/env bash
# A local S3 + DynamoDB server (moto) on 127.0.0.1 for the tests.
#
#   scripts/local-cloud.sh start DIR   installs moto when missing, starts it on a
#                                      free port (log in DIR/moto.log, PID in
#                                      DIR/pid), waits until it answers, and
#                                      prints `export` lines to eval
#   scripts/local-cloud.sh stop DIR    stops the server whose PID is in DIR/pid
#
# Progress goes to stderr so that stdout holds only the export lines.
set -euo pipefail

START_TIMEOUT=${LATUS_CLOUD_START_TIMEOUT:-60}

say() { printf '%s\n' "$*" >&2; }
die() { printf 'local-cloud: error: %s\n' "$*" >&2; exit 1; }

usage() { die "usage: $0 start|stop DIR"; }

# Whether PID is alive and is a moto server (so a recycled PID is never killed).
is_our_server() {
    local pid=$1
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'moto'
}

ensure_moto() {
    python3 -c 'import moto.server' 2>/dev/null && return
    say "local-cloud: installing moto[server] with pip"
    local t0=$SECONDS
    python3 -m pip install --disable-pip-version-check --quiet 'moto[server]' >&2 \
        || die "pip could not install moto[server]"
    python3 -c 'import moto.server' || die "moto installed but 'import moto.server' fails"
    say "local-cloud: installed moto in $((SECONDS - t0)) s"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether the server on PORT answers HTTP (any status).
answers() {
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/" 2>/dev/null
}

stop() {
    local dir=$1 pid
    [ -f "$dir/pid" ] || return 0
    pid=$(cat "$dir/pid")
    if is_our_server "$pid"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            is_our_server "$pid" || break
            sleep 0.1
        done
        if is_our_server "$pid"; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$dir/pid"
}

start() {
    local dir=$1 port pid t0
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    stop "$dir" # a server left by an earlier run that did not stop it
    ensure_moto
    command -v curl >/dev/null || die "curl is missing"
    port=$(free_port)
    t0=$SECONDS
    # setsid: the server outlives this script and ignores the caller's ^C
    # group signal; it is stopped by PID.
    setsid python3 -m moto.server -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/pid"
    until answers "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/pid"
            die "moto exited at start; last lines of $dir/moto.log:
$(tail -n 20 "$dir/moto.log")"
        fi
        if [ $((SECONDS - t0)) -ge "$START_TIMEOUT" ]; then
            stop "$dir"
            die "moto did not answer on 127.0.0.1:$port within ${START_TIMEOUT} s; last lines of $dir/moto.log:
$(tail -n 20 "$dir/moto.log")"
        fi
        sleep 0.2
    done
    say "local-cloud: moto (pid $pid) answers on 127.0.0.1:$port after $((SECONDS - t0)) s"
    cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export LATUS_LOCAL_CLOUD_PID=$pid
EOF
}

[ $# -eq 2 ] || usage
case $1 in
start) start "$2" ;;
stop) stop "$2" ;;
*) usage ;;
esac
