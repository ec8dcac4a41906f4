"""A terminal session on the daemon, driven over `/terminal/ws/multi`, resumable by byte offset.

The daemon numbers every byte a PTY has produced. This object remembers the position just
after the last byte it delivered (`next_offset`); after a dropped connection, `reconnect()`
reattaches with that offset, so the replay starts exactly where the output stopped: nothing is
shown twice, and anything the daemon could no longer keep is reported as `gap` bytes instead of
vanishing silently.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from vm_agent.client._transport import Transport, translated_errors
from vm_agent.client.errors import ClientError, ConnectionFailed, ProtocolError, RequestTimeout

# The daemon closes a socket whose inbound message exceeds TERMINAL_WS_MAX_MESSAGE_BYTES (64 KiB,
# close code 1009). Input is sent in frames of at most this many bytes of JSON-escaped text,
# well under the limit with the envelope (type, a session id of up to 128 characters) added.
MAX_INPUT_FRAME_BYTES = 16 * 1024
# The daemon closes a socket that sends faster than TERMINAL_WS_MESSAGE_RATE messages a second
# beyond bursts of TERMINAL_WS_MESSAGE_BURST (defaults 500 and 1000, close code 1008). Pacing at
# half the rate with a tenth of the burst stays clear of it with margin for network jitter
# (frames that queue up in the network arrive closer together than they were sent) and
# still moves 4 MB/s of pasted input.
DEFAULT_MESSAGE_RATE = 250.0
DEFAULT_MESSAGE_BURST = 100


def split_input(text: str, limit: int = MAX_INPUT_FRAME_BYTES) -> list[str]:
    """`text` cut into pieces whose JSON-escaped form is at most `limit` bytes each.

    Cuts fall between characters (code points), never inside one, and what is measured is the
    escaped text as it goes on the wire: a control character or a non-ASCII character takes six
    or twelve bytes there, so a piece of 16 Ki characters can be six times 16 KiB.
    """
    pieces: list[str] = []
    pos = 0
    while pos < len(text):
        count = min(len(text) - pos, limit)  # every character is at least one byte on the wire
        while count > 1:
            size = len(json.dumps(text[pos : pos + count]))  # ASCII-only: characters are bytes
            if size <= limit:
                break
            count = max(1, min(count - 1, count * limit // size))
        pieces.append(text[pos : pos + count])
        pos += count
    return pieces


class _Pacer:
    """The client's side of the daemon's per-socket token bucket: waits instead of being cut off.
    (Its own small copy of `vm_agent.ratelimit`: the client is installed on coordinators without
    any daemon module.)

    Tokens may go negative: each caller reserves its message at once and sleeps off the debt,
    so concurrent senders (input and a resize) queue up fairly without a lock.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.capacity = max(1.0, float(burst))
        self.tokens = self.capacity
        self._last: float | None = None

    async def take(self) -> None:
        if self.rate <= 0:
            return  # unlimited, as on the daemon
        now = asyncio.get_running_loop().time()
        if self._last is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        self.tokens -= 1
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


@dataclass(frozen=True)
class TerminalOutput:
    """A chunk of the terminal's output: text, its byte positions, and bytes lost before it."""

    data: str
    offset: int | None = None
    next: int | None = None
    gap: int = 0
    replay: bool = False


class TerminalError(ClientError):
    """The daemon refused a terminal request (an `error` frame on the socket)."""

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.code = code


class RemoteTerminal:
    """One terminal session: open or attach, send input, resize, iterate output, resume."""

    def __init__(
        self,
        transport: Transport,
        session_id: str,
        *,
        rows: int,
        cols: int,
        workspace: str | None,
        message_rate: float = DEFAULT_MESSAGE_RATE,
        message_burst: int = DEFAULT_MESSAGE_BURST,
    ) -> None:
        self._transport = transport
        self.session_id = session_id
        self.rows, self.cols = rows, cols
        self.workspace = workspace
        self.next_offset: int | None = None
        self.lost_bytes = 0
        self.exit_code: int | None = None
        self.closed_reason: str | None = None
        self.info: dict[str, Any] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: deque[dict[str, Any]] = deque()
        self._message_rate, self._message_burst = message_rate, message_burst
        self._pacer = _Pacer(message_rate, message_burst)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    @property
    def ended(self) -> bool:
        """True once the session is gone on the daemon (program exited or closed)."""
        return self.closed_reason is not None

    async def _connect(self) -> None:
        await self.detach()
        self._pending.clear()
        self._pacer = _Pacer(self._message_rate, self._message_burst)  # the daemon's bucket is per socket
        params = {"workspace": self.workspace} if self.workspace else None
        self._ws = await self._transport.websocket("/terminal/ws/multi", params)

    async def _request(self, message: dict[str, Any], answer: str) -> dict[str, Any]:
        """Open a socket, send one request, return its answer; a refusal closes the socket.

        The socket exists only for this session: when the daemon says no (no such session, the
        id is taken) nobody else will ever use or close it, and a coordinator that probes
        terminals would pile up one open TLS connection per refusal."""
        await self._connect()
        try:
            await self._send(message)
            return await self._await_answer(answer)
        except BaseException:
            await self.detach()
            raise

    async def create(self, *, name: str | None = None, work_dir: str | None = None) -> None:
        data: dict[str, Any] = {"sessionId": self.session_id, "rows": self.rows, "cols": self.cols}
        if name:
            data["name"] = name
        if work_dir:
            data["workDir"] = work_dir
        answer = await self._request({"type": "create_session", "data": data}, "session_created")
        self.info = answer.get("data") or {}
        self.next_offset = 0

    async def attach(self, offset: int | None = None) -> None:
        """Reattach; with `offset`, the replay starts exactly there (None: everything retained)."""
        data: dict[str, Any] = {"sessionId": self.session_id, "rows": self.rows, "cols": self.cols}
        if offset is not None:
            data["offset"] = offset
        answer = await self._request({"type": "reattach_session", "data": data}, "session_reattached")
        self.info = answer.get("data") or {}

    async def reconnect(self) -> None:
        """Resume after a dropped connection from the last delivered byte."""
        await self.attach(self.next_offset)

    async def send(self, text: str) -> None:
        """Type `text` into the session, in frames the daemon accepts (see `split_input`), paced
        for its rate limit: a pasted file or a long heredoc arrives whole instead of getting the
        socket closed. A dropped connection raises `ConnectionFailed` (frames before it were sent)."""
        for piece in split_input(text):
            await self._send({"type": "input", "sessionId": self.session_id, "data": {"data": piece}})

    async def resize(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        await self._send({"type": "resize", "sessionId": self.session_id, "data": {"rows": rows, "cols": cols}})

    async def close(self, timeout_s: float = 10.0) -> None:
        """End the session on the daemon (its program gets SIGHUP) and wait until it is gone."""
        if self.ended:
            return
        await self._send({"type": "close_session", "data": {"sessionId": self.session_id}})
        async with asyncio.timeout(timeout_s):
            async for _ in self.output():
                pass

    async def detach(self) -> None:
        """Drop the connection but leave the session running (reattach later by id)."""
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            await ws.close()

    async def output(self) -> AsyncIterator[TerminalOutput]:
        """Output in order until the session ends; a dropped socket raises `ConnectionFailed`."""
        while not self.ended:
            frame = self._pending.popleft() if self._pending else await self._receive()
            chunk = self._handle(frame)
            if chunk is not None:
                yield chunk

    async def _send(self, message: dict[str, Any]) -> None:
        self._check_open()
        await self._pacer.take()
        ws = self._check_open()  # again: the socket may have been dropped or replaced meanwhile
        with translated_errors(self._transport.where):
            await ws.send_str(json.dumps(message))

    def _check_open(self) -> aiohttp.ClientWebSocketResponse:
        if self._ws is None or self._ws.closed:
            raise ConnectionFailed(f"terminal connection to {self._transport.where} is closed")
        return self._ws

    async def _receive(self) -> dict[str, Any]:
        if self._ws is None:
            raise ConnectionFailed(f"terminal connection to {self._transport.where} is closed")
        with translated_errors(self._transport.where):
            msg = await self._ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            code = self._ws.close_code
            self._ws = None
            reason = f" (code {code}{': ' + str(msg.extra) if msg.extra else ''})" if code else ""
            raise ConnectionFailed(f"terminal connection to {self._transport.where} was closed{reason}")
        try:
            frame = json.loads(msg.data)
        except ValueError:
            raise ProtocolError("terminal frame is not JSON") from None
        if not isinstance(frame, dict):
            raise ProtocolError("terminal frame is not a JSON object")
        return frame

    async def _await_answer(self, kind: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the answer to a request; frames that arrive before it are kept for `output()`."""
        try:
            async with asyncio.timeout(timeout_s or self._transport.timeout):
                while True:
                    frame = await self._receive()
                    if frame.get("type") == kind and self._ours(frame, default=True):
                        return frame
                    if frame.get("type") == "error" and self._ours(frame, default=True):
                        raise self._error(frame)
                    self._pending.append(frame)
        except TimeoutError:
            raise RequestTimeout(f"{self._transport.where} did not answer {kind} in time") from None

    def _ours(self, frame: dict[str, Any], default: bool = False) -> bool:
        sid = frame.get("sessionId") or (frame.get("data") or {}).get("sessionId")
        return default if sid is None else sid == self.session_id

    @staticmethod
    def _error(frame: dict[str, Any]) -> TerminalError:
        data = frame.get("data") or {}
        code = str(data.get("error") or "error")
        return TerminalError(f"{data.get('message') or code} ({code})", code)

    def _handle(self, frame: dict[str, Any]) -> TerminalOutput | None:
        kind = frame.get("type")
        data = frame.get("data") or {}
        if not self._ours(frame, default=kind == "error"):
            return None
        if kind in ("output", "scrollback"):
            return self._chunk(data, replay=kind == "scrollback")
        if kind == "session_closed":
            self.closed_reason = str(data.get("reason") or "closed")
            code = data.get("exitCode")
            self.exit_code = code if isinstance(code, int) else None
            return None
        if kind == "error":
            raise self._error(frame)
        return None  # pong, session_renamed, ...: nothing to show

    def _chunk(self, data: dict[str, Any], *, replay: bool) -> TerminalOutput | None:
        text = str(data.get("data", ""))
        offset, nxt, gap = data.get("offset"), data.get("next"), int(data.get("gap") or 0)
        self.lost_bytes += gap
        if isinstance(offset, int) and isinstance(nxt, int):
            if self.next_offset is not None and nxt <= self.next_offset and not gap:
                return None  # already delivered before a reconnect
            if self.next_offset is not None and offset < self.next_offset < nxt:
                raw = text.encode("utf-8")[self.next_offset - offset :]
                text, offset = raw.decode("utf-8", "replace"), self.next_offset
            self.next_offset = nxt
        elif self.next_offset is not None:
            self.next_offset += len(text.encode("utf-8"))
        if not text and not gap:
            return None
        return TerminalOutput(text, offset, nxt if isinstance(nxt, int) else None, gap, replay)
