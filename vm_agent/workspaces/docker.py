"""The Docker Engine, seen through the `docker` SDK: the only module that imports it.

Every SDK call blocks (HTTP over the daemon's socket), so each one runs in a worker thread; the
event loop never waits on Docker. The threads are this module's own pool, not asyncio's default
executor (what `asyncio.to_thread` uses): a clone can hold a thread for minutes, and a handful of
them must not starve the default executor that aiohttp's DNS lookups and other subsystems share.
SDK exceptions become two errors callers can act on: `DockerUnavailable` (the engine does not
answer: routes say 503 `docker_unavailable`) and `DockerError` (the engine answered no: a missing
image, a name in use).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

T = TypeVar("T")

# Threads that may talk to the engine at once (20 workspaces created together keep ~20 busy).
_POOL_SIZE = 32
_OUTPUT_TAIL_BYTES = 4096


class DockerUnavailable(RuntimeError):
    """The Docker engine cannot be reached (not running, wrong DOCKER_HOST, socket gone)."""


class DockerError(RuntimeError):
    """The engine refused an operation; the message is meant for the workspace's owner."""


class NotFoundError(DockerError):
    """The container, volume or image does not exist."""


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    status: str  # created | running | paused | restarting | removing | exited | dead
    labels: dict[str, str]
    exit_code: int = 0
    error: str = ""

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass(frozen=True)
class BindMount:
    source: str
    target: str
    read_only: bool = True


def _tail(data: bytes) -> str:
    return data[-_OUTPUT_TAIL_BYTES:].decode("utf-8", "replace").strip()


def _explain(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc)


class DockerEngine:
    """A lazily connected client: constructing it never touches the network, so the daemon
    starts (and serves `host`) while Docker is down, and connects once Docker comes up."""

    def __init__(self, base_url: str | None = None, *, timeout: float = 120.0) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._executor = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="docker")

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> docker.DockerClient:
        if self._client is None:
            kwargs: dict[str, Any] = {"timeout": int(self._timeout) or None, "max_pool_size": _POOL_SIZE}
            if self._base_url:
                client = docker.DockerClient(base_url=self._base_url, version="auto", **kwargs)
            else:
                client = docker.DockerClient(version="auto", **docker.utils.kwargs_from_env(), **kwargs)
            self._client = client
        return self._client

    async def _call(self, fn: Callable[[docker.DockerClient], T]) -> T:
        def run() -> T:
            try:
                return fn(self._connect())
            except docker.errors.NotFound as exc:
                raise NotFoundError(_explain(exc)) from None
            except docker.errors.APIError as exc:
                raise DockerError(_explain(exc)) from None
            except (requests.exceptions.RequestException, ConnectionError, FileNotFoundError) as exc:
                raise DockerUnavailable(f"docker engine unreachable: {type(exc).__name__}") from None
            except docker.errors.DockerException as exc:
                # Raised by the client constructor when the version handshake fails.
                raise DockerUnavailable(f"docker engine unreachable: {exc}") from None

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, client.close)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ engine
    async def ping(self) -> None:
        await self._call(lambda c: c.api.ping())

    async def version(self) -> dict[str, Any]:
        return await self._call(lambda c: c.api.version())

    # ------------------------------------------------------------------ images
    async def ensure_image(self, image: str) -> None:
        """Use the local image, else pull it; a missing image is a DockerError naming it."""
        try:
            await self._call(lambda c: c.api.inspect_image(image))
            return
        except NotFoundError:
            pass
        try:
            await self._call(lambda c: c.images.pull(image))
        except DockerError as exc:
            raise DockerError(f"image {image!r} is not available: {exc}") from None

    # ------------------------------------------------------------------ volumes
    async def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        await self._call(lambda c: c.api.create_volume(name=name, labels=dict(labels)))

    async def remove_volume(self, name: str) -> None:
        try:
            await self._call(lambda c: c.api.remove_volume(name, force=True))
        except NotFoundError:
            pass

    async def volume_exists(self, name: str) -> bool:
        try:
            await self._call(lambda c: c.api.inspect_volume(name))
        except NotFoundError:
            return False
        return True

    async def list_volumes(self, label: str) -> list[str]:
        result = await self._call(lambda c: c.api.volumes(filters={"label": label}))
        return [v["Name"] for v in (result.get("Volumes") or [])]

    # ------------------------------------------------------------------ containers
    async def create_container(
        self,
        name: str,
        image: str,
        *,
        command: Sequence[str],
        labels: Mapping[str, str],
        env: Mapping[str, str],
        volume: str,
        volume_target: str,
        binds: Sequence[BindMount] = (),
        working_dir: str | None = None,
        nano_cpus: int = 0,
        mem_limit: int = 0,
        pids_limit: int = 0,
    ) -> None:
        def create(c: docker.DockerClient) -> None:
            mounts = [Mount(target=volume_target, source=volume, type="volume")]
            mounts += [Mount(target=b.target, source=b.source, type="bind", read_only=b.read_only) for b in binds]
            host_config = c.api.create_host_config(
                mounts=mounts,
                nano_cpus=nano_cpus or None,
                mem_limit=mem_limit or None,
                pids_limit=pids_limit or None,
            )
            c.api.create_container(
                image,
                command=list(command[1:]),
                entrypoint=[command[0]],
                name=name,
                labels=dict(labels),
                environment=dict(env),
                working_dir=working_dir,
                host_config=host_config,
                detach=True,
            )

        await self._call(create)

    async def start(self, name: str) -> None:
        await self._call(lambda c: c.api.start(name))

    async def stop(self, name: str, *, timeout: int = 10) -> None:
        await self._call(lambda c: c.api.stop(name, timeout=timeout))

    async def remove_container(self, name: str) -> None:
        try:
            await self._call(lambda c: c.api.remove_container(name, force=True, v=False))
        except NotFoundError:
            pass
        except DockerError as exc:
            if "already in progress" not in str(exc):
                raise

    async def inspect(self, name: str) -> ContainerInfo | None:
        try:
            data = await self._call(lambda c: c.api.inspect_container(name))
        except NotFoundError:
            return None
        return _info(data)

    async def list_containers(self, label: str) -> list[ContainerInfo]:
        rows = await self._call(lambda c: c.api.containers(all=True, filters={"label": label}))
        return [
            ContainerInfo(
                name=(row.get("Names") or ["/"])[0].lstrip("/"),
                status=row.get("State", ""),
                labels=row.get("Labels") or {},
            )
            for row in rows
        ]

    async def logs(self, name: str, *, tail: int = 20) -> str:
        try:
            data = await self._call(lambda c: c.api.logs(name, tail=tail))
        except DockerError:
            return ""
        return _tail(data)

    async def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> tuple[int, str]:
        """Run argv in the container to completion: (exit code, the tail of stdout+stderr)."""

        def run(c: docker.DockerClient) -> tuple[int, str]:
            created = c.api.exec_create(name, list(argv), environment=dict(env or {}), workdir=workdir)
            output = c.api.exec_start(created["Id"])
            code = c.api.exec_inspect(created["Id"]).get("ExitCode")
            return (code if code is not None else -1), _tail(output or b"")

        return await self._call(run)


def _info(data: dict[str, Any]) -> ContainerInfo:
    state = data.get("State") or {}
    return ContainerInfo(
        name=str(data.get("Name", "")).lstrip("/"),
        status=state.get("Status", ""),
        labels=(data.get("Config") or {}).get("Labels") or {},
        exit_code=int(state.get("ExitCode") or 0),
        error=state.get("Error") or ("out of memory" if state.get("OOMKilled") else ""),
    )
