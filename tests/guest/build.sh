#!/bin/bash
# Build the distributor's ARM test guest: a Debian armmp kernel and an
# initramfs with busybox, the task-loader agent (agent.c) and the task
# programs (tasks/*.c), all from Debian packages and this directory's sources;
# nothing prebuilt is committed.
#
#   tests/guest/build.sh [--force]
#
# Output (in $GUEST_CACHE, default $DATA_DIR/guest, default <checkout>/data/guest):
#   vmlinuz, initrd.img   boot them with qemu-system-arm -M virt and virtio-net
#   guest.env             KERNEL=, INITRD=, APPEND=, MARKER= for scripts
# Idempotent: when the stamp matches this directory's sources it only prints
# the paths.  Needs root the first time (dpkg --add-architecture armhf,
# apt-get update/install); later runs need nothing.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CHECKOUT=$(cd "$HERE/../.." && pwd)
CACHE=${GUEST_CACHE:-${DATA_DIR:-$CHECKOUT/data}/guest}
APPEND="console=ttyAMA0 quiet"
MARKER="distributor-agent: ready"
# Host tools this script runs (the armhf packages are downloaded, never installed).
HOST_PACKAGES=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross cpio)
FORCE=${1:-}

say() { echo "build.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

sources_hash() {
    (cd "$HERE" && cat build.sh agent.c tasks/*.c tasks/*.h rootfs/*) | sha256sum | cut -d' ' -f1
}

up_to_date() {
    [[ "$FORCE" != "--force" && -s "$CACHE/vmlinuz" && -s "$CACHE/initrd.img" && -s "$CACHE/stamp" ]] &&
        [[ "$(head -1 "$CACHE/stamp")" == "$1" ]]
}

ensure_host_tools() {
    local missing=()
    command -v arm-linux-gnueabihf-gcc >/dev/null || missing+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
    command -v cpio >/dev/null || missing+=(cpio)
    ((${#missing[@]} == 0)) && return
    [[ $EUID -eq 0 ]] || die "missing ${missing[*]}: run as root or apt-get install ${HOST_PACKAGES[*]}"
    say "installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# The armhf package lists; an index that fails to download (a mirror in the
# middle of a sync) is not fatal as long as the packages we need resolve.
ensure_armhf_lists() {
    if ! dpkg --print-foreign-architectures | grep -qx armhf; then
        [[ $EUID -eq 0 ]] || die "dpkg has no armhf architecture: run once as root"
        dpkg --add-architecture armhf
    fi
    if ! apt-cache show busybox-static:armhf linux-image-armmp:armhf >/dev/null 2>&1; then
        say "apt-get update (armhf lists)"
        apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || say "apt-get update reported errors; going on"
    fi
    apt-cache show busybox-static:armhf linux-image-armmp:armhf >/dev/null 2>&1 ||
        die "busybox-static:armhf or linux-image-armmp:armhf is not in the apt lists (apt-get update failed?)"
}

download() {
    local kernel
    kernel=$(apt-cache depends linux-image-armmp:armhf | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [[ -n "$kernel" ]] || die "linux-image-armmp:armhf names no kernel package"
    rm -rf "$WORK/debs" && mkdir -p "$WORK/debs"
    say "downloading $kernel and busybox-static:armhf"
    # (as root apt warns that it cannot drop to the _apt user here; harmless)
    if ! (cd "$WORK/debs" && apt-get download -qq "$kernel" busybox-static:armhf 2>"$WORK/download.log"); then
        die "apt-get download $kernel busybox-static:armhf failed: $(grep -v '^W:' "$WORK/download.log")"
    fi
    dpkg-deb -x "$WORK"/debs/linux-image-*.deb "$WORK/kernel"
    dpkg-deb -x "$WORK"/debs/busybox-static_*.deb "$WORK/busybox"
    echo "$kernel $(dpkg-deb -f "$WORK"/debs/busybox-static_*.deb Version)"
}

# A module and, first, the modules it depends on (from its .modinfo).
add_module() {
    local name=$1 file deps dep
    grep -qx "$name" "$ROOT/lib/modules/load-order" 2>/dev/null && return
    file=$(find "$WORK/kernel/lib/modules" -name "$name.ko" | head -1)
    [[ -n "$file" ]] || die "kernel module $name.ko not found in the kernel package"
    deps=$(tr '\0' '\n' <"$file" | sed -n 's/^depends=//p' | tr ',' ' ')
    for dep in $deps; do add_module "${dep//-/_}"; done
    cp "$file" "$ROOT/lib/modules/"
    echo "$name" >>"$ROOT/lib/modules/load-order"
}

compile() {
    local cc=(nice arm-linux-gnueabihf-gcc -static -O2 -Wall -Wextra -Werror)
    "${cc[@]}" -o "$ROOT/sbin/agent" "$HERE/agent.c"
    for source in "$HERE"/tasks/*.c; do
        "${cc[@]}" -I"$HERE/tasks" -o "$ROOT/tasks/$(basename "$source" .c)" "$source" -lm
    done
}

make_root() {
    rm -rf "$ROOT" && mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,tmp,etc,tasks,lib/modules}
    cp "$WORK/busybox/bin/busybox" "$ROOT/bin/busybox"
    install -m 755 "$HERE/rootfs/init" "$ROOT/init"
    install -m 755 "$HERE/rootfs/udhcpc.sh" "$ROOT/etc/udhcpc.sh"
    for module in virtio_mmio virtio_net; do add_module "$module"; done
    compile
}

main() {
    local hash versions
    hash=$(sources_hash)
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9  # two test runs may build at once; the second waits and finds it done
    if up_to_date "$hash"; then
        say "up to date in $CACHE"
    else
        ensure_host_tools
        ensure_armhf_lists
        WORK="$CACHE/work"
        ROOT="$WORK/root"
        rm -rf "$WORK" && mkdir -p "$WORK"
        versions=$(download)
        make_root
        (cd "$ROOT" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 >"$CACHE/initrd.img.new"
        cp "$WORK"/kernel/boot/vmlinuz-* "$CACHE/vmlinuz.new"
        mv "$CACHE/vmlinuz.new" "$CACHE/vmlinuz"
        mv "$CACHE/initrd.img.new" "$CACHE/initrd.img"
        printf '%s\n%s\n' "$hash" "$versions" >"$CACHE/stamp"
        rm -rf "$WORK"
        say "built $versions into $CACHE"
    fi
    printf 'KERNEL=%s\nINITRD=%s\nAPPEND="%s"\nMARKER="%s"\n' \
        "$CACHE/vmlinuz" "$CACHE/initrd.img" "$APPEND" "$MARKER" | tee "$CACHE/guest.env"
}

main
