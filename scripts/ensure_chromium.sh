#!/usr/bin/env bash
# Makes sure a headless Chromium is installed, for the report rendering test
# (tests/test_report_browser.py).
#
# Idempotent: does nothing when `chromium` (or chromium-browser / google-chrome) is on PATH.
# Otherwise installs Debian's chromium with apt-get when run as root. On a machine where it cannot
# (no root, no apt), it says so and exits 0: that test then skips with the reason.
set -euo pipefail

say() { echo "ensure_chromium: $*" >&2; }

for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "no chromium, and no root/apt-get to install it (the report rendering test will skip)."
    exit 0
fi

say "installing chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# fonts-dejavu-core: text in the screenshots renders with a real font.
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
