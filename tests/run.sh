#!/usr/bin/env bash
# The README's second command, and the only thing .ci/run calls:
#
#   bash tests/run.sh [pytest arguments]
#
# 1. apt-installs the real clients the protocol tests drive (tests/apt-packages.txt, one
#    Debian package a line), waiting for another apt/dpkg instead of failing on its lock;
# 2. makes or reuses the project's .venv (the same one ./serve.sh uses: see serve.sh) and
#    installs the project with its [test] extra there, never into the system Python;
# 3. runs pytest from that environment with EDGE_ARCHIVE_REQUIRE_CLIENTS=1 (a missing client
#    is a failure, not a skip).
# pytest runs last (exec): its summary is the last line and its exit status is this script's,
# so "no tests collected" (5) fails like any failure.  Services a protocol test needs
# (PostgreSQL, an S3 server...) are started by that test's fixtures, not here.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=serve.sh
source ./serve.sh

mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' tests/apt-packages.txt | grep -v '^$')
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  ea_say "Installing Debian packages the tests need: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    ea_apt_install "${missing[@]}"
  else
    sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq "${APT_WAIT[@]}"
    sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_WAIT[@]}" "${APT_LEAN[@]}" "${missing[@]}" >/dev/null
  fi
fi

ea_venv test
export PATH="$EDGE_ARCHIVE_VENV/bin:$PATH" VIRTUAL_ENV="$EDGE_ARCHIVE_VENV"
export EDGE_ARCHIVE_REQUIRE_CLIENTS=1
exec "$EDGE_ARCHIVE_VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
