"""Fixtures for the agent gateway: a daemon that knows the fake ACP agent, and viewer clients."""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.terminal.conftest import pid_alive  # noqa: F401 - the agents' tests import it from here

FAKE_AGENT = Path(__file__).resolve().parents[1] / "fakes" / "fake_acp_agent.py"
PIDFILE = "agent-pids"
WAIT = 15.0


def agents_file(directory: Path, state: Path) -> Path:
    """An AGENTS_CONFIG with the fake agent as `fake` (and `fake-steer`, which advertises steering).

    Every fake agent appends its pid to `agent_pids(directory)`."""
    command = [sys.executable, str(FAKE_AGENT)]
    pids = {"FAKE_ACP_PIDFILE": str(directory / PIDFILE)}
    path = directory / "agents.json"
    path.write_text(json.dumps({"agents": {
        "fake": {"command": command, "env": {"FAKE_ACP_STATE": str(state), **pids}},
        "fake-steer": {"command": command, "env": {"FAKE_ACP_STATE": str(state), "FAKE_ACP_STEERING": "1", **pids}},
        "fake-noload": {"command": command, "env": {"FAKE_ACP_NO_LOAD": "1", **pids}},
        "fake-slow": {"command": command, "env": {"FAKE_ACP_INIT_DELAY": "30", **pids}},
        "missing": {"command": ["/nonexistent/agent-binary"], "installHint": "install it"},
    }}))
    return path


def agent_pids(directory: Path) -> list[int]:
    """Every fake agent process started with `agents_file(directory, ...)`, oldest first."""
    path = directory / PIDFILE
    return [int(line) for line in path.read_text().split()] if path.exists() else []


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = WAIT,
                interval: float = 0.02) -> None:
    """Wait for an outside-world condition that offers nothing to await (a process exits, the
    store holds a value): `condition` is polled, and may be a coroutine function."""
    async with asyncio.timeout(timeout):
        while True:
            met = condition()
            if inspect.isawaitable(met):
                met = await met
            if met:
                return
            await asyncio.sleep(interval)


@pytest.fixture
def agent_env(tmp_path: Path) -> dict[str, str]:
    """Settings for a daemon whose agents are fakes, with retries fast enough for tests."""
    state = tmp_path / "fake-state"
    state.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    return {
        "AGENTS_CONFIG": str(agents_file(tmp_path, state)),
        "HOST_WORKSPACE_DIR": str(workdir),
        "ACP_PROMPT_RETRY_INITIAL_BACKOFF": "0.05s",
        "ACP_PROMPT_RETRY_MAX_BACKOFF": "0.2s",
        "ACP_STOP_GRACE_PERIOD": "0.5s",
    }


@pytest.fixture
async def agent_daemon(make_daemon: Any, agent_env: dict[str, str]) -> Any:
    return await make_daemon(**agent_env)


class Viewer:
    """One `/agent/ws` connection that records everything it receives."""

    def __init__(self, client: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.client = client
        self.ws = ws
        self.messages: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, daemon: Any, session_id: str | None = None, *, after: int | None = None,
                      workspace: str = "host", **params: str) -> Viewer:
        query = {"token": daemon.token("user", workspace), **params}
        if session_id:
            query["sessionId"] = session_id
        if after is not None:
            query["after"] = str(after)
        client = daemon.client()
        try:
            ws = await client.ws_connect(f"{daemon.ws_url}/agent/ws", params=query, max_msg_size=0)
        except BaseException:
            await client.close()
            raise
        return cls(client, ws)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def prompt(self, text: str, request_id: Any = 1) -> None:
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": "session/prompt",
                         "params": {"prompt": [{"type": "text", "text": text}]}})

    async def next(self, timeout: float = WAIT) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket ended: {msg.type} {msg.data} {msg.extra}")
        message = json.loads(msg.data)
        self.messages.append(message)
        return message

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT) -> dict[str, Any]:
        """Read until a message matches (everything read stays in .messages)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                if predicate(message):
                    return message

    async def close(self) -> None:
        await self.ws.close()
        await self.client.close()


def is_result(request_id: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("jsonrpc") == "2.0" and m.get("id") == request_id and ("result" in m or "error" in m) \
        and "method" not in m


def chunk_texts(messages: list[dict[str, Any]]) -> list[str]:
    out = []
    for m in messages:
        update = (m.get("params") or {}).get("update") if m.get("method") == "session/update" else None
        if update and update.get("sessionUpdate") == "agent_message_chunk":
            out.append(update["content"]["text"])
    return out


@pytest.fixture
async def viewers() -> Any:
    opened: list[Viewer] = []

    async def open_viewer(daemon: Any, session_id: str | None = None, **kwargs: Any) -> Viewer:
        viewer = await Viewer.connect(daemon, session_id, **kwargs)
        opened.append(viewer)
        return viewer

    yield open_viewer
    for viewer in opened:
        await viewer.close()
