"""Where a terminal or agent of a workspace runs: on the VM itself, or inside its container.

Terminals and agents ask the workspace registry for a `Placement` and let it wrap their command;
they never learn whether Docker is involved. The host placement is the identity; the container
placement (see `workspaces.manager`) prefixes `docker exec`.
"""

from __future__ import annotations

import os
import posixpath
import pwd
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

HOST_WORKSPACE = "host"


@dataclass(frozen=True)
class Command:
    """A process to spawn: argv, extra environment, working directory on the spawning side.

    `secret_env` is environment that must not appear in argv (`docker exec -e` would put it
    there); container placements pass it through an env file on tmpfs instead.
    `relays_resize`: the program on a PTY forwards window-size changes to another terminal
    (the docker CLI to the container's), see vm_agent.terminal.resize_echo.
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    cleanup_paths: tuple[str, ...] = ()
    relays_resize: bool = False


class Placement(Protocol):
    workspace_id: str
    workdir: str

    def wrap(
        self,
        argv: Sequence[str],
        *,
        tty: bool,
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> Command: ...


class WorkspaceResolver(Protocol):
    async def placement(self, workspace_id: str) -> Placement:
        """The placement of a running workspace; raises NotFound / Conflict otherwise."""
        ...


def resolve_workdir(base: str, cwd: str | None) -> str:
    """`cwd` as the program will see it: relative paths are taken from the workspace directory,
    on the host as in containers, never from wherever the daemon happens to run."""
    return posixpath.normpath(posixpath.join(base, cwd)) if cwd else base


def default_shell() -> str:
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    return shell if shell and os.path.exists(shell) else "/bin/sh"


@dataclass(frozen=True)
class HostPlacement:
    """The VM itself: commands run as they are, in the host workspace directory."""

    workdir: str
    workspace_id: str = HOST_WORKSPACE

    def wrap(
        self,
        argv: Sequence[str],
        *,
        tty: bool,
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> Command:
        merged = {**(env or {}), **(secret_env or {})}
        return Command(list(argv), merged, resolve_workdir(self.workdir, cwd))


def host_workdir(configured: str) -> str:
    """HOST_WORKSPACE_DIR, else the user's home directory."""
    return configured or os.path.expanduser("~")
