"""Where `/logs` reads from: journald for the daemon's unit when it runs under systemd,
else the in-memory ring every record also goes to.

Paging goes backwards in time: the first call returns the newest `limit` matching entries
(oldest first, as a log reads), `nextCursor` fetches the page before it, null at the start.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Protocol

from vm_agent.logs import LogRing

LEVEL_ORDER = {"debug": 0, "info": 1, "warn": 2, "error": 3}
_JOURNAL_PRIORITY = {0: "error", 1: "error", 2: "error", 3: "error", 4: "warn", 5: "info", 6: "info", 7: "debug"}


class LogQueryError(ValueError):
    """A query parameter is not acceptable (answered with 400)."""


class LogSource(Protocol):
    name: str

    async def query(
        self, limit: int, cursor: str | None, level: str | None, since: float | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    def follow(self, backlog: int) -> AsyncIterator[dict[str, Any]]: ...


def parse_since(text: str) -> float:
    """RFC 3339 timestamp or unix seconds → unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LogQueryError(f"since: {text!r} is neither an RFC 3339 timestamp nor unix seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _entry_time(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


def _matches(entry: dict[str, Any], level: str | None, since: float | None) -> bool:
    if level is not None and LEVEL_ORDER.get(entry["level"], 1) < LEVEL_ORDER[level]:
        return False
    return since is None or _entry_time(entry) >= since


class MemoryLogSource:
    name = "memory"

    def __init__(self, ring: LogRing) -> None:
        self._ring = ring

    async def query(
        self, limit: int, cursor: str | None, level: str | None, since: float | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        before = self._ring.last_seq + 1
        if cursor is not None:
            try:
                before = int(cursor)
            except ValueError:
                raise LogQueryError("cursor: not a cursor returned by this endpoint") from None
        _, entries = self._ring.read(0, len(self._ring))
        page: list[dict[str, Any]] = []
        next_cursor = None
        for entry in reversed(entries):
            if entry.seq >= before or not _matches(entry.item, level, since):
                continue
            if len(page) == limit:
                next_cursor = str(page[-1]["seq"])
                break
            page.append({**entry.item, "seq": entry.seq})
        page.reverse()
        return page, next_cursor

    async def follow(self, backlog: int) -> AsyncIterator[dict[str, Any]]:
        cursor = self._ring.cursor(max(self._ring.last_seq - backlog, 0))
        while True:
            batch = await cursor.next()
            if batch is None:
                return
            for entry in batch[1]:
                yield {**entry.item, "seq": entry.seq}


class JournaldLogSource:
    """Reads the unit's journal with `journalctl --output=json`, bounded by a timeout."""

    name = "journald"

    def __init__(self, unit: str, timeout: float) -> None:
        self._unit = unit
        self._timeout = timeout

    async def _run(self, *args: str) -> list[dict[str, Any]]:
        process = await asyncio.create_subprocess_exec(
            "journalctl",
            "--unit",
            self._unit,
            "--output=json",
            "--no-pager",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(self._timeout):
                out, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        return [_from_journal(json.loads(line)) for line in out.splitlines() if line.strip()]

    async def query(
        self, limit: int, cursor: str | None, level: str | None, since: float | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        # One extra to know whether an older page exists, and one for the cursor's own entry.
        args = ["--reverse", "--lines", str(limit + 1 + (1 if cursor else 0))]
        if cursor:
            # With --reverse, --cursor walks backwards from the cursor; the entry itself is dropped below.
            args += ["--cursor", cursor]
        if level:
            args += ["--priority", {"debug": "7", "info": "6", "warn": "4", "error": "3"}[level]]
        if since is not None:
            args += ["--since", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))]
        entries = [e for e in await self._run(*args) if e.get("cursor") != cursor]
        next_cursor = entries[limit - 1]["cursor"] if len(entries) > limit else None
        page = entries[:limit]
        page.reverse()
        return page, next_cursor

    async def follow(self, backlog: int) -> AsyncIterator[dict[str, Any]]:
        process = await asyncio.create_subprocess_exec(
            "journalctl",
            "--unit",
            self._unit,
            "--output=json",
            "--follow",
            "--lines",
            str(backlog),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=1024 * 1024,
        )
        try:
            assert process.stdout is not None
            async for line in process.stdout:
                if line.strip():
                    yield _from_journal(json.loads(line))
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def _from_journal(record: dict[str, Any]) -> dict[str, Any]:
    message = record.get("MESSAGE", "")
    fields: dict[str, Any] = {}
    level = _JOURNAL_PRIORITY.get(int(record.get("PRIORITY", 6)), "info")
    if isinstance(message, str) and message.startswith("{"):
        try:
            parsed = json.loads(message)
            message = parsed.pop("event", message)
            level = {"warning": "warn"}.get(parsed.get("level", level), parsed.pop("level", level))
            parsed.pop("timestamp", None)
            fields = parsed
        except ValueError:
            pass
    micros = int(record.get("__REALTIME_TIMESTAMP", 0))
    return {
        "timestamp": datetime.fromtimestamp(micros / 1e6, UTC).isoformat().replace("+00:00", "Z"),
        "level": level,
        "message": message if isinstance(message, str) else str(message),
        "fields": fields,
        "cursor": record.get("__CURSOR"),
    }


def choose_source(mode: str, ring: LogRing, unit: str, timeout: float) -> LogSource:
    """journald only when asked, or (auto) when journalctl exists and systemd started us."""
    under_systemd = bool(os.environ.get("INVOCATION_ID"))
    if mode == "journald" or (mode == "auto" and under_systemd and shutil.which("journalctl")):
        return JournaldLogSource(unit, timeout)
    return MemoryLogSource(ring)
