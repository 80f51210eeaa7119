#!/usr/bin/env bash
# Local cloud servers on 127.0.0.1 for the tests: S3 + DynamoDB (moto), and
# dynalite (npm), a DynamoDB-compatible store without TransactWriteItems.
#
#   scripts/local-cloud.sh start DIR   installs moto and dynalite when missing,
#                                      starts each on a free port (logs in
#                                      DIR/moto.log and DIR/dynalite.log, PIDs in
#                                      DIR/pid and DIR/dynalite.pid), waits until
#                                      they answer, and prints `export` lines
#                                      to eval
#   scripts/local-cloud.sh stop DIR    stops the servers whose PIDs are there
#
# Progress goes to stderr so that stdout holds only the export lines.
set -euo pipefail

START_TIMEOUT=${LATUS_CLOUD_START_TIMEOUT:-60}

say() { printf '%s\n' "$*" >&2; }
die() { printf 'local-cloud: error: %s\n' "$*" >&2; exit 1; }

usage() { die "usage: $0 start|stop DIR"; }

# Whether PID is alive and runs NAME (moto, dynalite), so a recycled PID is
# never killed.
is_our_server() {
    local pid=$1 name=${2:-moto}
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$name"
}

DYNALITE_VERSION=3.2.2

# dynalite in DIR/dynalite (npm), with a launcher that listens on 127.0.0.1
# only (dynalite's own command line listens on every address).
ensure_dynalite() {
    local dir=$1
    if [ ! -d "$dir/dynalite/node_modules/dynalite" ]; then
        command -v npm >/dev/null || die "npm is missing (Debian package npm)"
        say "local-cloud: installing dynalite@$DYNALITE_VERSION with npm"
        mkdir -p "$dir/dynalite"
        npm install --silent --no-audit --no-fund --prefix "$dir/dynalite" \
            "dynalite@$DYNALITE_VERSION" >&2 || die "npm could not install dynalite"
    fi
    cat >"$dir/dynalite/dynalite-server.js" <<'JS'
// Usage: node dynalite-server.js PORT
const dynalite = require('dynalite');
const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
server.listen(Number(process.argv[2]), '127.0.0.1', () => console.log('listening'));
JS
}

stop_pid_file() {
    local file=$1 name=$2 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if is_our_server "$pid" "$name"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            is_our_server "$pid" "$name" || break
            sleep 0.1
        done
        if is_our_server "$pid" "$name"; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
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
    local dir=$1
    stop_pid_file "$dir/pid" moto
    stop_pid_file "$dir/dynalite.pid" dynalite
}

# Waits until server NAME (PID, on PORT) answers; on failure removes its
# PID file, stops what started, and dies with the end of its log.
await_server() {
    local name=$1 pid=$2 port=$3 dir=$4 pidfile=$5 log=$6 t0=$SECONDS
    until answers "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/$pidfile"
            die "$name exited at start; last lines of $dir/$log:
$(tail -n 20 "$dir/$log")"
        fi
        if [ $((SECONDS - t0)) -ge "$START_TIMEOUT" ]; then
            stop "$dir"
            die "$name did not answer on 127.0.0.1:$port within ${START_TIMEOUT} s; last lines of $dir/$log:
$(tail -n 20 "$dir/$log")"
        fi
        sleep 0.2
    done
}

# Starts dynalite; prints its port.
start_dynalite() {
    local dir=$1 port pid t0
    ensure_dynalite "$dir"
    port=$(free_port)
    t0=$SECONDS
    setsid node "$dir/dynalite/dynalite-server.js" "$port" >"$dir/dynalite.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/dynalite.pid"
    await_server dynalite "$pid" "$port" "$dir" dynalite.pid dynalite.log
    say "local-cloud: dynalite (pid $pid) answers on 127.0.0.1:$port after $((SECONDS - t0)) s"
    echo "$port"
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
    await_server moto "$pid" "$port" "$dir" pid moto.log
    say "local-cloud: moto (pid $pid) answers on 127.0.0.1:$port after $((SECONDS - t0)) s"
    dynalite_port=$(start_dynalite "$dir")
    cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export LATUS_LOCAL_CLOUD_PID=$pid
export LATUS_TEST_DYNALITE_URL=http://127.0.0.1:$dynalite_port
export LATUS_LOCAL_DYNALITE_PID=$(cat "$dir/dynalite.pid")
EOF
}

[ $# -eq 2 ] || usage
case $1 in
start) start "$2" ;;
stop) stop "$2" ;;
*) usage ;;
esac
