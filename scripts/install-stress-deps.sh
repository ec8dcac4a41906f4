#!/usr/bin/env bash
# System packages the stress suite (tests/stress, `make stress`) uses beyond the Python test deps:
# libfaketime for the wall-clock-jump test. Idempotent; Debian 12 as root. Without it that one
# test skips with a reason; everything else runs.
set -euo pipefail

if [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-stress-deps: not root; skipping libfaketime (the clock-jump stress test will skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends libfaketime >/dev/null
