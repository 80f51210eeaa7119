#!/usr/bin/env bash
# Tests the Debian package end to end on this machine: builds it from an
# already built binary (default target/debug/latus, no release build),
# installs it with `apt-get install ./latus_*.deb`, checks its contents,
# mounts a folder through the installed mount.latus (by mount(8)) and
# through the installed systemd user unit's command lines, unmounts, then
# purges the package and checks that every node's home and data stayed.
# Cleans up on every path (unmounts, stops the daemons it started by PID,
# removes the package). Needs root or sudo; works offline once fuse3 is
# installed. Refuses to run where a latus package is installed already.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-target/debug/latus}
failures=0
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }
die() { printf 'test-package: %s\n' "$*" >&2; exit 1; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "needs root (or sudo) to run: $*"
    fi
}
apt() { as_root env DEBIAN_FRONTEND=noninteractive apt-get -y -o DPkg::Lock::Timeout=300 "$@"; }

[ -x "$binary" ] || die "$binary is missing: build it first (cargo build)"
if dpkg-query -W -f='${Status}' latus 2>/dev/null | grep -q 'installed'; then
    die "a latus package is installed on this machine; this test installs and removes its own: remove it first (apt-get remove latus)"
fi

work=$(mktemp -d /tmp/latus-package-test.XXXXXX)
chmod 755 "$work" # apt's _apt user reads the .deb
home_a=$work/node-a mnt_a=$work/mnt-a   # mounted by mount(8) + mount.latus
user_home=$work/user                     # %h of the systemd unit
mkdir -p "$mnt_a" "$user_home"
unit_pid='' installed=''

mounted() { grep -qs " $1 fuse" /proc/mounts; }
# Stops a daemon of ours by the PID its home recorded, if it still runs
# the installed latus.
stop_daemon_of() {
    local pid
    pid=$(cat "$1/daemon.pid" 2>/dev/null) || return 0
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/bin/latus ] || return 0
    as_root kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
}
cleanup() {
    local mp
    for mp in "$mnt_a" "$user_home/Latus"; do
        if mounted "$mp"; then
            /usr/bin/latus --home "$home_a" unmount "$mp" >/dev/null 2>&1 || true
            mounted "$mp" && as_root fusermount3 -u -z "$mp" || true
        fi
    done
    if [ -n "$unit_pid" ] && kill -0 "$unit_pid" 2>/dev/null; then
        kill -TERM "$unit_pid" 2>/dev/null || true
        wait "$unit_pid" 2>/dev/null || true
    fi
    stop_daemon_of "$home_a"
    stop_daemon_of "$user_home/.local/share/latus"
    if [ -n "$installed" ]; then
        apt purge latus >/dev/null 2>&1 || echo "cleanup: apt-get purge latus failed" >&2
    fi
    as_root rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # SECONDS CMD...: until CMD succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

echo "==> build the package from $binary"
scripts/package-deb.sh --binary "$binary" --compression gzip --out "$work/deb"
cd "$work/deb"
deb=$(echo latus_*.deb)
[ -f "$deb" ] || die "no package was built"

echo "==> apt-get install ./$deb"
installed=1
apt install --no-install-recommends "./$deb" | tee "$work/install.log"
cd - >/dev/null
grep -q 'systemctl --user enable --now latus' "$work/install.log" \
    || fail "the post-install note on the systemd unit was not shown"

echo "==> contents"
# Minimal images tell dpkg not to install manual pages and docs
# (path-exclude): such files must be in the package, not on the disk.
excluded() {
    local rule verdict=''
    while IFS= read -r rule; do
        case $rule in
            path-exclude=*) [[ $1 == ${rule#path-exclude=} ]] && verdict=1 ;;
            path-include=*) [[ $1 == ${rule#path-include=} ]] && verdict='' ;;
        esac
    done < <(cat /etc/dpkg/dpkg.cfg /etc/dpkg/dpkg.cfg.d/* 2>/dev/null | grep -E '^path-(exclude|include)=' || true)
    [ -n "$verdict" ]
}
dpkg-deb -c "$work/deb/$deb" | awk '{print substr($6, 2)}' >"$work/in-deb"
dpkg -L latus >"$work/files"
for f in /usr/bin/latus /usr/sbin/mount.latus /usr/sbin/mount.fuse.latus \
    /usr/lib/systemd/user/latus.service \
    /usr/share/bash-completion/completions/latus \
    /usr/share/zsh/vendor-completions/_latus \
    /usr/share/fish/vendor_completions.d/latus.fish \
    /usr/share/man/man1/latus.1.gz /usr/share/man/man1/latus-mount.1.gz \
    /usr/share/man/man1/latus-key-export.1.gz \
    /usr/share/man/man8/mount.latus.8.gz /usr/share/man/man8/mount.fuse.latus.8.gz \
    /usr/share/doc/latus/copyright /usr/share/doc/latus/README.md.gz; do
    grep -qx "$f" "$work/in-deb" || fail "the package does not hold $f"
    if excluded "$f"; then
        echo "note: $f is not installed here (dpkg path-exclude)"
        continue
    fi
    grep -qx "$f" "$work/files" || fail "dpkg -L latus does not list $f"
    [ -e "$f" ] || fail "$f is not installed"
done
/usr/bin/latus --version | grep -q '^  home  *[0-9]' || fail "latus --version shows no home format"
bash -c '. /usr/share/bash-completion/completions/latus && complete -p latus' >/dev/null \
    || fail "the bash completion does not register for latus"
page=/usr/share/man/man1/latus-mount.1.gz
if ! excluded "$page"; then
    zcat "$page" | grep -q '^\.TH latus-mount 1' || fail "latus-mount.1 is not a manual page"
fi

echo "==> mount(8) -t latus, through the installed mount.latus"
# A PATH without ~/.cargo/bin: the helper must find the installed latus.
as_root env PATH=/usr/sbin:/usr/bin:/sbin:/bin mount -t latus latus "$mnt_a" -o "home=$home_a"
mounted "$mnt_a" || fail "mount -t latus returned but $mnt_a is not mounted"
daemon=$(cat "$home_a/daemon.pid")
[ "$(readlink "/proc/$daemon/exe")" = /usr/bin/latus ] || fail "the daemon is not /usr/bin/latus"
echo "through mount.latus" >"$mnt_a/a.txt"
[ "$(cat "$mnt_a/a.txt")" = "through mount.latus" ] || fail "$mnt_a/a.txt reads back wrong"
/usr/bin/latus --home "$home_a" unmount "$mnt_a"
! mounted "$mnt_a" || fail "$mnt_a is still mounted after latus unmount"

echo "==> the systemd user unit's command lines (%h = $user_home)"
unit=/usr/lib/systemd/user/latus.service
# Each line as systemd runs it: %h replaced, a leading '-' (errors
# ignored) dropped. The commands here are plain words, no quoting.
unit_cmd() {
    sed -n "s/^$1=//p" "$unit" | head -n1 | sed "s#%h#$user_home#g; s/^-//"
}
start_pre=$(unit_cmd ExecStartPre) start=$(unit_cmd ExecStart) stop_post=$(unit_cmd ExecStopPost)
[ -n "$start" ] || die "no ExecStart in $unit"
case $start in /usr/bin/latus\ *) ;; *) fail "ExecStart does not run /usr/bin/latus: $start" ;; esac
as_unit=(env -u XDG_DATA_HOME -u LATUS_HOME HOME="$user_home")
# shellcheck disable=SC2086 # split like systemd splits the line
[ -z "$start_pre" ] || "${as_unit[@]}" $start_pre
# shellcheck disable=SC2086
"${as_unit[@]}" $start >"$work/unit.log" 2>&1 &
unit_pid=$! # env execs latus: this is the unit's main process
if wait_for 60 mounted "$user_home/Latus"; then
    echo "through the unit" >"$user_home/Latus/u.txt"
    [ "$(cat "$user_home/Latus/u.txt")" = "through the unit" ] || fail "u.txt reads back wrong"
else
    fail "ExecStart did not mount $user_home/Latus in 60 s: $(cat "$work/unit.log")"
fi
# systemctl stop: SIGTERM to the main process, then ExecStopPost.
[ "$(readlink "/proc/$unit_pid/exe")" = /usr/bin/latus ] || fail "the unit's main process is not /usr/bin/latus"
kill -TERM "$unit_pid"
wait "$unit_pid" || fail "the unit's daemon exited with an error on SIGTERM: $(tail -n 5 "$work/unit.log")"
unit_pid=''
# shellcheck disable=SC2086
[ -z "$stop_post" ] || "${as_unit[@]}" $stop_post 2>/dev/null || true
! mounted "$user_home/Latus" || fail "$user_home/Latus is still mounted after the unit stopped"
[ -f "$user_home/.local/share/latus/config.json" ] || fail "the unit's node has no home in ~/.local/share/latus"

echo "==> apt-get purge latus: homes and data stay"
snapshot() { (cd "$work" && find node-a user -type f ! -name 'daemon.*' -print0 | sort -z | xargs -0 sha256sum); }
snapshot >"$work/before"
apt purge latus >/dev/null
installed=''
[ ! -e /usr/bin/latus ] || fail "/usr/bin/latus is still there after purge"
[ ! -e /usr/sbin/mount.latus ] || fail "/usr/sbin/mount.latus is still there after purge"
snapshot >"$work/after"
[ -s "$work/before" ] || fail "no files to compare"
cmp -s "$work/before" "$work/after" || fail "the homes changed when the package was removed: $(diff "$work/before" "$work/after" | head)"
[ -f "$home_a/config.json" ] && [ -f "$home_a/latus.redb" ] || fail "node A's home is gone"

[ "$failures" -eq 0 ] || exit 1
echo "package: ok"
