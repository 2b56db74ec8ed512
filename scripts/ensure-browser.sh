#!/usr/bin/env bash
# The browser the console tests drive: Debian's chromium at /usr/bin/chromium
# (installed from the distribution's packages when missing; nothing downloads
# a browser of its own). playwright-core, which drives it, is an npm package
# of tests/clients (scripts/test.sh installs those).
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x /usr/bin/chromium ]; then
    echo "chromium: not installed; installing the distribution's package" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || {
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    }
fi
/usr/bin/chromium --version >&2
