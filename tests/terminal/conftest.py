"""Terminal test helpers: a daemon with a predictable shell, and a small protocol client."""

from __future__ import annotations

import asyncio
import json
import os
import re
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
