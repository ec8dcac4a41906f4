"""One terminal WebSocket: limits, liveness, and a sender task per attached session.

Why a sender task per (socket, session): each reads its own viewer (its own position in the
session's log) and awaits its own socket writes. A slow socket therefore only delays itself;
the PTY reader appends and returns, and other sockets send from their own positions. A write
that stalls for longer than the read timeout means a dead peer: the socket is aborted and
its client can resume from the last `next` it saw.

Liveness is kept by one watchdog task per socket rather than a timeout around every receive
and every send: those cost a timer and a context manager per keystroke and per output frame,
a tenth of the daemon's CPU on the echo path (measured). The receive loop and the senders only
note the time; the watchdog pings, and closes a silent peer or aborts a stalled one.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from typing import Any

import orjson
import structlog
from aiohttp import WSMsgType, web

from vm_agent import wsutil
from vm_agent.auth import Principal
from vm_agent.config import Settings
from vm_agent.errors import ApiError
from vm_agent.ratelimit import TokenBucket
from vm_agent.terminal import protocol
from vm_agent.terminal.fastinput import InputFastPath
from vm_agent.terminal.manager import TerminalManager
from vm_agent.terminal.output import Viewer
from vm_agent.terminal.protocol import ProtocolError
from vm_agent.terminal.session import TerminalSession
from vm_agent.wsframe import text_frame

log = structlog.get_logger("vm_agent.terminal")

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
# Output is written straight to the socket only while its buffer holds less than this.
_WRITE_NOW_LIMIT = 64 * 1024


class ConnectionGone(Exception):
    """The peer can no longer be written to."""


class TerminalConnection(abc.ABC):
    """Shared machinery of `/terminal/ws` and `/terminal/ws/multi`."""

    allowed = protocol.MULTI_TYPES

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        manager: TerminalManager,
        principal: Principal,
        workspace_id: str,
        fast_input: InputFastPath | None = None,
    ) -> None:
        self.ws = ws
        self.request = request
        self.manager = manager
        self.settings: Settings = manager.settings
        self.principal = principal
        self.workspace_id = workspace_id
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._loop = asyncio.get_running_loop()
        self._last_heard = self._loop.time()  # any frame from the peer, pongs included
        # Sends in progress, by a serial number, with the time each began (oldest first).
        self._sending: dict[int, float] = {}
        self._send_serial = 0
        self._transport = request.transport
        self._fast_input = fast_input
        self._taken = 0  # data messages the receive loop has taken from aiohttp
        self._handling = False  # the receive loop is acting on a message
        self._bucket = TokenBucket(self.settings.terminal_ws_message_rate, self.settings.terminal_ws_message_burst)

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        pinger = self._loop.create_task(self._watchdog())
        if self._fast_input is not None:
            self._fast_input.start(self.input_now, self.settings.terminal_ws_max_message_bytes)
        try:
            await self.opened()
            await self._receive_loop()
        except ConnectionGone:
            pass
        finally:
            if self._fast_input is not None:
                self._fast_input.stop()
            pinger.cancel()
            await self.settle()
            pumps = list(self._pumps.values())
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(pinger, *pumps, return_exceptions=True)
            await self.closed()
            if not self.ws.closed:
                await self.end(1000, "")

    async def opened(self) -> None:
        """Hook: the socket is open (the single endpoint creates its session here)."""

    async def settle(self) -> None:
        """Hook: the socket is gone; finish work that must not be cut short (spawning)."""

    async def closed(self) -> None:
        """Hook: the socket is gone and every pump has stopped."""

    async def _receive_loop(self) -> None:
        ws = self.ws
        while not ws.closed:
            message = await ws.receive()
            self._last_heard = self._loop.time()
            kind = message.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                self._taken += 1
                if not self._bucket.take():
                    log.warning("terminal_socket_rate_limited", user=self.principal.user_id)
                    await self.end(CLOSE_POLICY, "message rate limit exceeded")
                    return
                self._handling = True
                try:
                    await self._dispatch(message.data)
                finally:
                    self._handling = False
            elif kind is WSMsgType.PING:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.pong(message.data)
            elif kind is not WSMsgType.PONG:  # CLOSE, CLOSING, CLOSED, ERROR (incl. 1009 from aiohttp)
                return

    async def _dispatch(self, raw: str | bytes) -> None:
        try:
            if isinstance(raw, bytes):
                raise ProtocolError("invalid_message", "binary frames are not supported; send JSON text")
            message = protocol.parse(raw, self.allowed)
            await self.handle(message)
        except ProtocolError as exc:
            await self.send(protocol.error(exc.code, exc.message, exc.session_id))
        except ApiError as exc:
            await self.send(protocol.error(exc.code, exc.message, _session_of(raw)))

    @abc.abstractmethod
    async def handle(self, message: protocol.ClientMessage) -> None:
        """Act on one valid client message (each endpoint speaks its own subset)."""

    def input_now(self, payload: bytes) -> bool:
        """Write an `input` message straight to its PTY, from the socket's read callback, when
        nothing this client sent before it is still waiting (vm_agent.terminal.fastinput).
        False: not taken, the message goes the normal way (and meets any error there)."""
        fast_input = self._fast_input
        if self._handling or fast_input is None or fast_input.forwarded_messages != self._taken:
            return False
        try:
            message = orjson.loads(payload)
        except ValueError:
            return False
        # Only a well-formed `input` is taken here; anything else gets its error the normal way.
        body = message.get("data") if type(message) is dict and message.get("type") == "input" else None
        if type(body) is not dict or type(text := body.get("data")) is not str:
            return False
        if type(message.get("sessionId", "")) is not str:
            return False
        session = self.input_target(body.get("sessionId", message.get("sessionId")))
        if session is None or not self._bucket.take():
            return False
        try:
            session.write(text)
        except ApiError:
            return False
        self._last_heard = self._loop.time()
        return True

    def input_target(self, session_id: object) -> TerminalSession | None:
        """The running session an `input` message naming `session_id` may be written to at once."""
        return None

    # ------------------------------------------------------------------ sending
    async def send(self, payload: bytes) -> None:
        """Send one encoded server message (UTF-8 JSON) as a text frame, waiting while the
        socket's buffer is full.

        The frame goes out in one transport write: aiohttp writes a frame over 16 KiB as two
        (header, then payload), which over TLS is two records and two `send` calls, for every
        64 KiB of a flood. The fast path's protocol relays the transport's pause and resume,
        so the wait is the one aiohttp would make."""
        serial = self._send_serial = self._send_serial + 1
        self._sending[serial] = self._loop.time()
        try:
            transport, fast_input = self._transport, self._fast_input
            if transport is None or fast_input is None:
                await self.ws.send_frame(payload, WSMsgType.TEXT)
            else:
                if self.ws.closed or transport.is_closing():
                    raise ConnectionResetError("socket closed")
                self.write_now(payload)
                await fast_input.writable()
        except (ConnectionError, RuntimeError):
            raise ConnectionGone from None
        finally:
            del self._sending[serial]

    def can_write_now(self) -> bool:
        """Whether a frame may be written straight to the transport: nothing of ours is
        waiting for the socket, it is not closed or closing, and its buffer is nearly empty."""
        transport = self._transport
        return (
            not self._sending
            and transport is not None
            and not self.ws.closed
            and not transport.is_closing()
            and transport.get_write_buffer_size() < _WRITE_NOW_LIMIT
        )

    @property
    def write_backlog(self) -> int:
        """Bytes written but not yet taken by the peer's socket: what a slow client costs."""
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def write_now(self, payload: bytes) -> None:
        """Write one encoded message as a text frame, without waiting (see `can_write_now`)."""
        assert self._transport is not None
        self._transport.write(text_frame(payload))

    def abort(self) -> None:
        """Drop the connection at once (a dead or broken peer)."""
        if self._transport is not None:
            self._transport.abort()

    async def end(self, code: int, reason: str) -> None:
        """Close the socket (bounded; a peer that does not read is aborted instead)."""
        await wsutil.close_within(self.ws, self._transport, code, reason.encode(), self.settings.ws_close_timeout)

    async def _watchdog(self) -> None:
        """Ping every interval; close a peer silent for the read timeout (1001) and abort one
        with a send pending for as long (a dead peer with a full window, even if it talks)."""
        interval = self.settings.terminal_ws_ping_interval
        timeout = self.settings.terminal_ws_read_timeout
        checks = [period for period in (interval, timeout / 4) if period > 0]
        if not checks:
            return
        period = min(checks)
        next_ping = self._loop.time() + interval
        while not self.ws.closed:
            await asyncio.sleep(period)
            now = self._loop.time()
            oldest_send = next(iter(self._sending.values()), now)
            if timeout > 0 and now - oldest_send > timeout:
                log.warning("terminal_socket_send_stalled", workspace=self.workspace_id)
                self.abort()
                return
            if timeout > 0 and now - self._last_heard > timeout:
                log.info("terminal_socket_idle", workspace=self.workspace_id)
                await self.end(CLOSE_GOING_AWAY, "read timeout")
                return
            if interval > 0 and now >= next_ping:
                next_ping = now + interval
                try:
                    await self.ws.ping()
                except (ConnectionError, RuntimeError):
                    return

    # ------------------------------------------------------------------ sessions
    def follow(self, session: TerminalSession, viewer: Viewer) -> None:
        """Start sending `session`'s output from `viewer`'s position (viewer already attached)."""
        task = asyncio.get_running_loop().create_task(self._pump(session, viewer))
        self._pumps[session.id] = task

        def finished(_task: asyncio.Task[None]) -> None:
            # Not in the pump's `finally`: a task cancelled before its first step never runs its
            # body, and its viewer must still be counted out (or the session is never orphaned).
            if self._pumps.get(session.id) is task:
                del self._pumps[session.id]
            self.manager.detach(session)

        task.add_done_callback(finished)

    async def unfollow(self, session_id: str) -> None:
        task = self._pumps.pop(session_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _pump(self, session: TerminalSession, viewer: Viewer) -> None:
        """Send `session`'s output from `viewer`. While this task is idle, output that can go
        at once is written by a listener on the log instead (see `_Handover`)."""
        handover = _Handover(self, session.id, viewer)
        output_log = session.output.log
        output_log.add_listener(handover)
        try:
            while True:
                chunk = viewer.take_ready()
                if chunk is None:
                    if not viewer.pending:
                        await handover.idle()
                    chunk = await viewer.next()
                    if chunk is None:
                        break
                await self.send(protocol.output(session.id, chunk))
            await self.send(session_closed(session))
            await self.session_ended(session)
        except ConnectionGone:
            pass
        finally:
            output_log.remove_listener(handover)

    async def session_ended(self, session: TerminalSession) -> None:
        """Hook: `session_closed` was sent for a session this socket followed."""


class _Handover:
    """A listener on a session's log that sends output while the socket's sender task is idle.

    Why: waking the task costs a loop turn before the echo of a keystroke can leave (about a
    tenth of a ~250 µs round trip, measured). Output that may go at once, onto a socket with an
    empty buffer, is written here, inside the PTY reader's callback. Anything else (a flood to
    gather into bigger frames, a socket that is backing up, the end of the stream) wakes the
    task, which sends with flow control. Only one of the two sends at any time, so frames keep
    their order.
    """

    __slots__ = ("_connection", "_session_id", "_viewer", "_waiter")

    def __init__(self, connection: TerminalConnection, session_id: str, viewer: Viewer) -> None:
        self._connection = connection
        self._session_id = session_id
        self._viewer = viewer
        self._waiter: asyncio.Future[None] | None = None

    async def idle(self) -> None:
        """Park the sender task until there is output this listener did not send itself."""
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def __call__(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # the task is busy and will pick the output up itself
        connection = self._connection
        try:
            if connection.can_write_now():
                chunk = self._viewer.take_ready()
                if chunk is not None:
                    connection.write_now(protocol.output(self._session_id, chunk))
        except Exception:
            # Never into the PTY reader. The chunk taken may be lost on this socket, so drop the
            # socket: its client resumes from the last `next` it saw and gets exactly the rest.
            log.exception("terminal_output_handover_failed", session_id=self._session_id)
            connection.abort()
        if self._viewer.pending:
            waiter.set_result(None)


def session_closed(session: TerminalSession) -> bytes:
    reason = session.close_reason or "process_exit"
    data: dict[str, Any] = {"sessionId": session.id, "reason": reason}
    if reason == "process_exit" and session.exit_code is not None:
        data["exitCode"] = session.exit_code
    return protocol.encode("session_closed", data, session.id)


def _session_of(raw: str | bytes) -> str | None:
    """Best effort: the session a failed request named, for the `error` reply."""
    try:
        message = protocol.parse(raw, protocol.MULTI_TYPES)
        return message.target
    except ProtocolError:
        return None
