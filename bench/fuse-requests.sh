#!/usr/bin/env bash
# Counts the FUSE requests the kernel sends latus per small-file operation
# (README, Performance: "Where the time of small-file operations goes").
#
#   bench/fuse-requests.sh [LATUS_BINARY] [FILES]
#
# Mounts a fresh home --offline, then for FILES files (default 1000) in one
# folder: creates each (Python open, write 4 KiB, close), stats each, stats
# each again, unlinks each, then writes one 4 MiB file 4 KiB per write(2);
# each step under `perf record -e
# fuse:fuse_request_send -a`. Prints the requests of each step by opcode,
# and per file. Needs root (perf on a kernel tracepoint), perf and python3.
set -euo pipefail

latus=$(realpath "${1:-target/release/latus}")
files=${2:-1000}
[ -x "$latus" ] || { echo "no latus binary at $latus" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf is missing (Debian package linux-perf)" >&2; exit 1; }

work=$(mktemp -d "$PWD/target/fuse-requests.XXXXXX")
mnt=$work/mnt
cleanup() {
    if grep -q " $mnt " /proc/mounts; then
        LATUS_HOME=$work/home "$latus" unmount "$mnt" >/dev/null 2>&1 ||
            fusermount3 -u "$mnt" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt"
LATUS_HOME=$work/home "$latus" init >/dev/null
LATUS_HOME=$work/home "$latus" mount --offline "$mnt" >/dev/null
mkdir "$mnt/d"

step() {
    local what=$1
    perf record -q -e fuse:fuse_request_send -a -o "$work/perf.data" -- \
        python3 - "$mnt/d" "$what" "$files" >/dev/null 2>&1 <<'PY'
import os, sys
folder, what, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
block = b"x" * 4096
for i in range(n):
    path = f"{folder}/f{i:06}"
    if what == "create":
        with open(path, "wb") as f:
            f.write(block)
    elif what == "stat":
        os.stat(path)
    elif what == "unlink":
        os.unlink(path)
if what == "append":
    # One file of 4 MiB written 4 KiB per write(2).
    fd = os.open(f"{folder}/big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(1024):
        os.write(fd, block)
    os.close(fd)
PY
    local counts
    counts=$(perf script -i "$work/perf.data" 2>/dev/null |
        { grep -o 'opcode [0-9]* ([A-Z_]*)' || true; } | sed 's/.*(\(.*\))/\1/' | sort | uniq -c | sort -rn)
    local total
    total=$(echo "$counts" | awk '{s += $1} END {print s + 0}')
    printf '%s (%s files): %s requests, %.1f per file\n' "$1" "$files" "$total" \
        "$(echo "$total / $files" | bc -l)"
    [ -z "$counts" ] || echo "$counts" | sed 's/^/   /'
}

step create
step stat
echo "(stat again: the kernel's cache answers)"
step stat
step unlink
echo "(one 4 MiB file written 4 KiB per write: the per-file figure is per write)"
files=1024 step append
