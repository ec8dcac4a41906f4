"""sd_notify without libsystemd: READY=1, WATCHDOG=1, STOPPING=1 over $NOTIFY_SOCKET.

Called from the event loop, so the socket is non-blocking: a full queue drops the message.
"""

from __future__ import annotations

import asyncio
import os
import socket

import structlog

log = structlog.get_logger("vm_agent.systemd")


def notify(state: str) -> bool:
    """Send `state` to systemd; False when not running under a notify-type unit."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        # Non-blocking: if the receiver's queue is full, drop this ping rather than stall the loop.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
            sock.connect(address)
            sock.send(state.encode())
        return True
    except BlockingIOError:
        log.warning("sd_notify_dropped", state=state, reason="notify socket queue is full")
        return False
    except OSError as exc:
        log.warning("sd_notify_failed", state=state, error=str(exc))
        return False


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC (systemd's advice), when the watchdog is meant for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None


async def watchdog_loop(interval: float) -> None:
    """Ping the watchdog while the event loop is alive: a wedged loop stops the pings."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
