#!/usr/bin/env bash
# Makes sure a Docker engine answers, for the image tests (tests/test_image.py).
#
# Idempotent: does nothing when `docker info` already works. Otherwise installs Debian's docker.io
# (and debootstrap, which containers/build_base_image.sh needs) when they are missing, and starts
# dockerd in the background. Needs root only when it has something to install or start. On a
# machine where it cannot (no root, no apt), it says so and exits 0: the Docker tests then skip
# with that reason, and everything else still runs.
set -euo pipefail

LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
WAIT_S=${DOCKERD_WAIT_S:-60}

say() { echo "ensure_docker: $*" >&2; }

docker_up() { docker info >/dev/null 2>&1; }

if docker_up && command -v debootstrap >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    docker_up || say "Docker is not running and this is not root: start dockerd yourself (image tests will skip)."
    exit 0
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${missing[*]} and no apt-get to install them (image tests will skip)."
        exit 0
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if docker_up; then
    exit 0
fi

say "starting dockerd (log: $LOG)"
# setsid: dockerd outlives this script and the make/CI step that ran it.
setsid dockerd >"$LOG" 2>&1 </dev/null &
for _ in $(seq "$WAIT_S"); do
    if docker_up; then
        say "dockerd is up"
        exit 0
    fi
    sleep 1
done
say "dockerd did not answer within ${WAIT_S}s; last lines of $LOG:"
tail -n 20 "$LOG" >&2 || true
exit 1
