#!/usr/bin/env bash
# Build a Python base image from Debian packages, for hosts that cannot pull from a
# public image registry (air-gapped CI). Needs root (debootstrap), a Docker engine
# (DOCKER_HOST as set by deploy/docker-engine.sh) and a reachable Debian mirror.
#
#   deploy/base-image.sh [IMAGE]        # default local/python-base:bookworm
#
# The image is Debian bookworm minbase + python3, python3-venv and ca-certificates,
# with this host's CA bundle (an intercepting HTTPS proxy's CA lives there), so pip
# and uv inside `docker build` trust what the host trusts. Skips the build when the
# image exists unless FORCE=1.
#
# Environment: DEBIAN_MIRROR (default: the first deb.debian.org-style URI in the apt
# sources), DEBIAN_SUITE (default bookworm), HOST_CA_BUNDLE.
set -euo pipefail

IMAGE="${1:-local/python-base:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
CA_BUNDLE="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

say() { echo "base-image: $*" >&2; }
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE exists (FORCE=1 rebuilds it)"
    exit 0
fi

apt_mirror() {
    # deb822 sources (Debian 12 default) first, then the one-line format.
    local uri
    uri="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
    if [ -z "$uri" ]; then
        uri="$(grep -hsE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
            2>/dev/null | grep -v -- '-security' | grep -i debian | awk '{print $2}' | head -n1 || true)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="${DEBIAN_MIRROR:-$(apt_mirror)}"

if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap (apt-get)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq debootstrap >&2
fi
[ -f "$CA_BUNDLE" ] || { say "no CA bundle at $CA_BUNDLE (set HOST_CA_BUNDLE)"; exit 1; }

ROOTFS="$(mktemp -d "${TMPDIR:-/tmp}/surface-rootfs.XXXXXX")"
trap 'as_root rm -rf "$ROOTFS"' EXIT

started=$SECONDS
say "debootstrap $SUITE from $MIRROR"
as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR" >&2
as_root cp "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
# Slim the image: apt lists and caches are not needed at run time.
as_root rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*

say "importing into $IMAGE"
as_root tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$IMAGE" >/dev/null
say "built $IMAGE in $((SECONDS - started)) s"
