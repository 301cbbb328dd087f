#!/usr/bin/env bash
# Build a local Python base image without any registry: debootstrap a minimal
# Debian (bookworm, python3.11) from Debian's package mirror, then `docker import`.
#
#   docker/build-base.sh [--force] [IMAGE]      (default IMAGE: shardlite-base:bookworm)
#
# Skips the build when IMAGE already exists (unless --force). Needs root (debootstrap
# and chroot) and the debootstrap package. Env: SHARDLITE_DEBIAN_MIRROR, SHARDLITE_SUITE.
set -euo pipefail

force=0
if [[ "${1:-}" == "--force" ]]; then
    force=1
    shift
fi
image="${1:-shardlite-base:bookworm}"
suite="${SHARDLITE_SUITE:-bookworm}"
mirror="${SHARDLITE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [[ "$force" == 0 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "build-base: $image exists, skipping (use --force to rebuild)"
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "build-base: debootstrap needs root; run as root or pass a registry base image" >&2
    echo "            (make docker-build DOCKER_BASE=python:3.11-slim)" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "build-base: installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

rootfs="$(mktemp -d /tmp/shardlite-base.XXXXXX)"
cleanup() {
    # debootstrap may leave /proc or /sys mounted inside the rootfs when it fails.
    for m in proc sys dev/pts dev; do
        if mountpoint -q "$rootfs/$m" 2>/dev/null; then umount -l "$rootfs/$m" || true; fi
    done
    rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

echo "build-base: debootstrap $suite from $mirror into $rootfs"
start=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv \
    "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 30 "$rootfs.log" >&2
    rm -f "$rootfs.log"
    exit 1
}
rm -f "$rootfs.log"

# Trim what a container never needs: package lists and caches, docs, man pages,
# locales, logs. dpkg and apt stay so the image can still be extended.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian "$rootfs"/var/log/* \
    "$rootfs"/tmp/* "$rootfs"/root/.cache "$rootfs"/usr/lib/python3*/test
# apt must not keep downloaded packages in derived images either.
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
APT::Keep-Downloaded-Packages "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT

# The image must be able to make a virtualenv with pip (the Dockerfile's build stage).
chroot "$rootfs" python3 -c 'import ensurepip, sqlite3, venv'

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "shardlite base: debootstrap --variant=minbase $suite + python3" \
    - "$image" >/dev/null
echo "build-base: $image built in $((SECONDS - start))s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
