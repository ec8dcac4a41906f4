"""Keystrokes acted on in the socket's read callback, ahead of the WebSocket library's queue.

Why: a keystroke that goes through aiohttp's reader is queued, a loop turn later the receive
task wakes, and only then is it parsed and written to the PTY. On the daemon's side that was
70-85 µs of a ~250 µs echo round trip (measured). This protocol sits between the TLS
transport and aiohttp's connection handler (installed with the transport's public
`set_protocol`): it splits the incoming byte stream into frames, hands small complete text
frames to the terminal connection, which writes an `input` message straight to the PTY when
that keeps the order of everything the client sent, and forwards every other frame to aiohttp
byte for byte. aiohttp never sees the frames that were consumed, and sees everything else
exactly as the client sent it, so it still enforces the protocol (masking, sizes, UTF-8,
control frames, close).

It also relays the transport's flow-control signals (`writable`), so the terminal connection
can write its own whole frames and still wait for a full socket buffer as aiohttp would.

A frame is only offered when it is whole, small, masked, final, unfragmented and has no
reserved bits; the connection takes it only when nothing it was forwarded earlier is still
waiting to be handled. Anything else, or any doubt, means forwarding.

It is installed as the terminal request is handled, before the token check, so it reads the
stream from a frame boundary. A client that sent frames before the server's handshake answer,
which RFC 6455 forbids, may have some already in aiohttp's hands; then the split may be out of
step for that connection alone. Its bytes still all reach aiohttp unless they happen to parse
as a keystroke frame of its own, and then aiohttp most likely closes it as malformed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Larger frames (pastes) are streamed to aiohttp as they arrive instead of being held here.
MAX_FAST_PAYLOAD = 4096

Accept = Callable[[bytes], bool]  # a text message's payload -> True if it was acted on


class InputFastPath(asyncio.Protocol):
    """One terminal socket's incoming frames, split between the fast path and aiohttp; and
    the transport's pause and resume, relayed to aiohttp and to the connection's writers."""

    def __init__(self, transport: asyncio.BaseTransport, handler: asyncio.BaseProtocol) -> None:
        self._transport = transport
        self._handler = handler
        self._accept: Accept | None = None
        self._max_payload = MAX_FAST_PAYLOAD
        self._pending = bytearray()  # the start of a frame not yet complete (a small one)
        self._stream_left = 0  # bytes of a large frame still to pass on as they come
        self._in_fragmented_message = False
        self.forwarded_messages = 0  # complete data messages passed on to aiohttp
        self._writing_paused = False
        self._lost = False
        self._write_waiters: list[asyncio.Future[None]] = []

    @classmethod
    def install(cls, transport: asyncio.BaseTransport | None) -> InputFastPath | None:
        """Put the fast path in front of the transport's current protocol (before the
        WebSocket handshake, so every byte after the upgrade request passes through it)."""
        if transport is None or transport.is_closing():
            return None
        fast = cls(transport, transport.get_protocol())
        transport.set_protocol(fast)
        return fast

    def uninstall(self) -> None:
        if self._transport.get_protocol() is self:
            self._transport.set_protocol(self._handler)

    def start(self, accept: Accept, max_payload: int) -> None:
        """Begin offering frames to `accept` (the socket is a terminal WebSocket now)."""
        self._accept = accept
        self._max_payload = min(MAX_FAST_PAYLOAD, max_payload) if max_payload > 0 else MAX_FAST_PAYLOAD

    def stop(self) -> None:
        """Offer no more frames (the terminal connection is over); forward everything."""
        self._accept = None

    # ------------------------------------------------------------------ asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        forward = self._split(data)
        if forward:
            self._handler.data_received(forward)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wake_writers(exc or ConnectionResetError("connection lost"))
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writers(None)
        self._handler.resume_writing()

    # ------------------------------------------------------------------ flow control
    async def writable(self) -> None:
        """Return once the transport takes writes again (its buffer drained below the low-water
        mark); at once if it is not paused. Raises ConnectionResetError if the connection is
        gone, so a waiting writer is never left hanging."""
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self._writing_paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._write_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._write_waiters:
                self._write_waiters.remove(waiter)

    def _wake_writers(self, exc: BaseException | None) -> None:
        waiters, self._write_waiters = self._write_waiters, []
        for waiter in waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    # ------------------------------------------------------------------ frames
    def _split(self, data: bytes) -> bytes:
        """The bytes of `data` to pass on, after taking out the frames the fast path consumed."""
        out = bytearray()
        view = memoryview(data)
        while view:
            if self._stream_left:
                take = min(self._stream_left, len(view))
                out += view[:take]
                self._stream_left -= take
                view = view[take:]
                continue
            if self._pending:
                self._pending += view
                view = memoryview(b"")
                chunk = memoryview(bytes(self._pending))
                self._pending.clear()
            else:
                chunk, view = view, memoryview(b"")
            used = self._frames(chunk, out)
            if used < len(chunk):
                rest = chunk[used:]
                if self._stream_left:
                    view = rest  # a large frame's body follows: stream it
                else:
                    self._pending += rest  # a small frame is incomplete: wait for the rest
        return bytes(out)

    def _frames(self, chunk: memoryview, out: bytearray) -> int:
        """Handle the whole frames at the start of `chunk`; returns how many bytes were used.

        Stops at an incomplete small frame, or after the header of a large one (whose body is
        then streamed)."""
        used = 0
        size = len(chunk)
        while size - used >= 2:
            first, second = chunk[used], chunk[used + 1]
            length = second & 0x7F
            header = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if second & 0x80 else 0)
            if size - used < header:
                break
            if length == 126:
                length = int.from_bytes(chunk[used + 2 : used + 4], "big")
            elif length == 127:
                length = int.from_bytes(chunk[used + 2 : used + 10], "big")
            streamed = length > self._max_payload
            end = used + header + (0 if streamed else length)
            if size < end:
                break
            fragmented_before = self._in_fragmented_message
            data_frame = first & 0x0F < 0x8
            if data_frame:
                self._in_fragmented_message = not first & 0x80
            if (
                not streamed
                and first == 0x81  # a final text frame with no reserved bits
                and second & 0x80  # masked, as every client frame must be
                and not fragmented_before
                and self._accept is not None
                and self._accept(_unmask(chunk[end - length - 4 : end - length], chunk[end - length : end]))
            ):
                used = end
                continue
            if data_frame and first & 0x80:
                self.forwarded_messages += 1
            out += chunk[used:end]
            used = end
            if streamed:
                self._stream_left = length
                break
        return used


def _unmask(key: memoryview, payload: memoryview) -> bytes:
    size = len(payload)
    if not size:
        return b""
    mask = (bytes(key) * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(size, "big")
