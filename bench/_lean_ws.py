"""A minimal blocking WebSocket client over TLS, for measuring servers rather than clients.

The terminal benchmark's throughput and echo rows used to be read through aiohttp in the
benchmark's own event loop, which parses every frame as JSON: on a 2-core machine that client
cost as much CPU as the servers it measured, so both servers came out at the client's speed.
This client does the least a client can (one socket, frames parsed by hand, JSON only where
a row needs it), runs in a thread with a blocking socket, and is used for every peer alike.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import struct
import time
from typing import Any

_OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING = 0x1, 0x2, 0x8, 0x9

# Made once, and without loading the system's CA store (~0.1 s): the server's certificate is
# the daemon's own self-signed one, not verified here.
_CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
_CONTEXT.check_hostname = False
_CONTEXT.verify_mode = ssl.CERT_NONE


def upgrade_request(path: str) -> bytes:
    """The HTTP request that opens a WebSocket on `path` (a fresh key each time)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def client_frame(payload: bytes, opcode: int = _OP_TEXT) -> bytes:
    """One final frame (text unless told) as a client must send it: masked."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    key = (mask * (size // 4 + 1))[:size]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return header + mask + body


class LeanSocket:
    """One client WebSocket: connect, send text, receive whole frames (pings answered)."""

    def __init__(self, port: int, path: str) -> None:
        raw = socket.create_connection(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = _CONTEXT.wrap_socket(raw, server_hostname="127.0.0.1")
        self._buf = bytearray()
        self._scratch = bytearray(1 << 18)  # reused for every recv: no allocation per read
        self._sock.sendall(upgrade_request(path))
        while b"\r\n\r\n" not in self._buf:
            self._fill()
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"upgrade refused: {head.decode(errors='replace')[:200]}")
        self._buf = bytearray(rest)

    def _fill(self) -> None:
        count = self._sock.recv_into(self._scratch)
        if not count:
            raise ConnectionError("server closed the connection")
        self._buf += memoryview(self._scratch)[:count]

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        self._sock.sendall(client_frame(payload, opcode))

    def send_text(self, text: str) -> None:
        self._send_frame(_OP_TEXT, text.encode())

    def send_json(self, message: Any) -> None:
        self.send_text(json.dumps(message))

    def receive(self) -> bytes:
        """The next data frame's payload (server frames are never masked)."""
        while True:
            buf = self._buf
            while len(buf) < 2:
                self._fill()
                buf = self._buf
            opcode = buf[0] & 0x0F
            size = buf[1] & 0x7F
            start = 2
            if size == 126:
                while len(self._buf) < 4:
                    self._fill()
                size = struct.unpack_from("!H", self._buf, 2)[0]
                start = 4
            elif size == 127:
                while len(self._buf) < 10:
                    self._fill()
                size = struct.unpack_from("!Q", self._buf, 2)[0]
                start = 10
            while len(self._buf) < start + size:
                self._fill()
            payload = bytes(self._buf[start : start + size])
            del self._buf[: start + size]
            if opcode in (_OP_TEXT, _OP_BINARY, 0x0):
                return payload
            if opcode == _OP_PING:
                self._send_frame(0xA, payload)
            elif opcode == _OP_CLOSE:
                raise ConnectionError(f"server closed the socket: {payload[:2].hex()} {payload[2:]!r}")

    def read_until(self, needle: bytes, timeout: float = 600) -> None:
        """Read frames until `needle` has appeared in their payloads (even split across two)."""
        deadline = time.monotonic() + timeout
        tail = b""
        while True:
            window = tail + self.receive()
            if needle in window:
                return
            tail = window[-len(needle) :]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needle!r} not seen in {timeout} s")

    def close(self) -> None:
        try:
            self._send_frame(_OP_CLOSE, struct.pack("!H", 1000))
        except OSError:
            pass
        self._sock.close()
