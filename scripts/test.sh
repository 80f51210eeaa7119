#!/usr/bin/env bash
# The project's test command: installs what the tests need when it is missing,
# starts the local servers they use, then runs the gate (fmt, clippy, benches
# compile, tests, the Debian package's test). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

# Installs the Debian package $2 unless command $1 exists. Runs `apt-get
# update` only when the package lists do not know the package yet.
ensure_command() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null && return
    command -v apt-get >/dev/null || die "'$cmd' is missing; install the '$pkg' package"
    step "installing $pkg (for $cmd)"
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
        as_root apt-get update
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg"
}

ensure_command fusermount3 fuse3
ensure_command git git
ensure_command tar tar
ensure_command rsync rsync
# The web app's browser tests (tests/fuse_tests/browser.rs).
ensure_command chromium chromium
ensure_command chromedriver chromium-driver
ensure_command npm npm

[ -c /dev/fuse ] || die "/dev/fuse is missing: load the module (modprobe fuse), or run the container with --device /dev/fuse --cap-add SYS_ADMIN"

# Local servers for the tests. Start each in the background and record its PID
# in server_pids (e.g. `minio server "$dir" & server_pids+=($!)`), then export
# the variables the tests read (AWS_ENDPOINT_URL, ...). The trap stops them.
server_pids=()
# Whether PID runs (a zombie does not: servers started by a helper script are
# not our children, and nothing may reap them).
running() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $stat != Z* ]]
}
stop_servers() {
    local pid
    for pid in "${server_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            running "$pid" || break
            sleep 0.1
        done
    done
}
trap stop_servers EXIT

step "local S3 + DynamoDB servers (moto, and dynalite: for the aws backend's tests)"
cloud_env=$(scripts/local-cloud.sh start target/local-cloud) || die "the local cloud servers did not start"
eval "$cloud_env"
server_pids+=("$LATUS_LOCAL_CLOUD_PID" "$LATUS_LOCAL_DYNALITE_PID")

step "mount helper scripts"
scripts/test-mount-helpers.sh

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo build --benches"
cargo build --benches

step "cargo test $*"
cargo test "$@"

step "POSIX suite: pjdfstest against a fresh mount (at least 380 of 398 cases pass)"
scripts/test-pjdfstest.sh target/debug/latus

step "fsx: 10,000 random operations on one file, checked against fsx's model"
scripts/test-fsx.sh 10000

step "Debian package: build from the debug binary, install, mount, remove"
scripts/test-package.sh target/debug/latus
