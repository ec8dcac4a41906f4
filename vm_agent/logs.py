"""structlog setup (json or text to stderr) and the in-memory ring of recent records.

Every record also lands in a `LogRing` (an EventLog of entries), which serves `GET /logs` and
`/logs/stream` when journald is not available, e.g. in development and in containers.
Records are captured after level filtering, so the ring holds what the operator asked to see.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog

from vm_agent.streams import EventLog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_LEVEL_NAMES = {"warning": "warn", "critical": "error", "exception": "error"}
_RESERVED = {"event", "level", "timestamp", "_record", "_from_structlog"}


class LogRing(EventLog[dict[str, Any]]):
    """Recent log entries `{timestamp, level, message, fields}` numbered by seq."""

    def __init__(self, max_items: int = 5000) -> None:
        super().__init__(max_items, max_items * 2048, size_of=_entry_size)


def _entry_size(entry: dict[str, Any]) -> int:
    return 128 + len(entry["message"]) + sum(len(str(v)) for v in entry["fields"].values())


_ring = LogRing()


def get_ring() -> LogRing:
    return _ring


def _capture(_logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    level = _LEVEL_NAMES.get(method, method)
    fields = {k: _plain(v) for k, v in event_dict.items() if k not in _RESERVED}
    _ring.append(
        {
            "timestamp": event_dict.get("timestamp") or _now_iso(),
            "level": level,
            "message": str(event_dict.get("event", "")),
            "fields": fields,
        }
    )
    return event_dict


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _timestamp(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    event_dict["timestamp"] = _now_iso()
    return event_dict


def configure_logging(level: str = "info", fmt: str = "json", ring_size: int = 5000) -> LogRing:
    """Configure structlog (and route stdlib logging, e.g. aiohttp's, through the same level)."""
    global _ring
    if ring_size != _ring.max_items:
        _ring = LogRing(ring_size)
    numeric = LEVELS.get(level, logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.format_exc_info,
            _capture,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.INFO), stream=sys.stderr, format="%(name)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return _ring
