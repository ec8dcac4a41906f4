#!/usr/bin/env bash
# Create the project's virtualenv. On a fresh Debian the venv module lives in python3-venv;
# install it when we can (root), otherwise say exactly what to run.
set -euo pipefail
python="${1:-python3}"
venv="${2:-.venv}"
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "vm-agent needs Python 3.11 or newer ($python is $("$python" --version 2>&1))." >&2
  exit 1
fi
if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    echo "Python's venv module is missing: run 'sudo apt-get install python3-venv' and retry." >&2
    exit 1
  fi
fi
"$python" -m venv "$venv"
