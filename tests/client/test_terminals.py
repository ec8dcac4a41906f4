"""Terminals through the library: create, type, resize, exit codes, and resume by byte offset."""

from __future__ import annotations

import asyncio
import re

import pytest

from vm_agent.client import ConnectionFailed, RemoteTerminal, TerminalError

from .conftest import client_for

TIMEOUT = 30


async def read_until(term: RemoteTerminal, needle: str, seen: list[str]) -> str:
    """Collect output until `needle` has appeared; returns everything collected so far."""
    async with asyncio.timeout(TIMEOUT):
        async for chunk in term.output():
            seen.append(chunk.data)
            if needle in "".join(seen):
                break
    return "".join(seen)


async def test_typed_command_output_and_exit_code(term_daemon):
    async with client_for(term_daemon, kind="user") as client:
        term = await client.open_terminal("t1", rows=30, cols=100)
        assert term.info.get("shell")
        seen: list[str] = []
        await term.send("stty size; printf '%s-%s\\n' ok done\r")
        assert "30 100" in await read_until(term, "ok-done", seen)
        await term.resize(40, 120)
        await term.send("stty size\r")
        await read_until(term, "40 120", seen)
        listed = await client.list_terminals()
        assert [s["sessionId"] for s in listed] == ["t1"]
        await term.send("exit 7\r")
        async with asyncio.timeout(TIMEOUT):
            async for _ in term.output():
                pass
        assert term.ended and term.exit_code == 7


async def test_attach_with_offset_replays_exactly_from_there(term_daemon):
    async with client_for(term_daemon, kind="user") as client:
        first = await client.open_terminal("t2")
        seen: list[str] = []
        await first.send("printf 'A%s\\n' 1\r")
        await read_until(first, "A1", seen)
        mark = first.next_offset
        await first.send("printf 'B%s\\n' 2\r")
        await read_until(first, "B2", seen)
        await first.detach()

        second = await client.attach_terminal("t2", offset=mark)
        replayed: list[str] = []
        text = await read_until(second, "B2", replayed)
        assert "A1" not in text  # nothing before the offset comes back
        await second.close()
        assert second.ended


async def test_attaching_to_an_unknown_session_is_a_clear_error(term_daemon):
    async with client_for(term_daemon, kind="user") as client:
        with pytest.raises(TerminalError, match="not found") as caught:
            await client.attach_terminal("nope")
    assert caught.value.code == "session_not_found"


async def test_output_survives_a_dropped_connection_without_repeats_or_holes(term_daemon, relay_to):
    relay = await relay_to(term_daemon)
    async with client_for(term_daemon, kind="user", url=relay.url) as client:
        term = await client.open_terminal("t3")
        seen: list[str] = []
        await term.send("for i in $(seq 1 60); do echo line-$i; sleep 0.02; done; printf 'E%s\\n' ND\r")
        await read_until(term, "line-5\r\n", seen)
        assert relay.drop() >= 1
        with pytest.raises(ConnectionFailed):
            async with asyncio.timeout(TIMEOUT):
                async for chunk in term.output():
                    seen.append(chunk.data)
        await term.reconnect()  # output kept flowing into the daemon's log meanwhile
        text = await read_until(term, "END", seen)
        await term.close()
    for i in range(1, 61):
        assert text.count(f"line-{i}\r\n") == 1, f"line-{i} seen {text.count(f'line-{i}')} times"
    assert term.lost_bytes == 0


def paste_of(size: int) -> str:
    """Numbered lines with non-ASCII characters (six bytes each once JSON-escaped) up to `size` bytes."""
    lines, total, i = [], 0, 0
    while total < size:
        line = f"{i:06d} {'€' * 20} {'x' * 50}\n"
        lines.append(line)
        total += len(line.encode())
        i += 1
    return "".join(lines)


async def paste_and_count(term: RemoteTerminal, text: str) -> int:
    """Paste `text` into `wc -c` running in the session; the byte count it printed."""
    seen: list[str] = []
    await term.send("stty -echo; echo READ''Y; wc -c\r")  # READY is in the output, not in the echo
    await read_until(term, "READY", seen)
    await term.send(text + "\x04")  # ^D at the start of a line: end of input for wc
    async with asyncio.timeout(TIMEOUT):
        async for chunk in term.output():
            seen.append(chunk.data)
            found = re.search(r"READY\r?\n\D*?(\d+)\r?\n", "".join(seen))
            if found:
                return int(found.group(1))
    raise AssertionError("the session ended before wc answered")


async def test_a_paste_far_over_the_daemons_message_limit_arrives_whole(term_daemon):
    paste = paste_of(300 * 1024)  # ~1 MB once JSON-escaped; the daemon accepts 64 KiB per message
    async with client_for(term_daemon, kind="user") as client:
        term = await client.open_terminal("paste")
        assert await paste_and_count(term, paste) == len(paste.encode())
        await term.close()


async def test_a_paste_is_paced_for_the_daemons_message_rate_limit(make_term_daemon):
    strict = await make_term_daemon(TERMINAL_WS_MESSAGE_RATE="20", TERMINAL_WS_MESSAGE_BURST="8")
    paste = paste_of(200 * 1024)  # dozens of frames: far more than a burst of 8
    async with client_for(strict, kind="user", terminal_message_rate=15, terminal_message_burst=4) as client:
        term = await client.open_terminal("paced")
        assert await paste_and_count(term, paste) == len(paste.encode())
        await term.close()


async def test_refused_attach_and_create_leave_no_connection_open(term_daemon, relay_to):
    relay = await relay_to(term_daemon)
    async with client_for(term_daemon, kind="user", url=relay.url) as client:
        taken = await client.open_terminal("taken")  # one socket, in use
        for i in range(5):
            with pytest.raises(TerminalError, match="not found"):
                await client.attach_terminal(f"missing-{i}")
            with pytest.raises(TerminalError, match="already exists"):
                await client.open_terminal("taken")
        # A coordinator that probes terminals must not pile up a TLS connection per refusal.
        async with asyncio.timeout(10):
            await relay.wait_open(1)
        await taken.close()
