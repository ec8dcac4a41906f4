"""Workspace tabs (terminal and chat), persisted so a browser finds its tabs after a restart.

Terminals add a `terminal` tab per session and agents a `chat` tab per agent session; the
console and `GET /workspaces/{ws}/tabs` list them in `sortOrder`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from vm_agent.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS tabs (
    id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('terminal', 'chat')),
    label TEXT NOT NULL DEFAULT '',
    agent_id TEXT,
    sort_order INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    acp_session_id TEXT,
    last_prompt TEXT,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX IF NOT EXISTS tabs_by_workspace ON tabs (workspace_id, sort_order);
"""


@dataclass(frozen=True)
class Tab:
    id: str
    workspace_id: str
    type: str
    label: str = ""
    agent_id: str | None = None
    sort_order: int = 0
    created_at: float = 0.0
    acp_session_id: str | None = None
    last_prompt: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workspaceId": self.workspace_id,
            "type": self.type,
            "label": self.label,
            "agentId": self.agent_id,
            "sortOrder": self.sort_order,
            "createdAt": _iso(self.created_at),
            "acpSessionId": self.acp_session_id,
            "lastPrompt": self.last_prompt,
        }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class TabStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        store.add_schema(SCHEMA)

    async def add(
        self, workspace_id: str, tab_id: str, type_: str, label: str = "", agent_id: str | None = None
    ) -> Tab:
        """Insert a tab at the end of the strip (or keep the existing one with that id)."""
        await self.append(workspace_id, tab_id, type_, label, agent_id)
        tab = await self.get(workspace_id, tab_id)
        assert tab is not None
        return tab

    async def append(
        self, workspace_id: str, tab_id: str, type_: str, label: str = "", agent_id: str | None = None
    ) -> None:
        """`add` in one statement, returning nothing: terminals open in hundreds and need no
        answer, and one store round trip instead of three keeps their opening cheap."""
        await self._store.execute(
            "INSERT OR IGNORE INTO tabs (id, workspace_id, type, label, agent_id, sort_order, created_at)"
            " SELECT ?, ?, ?, ?, ?, COALESCE(MAX(sort_order), -1) + 1, ? FROM tabs WHERE workspace_id = ?",
            (tab_id, workspace_id, type_, label, agent_id, time.time(), workspace_id),
        )

    async def get(self, workspace_id: str, tab_id: str) -> Tab | None:
        row = await self._store.fetchone("SELECT * FROM tabs WHERE workspace_id = ? AND id = ?", (workspace_id, tab_id))
        return _tab(row) if row else None

    async def update(self, workspace_id: str, tab_id: str, *, of_type: str | None = None, **fields: Any) -> None:
        """Change label / acp_session_id / last_prompt / agent_id / sort_order of a tab.

        `of_type` leaves a tab of another type alone: terminals and agent sessions pick their
        ids independently, and renaming one must never relabel the other's tab."""
        allowed = {"label", "acp_session_id", "last_prompt", "agent_id", "sort_order"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        where, params = _match(workspace_id, tab_id, of_type)
        await self._store.execute(f"UPDATE tabs SET {assignments} WHERE {where}", (*fields.values(), *params))

    async def remove(self, workspace_id: str, tab_id: str, *, of_type: str | None = None) -> None:
        """Delete a tab (only one of `of_type`, when given: see `update`)."""
        where, params = _match(workspace_id, tab_id, of_type)
        await self._store.execute(f"DELETE FROM tabs WHERE {where}", params)

    async def remove_workspace(self, workspace_id: str) -> None:
        await self._store.execute("DELETE FROM tabs WHERE workspace_id = ?", (workspace_id,))

    async def list(self, workspace_id: str) -> list[Tab]:
        rows = await self._store.fetchall(
            "SELECT * FROM tabs WHERE workspace_id = ? ORDER BY sort_order, created_at", (workspace_id,)
        )
        return [_tab(r) for r in rows]


def _match(workspace_id: str, tab_id: str, of_type: str | None) -> tuple[str, tuple[str, ...]]:
    if of_type is None:
        return "workspace_id = ? AND id = ?", (workspace_id, tab_id)
    return "workspace_id = ? AND id = ? AND type = ?", (workspace_id, tab_id, of_type)


def _tab(row: dict[str, Any]) -> Tab:
    return Tab(**row)
