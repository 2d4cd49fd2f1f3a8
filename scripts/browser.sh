#!/usr/bin/env bash
# The compliance-report test opens the HTML in headless Chromium from Debian's packages.
# Installs it when missing and we may (root with apt-get); otherwise that one test skips
# and says why.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Chromium (Debian package) for the compliance-report test..."
    if ! { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
        echo "note: installing Chromium failed; the browser tests will skip and say why" >&2
    fi
else
    echo "note: Chromium not found and not root; the compliance-report browser test will skip" >&2
fi
