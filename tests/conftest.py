"""Shared fixtures: the real daemon over TLS on a free port, trusting a local dev JWKS.

`daemon` is one started daemon; `make_daemon(**env)` starts more with setting overrides given
as environment strings (the names in vm_agent/config.py). Tokens are minted with the same key
the daemon fetches from the loopback JWKS, so tests exercise the production auth path.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from vm_agent.config import Settings
from vm_agent.devkeys import DEV_ISSUER, DevKey, serve_jwks
from vm_agent.logs import configure_logging
from vm_agent.server import RunningServer, start_server

configure_logging("debug" if os.environ.get("VM_AGENT_TEST_DEBUG") else "info", "text")

TEST_NODE_ID = "test-node"


class Daemon:
    """A daemon started in this test's event loop, with helpers to talk to it."""

    def __init__(self, settings: Settings, key: DevKey) -> None:
        self.settings = settings
        self.key = key
        self.server: RunningServer | None = None

    async def start(self) -> Daemon:
        self.server = await start_server(self.settings)
        if self.settings.port == 0:  # keep the port across restarts
            self.settings = self.settings.replace(port=self.server.port)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()

    async def restart(self) -> Daemon:
        await self.stop()
        return await self.start()

    @property
    def app(self) -> web.Application:
        assert self.server is not None, "daemon is not running"
        return self.server.app

    @property
    def port(self) -> int:
        assert self.server is not None, "daemon is not running"
        return self.server.port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    @property
    def cert_path(self) -> Path:
        assert self.server is not None
        return self.server.cert_path

    def token(self, kind: str = "user", workspace: str | None = "host", user: str = "user-1", **claims: Any) -> str:
        node = claims.pop("node", self.settings.node_id if kind == "management" else None)
        return self.key.mint(kind=kind, workspace=workspace, node=node, user=user, **claims)

    def auth_headers(self, kind: str = "management", workspace: str | None = None, **claims: Any) -> dict[str, str]:
        if kind == "user" and workspace is None:
            workspace = "host"
        return {"Authorization": f"Bearer {self.token(kind, workspace, **claims)}"}

    def client(self, **kwargs: Any) -> aiohttp.ClientSession:
        """A session that skips verification of the self-signed certificate (caller closes it)."""
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), **kwargs)


def base_env(state_dir: Path, jwks_url: str) -> dict[str, str]:
    return {
        "VM_AGENT_STATE_DIR": str(state_dir),
        "VM_AGENT_HOST": "127.0.0.1",
        "VM_AGENT_PORT": "0",
        "JWKS_ENDPOINT": jwks_url,
        "JWT_ISSUER": DEV_ISSUER,
        "NODE_ID": TEST_NODE_ID,
        "LOG_FORMAT": "text",
        "GRACEFUL_SHUTDOWN_TIMEOUT": "5s",
        "IDENTITY_FILE": str(state_dir / "identity.json"),
    }


@pytest.fixture
def dev_key(tmp_path_factory: pytest.TempPathFactory) -> DevKey:
    return DevKey.load_or_create(tmp_path_factory.mktemp("devkey"))


@pytest.fixture
async def jwks_url(dev_key: DevKey) -> AsyncIterator[str]:
    runner, url = await serve_jwks(dev_key)
    yield url
    await runner.cleanup()


MakeDaemon = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def make_daemon(
    tmp_path_factory: pytest.TempPathFactory, dev_key: DevKey, jwks_url: str
) -> AsyncIterator[MakeDaemon]:
    started: list[Daemon] = []

    async def make(**env: str) -> Daemon:
        state_dir = Path(env.pop("VM_AGENT_STATE_DIR", "") or tmp_path_factory.mktemp("state"))
        merged = {**base_env(state_dir, jwks_url), **{k: str(v) for k, v in env.items()}}
        daemon = Daemon(Settings.from_env(merged), dev_key)
        started.append(daemon)
        return await daemon.start()

    yield make
    for daemon in reversed(started):
        await daemon.stop()


@pytest.fixture
async def daemon(make_daemon: MakeDaemon) -> Daemon:
    return await make_daemon()
