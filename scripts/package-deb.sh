#!/usr/bin/env bash
# Builds the Debian package of latus from this checkout with dpkg-deb (no
# tool to install): target/deb/latus_VERSION_ARCH.deb.
#
#   scripts/package-deb.sh                      # release build, then package
#   scripts/package-deb.sh --binary target/debug/latus --compression gzip
#
# Options:
#   --binary PATH        package this latus binary instead of building
#                        release (it must report this checkout's version)
#   --out DIR            where the .deb goes (default target/deb)
#   --compression KIND   xz (default), gzip or none
#   --no-strip           keep the binary's debug information
#
# The package holds: /usr/bin/latus; /usr/sbin/mount.latus (and
# mount.fuse.latus) for mount(8) and /etc/fstab; the systemd user unit
# /usr/lib/systemd/user/latus.service; bash, zsh and fish completions and
# the manual pages (latus's generated from the command line by
# examples/package_assets.rs, and mount.latus(8)); the README and
# copyright. Depends: fuse3 and the libraries the binary links (found with
# ldd, versions from objdump). Nothing in it touches a user's home or
# data, on install or removal.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'package-deb: %s\n' "$*" >&2; exit 1; }

binary='' out=target/deb compression=xz strip=1
while [ $# -gt 0 ]; do
    case $1 in
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift ;;
        --out) [ $# -ge 2 ] || die "--out needs a folder"; out=$2; shift ;;
        --compression) [ $# -ge 2 ] || die "--compression needs xz, gzip or none"; compression=$2; shift ;;
        --no-strip) strip='' ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
case $compression in xz | gzip | none) ;; *) die "--compression: xz, gzip or none, not $compression" ;; esac
for tool in dpkg-deb dpkg ldd objdump gzip; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian: dpkg, libc-bin, binutils, gzip)"
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || die "no version in Cargo.toml"
arch=$(dpkg --print-architecture)

profile_flag=()
if [ -z "$binary" ]; then
    echo "==> cargo build --release --bin latus"
    cargo build --release --locked --bin latus
    binary=target/release/latus
    profile_flag=(--release)
fi
[ -x "$binary" ] || die "$binary is not an executable"
reported=$("$binary" -V)
[ "$reported" = "latus $version" ] || die "$binary reports '$reported', this checkout is latus $version"

stage=$(mktemp -d "${TMPDIR:-/tmp}/latus-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
assets=$stage/assets

echo "==> completions and manual pages (examples/package_assets.rs)"
cargo run --quiet --locked "${profile_flag[@]}" --example package_assets -- "$assets"

install -D -m 755 "$binary" "$root/usr/bin/latus"
if [ -n "$strip" ] && command -v strip >/dev/null; then
    strip --strip-unneeded "$root/usr/bin/latus"
fi
install -D -m 755 mount-helpers/mount.latus "$root/usr/sbin/mount.latus"
ln -s mount.latus "$root/usr/sbin/mount.fuse.latus"
unit=$root/usr/lib/systemd/user/latus.service
install -D -m 644 mount-helpers/latus.service "$unit"
sed -i 's#%h/\.cargo/bin/latus#/usr/bin/latus#g' "$unit"
grep -q '^ExecStart=/usr/bin/latus ' "$unit" || die "the unit's ExecStart does not run /usr/bin/latus: $(grep ExecStart "$unit")"
install -D -m 644 "$assets/completions/latus.bash" "$root/usr/share/bash-completion/completions/latus"
install -D -m 644 "$assets/completions/_latus" "$root/usr/share/zsh/vendor-completions/_latus"
install -D -m 644 "$assets/completions/latus.fish" "$root/usr/share/fish/vendor_completions.d/latus.fish"
install -d "$root/usr/share/man/man1"
for page in "$assets"/man/*.1; do
    gzip -9n -c "$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
done
install -d "$root/usr/share/man/man8"
gzip -9n -c mount-helpers/mount.latus.8 >"$root/usr/share/man/man8/mount.latus.8.gz"
ln -s mount.latus.8.gz "$root/usr/share/man/man8/mount.fuse.latus.8.gz"
doc=$root/usr/share/doc/latus
install -D -m 644 packaging/deb/copyright "$doc/copyright"
gzip -9n -c README.md >"$doc/README.md.gz"
gzip -9n -c mount-helpers/README.md >"$doc/mount-helpers.md.gz"

# Depends: fuse3 (fusermount3), and the package of every library the
# binary links, libc6 at least at the newest GLIBC_ symbol version it uses.
# A static binary (musl) links nothing: fuse3 alone.
glibc=$({ objdump -T "$root/usr/bin/latus" 2>/dev/null || true; } | { grep -o 'GLIBC_[0-9][0-9.]*' || true; } | sed 's/GLIBC_//' | sort -uV | tail -n1)
libs=$({ ldd "$root/usr/bin/latus" 2>/dev/null || true; } | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p')
deps=(fuse3)
for lib in $libs; do
    pkg=''
    for candidate in "$lib" "$(readlink -f "$lib")" "/usr$lib" "${lib#/usr}"; do
        pkg=$(dpkg -S "$candidate" 2>/dev/null | head -n1 | cut -d: -f1) && [ -n "$pkg" ] && break
    done
    [ -n "$pkg" ] || die "no package holds $lib (linked by the binary)"
    if [ "$pkg" = libc6 ] && [ -n "$glibc" ]; then
        pkg="libc6 (>= $glibc)"
    fi
    deps+=("$pkg")
done
depends=$(printf '%s\n' "${deps[@]}" | sort -u | paste -sd, | sed 's/,/, /g')

install -d "$root/DEBIAN"
install -m 755 packaging/deb/postinst "$root/DEBIAN/postinst"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: latus
Version: $version
Architecture: $arch
Maintainer: the latus developers <latus@invalid>
Installed-Size: $size
Depends: $depends
Section: utils
Priority: optional
Description: personal cloud storage whose folder is an encrypted filesystem
 latus mounts ~/Latus as a FUSE filesystem: every change becomes an event,
 and files and events go to the cloud (S3 + DynamoDB, or a plain folder)
 encrypted on this computer. Other computers of the same person replay the
 events; files are fetched on demand.
CONTROL

mkdir -p "$out"
deb=$out/latus_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"$compression" --build "$root" "$deb" >/dev/null
echo "==> $deb ($(du -h "$deb" | cut -f1); Depends: $depends)"
