"""The agent gateway: every agent session of every workspace, and what of them survives a restart.

Sessions are persisted (id, workspace, agent type, label, the agent's own conversation id,
last prompt) together with their chat tab, so after a daemon restart a prompt on a session
starts its agent again and reloads the conversation with `session/load`. Writes go through one
writer task that coalesces changes (a session changes status several times per prompt; the
store sees the latest state, and nothing on the prompt path waits for the disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import Coroutine
from typing import Any

import structlog

from vm_agent.agents.driver import Launch
from vm_agent.agents.permissions import POLICIES
from vm_agent.agents.registry import DEFAULT_AGENT_TYPE, AgentRegistry
from vm_agent.agents.session import AgentSession
from vm_agent.config import Settings
from vm_agent.errors import BadRequest, NotFound, TooManyRequests
from vm_agent.store import Store, StoreError
from vm_agent.tabs import TabStore
from vm_agent.workspaces.placement import WorkspaceResolver

log = structlog.get_logger("vm_agent.agents.gateway")

PERSIST_COALESCE = 0.25
DELETED_REMEMBERED = 4096
SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_sessions (
    id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    agent_type TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    acp_session_id TEXT,
    last_prompt TEXT,
    status TEXT NOT NULL,
    permission_policy TEXT,
    idempotency_key TEXT,
    mcp_servers TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
"""


class AgentGateway:
    def __init__(self, settings: Settings, store: Store, tabs: TabStore, resolver: WorkspaceResolver,
                 registry: AgentRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or AgentRegistry.from_file(settings.agents_config)
        self._store = store
        self._tabs = tabs
        self._resolver = resolver
        self._sessions: dict[tuple[str, str], AgentSession] = {}
        self._idempotency: dict[tuple[str, str], str] = {}
        self._dirty: dict[tuple[str, str], AgentSession] = {}
        self._deleted: dict[tuple[str, str], None] = {}  # recently deleted, oldest first
        self._dirty_event = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shut_down = False
        store.add_schema(SCHEMA)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run background work the gateway owns (a headless start); cancelled at shutdown."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("agent_background_task_failed", task=task.get_name(), error=str(task.exception()))

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the sessions persisted by a previous run (agents start on their next prompt)."""
        self._writer = asyncio.create_task(self._write_loop(), name="agent-session-writer")
        rows = await self._store.fetchall("SELECT * FROM agent_sessions ORDER BY created_at")
        for row in rows:
            session = self._new_session(row["workspace_id"], row["id"], agent_type=row["agent_type"],
                                        label=row["label"], acp_session_id=row["acp_session_id"],
                                        created_at=row["created_at"], policy=row["permission_policy"])
            session.last_prompt = row["last_prompt"]
            session.updated_at = row["updated_at"]
            session.mcp_servers = json.loads(row["mcp_servers"] or "[]")
            if row["idempotency_key"]:
                self._idempotency[(row["workspace_id"], row["idempotency_key"])] = row["id"]
        if rows:
            log.info("agent_sessions_restored", count=len(rows))

    async def shutdown(self) -> None:
        """Stop every agent and flush the store; idempotent (on_shutdown, then cleanup)."""
        if self._shut_down:
            return
        self._shut_down = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # A cancelled headless start stops the agent it was starting: wait for that, or the
        # process outlives the daemon.
        await asyncio.gather(*tasks, return_exceptions=True)
        sessions = list(self._sessions.values())
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        try:
            await self._flush()
        except Exception:  # _flush already survives a bad row; this is for anything else
            log.exception("agent_session_flush_failed")
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    # --- sessions -------------------------------------------------------------------------------

    def _new_session(self, workspace_id: str, session_id: str, *, agent_type: str, label: str,
                     acp_session_id: str | None = None, created_at: float | None = None,
                     policy: str | None = None) -> AgentSession:
        session = AgentSession(
            session_id, workspace_id, settings=self.settings, registry=self.registry, launcher=self._launch,
            agent_type=agent_type, label=label, acp_session_id=acp_session_id, created_at=created_at,
            permission_policy=policy, on_change=self._changed,
        )
        self._sessions[(workspace_id, session_id)] = session
        return session

    async def create(self, workspace_id: str, session_id: str | None = None, *, label: str = "",
                     agent_type: str | None = None, mcp_servers: list[dict[str, Any]] | None = None,
                     idempotency_key: str | None = None,
                     permission_policy: str | None = None) -> tuple[AgentSession, bool]:
        """A new session (and its chat tab); an existing id or a repeated Idempotency-Key returns
        the existing session. Returns (session, created)."""
        if idempotency_key and (workspace_id, idempotency_key) in self._idempotency:
            session_id = self._idempotency[(workspace_id, idempotency_key)]
        session_id = session_id or secrets.token_hex(8)
        if not SESSION_ID.fullmatch(session_id):
            raise BadRequest("sessionId must be 1-128 chars of [A-Za-z0-9._:-]", code="invalid_session_id")
        existing = self._sessions.get((workspace_id, session_id))
        if existing is not None:
            return existing, False
        agent_type = agent_type or DEFAULT_AGENT_TYPE
        if agent_type not in self.registry:
            raise BadRequest(f"unknown agentType {agent_type!r}; known: {', '.join(self.registry.names())}",
                             code="unknown_agent_type")
        if permission_policy is not None and permission_policy not in POLICIES:
            raise BadRequest(f"permission policy must be one of {', '.join(POLICIES)}", code="invalid_policy")
        if len(self._sessions) >= self.settings.acp_max_sessions:
            await self._evict_unused()
        if len(self._sessions) >= self.settings.acp_max_sessions:
            raise TooManyRequests(f"at most {self.settings.acp_max_sessions} agent sessions",
                                  code="too_many_sessions")
        session = self._new_session(workspace_id, session_id, agent_type=agent_type, label=label,
                                    policy=permission_policy)
        session.mcp_servers = list(mcp_servers or [])
        if idempotency_key:
            self._idempotency[(workspace_id, idempotency_key)] = session_id
        self._deleted.pop((workspace_id, session_id), None)
        await self._save(session, idempotency_key)
        with contextlib.suppress(StoreError):
            await self._tabs.add(workspace_id, session_id, "chat", label or agent_type, agent_id=agent_type)
        log.info("agent_session_created", session_id=session_id, workspace=workspace_id, agent=agent_type)
        return session, True

    def get(self, workspace_id: str, session_id: str) -> AgentSession:
        session = self._sessions.get((workspace_id, session_id))
        if session is None:
            raise NotFound(f"no agent session {session_id!r} in workspace {workspace_id!r}",
                           code="session_not_found")
        return session

    def find(self, workspace_id: str, session_id: str) -> AgentSession | None:
        return self._sessions.get((workspace_id, session_id))

    def list(self, workspace_id: str) -> list[AgentSession]:
        return [s for (ws, _), s in self._sessions.items() if ws == workspace_id]

    def session_count(self) -> int:
        return len(self._sessions)

    def workspace_session_count(self, workspace_id: str) -> int:
        return sum(1 for ws, _ in self._sessions if ws == workspace_id)

    def sessions_by_state(self) -> dict[str, int]:
        """Agent sessions by status (idle, starting, ready, prompting, error, stopped) for /metrics."""
        counts: dict[str, int] = {}
        for session in self._sessions.values():
            counts[session.status] = counts.get(session.status, 0) + 1
        return counts

    async def delete(self, workspace_id: str, session_id: str) -> None:
        """Stop the session's agent and forget it: its history, its chat tab, its stored row."""
        session = self._sessions.pop((workspace_id, session_id), None)
        if session is None:
            raise NotFound(f"no agent session {session_id!r} in workspace {workspace_id!r}",
                           code="session_not_found")
        self._deleted[(workspace_id, session_id)] = None
        while len(self._deleted) > DELETED_REMEMBERED:
            del self._deleted[next(iter(self._deleted))]
        session.deleted = True
        await self._forget(session)

    def was_deleted(self, workspace_id: str, session_id: str) -> bool:
        """Whether `DELETE` removed this session lately: a viewer reconnecting to it must not
        bring it back as an empty session (naming an unknown id otherwise creates one)."""
        return (workspace_id, session_id) in self._deleted

    async def _evict_unused(self) -> None:
        """At the session cap, make room by deleting the oldest session nobody watches and
        nothing ever happened in (page loads that named no session, ids a client tried once).

        Only then, not when its last viewer leaves: a new chat whose socket dropped before its
        first prompt must still be there, with the agent type chosen for it, on reconnect."""
        idle = [s for s in self._sessions.values() if not s.viewer_count and s.unused]
        if not idle:
            return
        oldest = min(idle, key=lambda s: s.created_at)
        del self._sessions[(oldest.workspace_id, oldest.id)]
        log.info("agent_session_evicted", session_id=oldest.id, workspace=oldest.workspace_id)
        await self._forget(oldest)

    async def _forget(self, session: AgentSession) -> None:
        """The rest of a delete, for a session already out of `_sessions` (so nothing re-saves it)."""
        workspace_id, session_id = session.workspace_id, session.id
        self._dirty.pop((workspace_id, session_id), None)
        self._idempotency = {k: v for k, v in self._idempotency.items()
                             if k[0] != workspace_id or v != session_id}
        await session.close()
        with contextlib.suppress(StoreError):
            await self._store.execute("DELETE FROM agent_sessions WHERE workspace_id = ? AND id = ?",
                                      (workspace_id, session_id))
        with contextlib.suppress(StoreError):
            await self._tabs.remove(workspace_id, session_id, of_type="chat")
        log.info("agent_session_deleted", session_id=session_id, workspace=workspace_id)

    async def close_workspace(self, workspace_id: str) -> int:
        """Stop every agent of a deleted workspace and forget its sessions."""
        doomed = [k for k in self._sessions if k[0] == workspace_id]
        sessions = [self._sessions.pop(k) for k in doomed]
        for key in doomed:
            self._dirty.pop(key, None)
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        self._idempotency = {k: v for k, v in self._idempotency.items() if k[0] != workspace_id}
        with contextlib.suppress(StoreError):
            await self._store.execute("DELETE FROM agent_sessions WHERE workspace_id = ?", (workspace_id,))
        return len(sessions)

    async def placement_exists(self, workspace_id: str) -> None:
        """Raises NotFound for a workspace the daemon does not know (Conflict when not running)."""
        await self._resolver.placement(workspace_id)

    async def _launch(self, session: AgentSession) -> Launch:
        placement = await self._resolver.placement(session.workspace_id)
        return Launch(placement=placement, cwd=placement.workdir, model=session.model,
                      permission_mode=session.permission_mode, mcp_servers=list(session.mcp_servers))

    # --- persistence ------------------------------------------------------------------------------

    def _changed(self, session: AgentSession) -> None:
        key = (session.workspace_id, session.id)
        if key in self._sessions:
            self._dirty[key] = session
            self._dirty_event.set()

    async def _write_loop(self) -> None:
        while True:
            await self._dirty_event.wait()
            # Coalesce: a busy session changes last_prompt/ids many times a second; the store
            # gets its latest state at most every PERSIST_COALESCE seconds (shutdown flushes).
            await asyncio.sleep(PERSIST_COALESCE)
            self._dirty_event.clear()
            try:
                await self._flush()
            except Exception:  # this task is the only writer: it must outlive any failure
                log.exception("agent_session_flush_failed")

    async def _flush(self) -> None:
        while self._dirty:
            key, session = self._dirty.popitem()
            if self._sessions.get(key) is not session:  # deleted meanwhile
                continue
            try:
                await self._save(session)
                await self._tabs.update(
                    session.workspace_id, session.id, of_type="chat", acp_session_id=session.acp_session_id,
                    last_prompt=session.last_prompt, agent_id=session.agent_type,
                )
            except Exception as exc:
                # Not only StoreError: a value sqlite cannot take (e.g. text it cannot encode)
                # fails this session's row, never the other sessions' persistence.
                log.error("agent_session_save_failed", session_id=session.id, error=str(exc))

    async def _save(self, session: AgentSession, idempotency_key: str | None = None) -> None:
        await self._store.execute(
            "INSERT INTO agent_sessions (id, workspace_id, agent_type, label, acp_session_id, last_prompt, status,"
            " permission_policy, idempotency_key, mcp_servers, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (workspace_id, id) DO UPDATE SET agent_type = excluded.agent_type,"
            " label = excluded.label, acp_session_id = excluded.acp_session_id,"
            " last_prompt = excluded.last_prompt, status = excluded.status, updated_at = excluded.updated_at,"
            " mcp_servers = excluded.mcp_servers",
            (session.id, session.workspace_id, session.agent_type, session.label, session.acp_session_id,
             session.last_prompt, session.status, session.permissions.policy, idempotency_key,
             json.dumps(session.mcp_servers), session.created_at, session.updated_at),
        )


def session_json(session: AgentSession) -> dict[str, Any]:
    """The session as GET …/agent-sessions lists it."""
    from vm_agent.tabs import _iso

    return {
        "id": session.id,
        "workspaceId": session.workspace_id,
        "status": session.status,
        "label": session.label,
        "agentType": session.agent_type,
        "acpSessionId": session.acp_session_id,
        "lastPrompt": session.last_prompt,
        "createdAt": _iso(session.created_at),
        "updatedAt": _iso(session.updated_at),
        "viewerCount": session.viewer_count,
        "hostStatus": "running" if session.agent_running else "stopped",
        "error": session.error,
        "queueLength": len(session.get_state()["queue"]),
    }
