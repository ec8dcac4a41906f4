"""SQLite persistence for what must survive a daemon restart (tabs, agent sessions, workspaces).

stdlib sqlite3 on one dedicated thread (a connection belongs to the thread that made it), WAL
journal so readers never block the writer. Each subsystem owns its tables: it registers its
schema with `Store.add_schema` before `open`, and talks SQL through `execute`/`fetchall` here,
so this module knows nothing about tabs or workspaces. Every call is awaited off the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from vm_agent.errors import ApiError

log = structlog.get_logger("vm_agent.store")
R = TypeVar("R")


class StoreError(ApiError):
    """The store could not be written or read (disk full, corrupt file, closed).

    An ApiError, so a request that hits it answers 503 `store_unavailable` (retry later)
    instead of a bare 500: a full disk is an operational condition, not a bug.
    """

    status, code = 503, "store_unavailable"


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._schemas: list[str] = []
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def add_schema(self, sql: str) -> None:
        """Register `CREATE TABLE IF NOT EXISTS ...` statements, applied by `open`."""
        self._schemas.append(sql)

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        for sql in self._schemas:
            conn.executescript(sql)
        self._conn = conn

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _run(self, fn: Callable[..., R], *args: Any) -> R:
        if self._executor is None:
            raise StoreError("store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            log.error("store_error", error=str(exc))
            raise StoreError(f"the daemon's state store failed: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is closed")
        return self._conn

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one statement; returns the number of rows changed."""
        return await self._run(lambda: self._connection().execute(sql, params).rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)

        def run() -> None:
            conn = self._connection()
            with conn:
                conn.execute("BEGIN")
                conn.executemany(sql, rows)

        await self._run(run)

    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return await self._run(lambda: [dict(r) for r in self._connection().execute(sql, params)])

    async def fetchone(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def ping(self) -> None:
        """Cheap health check for /health."""
        await self._run(lambda: self._connection().execute("SELECT 1").fetchone())
