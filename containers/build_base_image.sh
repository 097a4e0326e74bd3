#!/usr/bin/env bash
# Builds a local Python base image from Debian packages, for machines that reach no container
# registry (this project's CI): debootstrap a minimal Debian with python3, python3-venv, pip and
# this machine's CA bundle, then `docker import` it.
#
# Cached: does nothing when the image exists and was made by this version of the script
# (FORCE=1 rebuilds). Prints the image name.
# Needs root (debootstrap) and a running Docker engine (scripts/ensure_docker.sh).
#
# Environment:
#   BASE_IMAGE      image name to create, with a tag (default below)
#   DEBIAN_SUITE    Debian release (default: this machine's, e.g. bookworm)
#   DEBIAN_MIRROR   Debian mirror (default: the one this machine's apt uses)
#   FORCE=1         rebuild even when the image exists
set -euo pipefail

say() { echo "build_base_image: $*" >&2; }

host_suite() {
    # shellcheck disable=SC1091
    (. /etc/os-release && echo "${VERSION_CODENAME:-}")
}

# The mirror apt on this machine is configured with, for $1 (the suite): deb822 sources first,
# then one-line sources.list entries.
host_mirror() {
    local suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; ok = 0; deb = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)   { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
                    if ($i ~ /^Types:/  && $i ~ /(^|[ \t])deb([ \t]|$)/) deb = 1
                    if ($i ~ /^Suites:/ && $i ~ ("[ \t]" suite "([ \t]|$)")) ok = 1
                    if ($i ~ /^Enabled:[ \t]*no/) ok = 0
                }
                if (ok && deb && uris != "") { split(uris, u, /[ \t]+/); print u[1]; exit }
            }' "$f"
    done | head -n 1 | grep . && return 0
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk -v suite="$suite" '$1 == "deb" {
              i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
              if ($(i + 1) == suite) { print $i; exit }
          }' | grep .
}

SUITE=${DEBIAN_SUITE:-$(host_suite)}
SUITE=${SUITE:-bookworm}
BASE_IMAGE=${BASE_IMAGE:-batchpredict-base:debian-${SUITE}-python3}
last=${BASE_IMAGE##*/}
if [ "$last" = "${last%%:*}" ] || [ "${last##*:}" = latest ]; then
    say "BASE_IMAGE needs a tag other than latest: $BASE_IMAGE"; exit 2
fi

# The recipe (this script) is part of the cache key: an edited script rebuilds the image.
RECIPE=$(sha256sum "$0" | cut -c1-16)
have=$(docker image inspect --format '{{ index .Config.Labels "batchpredict.base.recipe" }}' \
    "$BASE_IMAGE" 2>/dev/null || true)
if [ "${FORCE:-0}" != 1 ] && [ "$have" = "$RECIPE" ]; then
    say "$BASE_IMAGE exists (FORCE=1 rebuilds)"
    echo "$BASE_IMAGE"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    say "debootstrap needs root"; exit 1
fi
command -v debootstrap >/dev/null || { say "debootstrap is missing (scripts/ensure_docker.sh installs it)"; exit 1; }

MIRROR=${DEBIAN_MIRROR:-$(host_mirror "$SUITE" || true)}
if [ -z "$MIRROR" ]; then
    say "no Debian mirror for '$SUITE' in /etc/apt/sources.list*; set DEBIAN_MIRROR"; exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/batchpredict-base.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOTFS=$WORK/rootfs

say "debootstrap $SUITE from $MIRROR (a few minutes)"
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 30 "$WORK/debootstrap.log" >&2
    tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    exit 1
}

# This machine's CA bundle (and any local CAs), so TLS inside the image trusts what this machine
# trusts (a TLS-inspecting proxy's CA included).
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
    cp -a /usr/local/share/ca-certificates/. "$ROOTFS/usr/local/share/ca-certificates/"
fi

# Slim it down as python:*-slim does: no apt lists or package caches, docs, man pages, locales.
rm -rf "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/usr/share/locale/* "$ROOTFS"/tmp/* "$ROOTFS"/debootstrap

say "docker import -> $BASE_IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --change "LABEL batchpredict.base.recipe=$RECIPE" \
    --message "debootstrap $SUITE minbase + python3, venv, pip, CA bundle" \
    - "$BASE_IMAGE" >/dev/null
docker image ls "$BASE_IMAGE" >&2
echo "$BASE_IMAGE"
