"""A session's output: the byte log, the modes in force at its oldest byte, and viewers.

Positions are byte counts since the session started, so a client that remembers the `next` of
the last chunk it drew can resume with exactly the bytes it missed. Each viewer (one per socket
attached to the session) reads at its own pace; the PTY reader only appends.

Text decoding is done per viewer, as a pure function of its position: a viewer only ever
hands out whole UTF-8 characters and advances its position to the end of the last whole one,
so `next` is always a character boundary and a resume from it decodes exactly as the live
stream did. A viewer starts either at a client-given offset (a previous `next`) or at a safe
boundary, so every viewer decodes consistently whatever its start.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from vm_agent.streams import ByteCursor, ByteLog
from vm_agent.terminal.screen import NEWLINE_SEARCH, ModeTracker, safe_start, strip_queries, utf8_complete

# Frames coalesce whatever is waiting, up to this many bytes of output.
FRAME_BYTES = 64 * 1024
# A PTY hands over a flood in reads of 1-4 KiB. When output is streaming (the previous frame
# went out moments ago and a sizeable piece is waiting), a viewer lets it accumulate this long
# before sending, so a flood goes out in large frames instead of thousands of small ones.
# Keystroke echo (a few bytes, after a pause) is never delayed.
COALESCE_DELAY = 0.002
_STREAMING_WINDOW = 0.004
_STREAMING_BYTES = 512


@dataclass(frozen=True, slots=True)
class Chunk:
    """Text for the bytes [offset, next) of the session, plus `gap` bytes skipped before it."""

    text: str
    offset: int
    next: int
    gap: int = 0


class TerminalOutput:
    """The bounded log of one session's output with enough state to replay it safely."""

    def __init__(self, capacity: int) -> None:
        self.log = ByteLog(capacity)
        # Modes in force at log.start: advanced over bytes as they are trimmed, so the modes at
        # any retained position can be computed by scanning only from log.start.
        self._modes_at_start = ModeTracker()

    @property
    def end(self) -> int:
        return self.log.end

    @property
    def closed(self) -> bool:
        return self.log.closed

    def append(self, data: bytes) -> None:
        log = self.log
        retained = log.end - log.start
        drop = retained + len(data) - log.capacity
        if drop > 0:
            if drop <= retained:
                trimmed = log.peek(log.start, log.start + drop)
            else:
                trimmed = log.peek(log.start, log.end) + data[: drop - retained]
            self._modes_at_start.feed(trimmed)
        log.append(data)

    def close(self) -> None:
        self.log.close()

    def safe_point(self) -> tuple[int, ModeTracker]:
        """The oldest position a replay can start from cleanly, and the modes in force there."""
        start = self.log.start
        modes = self._modes_at_start.copy()
        if start == 0:
            return 0, modes
        head = self.log.peek(start, start + NEWLINE_SEARCH)
        skip = safe_start(head)
        modes.feed(head[:skip])
        return start + skip, modes

    def viewer(self) -> Viewer:
        return Viewer(self)


class Viewer:
    """One socket's view of a session: a replay, then live chunks from where the replay ended."""

    def __init__(self, output: TerminalOutput) -> None:
        self._output = output
        self._cursor: ByteCursor = output.log.cursor(output.log.end)
        # Bytes up to here have been looked at; a held-back partial character sits below it.
        self._seen = self._cursor.position
        self._last_chunk_at = -1.0

    @property
    def position(self) -> int:
        return self._cursor.position

    def replay(self, offset: int | None = None) -> Chunk:
        """Everything retained from `offset` on (default: from the oldest safe position).

        With an offset that is still retained the bytes are exact; otherwise the replay starts
        at the oldest safe boundary, says how much was lost, and is prefixed with the modes in
        force there. Queries are always left out: these bytes were already answered once.
        """
        output = self._output
        log = output.log
        prefix = ""
        gap = 0
        if offset is not None and log.start <= offset <= log.end:
            start = offset
        else:
            start, modes = output.safe_point()
            if offset is not None and offset < start:
                gap = start - offset
            if gap or start > 0:
                prefix = modes.restore_sequence()
        data = log.peek(start, log.end)
        keep = utf8_complete(data) if not log.closed else len(data)
        self._cursor.position = start + keep
        self._seen = start + len(data)
        text = strip_queries(data[:keep]).decode("utf-8", "replace")
        return Chunk(prefix + text, start, start + keep, gap)

    def start_live(self, offset: int) -> None:
        """Follow live output from `offset` without a replay (a fresh session)."""
        self._cursor.position = offset
        self._seen = offset

    async def next(self) -> Chunk | None:
        """The next chunk of live output (waiting for it), or None once the session is over."""
        log = self._output.log
        while True:
            if log.end <= self._seen and not await log.wait_beyond(self._seen):
                return self._final()
            if self._gathering(log):
                await asyncio.sleep(COALESCE_DELAY)
            chunk = self._take()
            if chunk is not None:
                return chunk

    def take_ready(self) -> Chunk | None:
        """The next chunk if it can go out right now, without waiting: new output that is not
        part of a flood being gathered into bigger frames. None if there is none (`pending`
        then says whether `next` has something to do)."""
        log = self._output.log
        if log.end <= self._seen or self._gathering(log):
            return None
        return self._take()

    @property
    def pending(self) -> bool:
        """Output not looked at yet, or the end of the stream: `next` would not wait for more."""
        log = self._output.log
        return log.end > self._seen or log.closed

    def _gathering(self, log: ByteLog) -> bool:
        """A flood is under way: let it accumulate into a bigger frame for a moment."""
        waiting = log.end - self._cursor.position
        return (
            _STREAMING_BYTES <= waiting < FRAME_BYTES
            and not log.closed
            and time.monotonic() - self._last_chunk_at < _STREAMING_WINDOW
        )

    def _take(self) -> Chunk | None:
        """Whole characters from the cursor on (up to a frame); None if only part of one waits."""
        output = self._output
        log = output.log
        cursor = self._cursor
        piece = log.read(cursor.position, FRAME_BYTES)
        prefix = ""
        gap = 0
        if piece.gap:
            # This viewer fell behind what the log retains: skip to a clean boundary.
            start, modes = output.safe_point()
            gap = start - cursor.position
            prefix = modes.restore_sequence()
            piece = log.read(start, FRAME_BYTES)
        data = piece.data
        keep = utf8_complete(data)
        self._seen = piece.next
        cursor.position = piece.offset + keep
        if not keep and not gap:
            return None
        self._last_chunk_at = time.monotonic()
        whole = data[:keep]
        if gap:
            # Like a replay, this restarts in output that was drawn (and answered) long ago: a
            # query in it would make this viewer's terminal answer again, into the shell's input.
            whole = strip_queries(whole)
        text = whole.decode("utf-8", "replace") if keep else ""
        return Chunk(prefix + text, piece.offset, cursor.position, gap)

    def _final(self) -> Chunk | None:
        """At end of stream, flush an unfinished character (as U+FFFD) so nothing is withheld."""
        log = self._output.log
        if self._cursor.position >= log.end:
            return None
        piece = self._cursor.read_now(FRAME_BYTES)
        self._seen = piece.next
        return Chunk(piece.data.decode("utf-8", "replace"), piece.offset, piece.next, piece.gap)
