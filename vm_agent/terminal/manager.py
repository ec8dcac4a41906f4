"""All terminal sessions of the daemon, keyed by (workspace, session id).

The manager enforces limits, spawns sessions through the workspace's placement (so terminals
work on the host and inside containers alike), keeps orphan timers, and mirrors sessions into
`terminal` tabs. Tab writes go through one owned task in order, so creating a session never
waits for SQLite and an add is never overtaken by the remove of a quick open/close.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from vm_agent.config import Settings
from vm_agent.errors import BadRequest, Conflict, NotFound, TooManyRequests
from vm_agent.tabs import TabStore
from vm_agent.terminal.output import Viewer
from vm_agent.terminal.pty import SpawnError
from vm_agent.terminal.session import TerminalSession
from vm_agent.workspaces.placement import HOST_WORKSPACE, WorkspaceResolver, default_shell, resolve_workdir

log = structlog.get_logger("vm_agent.terminal")

SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_NAME = 256
TERM = "xterm-256color"


class SessionLimit(TooManyRequests):
    code = "session_limit"


@dataclass(frozen=True)
class _TabOp:
    action: str  # add | rename | remove
    workspace_id: str
    session_id: str
    label: str = ""


def validate_session_id(value: object) -> str:
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise BadRequest("sessionId must be 1-128 characters of A-Z a-z 0-9 . _ : -", code="invalid_session_id")
    return value


def validate_name(value: object, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise BadRequest(f"name must be a string of at most {MAX_NAME} characters", code="invalid_name")
    return value


def _daemon_environment(settings: Settings) -> dict[str, str]:
    """The environment a shell inherits: the daemon's, minus the daemon's own configuration
    (which includes secrets such as CALLBACK_TOKEN)."""
    own = {spec.metadata["env"] for spec in Settings.__dataclass_fields__.values()}
    return {key: value for key, value in os.environ.items() if key not in own}


class TerminalManager:
    def __init__(
        self,
        settings: Settings,
        workspaces: WorkspaceResolver,
        tabs: TabStore | None,
        *,
        base_env: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.settings = settings
        self._workspaces = workspaces
        self._tabs = tabs
        if base_env is None:
            # Read once: the daemon's environment does not change while it runs, and filtering
            # os.environ cost ~60 µs per terminal opened (measured), 7% of an open.
            inherited = _daemon_environment(settings)
            base_env = lambda: inherited  # noqa: E731
        self._base_env = base_env
        self._sessions: dict[tuple[str, str], TerminalSession] = {}
        self._reserved: dict[tuple[str, str], str] = {}  # key -> user, while spawning
        # Live and reserved sessions per user, kept as they change: counting them by a scan on
        # every create made opening n terminals cost O(n²).
        self._per_user: collections.Counter[str] = collections.Counter()
        self._orphan_timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tab_queue: asyncio.Queue[_TabOp] = asyncio.Queue()
        self._tab_writer: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._tabs is not None:
            self._tab_writer = asyncio.get_running_loop().create_task(self._write_tabs())

    def pause_output(self) -> None:
        """First step of shutdown: stop reading every PTY so hundreds of flooding programs
        cannot starve the loop that must now close sockets and processes."""
        for session in self._sessions.values():
            session.pause_output()

    async def shutdown(self) -> None:
        """Kill every PTY (HUP, TERM, KILL) and stop background work."""
        self._closed = True
        for timer in self._orphan_timers.values():
            timer.cancel()
        self._orphan_timers.clear()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        self._per_user.clear()
        await asyncio.gather(*(s.close("shutdown", self.settings.pty_close_grace_period) for s in sessions))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tab_writer is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._tab_queue.join(), 5)
            self._tab_writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tab_writer

    def session_count(self) -> int:
        return len(self._sessions)

    def workspace_session_count(self, workspace_id: str) -> int:
        """Sessions of one workspace (the `sessions` field of `GET /workspaces`)."""
        return sum(1 for s in self._sessions.values() if s.workspace_id == workspace_id)

    def sessions_by_state(self) -> dict[str, int]:
        """Sessions by status (running, exited) for /metrics, with viewerless ones as `orphaned`."""
        counts: dict[str, int] = {}
        for session in self._sessions.values():
            state = session.status if session.viewers or not session.running else "orphaned"
            counts[state] = counts.get(state, 0) + 1
        return counts

    async def tabs_synced(self) -> None:
        """Wait until every tab change made so far is in the store."""
        await self._tab_queue.join()

    # ------------------------------------------------------------------ queries
    def get(self, workspace_id: str, session_id: str, user_id: str) -> TerminalSession:
        """The caller's session (another user's session is reported as not found)."""
        session = self._sessions.get((workspace_id, session_id))
        if session is None or session.user_id != user_id:
            raise NotFound(f"terminal session {session_id!r} not found", code="session_not_found")
        return session

    def list(self, workspace_id: str, user_id: str) -> list[TerminalSession]:
        return sorted(
            (s for s in self._sessions.values() if s.workspace_id == workspace_id and s.user_id == user_id),
            key=lambda s: s.created_at,
        )

    def _user_count(self, user_id: str) -> int:
        return self._per_user[user_id]

    def _release_user(self, user_id: str) -> None:
        self._per_user[user_id] -= 1
        if self._per_user[user_id] <= 0:
            del self._per_user[user_id]

    # ------------------------------------------------------------------ create
    async def create(
        self,
        workspace_id: str,
        user_id: str,
        session_id: str,
        *,
        rows: int,
        cols: int,
        name: str | None = None,
        work_dir: str | None = None,
        ephemeral: bool = False,
    ) -> TerminalSession:
        if self._closed:
            raise Conflict("the daemon is shutting down", code="shutting_down")
        key = (workspace_id, validate_session_id(session_id))
        if key in self._sessions or key in self._reserved:
            raise Conflict(f"terminal session {session_id!r} already exists", code="session_exists")
        if len(self._sessions) + len(self._reserved) >= self.settings.pty_max_sessions:
            raise SessionLimit(f"this node has reached {self.settings.pty_max_sessions} terminal sessions")
        if self._user_count(user_id) >= self.settings.pty_max_sessions_per_user:
            raise SessionLimit(
                f"you have reached {self.settings.pty_max_sessions_per_user} terminal sessions; close one first"
            )
        if work_dir is not None and (not isinstance(work_dir, str) or len(work_dir) > 4096 or "\0" in work_dir):
            raise BadRequest("workDir must be a path", code="invalid_work_dir")
        label = validate_name(name, "Terminal")
        self._reserved[key] = user_id
        self._per_user[user_id] += 1
        try:
            placement = await self._workspaces.placement(workspace_id)
            shell = (
                self.settings.default_shell
                or getattr(placement, "shell", None)
                or (default_shell() if workspace_id == HOST_WORKSPACE else self.settings.workspace_shell)
            )
            command = placement.wrap([shell, "-l"], tty=True, env={"TERM": TERM}, cwd=work_dir)
            session = TerminalSession(
                session_id,
                workspace_id=workspace_id,
                user_id=user_id,
                name=label,
                shell=shell,
                working_directory=resolve_workdir(placement.workdir, work_dir),
                buffer_size=self.settings.pty_output_buffer_size,
                ephemeral=ephemeral,
            )
            env = {**self._base_env(), **command.env}
            try:
                await session.start(
                    command.argv, env=env, cwd=command.cwd, rows=rows, cols=cols,
                    on_exit=self._session_exited, relays_resize=command.relays_resize,
                )
            except SpawnError as exc:
                raise BadRequest(str(exc), code="spawn_failed") from None
        except BaseException:
            self._release_user(user_id)
            raise
        finally:
            del self._reserved[key]
        if self._closed:  # shutdown began while spawning
            self._release_user(user_id)
            await session.close("shutdown", self.settings.pty_close_grace_period)
            raise Conflict("the daemon is shutting down", code="shutting_down")
        self._sessions[key] = session
        if not ephemeral:
            self._tab(_TabOp("add", workspace_id, session_id, label))
        log.info("terminal_opened", session_id=session_id, workspace=workspace_id, user=user_id, pid=session.pid)
        return session

    # ------------------------------------------------------------------ changes
    def rename(self, session: TerminalSession, name: object) -> None:
        session.name = validate_name(name, session.name)
        if not session.ephemeral:
            self._tab(_TabOp("rename", session.workspace_id, session.id, session.name))

    async def close(self, session: TerminalSession, reason: str = "user_requested") -> None:
        self._forget(session)
        await session.close(reason, self.settings.pty_close_grace_period)
        log.info("terminal_closed", session_id=session.id, workspace=session.workspace_id, reason=reason)

    async def close_workspace(self, workspace_id: str) -> int:
        """Close every session of a workspace (it is being stopped or deleted)."""
        sessions = [s for s in self._sessions.values() if s.workspace_id == workspace_id]
        await asyncio.gather(*(self.close(s, "workspace_stopped") for s in sessions))
        return len(sessions)

    def _forget(self, session: TerminalSession) -> None:
        key = (session.workspace_id, session.id)
        if self._sessions.get(key) is session:
            del self._sessions[key]
            self._release_user(session.user_id)
            if not session.ephemeral:
                self._tab(_TabOp("remove", session.workspace_id, session.id))
        timer = self._orphan_timers.pop(id(session), None)
        if timer is not None:
            timer.cancel()

    def _session_exited(self, session: TerminalSession) -> None:
        # Watchers get the final output and `session_closed` from their viewers. With nobody
        # watching, the exited session stays listed so a returning client can still read its
        # last output and exit code (until closed or the orphan grace ends).
        if session.viewers:
            self._forget(session)

    # ------------------------------------------------------------------ viewers
    def attach(self, session: TerminalSession) -> Viewer:
        timer = self._orphan_timers.pop(id(session), None)
        if timer is not None:
            timer.cancel()
        return session.attach()

    def detach(self, session: TerminalSession) -> None:
        session.detach()
        if session.viewers or self._sessions.get((session.workspace_id, session.id)) is not session:
            return
        if not session.running:
            self._forget(session)  # its end has been seen
            return
        grace = self.settings.pty_orphan_grace_period
        if grace > 0:
            loop = asyncio.get_running_loop()
            self._orphan_timers[id(session)] = loop.call_later(grace, self._orphan_expired, session)

    def _orphan_expired(self, session: TerminalSession) -> None:
        self._orphan_timers.pop(id(session), None)
        if session.viewers == 0:
            self._spawn_task(self.close(session, "orphan_timeout"))

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("terminal_task_failed", error=repr(task.exception()))

    # ------------------------------------------------------------------ tabs
    def _tab(self, op: _TabOp) -> None:
        if self._tabs is not None:
            self._tab_queue.put_nowait(op)

    async def _write_tabs(self) -> None:
        assert self._tabs is not None
        while True:
            op = await self._tab_queue.get()
            try:
                if op.action == "add":
                    await self._tabs.append(op.workspace_id, op.session_id, "terminal", label=op.label)
                elif op.action == "rename":
                    await self._tabs.update(op.workspace_id, op.session_id, of_type="terminal", label=op.label)
                else:
                    await self._tabs.remove(op.workspace_id, op.session_id, of_type="terminal")
            except Exception as exc:
                log.warning("terminal_tab_write_failed", action=op.action, session_id=op.session_id, error=str(exc))
            finally:
                self._tab_queue.task_done()


def sessions_payload(sessions: Iterable[TerminalSession]) -> list[dict[str, Any]]:
    return [s.describe() for s in sessions]
