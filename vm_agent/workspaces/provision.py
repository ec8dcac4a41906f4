"""Bringing one workspace container up: image, volume, container, git setup, clone.

Every step is safe to repeat (an existing volume is reused, an existing container is replaced,
a finished clone is kept), which is what lets the manager resume an operation a daemon restart
interrupted, and rebuild a workspace with the same code that created it.
"""

from __future__ import annotations

from collections.abc import Callable

from vm_agent.config import Settings
from vm_agent.workspaces.docker import BindMount, ContainerInfo, DockerEngine, DockerError, NotFoundError
from vm_agent.workspaces.gitcreds import CREDENTIALS_MOUNT, NO_GIT_EXIT, CredentialFiles, git_setup_argv
from vm_agent.workspaces.model import (
    RUNNING,
    STOPPED,
    VOLUME_MOUNT,
    WORKSPACE_ID_RE,
    Workspace,
    WorkspaceSpec,
)

__all__ = ["Aborted", "ContainerInfo", "container_name", "provision", "require_running", "volume_name"]

WORKSPACE_LABEL = "vm-agent.workspace"
OWNER_LABEL = "vm-agent.owner"

# PID 1 of a workspace: idles until told to stop, and stops at once on SIGTERM (a shell as PID 1
# ignores SIGTERM unless it traps it, which would make every `docker stop` wait its timeout).
KEEPALIVE = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]


class Aborted(Exception):
    """The workspace is being deleted: stop provisioning, the delete cleans up."""


def container_name(workspace_id: str) -> str:
    return f"vm-agent-ws-{workspace_id}"


def volume_name(workspace_id: str) -> str:
    return f"vm-agent-ws-{workspace_id}-data"


async def require_running(engine: DockerEngine, name: str) -> None:
    info = await engine.inspect(name)
    if info is None:
        raise DockerError("the workspace container disappeared")
    if not info.running:
        logs = await engine.logs(name)
        detail = f": {info.error or logs}" if (info.error or logs) else ""
        raise DockerError(f"container exited with code {info.exit_code}{detail}")


async def provision(
    engine: DockerEngine,
    settings: Settings,
    spec: WorkspaceSpec,
    owner: str,
    creds: CredentialFiles,
    *,
    replace: bool,
    aborted: Callable[[], bool],
) -> None:
    """Bring the workspace up. `replace`: an old container may exist (rebuild, resumed create).

    Calls are kept to what is needed (each costs milliseconds to tens of them): the volume is
    created idempotently, the image is looked up only when creating the container says it is
    missing, and all git work is one exec.
    """

    def checkpoint() -> None:
        if aborted():
            raise Aborted()

    ws_id = spec.workspace_id
    name, volume = container_name(ws_id), volume_name(ws_id)
    labels = {WORKSPACE_LABEL: ws_id, OWNER_LABEL: owner}
    creds_dir = await creds.prepare(ws_id, spec.repository, None)
    await engine.create_volume(volume, labels)  # returns the existing volume when there is one
    if replace:
        await engine.remove_container(name)
    checkpoint()

    async def create() -> None:
        await engine.create_container(
            name,
            spec.image,
            command=KEEPALIVE,
            labels={
                **labels,
                "vm-agent.image": spec.image,
                "vm-agent.repository": spec.repository or "",
                "vm-agent.branch": spec.branch,
            },
            env=spec.env,
            volume=volume,
            volume_target=VOLUME_MOUNT,
            binds=[BindMount(str(creds_dir), CREDENTIALS_MOUNT, read_only=True)],
            working_dir=VOLUME_MOUNT,
            nano_cpus=int(settings.workspace_cpu_limit * 1e9),
            mem_limit=settings.workspace_memory_limit,
            pids_limit=settings.workspace_pids_limit,
        )

    try:
        await create()
    except NotFoundError:  # "No such image": pull it (or say clearly that it does not exist)
        await engine.ensure_image(spec.image)
        checkpoint()
        await create()
    checkpoint()
    await engine.start(name)
    checkpoint()
    if spec.repository or spec.git_user_name or spec.git_user_email:
        await _setup_git(engine, spec, name)
        checkpoint()
    await require_running(engine, name)


async def _setup_git(engine: DockerEngine, spec: WorkspaceSpec, name: str) -> None:
    argv = git_setup_argv(
        spec.workdir,
        repository=spec.repository,
        branch=spec.branch,
        user_name=spec.git_user_name,
        user_email=spec.git_user_email,
    )
    code, output = await engine.exec(name, argv, env={"GIT_TERMINAL_PROMPT": "0"})
    if code == NO_GIT_EXIT:
        if spec.repository:
            raise DockerError(f"image {spec.image!r} has no git, so {spec.repository} cannot be cloned")
        return  # identity only, and no git to give it to
    if code != 0:
        if spec.repository:
            raise DockerError(f"git clone of {spec.repository} (branch {spec.branch}) failed: {output}")
        raise DockerError(f"git setup failed: {output}")


def workspace_from_labels(info: ContainerInfo) -> Workspace | None:
    """A record for a labelled container the store does not know (its state was lost)."""
    ws_id = info.labels.get(WORKSPACE_LABEL, "")
    image = info.labels.get("vm-agent.image", "")
    if not WORKSPACE_ID_RE.match(ws_id) or not image:
        return None
    spec = WorkspaceSpec(
        workspace_id=ws_id,
        image=image,
        repository=info.labels.get("vm-agent.repository") or None,
        branch=info.labels.get("vm-agent.branch") or "main",
    )
    return Workspace(spec=spec, status=RUNNING if info.running else STOPPED)
