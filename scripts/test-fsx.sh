#!/usr/bin/env bash
# fsx, the file system exerciser (crates.io's Rust port of xfstests' fsx),
# against a fresh latus mount: random reads, writes, truncates, mmap reads
# and writes, msync, fsync, posix_fallocate, sendfile and copy_file_range on
# one file, every read checked against fsx's own model of the file.
#
#   scripts/test-fsx.sh [OPS] [SEED] [LATUS_BINARY]
#       OPS     operations (default 3000: the test command's share)
#       SEED    fsx's seed, so a failure replays (default 1)
#
# Installs fsx into target/tools when missing. The mount is --offline: the
# exerciser checks the folder, not the upload of its ~OPS/20 versions.
# Prints the operations per second next to the same run on a plain folder of
# the same disk; fails when fsx finds a difference.
set -euo pipefail
cd "$(dirname "$0")/.."

FSX_VERSION=0.3.2
ops=${1:-3000}
seed=${2:-1}
latus=$(realpath "${3:-target/debug/latus}")
tools=$PWD/target/tools/fsx
fsx=$tools/bin/fsx

die() { printf 'fsx: error: %s\n' "$*" >&2; exit 1; }

[ -x "$latus" ] || die "no latus binary at $latus"
if [ ! -x "$fsx" ] || ! "$fsx" --version | grep -q "$FSX_VERSION"; then
    echo "installing fsx $FSX_VERSION into $tools"
    cargo install --quiet --locked --version "$FSX_VERSION" --root "$tools" fsx
fi

work=$(mktemp -d "$PWD/target/fsx.XXXXXX")
mnt=$work/mnt
cleanup() {
    if mountpoint -q "$mnt"; then
        LATUS_HOME=$work/home "$latus" unmount "$mnt" >/dev/null 2>&1 ||
            fusermount3 -u -z "$mnt" || true
    fi
    mountpoint -q "$mnt" || rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt" "$work/plain" "$work/artifacts"

# fsx's defaults plus the operations a program may use on a synced file
# (hole punching is left out: latus does not implement fallocate modes).
cat >"$work/fsx.toml" <<'EOF'
[weights]
close_open = 1
read = 10
write = 10
mapread = 10
mapwrite = 10
invalidate = 1
truncate = 10
fsync = 1
fdatasync = 1
posix_fallocate = 1
sendfile = 1
copy_file_range = 1
EOF

# Runs fsx on FILE; prints the seconds it took.
run() {
    local file=$1 start end
    start=$(date +%s.%N)
    if ! "$fsx" -f "$work/fsx.toml" -N "$ops" -S "$seed" -P "$work/artifacts" "$file" \
        >"$work/out.txt" 2>&1; then
        tail -30 "$work/out.txt" >&2
        die "fsx found a difference on $file (seed $seed; replay: $0 $ops $seed)"
    fi
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }'
}

LATUS_HOME=$work/home "$latus" mount --offline "$mnt" >/dev/null
on_latus=$(run "$mnt/fsx.bin")
on_plain=$(run "$work/plain/fsx.bin")
awk -v v="$FSX_VERSION" -v n="$ops" -v s="$seed" -v l="$on_latus" -v p="$on_plain" 'BEGIN {
    printf "fsx %s: %d operations (seed %s) passed on latus in %.1f s (%.0f ops/s); plain folder %.1f s (%.0f ops/s); ratio %.1fx\n",
        v, n, s, l, n / l, p, n / p, l / p
}'
