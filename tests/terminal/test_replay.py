"""Reattaching when the log no longer holds what the client asks for, and full-screen programs."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.terminal.conftest import raw_client, terminal_env, until, ws_frame
from vm_agent import appkeys
from vm_agent.terminal.ws import TERMINAL_SOCKETS

SMALL_LOG = "65536"


async def test_overwritten_offset_gives_gap_and_safe_start(make_daemon, connect, tmp_path) -> None:
    daemon = await make_daemon(**terminal_env(tmp_path, PTY_OUTPUT_BUFFER_SIZE=SMALL_LOG))
    done = tmp_path / "done"
    client = await connect(daemon)
    await client.create("g")
    # ~300 KB of lines with multibyte characters, far more than the 64 KiB log keeps.
    await client.type(
        "g", f"p=$(printf '%0.sx' $(seq 80)); for i in $(seq 3000); do echo \"line-$i é€ $p\"; done; touch {done}\r"
    )
    await until(done.exists, timeout=60)
    await client.close()

    again = await connect(daemon)
    await again.send("reattach_session", {"sessionId": "g", "rows": 24, "cols": 80, "offset": 0})
    await again.expect("session_reattached", sessionId="g")
    scrollback = (await again.expect("scrollback"))["data"]
    assert scrollback["offset"] > 0
    assert scrollback["gap"] == scrollback["offset"]  # asked for 0: everything before was lost
    assert scrollback["next"] - scrollback["offset"] <= 65536
    text = scrollback["data"]
    assert "\ufffd" not in text
    # Modes prefix (all defaults here), then the replay starts at the beginning of a line.
    body = text.split("\x1b[?1016l", 1)[1]
    assert body.startswith("line-")
    assert "line-3000 é€" in text


async def test_replay_inside_alt_screen_restores_modes_and_drops_queries(make_daemon, connect, tmp_path) -> None:
    daemon = await make_daemon(**terminal_env(tmp_path, PTY_OUTPUT_BUFFER_SIZE=SMALL_LOG))
    done = tmp_path / "done"
    client = await connect(daemon)
    await client.create("tui")
    # A full-screen program: alternate screen, hidden cursor, app cursor keys, bracketed paste
    # and SGR mouse, then lots of redraws (which push the mode switches out of the log) with a
    # cursor-position query and a device-attributes query among them.
    await client.type(
        "tui",
        "printf '\\033[?1049h\\033[?25l\\033[?1h\\033=\\033[?2004h\\033[?1000;1006h'; "
        "for i in $(seq 4000); do printf '\\033[H\\033[2Jframe %s ok\\r\\n' $i; done; "
        f"printf 'q1\\033[6nq2\\033[cq3\\n'; touch {done}; sleep 30\r",
    )
    await until(done.exists, timeout=60)
    await client.until_output("tui", "q3")
    await client.close()

    again = await connect(daemon)
    await again.send("reattach_session", {"sessionId": "tui", "rows": 24, "cols": 80})
    await again.expect("session_reattached", sessionId="tui")
    scrollback = (await again.expect("scrollback"))["data"]
    text = scrollback["data"]
    assert "gap" not in scrollback  # no offset asked: the retained buffer is the whole answer
    assert scrollback["offset"] > 0
    prefix = text[: text.index("frame")]
    for mode in ("\x1b[?1049h", "\x1b[?25l", "\x1b[?1h", "\x1b=", "\x1b[?2004h", "\x1b[?1000h", "\x1b[?1006h"):
        assert mode in prefix
    assert "q1q2q3" in text  # the queries were left out
    assert "\x1b[6n" not in text and "\x1b[c" not in text


@pytest.mark.skipif(shutil.which("vim") is None, reason="vim is not installed")
async def test_reattach_inside_vim_switches_to_the_alternate_screen(term_daemon, connect) -> None:
    client = await connect(term_daemon)
    await client.create("vim")
    await client.type("vim", "vim -u NONE -N -c 'set t_ti=\\e[?1049h t_te=\\e[?1049l' notes.txt\r")
    await client.until_output("vim", "[New")
    await client.close()

    again = await connect(term_daemon)
    await again.send("reattach_session", {"sessionId": "vim", "rows": 24, "cols": 80})
    scrollback = (await again.expect("scrollback"))["data"]["data"]
    # the whole log is retained here, so the switch is replayed as the program sent it
    assert "\x1b[?1049h" in scrollback
    assert "\x1b[6n" not in scrollback and "\x1b]11;?" not in scrollback  # vim's queries
    assert "[New" in scrollback


async def _stalled_client(daemon, first_message: str) -> asyncio.StreamWriter:
    """A WebSocket client that sends one message and then never reads (small receive buffer)."""
    _, writer = await raw_client(daemon, receive_buffer=4096)
    writer.write(ws_frame(first_message))
    await writer.drain()
    return writer


async def test_a_socket_that_stops_reading_holds_back_neither_program_nor_others(
    term_daemon, connect, tmp_path
) -> None:
    done = tmp_path / "done"
    watcher = await connect(term_daemon)
    await watcher.create("flood")
    stalled = await _stalled_client(
        term_daemon, '{"type":"reattach_session","data":{"sessionId":"flood","rows":24,"cols":80}}'
    )
    # 6 MB of output: far beyond every socket and kernel buffer of the stalled reader.
    await watcher.type("flood", f"head -c 4500000 /dev/zero | base64 -w 100; touch {done}; echo E''ND\r")
    await until(done.exists, timeout=60)  # the program was never blocked
    text = await watcher.until_output("flood", "\nEND", timeout=60)  # the live watcher got it all
    assert text.count("A" * 100) >= 59000
    assert "gap" not in str([m["data"].keys() for m in watcher.messages if m["type"] == "output"])
    # The daemon stopped writing to the stalled socket once its buffer was full, instead of
    # queueing the whole flood for it.
    backlogs = [connection.write_backlog for connection in term_daemon.app[TERMINAL_SOCKETS]]
    assert len(backlogs) == 2 and max(backlogs) < 1024 * 1024, backlogs
    stalled.close()


async def test_a_peer_that_sends_but_never_reads_is_dropped_and_the_session_lives_on(
    make_daemon, connect, tmp_path
) -> None:
    """A socket whose output has made no progress for the read timeout is aborted even though
    its peer keeps talking (pings), so a wedged client never pins a sender; the program keeps
    running and the client can come back and resume."""
    daemon = await make_daemon(**terminal_env(tmp_path, TERMINAL_WS_READ_TIMEOUT="1s", TERMINAL_WS_PING_INTERVAL="0"))
    owner = await connect(daemon)
    await owner.create("wedge")
    await owner.type("wedge", "yes wedged\r")  # output without end: buffers fill, sends stall
    await owner.close()
    session = daemon.app[appkeys.TERMINALS].get("host", "wedge", "user-1")
    stalled = await _stalled_client(
        daemon, '{"type":"reattach_session","data":{"sessionId":"wedge","rows":24,"cols":80}}'
    )
    await until(lambda: session.viewers == 1)

    async def keep_talking() -> None:
        while True:
            stalled.write(ws_frame('{"type":"ping"}'))
            await stalled.drain()
            await asyncio.sleep(0.1)  # a client's own pace, not a synchronisation

    talker = asyncio.create_task(keep_talking())
    try:
        await until(lambda: session.viewers == 0, timeout=15)
    finally:
        talker.cancel()
        stalled.close()
    assert session.running
    again = await connect(daemon)
    await again.send("reattach_session", {"sessionId": "wedge", "rows": 24, "cols": 80})
    await again.type("wedge", "\x03")
    await again.type("wedge", "echo back$((1+1))\r")
    await again.until_output("wedge", "back2", timeout=30)
