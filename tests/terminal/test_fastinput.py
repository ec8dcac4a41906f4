"""The keystroke fast path's frame splitting: whatever it does not consume reaches aiohttp byte
for byte and in order, however the stream is cut into reads. And the flow-control relay the
terminal connection's own frame writes wait on."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vm_agent.terminal.fastinput import MAX_FAST_PAYLOAD, InputFastPath


def frame(payload: bytes, opcode: int = 0x1, final: bool = True, masked: bool = True) -> bytes:
    size = len(payload)
    first = (0x80 if final else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return header + payload
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + body


class Handler:
    """Stands in for aiohttp's connection handler: records what it is given."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.calls: list[str] = []

    def data_received(self, data: bytes) -> None:
        self.received += data

    def pause_writing(self) -> None:
        self.calls.append("pause")

    def resume_writing(self) -> None:
        self.calls.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("lost")


class Transport:
    def __init__(self, protocol: Handler) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return False

    def get_protocol(self):
        return self.protocol

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol


# (frame bytes, payload the fast path should take, or None when it must be forwarded)
FRAMES = {
    "key": lambda: (frame(b"take:a"), b"take:a"),
    "refused": lambda: (frame(b"keep:resize"), None),
    "paste": lambda: (frame(b"take:" + b"p" * (MAX_FAST_PAYLOAD + 10)), None),
    "ping": lambda: (frame(b"hi", opcode=0x9), None),
    "binary": lambda: (frame(b"take:bin", opcode=0x2), None),
    "unmasked": lambda: (frame(b"take:x", masked=False), None),
    "fragmented": lambda: (frame(b"take:one", final=False) + frame(b"take:two", opcode=0x0), None),
    "empty": lambda: (frame(b""), None),
    "medium": lambda: (frame(b"take:" + b"m" * 300), b"take:" + b"m" * 300),
}


@settings(max_examples=300, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(sorted(FRAMES)), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=5000), max_size=30),
)
def test_consumed_frames_vanish_and_everything_else_passes_unchanged(kinds: list[str], cuts: list[int]) -> None:
    frames = [FRAMES[kind]() for kind in kinds]
    handler = Handler()
    transport = Transport(handler)
    fast = InputFastPath.install(transport)  # type: ignore[arg-type]
    assert fast is not None and transport.protocol is fast
    taken: list[bytes] = []

    def accept(payload: bytes) -> bool:
        if payload.startswith(b"take:"):
            taken.append(payload)
            return True
        return False

    fast.start(accept, 1 << 20)
    stream = b"".join(raw for raw, _ in frames)
    at = 0
    for cut in [*cuts, len(stream)]:
        fast.data_received(stream[at : at + cut])
        at += cut
        if at >= len(stream):
            break
    assert taken == [payload for _, payload in frames if payload is not None]
    assert bytes(handler.received) == b"".join(raw for raw, payload in frames if payload is None)
    # every forwarded message is counted (a fragmented one once), so the connection can tell
    # whether aiohttp still holds something the client sent earlier
    counted = sum(1 for kind, (_, payload) in zip(kinds, frames, strict=True) if payload is None and kind != "ping")
    assert fast.forwarded_messages == counted


def test_nothing_is_offered_before_start_or_after_stop() -> None:
    handler = Handler()
    transport = Transport(handler)
    fast = InputFastPath.install(transport)  # type: ignore[arg-type]
    assert fast is not None
    offered: list[bytes] = []
    key = frame(b"take:a")
    fast.data_received(key)
    fast.start(lambda payload: offered.append(payload) is None, 1 << 20)
    fast.data_received(key)
    fast.stop()
    fast.data_received(key)
    assert offered == [b"take:a"]
    assert bytes(handler.received) == key + key
    fast.uninstall()
    assert transport.protocol is handler


async def test_writers_wait_while_the_transport_is_paused_and_aiohttp_still_hears_of_it() -> None:
    handler = Handler()
    fast = InputFastPath.install(Transport(handler))  # type: ignore[arg-type]
    assert fast is not None
    await fast.writable()  # not paused: returns at once
    fast.pause_writing()
    first = asyncio.ensure_future(fast.writable())
    second = asyncio.ensure_future(fast.writable())
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    first.cancel()  # one writer giving up does not release or break the other
    await asyncio.sleep(0)
    assert first.cancelled() and not second.done()
    fast.resume_writing()
    await second
    assert handler.calls == ["pause", "resume"]


async def test_a_lost_connection_releases_waiting_writers_with_an_error() -> None:
    handler = Handler()
    fast = InputFastPath.install(Transport(handler))  # type: ignore[arg-type]
    assert fast is not None
    fast.pause_writing()
    waiting = asyncio.ensure_future(fast.writable())
    await asyncio.sleep(0)
    fast.connection_lost(None)
    with pytest.raises(ConnectionResetError):
        await waiting
    with pytest.raises(ConnectionResetError):
        await fast.writable()
    assert handler.calls == ["pause", "lost"]
