#!/bin/sh
# Debian's chromium for the console's browser tests (Playwright drives it by
# executable_path; Playwright's own browser download cannot work here).
# Installs it when missing, as clients/build.sh installs the C++ toolchain.
set -eu
CHROMIUM="${PLAYLOG_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "chromium is missing: install it with 'sudo apt-get install -y chromium' (needs root)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || {
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends chromium >/dev/null
}
test -x "$CHROMIUM"
