#!/usr/bin/env bash
# Build the browser console (web/) into vm_agent/console/static/, which the daemon serves at `/`
# and the Python package ships (so `pip install` users need no Node).
#
# Usage: scripts/build-console.sh [--force]
# Needs Node.js >= 18 and npm (Debian 12: apt-get install nodejs npm); only the npm registry is
# contacted, for the pinned packages in web/package-lock.json.
#
# Idempotent: `npm ci` runs only when web/package-lock.json changed since the last install, and the
# build only when a source file changed since the last build (a content hash kept beside the output).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEB="$REPO/web"
OUT="$REPO/vm_agent/console/static"
STAMP="$OUT/.build-hash"
FORCE="${1:-}"

say() { printf 'build-console: %s\n' "$*" >&2; }

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    say "node/npm not found; installing Debian's nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm ca-certificates >/dev/null
  else
    say "error: Node.js and npm are needed to build the console (e.g. apt-get install nodejs npm)"
    exit 1
  fi
fi

sources_hash() {
  (cd "$WEB" && find package.json package-lock.json tsconfig.json build.mjs index.html console.css favicon.svg src \
      -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

hash="$(sources_hash)"
if [ "$FORCE" != "--force" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash" ] \
    && [ -f "$OUT/index.html" ] && [ -f "$OUT/console.js" ]; then
  say "up to date ($OUT)"
  exit 0
fi

lock_hash="$(sha256sum "$WEB/package-lock.json" | cut -d' ' -f1)"
LOCK_STAMP="$WEB/node_modules/.vm-agent-lock-hash"
if [ ! -f "$LOCK_STAMP" ] || [ "$(cat "$LOCK_STAMP")" != "$lock_hash" ]; then
  say "installing the pinned front-end packages (npm ci)"
  (cd "$WEB" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" > "$LOCK_STAMP"
fi

say "building"
(cd "$WEB" && npx --no-install tsc -p . && node build.mjs)
echo "$hash" > "$STAMP"
