"""The workspaces of this VM, in memory and in the store, and the rules of their status machine.

`WorkspaceManager` does the Docker work; this holds what that work is about. It is used only on
the event loop, so a check and the change it guards, with no `await` between them, cannot
interleave with another request: `begin` is the compare-and-set every operation starts with,
and a racing request gets 409 `invalid_transition` instead of sharing the workspace.

`set_status` stores first, then shows: nobody sees (or waits out) a status a shutdown could
lose. And it stores nothing for a workspace that is deleted or being deleted, unless by that
delete: a late save from a task the delete outran would bring the workspace back at the next
start. The check and the write's submission happen with no `await` between, and the store
runs writes in order, so no such save can land after the delete's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import structlog

from vm_agent.errors import Conflict, NotFound
from vm_agent.store import Store
from vm_agent.workspaces.model import WORKSPACE_ID_RE, Workspace
from vm_agent.workspaces.records import WorkspaceRecords

log = structlog.get_logger("vm_agent.workspaces")


class WorkspaceTable:
    def __init__(self, store: Store) -> None:
        self.records = WorkspaceRecords(store)
        self.workspaces: dict[str, Workspace] = {}
        self.deleting: set[str] = set()  # ids whose delete is in progress: builds abort, saves stop
        self._changed = asyncio.Event()

    async def load(self) -> None:
        for ws in await self.records.load():
            self.workspaces[ws.id] = ws

    def get(self, workspace_id: str) -> Workspace:
        ws = self.workspaces.get(workspace_id) if WORKSPACE_ID_RE.fullmatch(workspace_id) else None
        if ws is None:
            raise NotFound(f"workspace {workspace_id!r} does not exist", code="workspace_not_found")
        return ws

    def is_current(self, ws: Workspace) -> bool:
        """Whether `ws` is still the record of its id (not deleted, not replaced)."""
        return self.workspaces.get(ws.id) is ws

    def forget(self, ws: Workspace) -> None:
        if self.is_current(ws):
            del self.workspaces[ws.id]
        self.changed()

    def changed(self) -> None:
        self._changed.set()

    async def wait_for(self, workspace_id: str, statuses: set[str], timeout: float) -> Workspace:
        """Wait until the workspace has one of `statuses` and no operation in progress."""
        async with asyncio.timeout(timeout):
            while True:
                ws = self.get(workspace_id)
                if ws.status in statuses and ws.operation is None:
                    return ws
                self._changed.clear()
                await self._changed.wait()

    def begin(self, workspace_id: str, operation: str, allowed: tuple[str, ...]) -> Workspace:
        """The compare-and-set: claim the workspace for `operation` or raise 409. No await here."""
        ws = self.get(workspace_id)
        if ws.operation is not None or ws.status not in allowed:
            doing = f" ({ws.operation} in progress)" if ws.operation else ""
            raise Conflict(
                f"cannot {operation} workspace {workspace_id!r}: it is {ws.status}{doing}",
                code="invalid_transition",
                workspaceStatus=ws.status,
            )
        ws.operation = operation
        return ws

    def end(self, ws: Workspace, operation: str) -> None:
        if ws.operation == operation:
            ws.operation = None
            self.changed()

    async def set_status(
        self, ws: Workspace, status: str, error: str | None = None, *, by_delete: bool = False
    ) -> None:
        """Store, then show, the new status; nothing for a workspace deleted or being deleted
        (unless `by_delete`: the delete itself rolling back)."""
        if not self.is_current(ws) or (ws.id in self.deleting and not by_delete):
            log.info("workspace_status_dropped", workspace_id=ws.id, status=status)
            return
        updated = dataclasses.replace(ws, status=status, error=error, updated_at=time.time())
        await self.records.save(updated)
        ws.status, ws.error, ws.updated_at = updated.status, updated.error, updated.updated_at
        self.changed()
