#!/usr/bin/env bash
# The POSIX test suite pjdfstest (crates.io) against a fresh latus mount.
#
#   scripts/test-pjdfstest.sh [LATUS_BINARY]   (default target/debug/latus)
#
# Installs pjdfstest into target/tools when missing, adds the unprivileged
# user `tests` it switches to (with `nobody`), mounts a new node with
# --allow-other (other users must reach the folder), runs the suite, prints
# its summary and fails unless at least MIN_PASSED cases pass and none fails.
# README's "POSIX conformance" lists the cases that are skipped and why.
set -euo pipefail
cd "$(dirname "$0")/.."

PJDFSTEST_VERSION=0.2.2
MIN_PASSED=${LATUS_PJDFSTEST_MIN_PASSED:-380}
latus=$(realpath "${1:-target/debug/latus}")
tools=$PWD/target/tools/pjdfstest
pjdfstest=$tools/bin/pjdfstest

die() { printf 'pjdfstest: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (the suite changes owners and switches users)"
[ -x "$latus" ] || die "no latus binary at $latus"
if [ ! -x "$pjdfstest" ] || ! "$pjdfstest" --version | grep -q "$PJDFSTEST_VERSION"; then
    echo "installing pjdfstest $PJDFSTEST_VERSION into $tools"
    cargo install --quiet --locked --version "$PJDFSTEST_VERSION" --root "$tools" pjdfstest
fi
getent passwd tests >/dev/null ||
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin tests
nobody_group=$(id -gn nobody)

work=$(mktemp -d /tmp/latus-pjdfstest.XXXXXX)
chmod 0755 "$work" # other users reach the mount through it
mnt=$work/mnt
cleanup() {
    if mountpoint -q "$mnt"; then
        LATUS_HOME=$work/home "$latus" unmount "$mnt" >/dev/null 2>&1 ||
            fusermount3 -u -z "$mnt" || true
    fi
    mountpoint -q "$mnt" || rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt" "$work/second"

# naptime: the kernel stamps times from a coarse clock (a few ms), so the
# suite's "did the time change" checks need a longer pause than its default.
# EROFS cases stay off: they remount with `mount -o remount,ro`, which
# mount(8) hands to FUSE's mount.fuse helper (see README).
cat >"$work/pjdfstest.toml" <<EOF
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.02
allow_remount = false

[dummy_auth]
entries = [
  ["nobody", "$nobody_group"],
  ["tests", "tests"],
]
EOF

# Offline: the suite checks the folder, not the upload of what it writes.
LATUS_HOME=$work/home "$latus" mount --offline --allow-other "$mnt" >/dev/null
chmod 0777 "$mnt"
set +e
(cd "$mnt" && "$pjdfstest" -c "$work/pjdfstest.toml" -p "$mnt" -s "$work/second") >"$work/out.txt" 2>&1
status=$?
set -e
summary=$(grep '^Summary:' "$work/out.txt" || true)
if [ -z "$summary" ]; then
    tail -40 "$work/out.txt"
    die "pjdfstest stopped without a summary (exit $status)"
fi
echo "pjdfstest $PJDFSTEST_VERSION on latus: $summary"
awk '/FAILED/{name=$1; getline; print "  failed: " name " -" $0}' "$work/out.txt"
passed=$(sed -n 's/.* \([0-9]*\) passed.*/\1/p' <<<"$summary")
[ "$status" -eq 0 ] || die "some cases failed"
[ "${passed:-0}" -ge "$MIN_PASSED" ] || die "$passed passed; at least $MIN_PASSED expected"
