"""Screen-safety helpers: what a replay's receiver would get wrong without them."""

from vm_agent.terminal.output import TerminalOutput
from vm_agent.terminal.screen import ModeTracker, safe_start, strip_queries, utf8_complete


def test_modes_split_across_reads_are_tracked() -> None:
    modes = ModeTracker()
    modes.feed(b"text\x1b[?10")
    modes.feed(b"49h\x1b[?25l more")
    assert modes.alt_screen and modes.cursor_hidden
    modes.feed(b"\x1b[?1000;1006h\x1b=\x1b[?2004h")
    assert modes.mouse == {1000, 1006} and modes.app_keypad and 2004 in modes.flags
    restore = modes.restore_sequence()
    assert "\x1b[?1049h" in restore and "\x1b[?25l" in restore and "\x1b[?1006h" in restore
    modes.feed(b"\x1bc")  # full reset
    assert modes.is_default


def test_default_modes_restore_a_reused_terminal_to_normal() -> None:
    restore = ModeTracker().restore_sequence()
    assert "\x1b[?1047l" in restore and "\x1b[?25h" in restore and "\x1b[?1000l" in restore
    assert "\x1b[?1049h" not in restore


def test_queries_are_left_out_but_drawing_is_kept() -> None:
    data = b"a\x1b[6nb\x1b[cc\x1b[>0cd\x1b]11;?\x07e\x1b[14tf\x1bP$qm\x1b\\g\x1b[1;31mred\x1b[0m\x05"
    assert strip_queries(data) == b"abcdefg\x1b[1;31mred\x1b[0m"


def test_safe_start_prefers_a_nearby_line_start() -> None:
    assert safe_start(b"tail of line\nnext line") == len(b"tail of line\n")


def test_safe_start_skips_partial_characters_and_sequences() -> None:
    assert safe_start(b"\x82\xacabc") == 2  # rest of a euro sign
    assert safe_start(b"49;1Hxyz") == 5  # rest of CSI 49;1H
    assert safe_start(b"plain") == 0


def test_utf8_complete_holds_back_only_unfinished_characters() -> None:
    euro = "€".encode()
    assert utf8_complete(b"ab" + euro[:2]) == 2
    assert utf8_complete(b"ab" + euro) == 5
    assert utf8_complete(b"ab\xff") == 3  # invalid bytes are not held back


def test_replay_after_trimming_restores_modes_from_trimmed_bytes() -> None:
    output = TerminalOutput(capacity=1000)
    output.append(b"\x1b[?1049h\x1b[?1h")  # vim-like start, then enough to trim it away
    for i in range(100):
        output.append(f"line {i} é\r\n".encode())
    assert output.log.start > 0
    viewer = output.viewer()
    chunk = viewer.replay(0)
    assert chunk.gap == chunk.offset > 0
    assert chunk.text.startswith("\x1b[?1049h")
    assert "\x1b[?1h" in chunk.text
    body = chunk.text.split("\x1b>", 1)[1]
    assert body.split("\x1b[?1016l", 1)[1].startswith("line ")
    assert "\ufffd" not in chunk.text


def test_a_viewer_that_fell_behind_gets_no_old_queries_after_its_gap() -> None:
    """Its terminal would answer them again, and the answers would reach the shell as typing."""
    output = TerminalOutput(capacity=1000)
    viewer = output.viewer()
    viewer.start_live(0)
    for i in range(200):
        output.append(f"line {i}\r\n".encode() + (b"ask\x1b[6n\x1b[c\r\n" if i % 5 == 0 else b""))
    assert output.log.start > 0
    chunk = viewer.take_ready()
    assert chunk is not None and chunk.gap > 0
    assert "line 199" in chunk.text
    assert "\x1b[6n" not in chunk.text and "\x1b[c" not in chunk.text
    output.append(b"live\x1b[6n")  # a query in live output is the program's, and goes through
    live = viewer.take_ready()
    assert live is not None and live.text == "live\x1b[6n"
