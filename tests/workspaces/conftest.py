"""Fixtures for workspace tests: a real Docker engine, the offline test image, a git server.

Docker is required: without it these tests skip with the reason, unless
VM_AGENT_REQUIRE_DOCKER=1 (CI), which turns the skip into a failure. Everything the tests make
carries the workspace label and a per-run id prefix, and is removed after each test.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp import web

from tests.conftest import Daemon
from tests.images.build import ImageUnavailable, ensure_image
from vm_agent import appkeys
from vm_agent.logs import get_ring

RUN_PREFIX = "t" + secrets.token_hex(3)
NAME_PREFIX = f"vm-agent-ws-{RUN_PREFIX}"


def _unavailable(reason: str) -> None:
    if os.environ.get("VM_AGENT_REQUIRE_DOCKER") == "1":
        pytest.fail(f"Docker is required (VM_AGENT_REQUIRE_DOCKER=1) but {reason}")
    pytest.skip(f"needs a Docker engine: {reason} (run scripts/start-dockerd.sh)")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # any failure to reach the engine means "no Docker here"
        _unavailable(f"the engine does not answer ({type(exc).__name__})")
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_image(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    try:
        return ensure_image(docker_client, tmp_path_factory.mktemp("image"))
    except ImageUnavailable as exc:
        _unavailable(str(exc))
        raise


def remove_test_resources(client: docker.DockerClient) -> None:
    """Remove this run's containers and volumes. Twice: a daemon stopped mid-creation may still
    have a Docker call in flight that creates a container after the first pass."""
    for attempt in range(2):
        for container in client.containers.list(all=True, filters={"name": NAME_PREFIX}):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        for volume in client.volumes.list(filters={"name": NAME_PREFIX}):
            try:
                volume.remove(force=True)
            except docker.errors.APIError:
                if attempt:
                    raise


@pytest.fixture
def ws_id() -> Iterator[Any]:
    """Workspace ids unique to this run: `ws_id("a")` -> "t1a2b3c-a"."""
    yield lambda suffix="": f"{RUN_PREFIX}-{suffix or secrets.token_hex(3)}"


@pytest.fixture(autouse=True)
def _cleanup_docker(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "docker_client" in request.fixturenames:
        remove_test_resources(request.getfixturevalue("docker_client"))


@pytest.fixture
async def ws_daemon(make_daemon: Any, test_image: str) -> Daemon:
    """A daemon whose default workspace image is the test image."""
    return await make_daemon(WORKSPACE_IMAGE=test_image)


def bridge_gateway(client: docker.DockerClient) -> str:
    """The host's address on the default bridge (containers reach the test git server there)."""
    for config in client.networks.get("bridge").attrs["IPAM"]["Config"] or []:
        if config.get("Gateway") and ":" not in config["Gateway"]:
            return config["Gateway"]
        if config.get("Subnet") and ":" not in config["Subnet"]:
            return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    raise RuntimeError("the bridge network has no IPv4 gateway")


@dataclass
class GitServer:
    """A bare repository served over git's dumb HTTP protocol, behind HTTP basic auth."""

    url: str
    token: str
    authorized: list[str] = field(default_factory=list)
    hold: asyncio.Event | None = None
    held: asyncio.Event = field(default_factory=asyncio.Event)


def _make_repository(root: Path) -> Path:
    work, bare = root / "work", root / "repo.git"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(root)}

    def git(*args: str, cwd: Path = work) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    work.mkdir()
    git("init", "-q", "-b", "main")
    (work / "hello.txt").write_text("hello from the repository\n")
    git("add", "hello.txt")
    git("commit", "-q", "-m", "first")
    git("checkout", "-q", "-b", "feature")
    (work / "feature.txt").write_text("feature branch\n")
    git("add", "feature.txt")
    git("commit", "-q", "-m", "feature")
    git("checkout", "-q", "main")
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    git("update-server-info", cwd=bare)
    return bare


@pytest.fixture
async def git_server(docker_client: docker.DockerClient, tmp_path: Path) -> AsyncIterator[GitServer]:
    bare = _make_repository(tmp_path)
    token = "tok-" + secrets.token_hex(16)
    expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    server = GitServer(url="", token=token)

    async def serve(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})
        server.authorized.append(request.path)
        if server.hold is not None:
            server.held.set()
            await server.hold.wait()
        path = (bare / request.match_info["path"]).resolve()
        if not path.is_relative_to(bare) or not path.is_file():
            return web.Response(status=404)
        return web.Response(body=path.read_bytes(), content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/repo.git/{path:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    host = bridge_gateway(docker_client)
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://{host}:{port}/repo.git"
    yield server
    if server.hold is not None:
        server.hold.set()
    await runner.cleanup()


async def wait_status(daemon: Daemon, ws: str, *statuses: str, timeout: float = 60) -> Any:
    """Await the manager's own change notification until `ws` settles in one of `statuses`."""
    manager = daemon.app[appkeys.WORKSPACES]
    return await manager.wait_for(ws, set(statuses or ("running", "error")), timeout)


async def exec_in(daemon: Daemon, ws: str, *argv: str, secret_env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run argv inside the workspace the way terminals and agents do: through its placement."""
    placement = await daemon.app[appkeys.WORKSPACES].placement(ws)
    command = placement.wrap(list(argv), tty=False, secret_env=secret_env)
    proc = await asyncio.create_subprocess_exec(
        *command.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, **command.env}, cwd=command.cwd,
    )
    out, _ = await proc.communicate()
    for path in command.cleanup_paths:
        os.unlink(path)
    return proc.returncode or 0, out.decode()


@pytest.fixture
def daemon_logs() -> Any:
    """`daemon_logs()` -> the structured log entries every daemon of this test has written."""
    ring = get_ring()
    start = ring.last_seq

    def entries() -> list[dict[str, Any]]:
        gap, out = ring.read(start, limit=1_000_000)
        assert gap is None, "the log ring dropped entries; the check would be incomplete"
        return [entry.item for entry in out]

    return entries
