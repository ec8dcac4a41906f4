"""Agent messages as WebSocket frames, written straight to the viewer's transport.

Why frames by hand (vm_agent.wsframe): over TLS every `ws.send_str` is its own TLS record and
send() syscall, which capped a viewer at ~15,000 messages/s; a batch of hundreds of frames in
one write costs about as much as one. Frames stay one JSON message each, so clients see no
difference.

Why shared: every viewer of a session sends the same messages, so a session with several
viewers frames each message once (`SharedFrames`) and each viewer copies out the byte range
of its batch, whatever batch boundaries its own pace gave it.
"""

from __future__ import annotations

import bisect

from vm_agent.streams import Entry
from vm_agent.wsframe import text_frame_header, text_frames


class SharedFrames:
    """A session's most recent messages, framed, in one buffer addressed by seq.

    Holds about `capacity` bytes (plus the batch being framed); a batch older than what it
    holds (a late viewer replaying history) is framed on its own without disturbing it.
    Single-threaded by construction: only viewer tasks on the event loop call `frames`."""

    def __init__(self, capacity: int = 1024 * 1024) -> None:
        self.capacity = capacity
        self._data = bytearray()
        self._starts: list[int] = []  # absolute offset of the frame of seq `_first + i`
        self._first = 0
        self._base = 0  # absolute offset of _data[0]

    def frames(self, entries: list[Entry[bytes]]) -> bytes:
        """`entries` (consecutive seqs, as a log read returns them) as frames."""
        lo, hi = entries[0].seq, entries[-1].seq
        starts = self._starts
        following = self._first + len(starts)  # the next seq this buffer would take
        if lo < self._first or hi - lo + 1 != len(entries):
            return text_frames([entry.item for entry in entries])
        if lo > following:
            self._reset(lo)  # a jump ahead (nobody read for a while): start over here
            starts, following = self._starts, lo
        if hi >= following:
            self._append(entries[following - lo :])
        base = self._base
        start = starts[lo - self._first] - base
        end_index = hi + 1 - self._first
        stop = (starts[end_index] - base) if end_index < len(starts) else len(self._data)
        with memoryview(self._data) as view:
            out = bytes(view[start:stop])
        if len(self._data) > self.capacity:
            self._trim()
        return out

    def _append(self, entries: list[Entry[bytes]]) -> None:
        data, starts = self._data, self._starts
        offset = self._base + len(data)
        for entry in entries:
            payload = entry.item
            header = text_frame_header(len(payload))
            starts.append(offset)
            data += header
            data += payload
            offset += len(header) + len(payload)

    def _trim(self) -> None:
        """Drop the older half (by bytes), keeping whole frames."""
        keep_from = self._base + len(self._data) // 2
        index = min(bisect.bisect_left(self._starts, keep_from), len(self._starts) - 1)
        cut = self._starts[index] - self._base
        del self._data[:cut]
        del self._starts[:index]
        self._base += cut
        self._first += index

    def _reset(self, first: int) -> None:
        self._data.clear()
        self._starts.clear()
        self._first = first
        self._base = 0
