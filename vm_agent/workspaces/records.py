"""Workspace metadata in the daemon's SQLite store, so a restarted daemon knows its workspaces.

Docker holds the containers and volumes; the store holds what Docker does not: the parameters a
workspace was created with and the status its owner last asked for. The git token is never
stored here (it lives only in the 0600 credential file, see `gitcreds`).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from vm_agent.store import Store
from vm_agent.workspaces.model import Workspace, WorkspaceSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS workspaces (
    id TEXT PRIMARY KEY,
    repository TEXT,
    branch TEXT NOT NULL,
    image TEXT NOT NULL,
    env TEXT NOT NULL DEFAULT '{}',
    git_user_name TEXT,
    git_user_email TEXT,
    status TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


class WorkspaceRecords:
    def __init__(self, store: Store) -> None:
        self._store = store
        store.add_schema(SCHEMA)

    async def load(self) -> list[Workspace]:
        rows = await self._store.fetchall("SELECT * FROM workspaces ORDER BY created_at")
        return [_workspace(row) for row in rows]

    async def save(self, ws: Workspace) -> None:
        spec = ws.spec
        await self._store.execute(
            "INSERT OR REPLACE INTO workspaces (id, repository, branch, image, env, git_user_name,"
            " git_user_email, status, error, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                spec.workspace_id,
                spec.repository,
                spec.branch,
                spec.image,
                json.dumps(spec.env),
                spec.git_user_name,
                spec.git_user_email,
                ws.status,
                ws.error,
                ws.created_at,
                ws.updated_at,
            ),
        )

    async def delete(self, workspace_id: str) -> None:
        await self._store.execute("DELETE FROM workspaces WHERE id = ?", (workspace_id,))


def _workspace(row: dict[str, Any]) -> Workspace:
    spec = WorkspaceSpec(
        workspace_id=row["id"],
        image=row["image"],
        repository=row["repository"],
        branch=row["branch"],
        env=json.loads(row["env"] or "{}"),
        git_user_name=row["git_user_name"],
        git_user_email=row["git_user_email"],
    )
    return Workspace(
        spec=spec,
        status=row["status"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def load_owner(root: Path) -> str:
    """A random id of this daemon's state, labelled on everything it creates, so daemons sharing
    one Docker engine (tests, a developer machine) never adopt each other's containers. Kept
    beside the store, it survives restarts; it is not a secret."""
    path = root / "owner"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        owner = path.read_text().strip()
    except FileNotFoundError:
        owner = ""
    if not owner:
        owner = secrets.token_hex(8)
        path.write_text(owner + "\n")
    return owner
