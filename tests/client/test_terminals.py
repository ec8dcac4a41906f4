"""Terminals through the library: create, type, resize, exit codes, and resume by byte offset."""

from __future__ import annotations

import asyncio

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
