"""Terminal test helpers: a daemon with a predictable shell, and a small protocol client."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import Daemon, MakeDaemon

SHELL = "/bin/bash"
TIMEOUT = 15.0


def terminal_env(tmp_path: Any, **overrides: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"DEFAULT_SHELL": SHELL, "HOST_WORKSPACE_DIR": str(home), **overrides}


@pytest.fixture(autouse=True)
def quiet_login_shell(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shells start with an empty HOME: the machine's own profile (pyenv, cargo...) is slow and
    not what these tests are about."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture
async def term_daemon(make_daemon: MakeDaemon, tmp_path: Any) -> Daemon:
    return await make_daemon(**terminal_env(tmp_path))


class TermClient:
    """One WebSocket to the daemon speaking the terminal protocol, with awaitable reads."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws
        self.output: dict[str, str] = {}  # session id -> all output text seen
        self.positions: dict[str, int] = {}  # session id -> `next` of the last output
        self.messages: list[dict[str, Any]] = []

    async def send(self, kind: str, data: dict[str, Any] | None = None, session_id: str | None = None) -> None:
        message: dict[str, Any] = {"type": kind}
        if session_id is not None:
            message["sessionId"] = session_id
        if data is not None:
            message["data"] = data
        await self.ws.send_str(json.dumps(message))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket ended: {msg.type} {msg.data!r} {msg.extra!r}")
        message = json.loads(msg.data)
        self.messages.append(message)
        if message["type"] in ("output", "scrollback"):
            sid = message.get("sessionId", "")
            self.output[sid] = self.output.get(sid, "") + message["data"]["data"]
            self.positions[sid] = message["data"]["next"]
        return message

    async def expect(self, kind: str, timeout: float = TIMEOUT, **match: Any) -> dict[str, Any]:
        """Read until a message of `kind` (whose data contains `match`) arrives."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.recv()
                data = message.get("data") or {}
                if message["type"] == kind and all(data.get(k) == v for k, v in match.items()):
                    return message

    async def until_output(self, session_id: str, needle: str, timeout: float = TIMEOUT) -> str:
        """Read until the session's output contains `needle`; returns all its output."""
        async with asyncio.timeout(timeout):
            while needle not in self.output.get(session_id, ""):
                await self.recv()
        return self.output[session_id]

    async def create(self, session_id: str, rows: int = 24, cols: int = 80, **extra: Any) -> dict[str, Any]:
        await self.send("create_session", {"sessionId": session_id, "rows": rows, "cols": cols, **extra})
        return await self.expect("session_created", sessionId=session_id)

    async def type(self, session_id: str, text: str) -> None:
        await self.send("input", {"data": text}, session_id)

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """`await connect(daemon, path="/terminal/ws/multi", token=None, **query)` → TermClient."""
    clients: list[TermClient] = []

    async def open_client(
        daemon: Daemon, path: str = "/terminal/ws/multi", token: str | None = None, **query: str
    ) -> TermClient:
        params = {"token": token or daemon.token(), **query}
        http = daemon.client()
        ws = await http.ws_connect(daemon.ws_url + path, params=params, max_msg_size=0)
        client = TermClient(http, ws)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


def marker(text: str) -> tuple[str, str]:
    """A command that prints `text` and the exact string to wait for (not in the echoed input)."""
    return f"printf '%s%s\\n' '{text[:1]}' '{text[1:]}'\r", text


def ws_frame(text: str) -> bytes:
    """A client's (masked) text frame carrying `text`."""
    payload = text.encode()
    mask = os.urandom(4)
    size = bytes([0x80 | len(payload)]) if len(payload) < 126 else b"\xfe" + struct.pack("!H", len(payload))
    return b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_client(
    daemon: Daemon, receive_buffer: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare TLS connection upgraded to `/terminal/ws/multi`: frames are written as given
    (several in one write, or never reading), which a WebSocket library will not do."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", daemon.port))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(sock=sock, ssl=context, server_hostname="127.0.0.1")
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /terminal/ws/multi?token={daemon.token()} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def read_text_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next JSON text message the daemon sends on a `raw_client` (control frames skipped)."""
    while True:
        head = await reader.readexactly(2)
        size = head[1] & 0x7F
        if size == 126:
            size = int.from_bytes(await reader.readexactly(2), "big")
        elif size == 127:
            size = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(size)
        if head[0] & 0x0F == 1:
            return json.loads(payload)


def fds_open() -> int:
    return len(os.listdir("/proc/self/fd"))


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT, interval: float = 0.02) -> None:
    """Wait for an outside-world condition (a file, a process) that offers nothing to await."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polling the OS, there is no event to await
            await asyncio.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children(pid: int | None = None) -> list[tuple[int, str]]:
    """(pid, state) of the direct children of `pid` (default: this process)."""
    pid = pid or os.getpid()
    found: list[tuple[int, str]] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                ids = [int(x) for x in fh.read().split()]
        except FileNotFoundError:
            continue
        for child in ids:
            try:
                with open(f"/proc/{child}/stat") as stat:
                    found.append((child, stat.read().rsplit(")", 1)[1].split()[0]))
            except FileNotFoundError:
                pass
    return found


async def shell_pid(client: TermClient, session_id: str) -> int:
    """Ask the shell for its pid ($$) through the terminal."""
    await client.type(session_id, "echo PID=$((1000000+$$))\r")
    async with asyncio.timeout(TIMEOUT):
        while True:
            found = re.search(r"PID=1(\d{6})", client.output.get(session_id, ""))
            if found:
                return int(found.group(1))
            await client.recv()
