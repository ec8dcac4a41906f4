"""A WebSocket peer that completes its handshake and never reads again (a suspended laptop, a
stuck proxy), a way to see that the daemon's sends to it are now stuck, and a check that such a
peer does not hold up the daemon's shutdown."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import os
import socket
import ssl
import struct
import termios
from typing import Any

import pytest

from vm_agent import appkeys
from vm_agent.logs import get_ring
from vm_agent.store import StoreError

FULL_QUEUE = 1024 * 1024


def open_stalled_websocket(port: int, path: str, token: str) -> ssl.SSLSocket:
    """Blocking (run it in a thread): the TLS socket of an upgraded connection to `path` with a
    4 KiB receive buffer that nothing ever drains."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    sock = context.wrap_socket(raw)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    assert sock.recv(1024).startswith(b"HTTP/1.1 101")
    return sock


def unsent_bytes(fd: int) -> int:
    """Bytes in the kernel's send queue of socket `fd` that the peer has not taken (TIOCOUTQ)."""
    return struct.unpack("I", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0" * 4))[0]


async def until_send_queue_full(server_fd: int, timeout: float = 30) -> None:
    """Nothing signals "the peer's window is shut", so this polls the fact itself. On loopback the
    queue stays near empty while the peer reads; a megabyte there means the daemon's sends wait."""
    async with asyncio.timeout(timeout):
        while unsent_bytes(server_fd) < FULL_QUEUE:  # noqa: ASYNC110 (no event for a full TCP window)
            await asyncio.sleep(0.02)


async def stops_cleanly(daemon: Any) -> None:
    """Stop the daemon; its shutdown must finish within its grace period and run its cleanup to
    the end (the store, closed last, is closed)."""
    store = daemon.app[appkeys.STORE]
    start = get_ring().last_seq
    await daemon.stop()
    _, entries = get_ring().read(start, limit=100_000)
    assert "shutdown_timed_out" not in {e.item["message"] for e in entries}
    with pytest.raises(StoreError):
        await store.ping()
