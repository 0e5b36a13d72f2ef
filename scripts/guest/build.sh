#!/usr/bin/env bash
# Builds the small Linux guest that virtwire's guest tests boot under QEMU:
#
#   $VIRTWIRE_GUEST_DIR/vmlinux         uncompressed kernel (ELF) from /boot/vmlinuz-<ver>
#   $VIRTWIRE_GUEST_DIR/initramfs.cpio  uncompressed newc cpio: busybox, the virtio-net
#                                       modules, iperf3, ethtool and /init (guest-init.sh)
#
# Everything comes from Debian packages installed on this machine (scripts/test.sh installs
# them): linux-image-amd64, busybox-static, iperf3, ethtool, cpio, xz-utils, zstd.
#
# Idempotent: the outputs are rebuilt only when an input changed (kernel version, package
# versions, this script or guest-init.sh); concurrent callers serialise on a lock file.
# Default cache dir: target/guest under the repository. Override with VIRTWIRE_GUEST_DIR.
# Kernel version: the newest /boot/vmlinuz-* that has /lib/modules/<ver>; override with
# VIRTWIRE_GUEST_KVER.
#
# The guest's /init reads from the kernel command line:
#   vw.ip=10.0.0.1/24   address for eth0 (optional)
#   vw.mac=02:..        MAC for eth0 (optional; normally set by QEMU's device mac=)
#   vw.cmd=<base64>     test script (optional; otherwise /test.sh from an appended cpio)
# and prints `VW-READY` before and `VW-EXIT <status>` after running the test script, then
# powers off.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${VIRTWIRE_GUEST_DIR:-$repo/target/guest}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

log() { printf 'guest/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in cpio xz zstd ldd flock sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool '$tool' (see APT_PACKAGES in scripts/test.sh)"
done

# ---- pick the kernel -------------------------------------------------------------------
kver="${VIRTWIRE_GUEST_KVER:-}"
if [ -z "$kver" ]; then
    for f in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
        v="${f#/boot/vmlinuz-}"
        if [ -d "/lib/modules/$v" ]; then kver="$v"; break; fi
    done
fi
[ -n "$kver" ] || die "no /boot/vmlinuz-* with matching /lib/modules (install linux-image-amd64)"
bzimage="/boot/vmlinuz-$kver"
moddir="/lib/modules/$kver"
[ -r "$bzimage" ] || die "$bzimage not readable"
[ -r "$moddir/modules.dep" ] || die "$moddir/modules.dep missing"

busybox_bin="$(command -v busybox || true)"
[ -n "$busybox_bin" ] || die "busybox not found (install busybox-static)"
iperf3_bin="$(command -v iperf3 || true)"
ethtool_bin="$(command -v ethtool || echo /usr/sbin/ethtool)"
[ -x "$iperf3_bin" ] || die "iperf3 not found"
[ -x "$ethtool_bin" ] || die "ethtool not found"
if ldd "$busybox_bin" 2>&1 | grep -q '=>'; then
    die "$busybox_bin is dynamically linked; install busybox-static"
fi

# ---- cache key -------------------------------------------------------------------------
pkgver() { dpkg-query -W -f='${Package}=${Version} ' "$@" 2>/dev/null || true; }
key="$(
    {
        echo "kver=$kver"
        stat -c '%s %Y' "$bzimage"
        pkgver busybox-static iperf3 libiperf0 ethtool libc6 libmnl0 libssl3 libsctp1
        sha256sum "$here/build.sh" "$here/guest-init.sh"
    } | sha256sum | cut -d' ' -f1
)"

exec 9>"$out/.lock"
flock 9
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$key" ] &&
    [ -s "$out/vmlinux" ] && [ -s "$out/initramfs.cpio" ]; then
    exit 0
fi
log "building guest for kernel $kver into $out"
rm -f "$out/stamp"

work="$(mktemp -d "$out/.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# ---- (a) vmlinux from the bzImage ------------------------------------------------------
# Same approach as the kernel's scripts/extract-vmlinux: find each compression magic in
# the bzImage, try to decompress from there, keep the first result that is an ELF file.
is_elf() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' \n')" = '177ELF' ]; }
try_decompress() { # magic (PCRE, bytes) decompressor [args...]
    local magic_grep="$1"
    shift
    local off
    for off in $(LC_ALL=C grep -aboP "$magic_grep" "$bzimage" | cut -d: -f1); do
        tail -c "+$((off + 1))" "$bzimage" | "$@" >"$work/vmlinux" 2>/dev/null || true
        if [ -s "$work/vmlinux" ] && is_elf "$work/vmlinux"; then
            return 0
        fi
    done
    return 1
}
if try_decompress '\xFD7zXZ\x00' xz -dc ||
    try_decompress '\x28\xB5\x2F\xFD' zstd -dc ||
    try_decompress '\x1F\x8B\x08' gzip -dc; then
    :
else
    die "could not find a compressed vmlinux (xz/zstd/gzip) in $bzimage"
fi
chmod 0644 "$work/vmlinux"

# ---- (b) initramfs ---------------------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,tmp,run,root,var/tmp}
mkdir -p "$root/lib/modules/$kver"

# busybox and its applet links (relative links inside the image).
cp "$busybox_bin" "$root/bin/busybox"
"$busybox_bin" --list-full | while read -r applet; do
    [ -e "$root/$applet" ] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -s /bin/busybox "$root/$applet"
done

# Dynamic binaries with their libraries and the loader, at the same paths as on the host.
copy_with_libs() { # host-binary dest-path-in-image
    local bin="$1" dest="$2" lib
    cp -L "$bin" "$root$dest"
    for lib in $(ldd "$bin" | grep -oE '/[^ ]+' | sort -u); do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}
copy_with_libs "$iperf3_bin" /usr/bin/iperf3
copy_with_libs "$ethtool_bin" /usr/sbin/ethtool
rm -f "$root/usr/sbin/ethtool.busybox"

# Kernel modules: the closure of these in modules.dep order (dependencies first).
want_mods=(virtio_net virtio_mmio virtio_pci)
declare -A seen=()
order=()
modpath() { # module name -> path relative to $moddir
    local n="$1" alt
    alt="${n//_/-}"
    grep -E "(^|/)(${n}|${alt})\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | head -1 | cut -d: -f1
}
add_mod() { # relative path
    local rel="$1" dep deps
    [ -n "${seen[$rel]:-}" ] && return 0
    seen[$rel]=1
    deps="$(grep -E "^${rel//./\\.}:" "$moddir/modules.dep" | cut -d: -f2-)"
    for dep in $deps; do add_mod "$dep"; done
    order+=("$rel")
}
for m in "${want_mods[@]}"; do
    rel="$(modpath "$m")"
    if [ -z "$rel" ]; then
        # Built into the kernel: nothing to load.
        grep -qE "/${m}\.ko" "$moddir/modules.builtin" 2>/dev/null || die "module $m not found for $kver"
        continue
    fi
    add_mod "$rel"
done
: >"$root/etc/modules.order"
for rel in "${order[@]}"; do
    base="$(basename "$rel")"
    case "$base" in
    *.ko.xz) xz -dc "$moddir/$rel" >"$root/lib/modules/$kver/${base%.xz}"; base="${base%.xz}" ;;
    *.ko.zst) zstd -qdc "$moddir/$rel" >"$root/lib/modules/$kver/${base%.zst}"; base="${base%.zst}" ;;
    *.ko.gz) gzip -dc "$moddir/$rel" >"$root/lib/modules/$kver/${base%.gz}"; base="${base%.gz}" ;;
    *) cp "$moddir/$rel" "$root/lib/modules/$kver/$base" ;;
    esac
    echo "/lib/modules/$kver/$base" >>"$root/etc/modules.order"
done
log "modules: $(xargs -n1 basename <"$root/etc/modules.order" | tr '\n' ' ')"

cp "$here/guest-init.sh" "$root/init"
chmod 0755 "$root/init"
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
echo "127.0.0.1 localhost" >"$root/etc/hosts"
echo "$kver" >"$root/etc/vw-kernel"

find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
    >"$work/initramfs.cpio"

mv -f "$work/vmlinux" "$out/vmlinux"
mv -f "$work/initramfs.cpio" "$out/initramfs.cpio"
echo "$key" >"$out/stamp"
log "done: $out/vmlinux ($(stat -c %s "$out/vmlinux") bytes), $out/initramfs.cpio ($(stat -c %s "$out/initramfs.cpio") bytes)"
