"""WorkspaceManager: the workspaces of this VM, their Docker side, and where their programs run.

Status: creating → running | error; running ⇄ stopped; running | stopped | error → rebuilding →
running | error. Every operation starts with a compare-and-set on the record (status allowed?
nothing else in progress? `WorkspaceTable.begin`) done before its first `await`, so on the
single event loop two racing requests can never interleave: the loser gets 409.

Creation and rebuild run in background tasks owned here (cancelled on shutdown; a record left
`creating`/`rebuilding` by a shutdown is resumed at the next start). Delete aborts them
cooperatively: it marks the id, force-removes the container (which ends a clone in progress),
waits for the task to notice, then removes what is left. Waiting instead of cancelling matters:
a cancelled coroutine does not stop the worker thread inside a Docker call, which could create
a container after the delete had finished. For that wait to cover a create, the create's task
exists before its first await (the task saves the record; `create` awaits that): started after
the save, it escaped a delete that came meanwhile, made a volume and saved a record for a
workspace already deleted. (And `WorkspaceTable.set_status` saves nothing for such a one.)
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable, Iterator

import structlog

from vm_agent.config import Settings
from vm_agent.errors import ApiError, Conflict, ServiceUnavailable
from vm_agent.store import Store
from vm_agent.workspaces import provision
from vm_agent.workspaces.container import ContainerPlacement
from vm_agent.workspaces.docker import DockerEngine, DockerError, DockerUnavailable, NotFoundError
from vm_agent.workspaces.gitcreds import CredentialFiles
from vm_agent.workspaces.model import (
    CREATING,
    ERROR,
    REBUILDING,
    RUNNING,
    STOPPED,
    Workspace,
    WorkspaceSpec,
)
from vm_agent.workspaces.placement import HOST_WORKSPACE, HostPlacement, Placement, host_workdir
from vm_agent.workspaces.records import load_owner
from vm_agent.workspaces.table import WorkspaceTable

log = structlog.get_logger("vm_agent.workspaces")

STOP_TIMEOUT_SECONDS = 10
ADOPT_AT_START_TIMEOUT = 10.0
FirstSave = tuple[asyncio.Future[None], str | None]  # a new workspace's "saved" signal and git token


class WorkspaceManager:
    def __init__(self, settings: Settings, store: Store, *, engine: DockerEngine | None = None) -> None:
        self._settings = settings
        self._table = WorkspaceTable(store)
        self._engine = engine or DockerEngine(settings.docker_host, timeout=settings.docker_timeout)
        self._host = HostPlacement(host_workdir(settings.host_workspace_dir))
        self._root = settings.state_path / "workspaces"
        self._creds = CredentialFiles(self._root)
        self._docker_cli = ("docker", "-H", settings.docker_host) if settings.docker_host else ("docker",)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._adopted = False
        self._adopt_task: asyncio.Task[None] | None = None
        self._owner = ""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load records; adopt containers when Docker answers (else on the first Docker route)."""
        self._owner = await asyncio.to_thread(load_owner, self._root)
        await self._table.load()
        try:
            # Bounded: a hung Docker socket must not hold up the daemon (and `host`) at boot;
            # adoption goes on in its task and the first Docker route waits for it.
            async with asyncio.timeout(ADOPT_AT_START_TIMEOUT):
                await self._ensure_docker()
        except (DockerUnavailable, DockerError, TimeoutError) as exc:
            log.warning("docker_unavailable", workspaces=len(self._table.workspaces), error=str(exc))

    async def stop(self) -> None:
        """Cancel background operations; containers keep running for the next daemon to adopt."""
        tasks = list(self._tasks.values())
        if self._adopt_task is not None:
            tasks.append(self._adopt_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._engine.close()

    async def health(self) -> None:
        """For /health: raises when the Docker engine does not answer within 5 s."""
        try:
            async with asyncio.timeout(5):
                await self._engine.ping()
        except TimeoutError:
            raise DockerUnavailable("docker engine did not answer within 5s") from None

    async def docker_info(self) -> dict[str, object]:
        """For /system-info: the engine's version and how many workspace containers exist."""
        version = await self._engine.version()
        containers = await self._engine.list_containers(self._owner_filter)
        return {"version": version.get("Version", ""), "containers": len(containers)}

    # ------------------------------------------------------------------ queries
    async def list(self) -> list[Workspace]:
        with _docker_errors():
            await self._ensure_docker()
            await self._refresh()
        return sorted(self._table.workspaces.values(), key=lambda ws: ws.created_at)

    async def get(self, workspace_id: str) -> Workspace:
        with _docker_errors():
            await self._ensure_docker()
        return self._table.get(workspace_id)

    async def wait_for(self, workspace_id: str, statuses: set[str], timeout: float) -> Workspace:
        """Wait until the workspace has one of `statuses` and no operation in progress."""
        return await self._table.wait_for(workspace_id, statuses, timeout)

    async def placement(self, workspace_id: str) -> Placement:
        if workspace_id == HOST_WORKSPACE:
            return self._host
        ws = self._table.get(workspace_id)
        with _docker_errors():
            await self._ensure_docker()
            if ws.status != RUNNING:
                raise Conflict(f"workspace {workspace_id!r} is {ws.status}", code="workspace_not_running")
            if shutil.which(self._docker_cli[0]) is None:
                raise ServiceUnavailable("the docker command is not installed", code="docker_unavailable")
            info = await self._engine.inspect(provision.container_name(workspace_id))
            if info is None or not info.running:
                if ws.operation is None:
                    await self._mark_exited(ws, info)
                raise Conflict(f"workspace {workspace_id!r} is not running", code="workspace_not_running")
        return ContainerPlacement(
            workspace_id,
            ws.spec.workdir,
            provision.container_name(workspace_id),
            self._docker_cli,
            shell=self._settings.workspace_shell,
        )

    # ------------------------------------------------------------------ operations
    async def create(self, spec: WorkspaceSpec, git_token: str | None) -> tuple[Workspace, bool]:
        """(workspace, created?). The same spec again returns the existing one (and rotates the
        git token when one is given); a different spec for an existing id is a 409."""
        with _docker_errors():
            await self._ensure_docker()
        existing = self._table.workspaces.get(spec.workspace_id)
        if existing is not None:
            if existing.operation == "delete":
                raise Conflict(f"workspace {spec.workspace_id!r} is being deleted", code="invalid_transition")
            if existing.spec != spec:
                raise Conflict(
                    f"workspace {spec.workspace_id!r} exists with different parameters",
                    code="workspace_conflict",
                )
            if git_token:
                await self._creds.prepare(spec.workspace_id, spec.repository, git_token)
            return existing, False
        ws = Workspace(spec=spec, status=CREATING, operation="create")
        self._table.workspaces[ws.id] = ws
        saved: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._spawn(ws, "create", replace=False, first_save=(saved, git_token))  # no await before this
        await asyncio.shield(saved)  # 202 only once the record would survive a restart
        return ws, True

    async def stop_workspace(self, workspace_id: str) -> Workspace:
        ws = self._table.begin(workspace_id, "stop", (RUNNING,))
        try:
            with _docker_errors():
                await self._ensure_docker()
                try:
                    await self._engine.stop(provision.container_name(ws.id), timeout=STOP_TIMEOUT_SECONDS)
                except NotFoundError:
                    await self._table.set_status(ws, ERROR, "the workspace container disappeared; rebuild it")
                    raise Conflict("the workspace container disappeared; rebuild it", code="workspace_failed") from None
            await self._table.set_status(ws, STOPPED)
            log.info("workspace_stopped", workspace_id=ws.id)
            return ws
        finally:
            self._table.end(ws, "stop")

    async def restart_workspace(self, workspace_id: str) -> Workspace:
        ws = self._table.begin(workspace_id, "restart", (RUNNING, STOPPED))
        try:
            name = provision.container_name(ws.id)
            with _docker_errors():
                await self._ensure_docker()
                try:
                    if ws.status == RUNNING:
                        await self._engine.stop(name, timeout=STOP_TIMEOUT_SECONDS)
                    await self._engine.start(name)
                    await provision.require_running(self._engine, name)
                except DockerError as exc:
                    await self._table.set_status(ws, ERROR, f"restart failed: {exc}")
                    log.error("workspace_failed", workspace_id=ws.id, operation="restart", error=str(exc))
                    raise ApiError(f"restart failed: {exc}", code="workspace_failed", status=502) from None
            await self._table.set_status(ws, RUNNING)
            log.info("workspace_restarted", workspace_id=ws.id)
            return ws
        finally:
            self._table.end(ws, "restart")

    async def rebuild(self, workspace_id: str) -> Workspace:
        """Recreate the container from its image; the volume (and the clone in it) is kept."""
        ws = self._table.begin(workspace_id, "rebuild", (RUNNING, STOPPED, ERROR))
        try:
            with _docker_errors():
                await self._ensure_docker()
            if ws.operation != "rebuild":  # a delete took the workspace over while we waited
                raise Conflict(f"workspace {workspace_id!r} is being deleted", code="invalid_transition")
            await self._table.set_status(ws, REBUILDING)
        except BaseException:
            self._table.end(ws, "rebuild")
            raise
        log.info("workspace_rebuilding", workspace_id=ws.id)
        self._spawn(ws, "rebuild")
        return ws

    async def delete(self, workspace_id: str, close_sessions: Callable[[str], Awaitable[None]] | None = None) -> None:
        """Stop the workspace's sessions, remove its container, volume, credentials and record."""
        ws = self._table.get(workspace_id)
        if ws.operation in ("stop", "restart", "delete"):
            raise Conflict(f"workspace {workspace_id!r} is busy ({ws.operation})", code="invalid_transition")
        with _docker_errors():
            await self._ensure_docker()
        if ws.operation in ("stop", "restart", "delete"):  # re-check: the await above yielded
            raise Conflict(f"workspace {workspace_id!r} is busy ({ws.operation})", code="invalid_transition")
        ws.operation = "delete"
        self._table.deleting.add(ws.id)
        name, volume = provision.container_name(ws.id), provision.volume_name(ws.id)
        try:
            with _docker_errors():
                task = self._tasks.get(ws.id)
                if task is not None:
                    await self._engine.remove_container(name)  # ends a clone in progress
                    await asyncio.wait({task})
                if close_sessions is not None:
                    await close_sessions(ws.id)
                await self._engine.remove_container(name)
                await self._engine.remove_volume(volume)
            await self._creds.remove(ws.id)
            await self._table.records.delete(ws.id)
            self._table.forget(ws)
            log.info("workspace_deleted", workspace_id=ws.id)
        except BaseException:
            if ws.status in (CREATING, REBUILDING) and ws.id not in self._tasks:
                with contextlib.suppress(Exception):
                    await self._table.set_status(ws, ERROR, "delete did not finish; retry it", by_delete=True)
            raise
        finally:
            self._table.deleting.discard(ws.id)
            self._table.end(ws, "delete")

    # ------------------------------------------------------------------ internals
    def _spawn(
        self,
        ws: Workspace,
        operation: str,
        *,
        replace: bool = True,
        first_save: FirstSave | None = None,
    ) -> None:
        """Run create/rebuild in an owned task. `replace`: a container of this name may exist.
        `first_save`: (future, git token) of a new workspace, whose record the task saves first."""
        task = asyncio.create_task(
            self._build(ws, operation, replace, first_save), name=f"workspace-{operation}-{ws.id}"
        )
        self._tasks[ws.id] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._tasks.get(ws.id) is t:
                del self._tasks[ws.id]
            if not t.cancelled() and t.exception() is not None:
                log.error("workspace_task_failed", workspace_id=ws.id, error=repr(t.exception()))

        task.add_done_callback(done)

    async def _build(self, ws: Workspace, operation: str, replace: bool, first_save: FirstSave | None) -> None:
        """Create or rebuild: provision, then running; on failure remove what was made, error."""
        if first_save is not None and not await self._save_new(ws, *first_save):
            return
        try:
            if ws.id in self._table.deleting:
                raise provision.Aborted()  # deleted while its record was being saved: make nothing
            await provision.provision(
                self._engine,
                self._settings,
                ws.spec,
                self._owner,
                self._creds,
                replace=replace,
                aborted=lambda: ws.id in self._table.deleting,
            )
        except provision.Aborted:
            log.info("workspace_build_aborted", workspace_id=ws.id, operation=operation)  # the delete won
            return
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            if not isinstance(exc, (DockerError, DockerUnavailable, OSError)):
                log.exception("workspace_build_crashed", workspace_id=ws.id)
            log.error("workspace_failed", workspace_id=ws.id, operation=operation, error=message)
            with contextlib.suppress(DockerError, DockerUnavailable):
                await self._engine.remove_container(provision.container_name(ws.id))
                if operation == "create":
                    await self._engine.remove_volume(provision.volume_name(ws.id))
            if ws.id not in self._table.deleting:
                await self._table.set_status(ws, ERROR, message)
            return
        finally:
            self._table.end(ws, operation)
        if ws.id not in self._table.deleting:
            await self._table.set_status(ws, RUNNING)
            log.info("workspace_running", workspace_id=ws.id, operation=operation)

    async def _save_new(self, ws: Workspace, saved: asyncio.Future[None], git_token: str | None) -> bool:
        """A new workspace's credentials and record; `saved` tells `create` how that went."""
        try:
            await self._creds.prepare(ws.id, ws.spec.repository, git_token)
            await self._table.records.save(ws)
            log.info("workspace_creating", workspace_id=ws.id, image=ws.spec.image, repository=ws.spec.repository)
        except BaseException as exc:
            self._table.forget(ws)
            self._table.end(ws, "create")
            if not isinstance(exc, Exception):
                saved.cancel()
                raise
            saved.set_exception(exc)
            return False
        saved.set_result(None)
        return True

    async def _mark_exited(self, ws: Workspace, info: provision.ContainerInfo | None) -> None:
        if info is None:
            message = "the workspace container disappeared; rebuild it"
        else:
            logs = await self._engine.logs(info.name)
            message = f"container exited with code {info.exit_code}" + (f": {logs}" if logs else "")
        log.error("workspace_failed", workspace_id=ws.id, operation="run", error=message)
        await self._table.set_status(ws, ERROR, message)

    async def _refresh(self) -> None:
        """Notice containers that died since the last look (OOM, `kill 1`, someone's docker rm)."""
        containers = {c.name: c for c in await self._engine.list_containers(self._owner_filter)}
        for ws in list(self._table.workspaces.values()):
            if ws.status != RUNNING or ws.operation is not None:
                continue
            name = provision.container_name(ws.id)
            seen = containers.get(name)
            if seen is None or not seen.running:
                ws.operation = "refresh"
                try:
                    await self._mark_exited(ws, await self._engine.inspect(name) if seen else None)
                finally:
                    self._table.end(ws, "refresh")

    @property
    def _owner_filter(self) -> str:
        return f"{provision.OWNER_LABEL}={self._owner}"

    async def _ensure_docker(self) -> None:
        """Ping Docker; the first time it answers, adopt the containers (once, shared by callers)."""
        if self._adopted:
            await self._engine.ping()
            return
        if self._adopt_task is None or self._adopt_task.done():
            self._adopt_task = asyncio.create_task(self._adopt(), name="workspace-adopt")
        await asyncio.shield(self._adopt_task)

    async def _adopt(self) -> None:
        """Reconcile the store with the containers this daemon's state owns."""
        containers = {c.name: c for c in await self._engine.list_containers(self._owner_filter)}
        for ws in list(self._table.workspaces.values()):
            seen = containers.pop(provision.container_name(ws.id), None)
            if ws.operation is not None:
                continue  # resumed by an earlier, interrupted adoption
            if ws.status in (CREATING, REBUILDING):
                # The previous daemon stopped mid-operation: do it again (each step is idempotent).
                operation = "create" if ws.status == CREATING else "rebuild"
                ws.operation = operation
                self._spawn(ws, operation)
            elif ws.status in (RUNNING, STOPPED) and seen is None:
                await self._mark_exited(ws, None)
            elif ws.status == RUNNING and not seen.running:
                # The VM rebooted under a running workspace: its owner still wants it running.
                try:
                    await self._engine.start(seen.name)
                    await provision.require_running(self._engine, seen.name)
                except DockerError as exc:
                    await self._table.set_status(ws, ERROR, f"could not start after restart: {exc}")
        for seen in containers.values():
            ws = provision.workspace_from_labels(seen)
            if ws is not None and ws.id not in self._table.workspaces:
                self._table.workspaces[ws.id] = ws
                await self._table.records.save(ws)
        self._adopted = True
        log.info("workspaces_adopted", count=len(self._table.workspaces))


@contextlib.contextmanager
def _docker_errors() -> Iterator[None]:
    """Docker's failures as API errors: unreachable → 503, refused → 502 with its reason."""
    try:
        yield
    except DockerUnavailable as exc:
        raise ServiceUnavailable(f"Docker is unavailable: {exc}", code="docker_unavailable") from None
    except DockerError as exc:
        raise ApiError(str(exc), code="docker_error", status=502) from None
