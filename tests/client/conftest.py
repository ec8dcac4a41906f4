"""Fixtures for the coordinator client: trust settings for the test daemon, the CLI as a real
process, and a TCP relay that can drop every connection on demand (a flaky network)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vm_agent.client import AgentClient, ClientError, TlsConfig


def fingerprint_of(daemon) -> str:
    """SHA-256 of the daemon's certificate, as a VM would print it at first boot."""
    der = ssl.PEM_cert_to_DER_cert(daemon.cert_path.read_text())
    return hashlib.sha256(der).hexdigest()


def client_for(daemon, kind: str = "management", url: str | None = None, **kwargs) -> AgentClient:
    workspace = kwargs.pop("workspace", "host")
    token = kwargs.pop("token", None) or daemon.token(kind, workspace)
    tls = TlsConfig(fingerprint=fingerprint_of(daemon))
    return AgentClient(url or daemon.url, token, verify=tls, workspace=workspace, **kwargs)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


async def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 90, closed_stdout: bool = False
) -> CliResult:
    """`vmagent ARGS` as its own process, the way a user or a script runs it.

    `closed_stdout`: stdout is a pipe whose reader is already gone, as in `vmagent … | true`
    or `| head -1` once head has its line (`out` is then empty)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VMAGENT_")}
    full_env.update(env or {})
    stdout: int = asyncio.subprocess.PIPE
    if closed_stdout:
        read_end, stdout = os.pipe()
        os.close(read_end)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "vm_agent.client.cli",
            *args,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
        )
    finally:
        if closed_stdout:
            os.close(stdout)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return CliResult(proc.returncode or 0, (out or b"").decode(), err.decode())


def cli_env(daemon, kind: str = "management", url: str | None = None, **extra: str) -> dict[str, str]:
    return {
        "VMAGENT_URL": url or daemon.url,
        "VMAGENT_TOKEN": daemon.token(kind, "host"),
        "VMAGENT_FINGERPRINT": fingerprint_of(daemon),
        **extra,
    }


class Relay:
    """A TCP relay in front of a daemon; `drop()` cuts every connection, as a network blip does;
    `black_hole()` makes the daemon go silent without closing anything."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self.open = 0  # client connections open right now
        self.silent = False
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self._count(+1)
        try:
            if self.silent:
                await self._swallow(reader, writer)
            else:
                await self._relay(reader, writer)
        finally:
            await self._count(-1)

    async def _count(self, change: int) -> None:
        async with self._changed:
            self.open += change
            self._changed.notify_all()

    async def wait_open(self, count: int) -> None:
        """Until exactly `count` client connections are open."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.open == count)

    def black_hole(self) -> None:
        """From now on nothing gets through, either way, and nothing is closed: a VM that was
        paused, or a firewall dropping its packets (no FIN or RST ever reaches the client)."""
        self.silent = True

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.silent:
                        continue  # read and dropped, as by a firewall: the sender never learns
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        tasks = [asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)
        self._writers -= {writer, up_writer}

    def drop(self) -> int:
        """Abort every open connection; returns how many were cut."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        return len(writers) // 2

    async def stop(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()


@pytest.fixture
async def relay_to() -> AsyncIterator:
    """`await relay_to(daemon)` → a started Relay in front of that daemon."""
    relays: list[Relay] = []

    async def start(daemon) -> Relay:
        relays.append(await Relay(daemon.port).start())
        return relays[-1]

    yield start
    for r in relays:
        await r.stop()


@pytest.fixture
def make_term_daemon(make_daemon, tmp_path, monkeypatch):
    """`await make_term_daemon(**settings)`: a daemon whose terminals run a plain bash in a
    scratch home directory: an empty HOME, so the login shell does not spend seconds in this
    machine's own profile."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))

    async def make(**env: str):
        return await make_daemon(DEFAULT_SHELL="/bin/bash", HOST_WORKSPACE_DIR=str(home), **env)

    return make


@pytest.fixture
async def term_daemon(make_term_daemon):
    return await make_term_daemon()


FAKE_AGENT = Path(__file__).resolve().parents[1] / "fakes" / "fake_acp_agent.py"


def agent_env(directory: Path) -> dict[str, str]:
    """Settings for a daemon whose default agent type (`pi`) is the scriptable fake ACP agent,
    so "create a session, prompt it" works exactly as a coordinator does it."""
    state = directory / "fake-state"
    state.mkdir(exist_ok=True)
    work = directory / "work"
    work.mkdir(exist_ok=True)
    command = [sys.executable, str(FAKE_AGENT)]
    config = directory / "agents.json"
    config.write_text(
        json.dumps(
            {
                "agents": {
                    "pi": {"command": command, "env": {"FAKE_ACP_STATE": str(state)}},
                    "fake-steer": {"command": command, "env": {"FAKE_ACP_STATE": str(state), "FAKE_ACP_STEERING": "1"}},
                }
            }
        )
    )
    return {
        "AGENTS_CONFIG": str(config),
        "HOST_WORKSPACE_DIR": str(work),
        "ACP_PROMPT_RETRY_INITIAL_BACKOFF": "0.05s",
        "ACP_PROMPT_RETRY_MAX_BACKOFF": "0.2s",
        "ACP_STOP_GRACE_PERIOD": "0.5s",
    }


async def stop_agents(daemon) -> None:
    """Stop every agent session over HTTP, as a coordinator cleans up, before the daemon stops."""
    if daemon.server is None:
        return
    async with client_for(daemon) as client:
        for session in await client.list_sessions():
            with contextlib.suppress(ClientError):
                await client.stop(session=session["id"])


@pytest.fixture
async def agent_daemon(make_daemon, tmp_path):
    daemon = await make_daemon(**agent_env(tmp_path))
    yield daemon
    await stop_agents(daemon)
