"""Making replayed terminal output safe for the screen that receives it, without an emulator.

Replaying raw PTY bytes from an arbitrary position goes wrong in three ways, each handled here:
- the start can fall inside a UTF-8 character or an escape sequence (→ `safe_start`);
- old *queries* (device attributes, cursor position report, colour queries...) make the
  client's terminal answer again, and the answers arrive at the program as typed input
  (→ `strip_queries`);
- modes switched on before the start (alternate screen, hidden cursor, application keys,
  bracketed paste, mouse reporting) are missing, so vim or an agent's TUI draws into the wrong
  screen and keys arrive in the wrong encoding (→ `ModeTracker.restore_sequence`).

Mode tracking only looks at the few sequences that switch these modes, found with a C-speed
search for ESC, so it costs next to nothing on plain output.
"""

from __future__ import annotations

import re

# DEC private mode set/reset (CSI ? Pm h|l), keypad application/normal (ESC = / ESC >), full reset.
_MODE_SEQ = re.compile(rb"\x1b(?:\[\?([0-9;]*)([hl])|([=>c]))")
# What an unfinished mode sequence at the end of a chunk can look like (kept for the next chunk).
_PARTIAL_MODE = re.compile(rb"\x1b(?:\[(?:\?[0-9;]*)?)?")
_PARTIAL_KEEP = 32

_ALT_SCREEN = frozenset({47, 1047, 1049})
_MOUSE = (9, 1000, 1001, 1002, 1003, 1005, 1006, 1015, 1016)
# Boolean DEC modes restored as they are: app cursor keys, focus events, bracketed paste.
_FLAGS = (1, 1004, 2004)
_TRACKED = frozenset((*_ALT_SCREEN, 25, 66, *_MOUSE, *_FLAGS))


class ModeTracker:
    """The terminal modes in force after the bytes fed so far."""

    __slots__ = ("_tail", "alt_screen", "app_keypad", "cursor_hidden", "flags", "mouse")

    def __init__(self) -> None:
        self._reset()
        self._tail = b""

    def _reset(self) -> None:
        self.alt_screen = False
        self.cursor_hidden = False
        self.app_keypad = False
        self.flags: set[int] = set()
        self.mouse: set[int] = set()

    def copy(self) -> ModeTracker:
        other = ModeTracker()
        other.alt_screen = self.alt_screen
        other.cursor_hidden = self.cursor_hidden
        other.app_keypad = self.app_keypad
        other.flags = set(self.flags)
        other.mouse = set(self.mouse)
        other._tail = self._tail
        return other

    def feed(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
            self._tail = b""
        if b"\x1b" not in data:
            return
        last_end = 0
        for match in _MODE_SEQ.finditer(data):
            last_end = match.end()
            params, action, single = match.groups()
            if single is not None:
                if single == b"=":
                    self.app_keypad = True
                elif single == b">":
                    self.app_keypad = False
                else:
                    self._reset()  # RIS: full reset
                continue
            on = action == b"h"
            for part in params.split(b";"):
                if part.isdigit():
                    self._set(int(part), on)
        last_esc = data.rfind(b"\x1b")
        if last_esc >= last_end and len(data) - last_esc <= _PARTIAL_KEEP:
            if _PARTIAL_MODE.fullmatch(data, last_esc):
                self._tail = data[last_esc:]

    def _set(self, mode: int, on: bool) -> None:
        if mode not in _TRACKED:
            return
        if mode in _ALT_SCREEN:
            self.alt_screen = on
        elif mode == 25:
            self.cursor_hidden = not on
        elif mode == 66:
            self.app_keypad = on
        elif mode in _FLAGS:
            (self.flags.add if on else self.flags.discard)(mode)
        else:
            (self.mouse.add if on else self.mouse.discard)(mode)

    @property
    def is_default(self) -> bool:
        return not (self.alt_screen or self.cursor_hidden or self.app_keypad or self.flags or self.mouse)

    def restore_sequence(self) -> str:
        """Escape sequences that put a terminal (fresh or reused) into exactly these modes.

        Every tracked mode is stated explicitly, because a reconnecting client usually keeps
        its terminal and may still be in the modes of what it saw before. Leaving the
        alternate screen uses 1047 rather than 1049 so no stale saved cursor is restored.
        """
        parts = ["\x1b[?1049h" if self.alt_screen else "\x1b[?1047l"]
        parts.append("\x1b[?25l" if self.cursor_hidden else "\x1b[?25h")
        parts.append("\x1b=" if self.app_keypad else "\x1b>")
        for mode in _FLAGS:
            parts.append(f"\x1b[?{mode}{'h' if mode in self.flags else 'l'}")
        parts.extend(f"\x1b[?{mode}l" for mode in _MOUSE if mode not in self.mouse)
        parts.extend(f"\x1b[?{mode}h" for mode in _MOUSE if mode in self.mouse)
        return "".join(parts)


# Sequences that make a terminal reply (the reply would be typed into the program on replay).
_QUERIES = re.compile(
    rb"\x1b\[[>=]?[0-9]*c"  # device attributes DA1/DA2/DA3
    rb"|\x1b\[\??[0-9;]*n"  # device status reports: status, cursor position, colour scheme...
    rb"|\x1b\[\??[0-9;]*\$p"  # DECRQM: request mode
    rb"|\x1b\[>[0-9;]*q"  # XTVERSION
    rb"|\x1b\[\?u"  # keyboard protocol flags query
    rb"|\x1b\[(?:1[1345689]|2[01])(?:;[0-9]*)*t"  # window reports (size, position, title)
    rb"|\x1b\[[01]?x"  # DECREQTPARM
    rb"|\x1bZ"  # DECID
    rb"|\x1b\][0-9]+(?:;[^\x07\x1b]*)?;\?(?:\x07|\x1b\\)"  # OSC colour / clipboard queries (…;?)
    rb"|\x1bP[$+]q[^\x07\x1b]*(?:\x07|\x1b\\)"  # DECRQSS, XTGETTCAP
    rb"|\x05"  # ENQ (answerback)
)


def strip_queries(data: bytes) -> bytes:
    if b"\x1b" not in data and b"\x05" not in data:
        return data
    return _QUERIES.sub(b"", data)


# How far past a trimmed start we look for a line start before settling for a nearer boundary.
NEWLINE_SEARCH = 4096
# The tail of an escape sequence whose start was trimmed: CSI parameters then a final byte.
_CSI_TAIL = re.compile(rb"\[?[0-9;:?<>=]+[ -/]*[@-~]")


def safe_start(head: bytes) -> int:
    """How many bytes to skip at the start of `head` (bytes that follow a cut) so that the
    rest begins on a character and escape-sequence boundary; after a newline when one is near."""
    newline = head.find(b"\n", 0, NEWLINE_SEARCH)
    if newline >= 0:
        return newline + 1
    skip = 0
    while skip < min(3, len(head)) and 0x80 <= head[skip] <= 0xBF:
        skip += 1
    match = _CSI_TAIL.match(head, skip)
    return match.end() if match else skip


def utf8_complete(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a UTF-8 character.

    Only a trailing sequence that could still become valid is held back; invalid bytes are
    left in (they decode to U+FFFD) so a stream of garbage never stalls.
    """
    size = len(data)
    for back in range(1, min(4, size) + 1):
        byte = data[size - back]
        if byte < 0x80:
            return size
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4 if byte < 0xF8 else 1
            return size - back if need > back else size
    return size
