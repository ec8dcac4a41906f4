"""Where `/logs` reads from: journald for the daemon's unit when it runs under systemd,
else the in-memory ring every record also goes to.

Paging goes backwards in time: the first call returns the newest `limit` matching entries
(oldest first, as a log reads), `nextCursor` fetches the page before it, null at the start.
With `since`, the start is the first entry at or after it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from vm_agent.logs import LogRing

log = structlog.get_logger("vm_agent.node")

LEVEL_ORDER = {"debug": 0, "info": 1, "warn": 2, "error": 3}
_JOURNAL_PRIORITY = {0: "error", 1: "error", 2: "error", 3: "error", 4: "warn", 5: "info", 6: "info", 7: "debug"}


class LogQueryError(ValueError):
    """A query parameter is not acceptable (answered with 400)."""


class LogSourceUnavailable(RuntimeError):
    """The source could not be read (journalctl failed, hung or printed garbage): 503."""


# The last second `datetime` can show (9999-12-31T23:59:59Z). Unchecked, `since=1e20` reached
# time.localtime() and came back as a 500.
MAX_SINCE = 253402300799.0
# A journald cursor is `;`-separated `key=hex` fields (s=…;i=…;b=…;m=…;t=…;x=…).
_JOURNAL_CURSOR = re.compile(r"[a-z]=[0-9a-zA-Z]{1,64}(?:;[a-z]=[0-9a-zA-Z]{1,64}){0,15}")


class LogSource(Protocol):
    name: str

    async def query(
        self, limit: int, cursor: str | None, level: str | None, since: float | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    def follow(self, backlog: int) -> AsyncIterator[dict[str, Any]]: ...


def parse_since(text: str) -> float:
    """RFC 3339 timestamp or unix seconds → unix seconds, between 1970 and the year 9999."""
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise LogQueryError(f"since: {text[:64]!r} is neither an RFC 3339 timestamp nor unix seconds") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        value = parsed.timestamp()
    if not (math.isfinite(value) and 0 <= value <= MAX_SINCE):  # `nan` and `inf` parse as floats
        raise LogQueryError("since: must be a time between 1970 and 9999")
    return value


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

    async def _run(self, *args: str, cursor: str | None = None) -> list[dict[str, Any]]:
        """journalctl's entries; its failure is a LogQueryError when it refused `cursor`,
        else LogSourceUnavailable (an empty page would tell the client it reached the start)."""
        try:
            process = await asyncio.create_subprocess_exec(
                "journalctl",
                "--unit",
                self._unit,
                "--output=json",
                "--no-pager",
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise LogSourceUnavailable(f"journalctl could not be started: {exc.strerror or exc}") from None
        try:
            async with asyncio.timeout(self._timeout):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise LogSourceUnavailable(f"journalctl gave no answer within {self._timeout:g}s") from None
        if process.returncode != 0:
            problem = err.decode(errors="replace").strip()[-300:]
            if cursor is not None and "cursor" in problem.lower():  # "Failed to seek to cursor: …"
                raise LogQueryError("cursor: not a cursor returned by this endpoint")
            log.warning("journalctl_failed", status=process.returncode, error=problem)
            raise LogSourceUnavailable(f"journalctl failed (exit status {process.returncode})")
        try:
            return [_from_journal(json.loads(line)) for line in out.splitlines() if line.strip()]
        except (ValueError, TypeError, AttributeError) as exc:
            raise LogSourceUnavailable(f"journalctl printed an unreadable entry: {exc}") from None

    async def query(
        self, limit: int, cursor: str | None, level: str | None, since: float | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        if cursor is not None and (len(cursor) > 256 or not _JOURNAL_CURSOR.fullmatch(cursor)):
            raise LogQueryError("cursor: not a cursor returned by this endpoint")
        # One extra to know whether an older page exists, and one for the cursor's own entry.
        args = ["--reverse", "--lines", str(limit + 1 + (1 if cursor else 0))]
        if cursor:
            # With --reverse, --cursor walks backwards from the cursor; the entry itself is dropped below.
            # journalctl refuses --since beside --cursor ("specify only one of"), so a later page
            # of a `since` query filters in Python below instead.
            args += ["--cursor", cursor]
        elif since is not None:
            # Whole seconds (the format has no fraction): the exact bound is applied below.
            args += ["--since", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(math.floor(since)))]
        if level:
            args += ["--priority", {"debug": "7", "info": "6", "warn": "4", "error": "3"}[level]]
        entries = [e for e in await self._run(*args, cursor=cursor) if e.get("cursor") != cursor]
        if since is not None:
            # Newest first: the first entry older than `since` is the start of the window, so
            # nothing past it belongs to this query and there is no page before this one.
            older = next((i for i, e in enumerate(entries) if _entry_time(e) < since), len(entries))
            entries = entries[:older]
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
