#!/usr/bin/env bash
# The README's first command: serve the appliance with its embedded defaults.
#
#   ./serve.sh [archivectl serve options]      e.g. ./serve.sh --only ftp,webdav
#
# It needs only a Python >= 3.11 and works where the system Python refuses `pip install`
# (Debian 12 and others: PEP 668, "externally managed"): it makes a virtual environment in
# .venv beside this script, installs the project into it (again only when pyproject.toml
# changed) and runs `.venv/bin/archivectl serve`.  Python's venv module is missing on a bare
# Debian: as root this script installs python3-venv with apt-get, otherwise it prints the
# exact command to run.
#
# tests/run.sh sources this file for the same environment (the functions below); nothing
# runs when it is sourced.
#
# Environment: PYTHON (the interpreter to build .venv with; default: the first python3,
# python3.13, python3.12 or python3.11 that is >= 3.11), EDGE_ARCHIVE_VENV (default .venv).

EDGE_ARCHIVE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EDGE_ARCHIVE_VENV="${EDGE_ARCHIVE_VENV:-$EDGE_ARCHIVE_ROOT/.venv}"
# -o DPkg::Lock::Timeout: wait for another apt-get/dpkg (unattended-upgrades, a parallel
# install) instead of failing at once on the dpkg lock.
APT_WAIT=(-o DPkg::Lock::Timeout=600)
# Only what each package needs: recommended extras (radosgw pulls in a whole Ceph otherwise).
APT_LEAN=(--no-install-recommends)

ea_say() { printf '%s\n' "$*" >&2; }

# The interpreter to build the environment with: $PYTHON, else the first one >= 3.11.
ea_find_python() {
  local candidates=("${PYTHON:-}" python3 python3.13 python3.12 python3.11) py
  for py in "${candidates[@]}"; do
    [ -n "$py" ] || continue
    command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      printf '%s\n' "$py"
      return 0
    fi
  done
  ea_say "Edge Archive needs Python 3.11 or newer; none was found (tried: ${candidates[*]})."
  ea_say "Install one (Debian 12, Ubuntu 24.04: apt-get install python3 python3-venv) or set PYTHON=/path/to/python3.11."
  return 1
}

# apt-get install, as root, waiting for the dpkg lock; refreshes the package lists once
# when a package is unknown (a fresh container has none).
ea_apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${APT_WAIT[@]}" "${APT_LEAN[@]}" "$@" >/dev/null \
    || { apt-get update -qq "${APT_WAIT[@]}" && apt-get install -y -qq "${APT_WAIT[@]}" "${APT_LEAN[@]}" "$@" >/dev/null; }
}

# The venv module can be missing (Debian's python3 without python3-venv: "ensurepip is not
# available").  Install it as root; otherwise say exactly what to run.
ea_make_venv() {
  local py=$1 log
  log="$(mktemp)"
  if "$py" -m venv "$EDGE_ARCHIVE_VENV" >"$log" 2>&1; then
    rm -f "$log"
    return 0
  fi
  rm -rf "$EDGE_ARCHIVE_VENV"          # a failed venv leaves a directory without pip
  if command -v apt-get >/dev/null 2>&1; then
    local pkg=python3-venv
    if [ "$(id -u)" = 0 ]; then
      ea_say "$py cannot create a virtual environment; installing $pkg (apt-get) ..."
      if ea_apt_install "$pkg" && "$py" -m venv "$EDGE_ARCHIVE_VENV" >"$log" 2>&1; then
        rm -f "$log"
        return 0
      fi
      rm -rf "$EDGE_ARCHIVE_VENV"
      ea_say "Installing $pkg did not help; $py -m venv said:"
    else
      ea_say "$py cannot create a virtual environment (Debian/Ubuntu ship that separately). Run:"
      ea_say "  sudo apt-get install $pkg"
      ea_say "then run this command again.  $py -m venv said:"
    fi
  else
    ea_say "$py cannot create a virtual environment: install your distribution's package for"
    ea_say "Python's venv module (it is part of python3 on most distributions).  $py -m venv said:"
  fi
  sed 's/^/  /' "$log" >&2
  rm -f "$log"
  return 1
}

# Make sure .venv exists, is usable and has the project installed with the given extras
# (e.g. "test"); pip runs only when pyproject.toml or the extras changed since last time.
ea_venv() {
  local extras=${1:-} vpy="$EDGE_ARCHIVE_VENV/bin/python" py target stamp want
  if ! { [ -x "$vpy" ] && "$vpy" -c 'import sys, pip; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
      >/dev/null 2>&1; }; then
    py="$(ea_find_python)" || return 1
    rm -rf "$EDGE_ARCHIVE_VENV"
    ea_say "Creating $EDGE_ARCHIVE_VENV with $("$py" -c 'import sys; print(sys.executable, sys.version.split()[0])') ..."
    ea_make_venv "$py" || return 1
  fi
  target="$EDGE_ARCHIVE_ROOT"
  [ -z "$extras" ] || target="${EDGE_ARCHIVE_ROOT}[$extras]"
  stamp="$EDGE_ARCHIVE_VENV/.edge-archive-installed${extras:+-$extras}"
  want="$(cksum <"$EDGE_ARCHIVE_ROOT/pyproject.toml") $(readlink -f "$vpy")"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    ea_say "Installing edge-archive${extras:+[$extras]} into $EDGE_ARCHIVE_VENV ..."
    "$vpy" -m pip install -q --disable-pip-version-check -e "$target" || {
      ea_say "pip could not install the project into $EDGE_ARCHIVE_VENV (see above)."
      return 1
    }
    printf '%s\n' "$want" >"$stamp"
  fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  ea_venv "" || exit 1
  exec "$EDGE_ARCHIVE_VENV/bin/archivectl" serve "$@"
fi
