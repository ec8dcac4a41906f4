"""An agent session's event history as an async iterator that survives dropped connections.

The daemon numbers every event of a session (`seq`, from 1, increasing by one) and serves them
as Server-Sent Events with `id: <seq>`. This iterator remembers the last seq it handed out;
when the connection drops it reconnects with `?after=<seq>` and `Last-Event-ID`, and drops any
event it has already delivered, so a consumer sees each event exactly once, in order, however
often the network fails underneath it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from vm_agent.client._transport import Transport, translated_errors
from vm_agent.client.errors import ClientError, ConnectionFailed, ProtocolError, RequestTimeout, UnavailableError

# Unnumbered messages every connection starts with; after a reconnect they would be repeats.
RECONNECT_PREAMBLE = frozenset({"session_state", "session_replay_complete"})
# An SSE line (one JSON event) can be megabytes: a tool result, a file the agent read.
MAX_EVENT_BYTES = 64 * 1024 * 1024
# The daemon writes `: keepalive` on an idle stream every ACP_PING_INTERVAL (default 30 s).
DEFAULT_KEEPALIVE_INTERVAL = 30.0
# Keepalives that may go missing before a silent stream counts as dead: one late keepalive is a
# busy VM, three in a row is a VM that was paused, deleted or cut off without a FIN or RST.
MISSED_KEEPALIVES = 3


@dataclass(frozen=True)
class Event:
    """One message of a session's history: `data` is exactly what the daemon sent."""

    seq: int | None
    data: dict[str, Any] = field(repr=False)

    @property
    def kind(self) -> str:
        """`session_prompting`, `session/update:agent_message_chunk`, `prompt_result`, ..."""
        if isinstance(self.data.get("type"), str):
            return self.data["type"]
        method = self.data.get("method")
        if method == "session/update":
            update = (self.data.get("params") or {}).get("update") or {}
            return f"session/update:{update.get('sessionUpdate', '?')}"
        if isinstance(method, str):
            return method
        if "result" in self.data:
            return "prompt_result"
        if "error" in self.data:
            return "prompt_error"
        return "unknown"

    @property
    def update(self) -> dict[str, Any]:
        """The ACP `session/update` payload, or {} for any other event."""
        if self.data.get("method") != "session/update":
            return {}
        update = (self.data.get("params") or {}).get("update")
        return update if isinstance(update, dict) else {}

    def text(self) -> str:
        """The assistant text this event adds to the reply (empty for anything else)."""
        update = self.update
        if update.get("sessionUpdate") != "agent_message_chunk":
            return ""
        content = update.get("content")
        if isinstance(content, dict) and content.get("type", "text") == "text":
            return str(content.get("text", ""))
        if isinstance(content, list):
            return "".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        return ""


class _SseParser:
    """Server-Sent Events framing: `field: value` lines, a blank line ends an event."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []
        self._id: str | None = None  # this event's own `id:` only (unnumbered events carry none)
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[tuple[str | None, str | None, str]]:
        self._buffer += chunk
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise ProtocolError("an event from the daemon is larger than the client accepts")
        out = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                return out
            line = self._buffer[:end].decode("utf-8", "replace").rstrip("\r")
            del self._buffer[: end + 1]
            if not line:
                if self._data:
                    out.append((self._id, self._event, "\n".join(self._data)))
                self._data, self._event, self._id = [], None, None
                continue
            if line.startswith(":"):
                continue  # comment / keepalive
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                self._data.append(value)
                self._buffer_check()
            elif name == "id":
                self._id = value
            elif name == "event":
                self._event = value

    def _buffer_check(self) -> None:
        if sum(len(d) for d in self._data) > MAX_EVENT_BYTES:
            raise ProtocolError("an event from the daemon is larger than the client accepts")


def _event_from(sse_id: str | None, data: str) -> Event:
    try:
        body = json.loads(data)
    except ValueError:
        raise ProtocolError(f"event is not JSON: {data[:80]!r}") from None
    if not isinstance(body, dict):
        raise ProtocolError("event is not a JSON object")
    seq = body.get("seq")
    if not isinstance(seq, int):
        seq = int(sse_id) if sse_id and sse_id.isdigit() else None
    return Event(seq, body)


class _HistoryRestarted(Exception):
    """The daemon's numbering started again (it restarted): read its history from the start."""


class EventStream:
    """`async for event in client.events(after=N)`: history then live, resumed on reconnect.

    Each connection starts with the unnumbered `session_state` and ends its replay with
    `session_replay_complete`; those are passed on from the first connection only, so a consumer
    never sees a reconnect. When the daemon itself restarted (its numbering begins again), the
    stream yields one `session_restarted` event and replays the new history from its start.
    `reconnect_attempts` consecutive failures (with backoff doubling from `backoff` up to
    `max_backoff`) end the iteration with `ConnectionFailed`. A connection that was opened and
    read its preamble (or delivered an event) was a success, so the count starts again when it
    ends: the daemon may end an idle stream at any time (it used to after every keepalive), and
    an agent that works silently for an hour must not look like an unreachable daemon.
    Errors that retrying cannot fix (bad token, no such session) are raised at once.

    Nothing read for `read_timeout` seconds (default: `MISSED_KEEPALIVES` keepalive intervals)
    is a dead connection, handled like any other failure: a VM that vanishes without closing
    its sockets must fail the wait, not hang it forever.
    """

    def __init__(
        self,
        transport: Transport,
        path: str,
        after: int = 0,
        *,
        reconnect_attempts: int = 8,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        read_timeout: float = MISSED_KEEPALIVES * DEFAULT_KEEPALIVE_INTERVAL,
    ) -> None:
        self._transport = transport
        self._path = path
        self.last_seq = after
        self.reconnects = 0
        self._attempts = reconnect_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._read_timeout = read_timeout
        self._progressed = False  # the current connection read its preamble or a new event
        self._iterator: AsyncIterator[Event] | None = None
        self._connections = 0
        self._last_data: dict[str, Any] | None = None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._iterator is None:
            self._iterator = self._run()
        return await self._iterator.__anext__()

    async def aclose(self) -> None:
        if self._iterator is not None:
            await self._iterator.aclose()  # type: ignore[attr-defined]

    async def _run(self) -> AsyncIterator[Event]:
        failures = 0
        while True:
            self._progressed = False
            try:
                async with contextlib.aclosing(self._connect_once()) as connection:
                    async for event in connection:
                        yield event
                # The daemon ended the stream (idle, shutting down, session deleted): resume.
                error: ClientError = ConnectionFailed(f"event stream of {self._transport.where} ended")
            except _HistoryRestarted:
                continue  # reconnect at once, from seq 0
            except (ConnectionFailed, RequestTimeout, UnavailableError) as exc:
                error = exc
            # Only connections that got nowhere count against the limit (see the class docstring).
            failures = 1 if self._progressed else failures + 1
            if failures > self._attempts:
                raise error
            self.reconnects += 1
            await asyncio.sleep(min(self._max_backoff, self._backoff * 2 ** (failures - 1)))

    def _restart(self) -> Event:
        """The daemon restarted and numbers its events from 1 again: skipping seqs "already
        seen" would silently drop everything new, so start over and say so."""
        self.last_seq, self._last_data = 0, None
        return Event(None, {"type": "session_restarted"})

    def _behind(self, newest: Any) -> bool:
        """The daemon's newest seq is older than ours: its history is not the one we read."""
        return isinstance(newest, int) and newest < self.last_seq

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The next bytes of the stream; silence past the deadline is a dead connection.

        TCP alone never notices a peer that stopped answering (a paused or deleted VM, a
        firewall dropping packets): the read would wait forever. The daemon's keepalives make
        silence meaningful, so a few missed ones end this connection and the reconnect logic
        decides whether the daemon is still there."""
        try:
            async with asyncio.timeout(self._read_timeout):
                with translated_errors(self._transport.where):
                    return await resp.content.readany()
        except TimeoutError:
            resp.close()  # abort: a graceful TLS close would wait on the silent peer too
            raise ConnectionFailed(
                f"{self._transport.where} sent nothing for {self._read_timeout:g}s, not even a keepalive"
            ) from None

    async def _connect_once(self) -> AsyncIterator[Event]:
        # Ask for one event we already have and compare it: identical means the same history
        # goes on; different means the daemon restarted and reused the numbers.
        overlap = self._last_data if self.last_seq > 0 else None
        after = self.last_seq - 1 if overlap is not None else self.last_seq
        headers = {"Accept": "text/event-stream"}
        if after:
            headers["Last-Event-ID"] = str(after)
        parser = _SseParser()
        self._connections += 1
        first = self._connections == 1
        async with self._transport.stream(self._path, params={"after": after}, headers=headers) as resp:
            while True:
                chunk = await self._read(resp)
                if not chunk:
                    return
                for sse_id, _event_name, data in parser.feed(chunk):
                    event = _event_from(sse_id, data)
                    if event.kind == "session_replay_complete":
                        self._progressed = True  # the connection works: opened, preamble read
                    if event.seq is not None:
                        if overlap is not None and event.seq == self.last_seq:
                            same, overlap = event.data == overlap, None
                            if same:
                                continue  # the event we asked for again: history continues
                            yield self._restart()
                            raise _HistoryRestarted
                        overlap = None  # (the overlap was trimmed away: nothing to compare)
                        if event.seq <= self.last_seq:
                            continue  # already delivered before the reconnect
                        self.last_seq, self._last_data = event.seq, event.data
                        self._progressed = True
                    elif event.kind == "session_state" and self._behind(event.data.get("lastSeq")):
                        yield self._restart()
                        raise _HistoryRestarted
                    elif not first and event.kind in RECONNECT_PREAMBLE:
                        continue  # the consumer already saw where the history ends
                    yield event
