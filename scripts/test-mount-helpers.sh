#!/usr/bin/env bash
# Checks that mount-helpers/mount.latus parses its arguments as mount(8)
# passes them (dry run: nothing is mounted).
set -euo pipefail
cd "$(dirname "$0")/../mount-helpers"

failures=0
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }

sh -n mount.latus || fail "mount.latus: syntax error"
for f in file-managers/latus-placement file-managers/nautilus/*; do
    sh -n "$f" || fail "$f: syntax error"
done

# latus-placement runs the latus command for each path (a stand-in
# latus records its arguments).
fake=$(mktemp -d)
trap 'rm -rf "$fake"' EXIT
printf '#!/bin/sh\necho "$@" >> "%s/calls"\n' "$fake" > "$fake/latus"
chmod +x "$fake/latus"
LATUS="$fake/latus" sh file-managers/latus-placement online-only "a b" c \
    || fail "latus-placement: exited with an error"
[ "$(cat "$fake/calls")" = "$(printf 'free a b\nfree c')" ] \
    || fail "latus-placement: ran '$(cat "$fake/calls")'"
sh file-managers/latus-placement bogus x 2>/dev/null \
    && fail "latus-placement: accepted an unknown rule"

# expect_command EXPECTED ARGS...: a dry run of `mount.latus ARGS` prints EXPECTED.
expect_command() {
    local expected=$1 actual
    shift
    if ! actual=$(LATUS_MOUNT_DRY_RUN=1 LATUS_BIN=/opt/latus sh mount.latus "$@" 2>&1); then
        fail "mount.latus $*: exited with an error: $actual"
    elif [ "$actual" != "$expected" ]; then
        fail "mount.latus $*: got '$actual', want '$expected'"
    fi
}

# expect_error ARGS...: `mount.latus ARGS` refuses to run.
expect_error() {
    if LATUS_MOUNT_DRY_RUN=1 LATUS_BIN=/opt/latus sh mount.latus "$@" >/dev/null 2>&1; then
        fail "mount.latus $*: accepted, want an error"
    fi
}

me=$(id -un)
expect_command "/opt/latus mount /mnt/L" latus /mnt/L
expect_command "/opt/latus mount /mnt/L" latus /mnt/L -o defaults,noauto,rw,nofail,_netdev,x-systemd.automount,x-systemd.idle-timeout=60
expect_command "/opt/latus --home /h mount /mnt/L" latus /mnt/L -o home=/h,user="$me"
expect_command "/opt/latus --home /h mount /mnt/L" latus /mnt/L -n -t fuse.latus -ohome=/h
expect_command "/opt/latus --home '/my h' mount '/mnt/a b'" latus "/mnt/a b" -o "home=/my h"
expect_command "/opt/latus mount /mnt/L" latus /mnt/L -sv -o rw,unknown
expect_command "/opt/latus mount /mnt/L" latus /mnt/L -f
expect_command "/opt/latus mount /mnt/L --noexec" latus /mnt/L -o nosuid,nodev,noexec
expect_command "/opt/latus mount /mnt/L" latus /mnt/L -o noexec,exec
expect_command "/opt/latus mount /mnt/L --noexec --allow-other" latus /mnt/L -o noexec,allow_other
expect_error latus /mnt/L -o suid
expect_error latus /mnt/L -o dev
expect_error latus
expect_error latus /mnt/L -o unknown
expect_error latus /mnt/L -x
expect_error latus /mnt/L -o
if [ "$(id -u)" -eq 0 ]; then
    expect_command "runuser -u nobody -- /opt/latus --home /h mount /mnt/L" latus /mnt/L -o user=nobody,home=/h
else
    expect_error latus /mnt/L -o user=root
fi

[ "$failures" -eq 0 ] || exit 1
echo "mount helpers: ok"
