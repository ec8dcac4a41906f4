"""Server-to-client WebSocket text frames, built by hand for writing straight to a transport.

Why by hand: going through the WebSocket writer costs each message its own TLS record, send()
call and a task await. Streams that send many messages (agent updates) or need the lowest
latency (a keystroke's echo, written from the PTY reader's callback) write ready-made frames
instead. Frames are unmasked and unfragmented, as a server's must be, and never compressed
(uncompressed frames are valid even when permessage-deflate was negotiated).
"""

from __future__ import annotations

import struct

_SHORT_HEADERS = [bytes((0x81, size)) for size in range(126)]


def text_frame_header(size: int) -> bytes:
    """The header of a text frame carrying `size` bytes."""
    if size < 126:
        return _SHORT_HEADERS[size]
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size)
    return struct.pack("!BBQ", 0x81, 127, size)


def text_frame(payload: bytes) -> bytes:
    return text_frame_header(len(payload)) + payload


def text_frames(payloads: list[bytes]) -> bytes:
    """Text frames of `payloads`, concatenated. (Agent updates are framed here by the
    thousand per second: the common short header is looked up without a call.)"""
    parts: list[bytes] = []
    append, short = parts.append, _SHORT_HEADERS
    for payload in payloads:
        size = len(payload)
        append(short[size] if size < 126 else text_frame_header(size))
        append(payload)
    return b"".join(parts)
