#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser tests: Debian's `chromium` package, installed
# here if it is missing (Playwright drives it through its executable path and never downloads
# a browser of its own, which this machine's network would refuse anyway).
#   USAGE_STATS_CHROMIUM   a Chromium to use instead of /usr/bin/chromium
set -euo pipefail
chromium=${USAGE_STATS_CHROMIUM:-/usr/bin/chromium}
if [[ -x $chromium ]]; then
  echo "browser: $("$chromium" --version 2>/dev/null | head -1) ($chromium)"
  exit 0
fi
if [[ -n ${USAGE_STATS_CHROMIUM:-} ]]; then
  echo "browser: USAGE_STATS_CHROMIUM=$chromium is not an executable" >&2
  exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || {
    echo "browser: Chromium is missing; install Debian's package as root: apt-get install chromium" >&2
    exit 1
  }
  sudo=(sudo)
fi
echo "browser: installing Debian's chromium package (first time only)"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -qq chromium >/dev/null; then
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
fi
echo "browser: $(/usr/bin/chromium --version 2>/dev/null | head -1) (/usr/bin/chromium)"
