#!/usr/bin/env bash
# Install what the console's browser tests (tests/console, marker `browser`) need: Debian's
# Chromium, driven by Playwright for Python through its executable path. Playwright's own browser
# download (`playwright install`) is never used: only the apt and PyPI registries are reachable.
#
# Usage (as root on Debian 12): scripts/install-browser.sh [path/to/venv]   (default: .venv)
# Idempotent: apt-get runs only when /usr/bin/chromium is missing, pip only when playwright is.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.venv}"

say() { printf 'install-browser: %s\n' "$*" >&2; }

if [ -x /usr/bin/chromium ]; then
  say "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
else
  [ "$(id -u)" = "0" ] || { say "error: run as root to apt-get install chromium"; exit 1; }
  say "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core ca-certificates >/dev/null
fi

if [ -x "$VENV/bin/python" ]; then
  if ! "$VENV/bin/python" -c "import playwright" 2>/dev/null; then
    say "installing playwright into $VENV"
    "$VENV/bin/pip" install --quiet "playwright>=1.45"
  fi
else
  say "no virtualenv at $VENV: install playwright with pip install -e '.[test]'"
fi
