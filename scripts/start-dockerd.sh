#!/bin/sh
# Make a Docker daemon answer on this machine: install Debian's docker.io (and what the workspace
# test images are built from: busybox-static, git) when missing, start dockerd in the background
# when none answers, and wait until `docker info` works. Idempotent; needs root on Debian 12 and
# works without systemd (CI containers, fresh VMs). Logs: $DOCKERD_LOG.
set -eu

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
DOCKERD_WAIT_SECONDS=${DOCKERD_WAIT_SECONDS:-60}

missing=""
command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
command -v docker >/dev/null 2>&1 || missing="$missing docker.io"
dpkg -s busybox-static >/dev/null 2>&1 || missing="$missing busybox-static"
command -v git >/dev/null 2>&1 || missing="$missing git"
# Debian's own Python goes into the image that runs agents inside a workspace (tests/images).
[ -x /usr/bin/python3 ] || missing="$missing python3"
if [ -n "$missing" ]; then
    echo "start-dockerd: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing ca-certificates iptables
fi

if docker info >/dev/null 2>&1; then
    echo "start-dockerd: docker is already running"
    exit 0
fi

start_dockerd() {
    echo "start-dockerd: starting dockerd $*"
    # setsid + nohup: the daemon outlives this script and the CI step's process group.
    setsid nohup dockerd "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    echo $! >/run/vm-agent-dockerd.pid
}

wait_for_docker() {
    waited=0
    while [ "$waited" -lt "$DOCKERD_WAIT_SECONDS" ]; do
        if docker info >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$(cat /run/vm-agent-dockerd.pid)" 2>/dev/null; then
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    return 1
}

# A stale pid file from a dockerd that died keeps the next one from starting.
rm -f /var/run/docker.pid

# shellcheck disable=SC2086
start_dockerd ${DOCKERD_ARGS:-}
if wait_for_docker; then
    echo "start-dockerd: docker is ready"
    exit 0
fi

stop_attempt() {
    if kill -0 "$(cat /run/vm-agent-dockerd.pid)" 2>/dev/null; then
        kill "$(cat /run/vm-agent-dockerd.pid)" || true
        sleep 2
    fi
    rm -f /var/run/docker.pid
}

# Nested in a container, overlay2 on top of overlayfs is often refused (retry with vfs), and
# without NET_ADMIN dockerd cannot program iptables (containers still reach the host's bridge
# address without it, which is all the tests need).
for fallback in "--storage-driver=vfs" "--storage-driver=vfs --iptables=false --ip-masq=false"; do
    stop_attempt
    # shellcheck disable=SC2086
    start_dockerd $fallback
    if wait_for_docker; then
        echo "start-dockerd: docker is ready ($fallback)"
        exit 0
    fi
done
echo "start-dockerd: dockerd did not come up; last lines of $DOCKERD_LOG:" >&2
tail -n 30 "$DOCKERD_LOG" >&2 || true
exit 1
