#!/usr/bin/env bash
# Installs everything the test suite needs (the real protocol clients from Debian, the project
# with its [test] extra) and runs the whole suite.  This is the README's second command and the
# only thing .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=$(grep -v '^\s*#' tests/apt-packages.txt | xargs)
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
python3 -m pip install -q -e '.[test]'
export EDGE_ARCHIVE_REQUIRE_CLIENTS=1
exec python3 -m pytest -q -p no:cacheprovider "$@"
