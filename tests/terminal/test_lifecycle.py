"""Sessions starting and ending: single-socket terminals, orphans, shutdown, and no leftovers."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.terminal.conftest import (
    TIMEOUT,
    children,
    fds_open,
    marker,
    pid_alive,
    raw_client,
    read_text_frame,
    shell_pid,
    terminal_env,
    until,
    ws_frame,
)
from vm_agent import appkeys


async def test_single_socket_terminal(term_daemon, connect) -> None:
    client = await connect(term_daemon, path="/terminal/ws", rows="30", cols="100")
    hello = await client.expect("session")
    session_id = hello["data"]["sessionId"]
    await client.send("input", {"data": "stty size | sed 's/ /x/'\r"})
    await client.until_output(session_id, "30x100")
    await client.send("ping")
    await client.expect("pong")
    await client.send("create_session", {"sessionId": "nope"})  # not on this endpoint
    assert (await client.expect("error"))["data"]["error"] == "unknown_type"
    await client.send("input", {"data": "exit 3\r"})
    closed = await client.expect("session_closed")
    assert closed["data"] == {"sessionId": session_id, "reason": "process_exit", "exitCode": 3}
    final = await client.ws.receive(timeout=10)
    assert final.type == aiohttp.WSMsgType.CLOSE and final.data == 1000


async def test_single_socket_terminal_ends_with_its_socket(term_daemon, connect) -> None:
    client = await connect(term_daemon, path="/terminal/ws")
    session_id = (await client.expect("session"))["data"]["sessionId"]
    pid = await shell_pid(client, session_id)
    await client.ws.close()
    await until(lambda: not pid_alive(pid))
    assert term_daemon.app[appkeys.TERMINALS].session_count() == 0


async def test_disconnected_session_keeps_running_by_default(term_daemon, connect) -> None:
    first = await connect(term_daemon)
    await first.create("keep")
    pid = await shell_pid(first, "keep")
    await first.close()
    again = await connect(term_daemon)
    await again.send("list_sessions")
    sessions = (await again.expect("session_list"))["data"]["sessions"]
    assert [s["sessionId"] for s in sessions] == ["keep"]
    assert pid_alive(pid)


async def test_orphan_is_closed_after_the_grace_period(make_daemon, connect, tmp_path) -> None:
    daemon = await make_daemon(**terminal_env(tmp_path, PTY_ORPHAN_GRACE_PERIOD="0.3s"))
    client = await connect(daemon)
    await client.create("brief")
    pid = await shell_pid(client, "brief")
    await client.close()
    await until(lambda: not pid_alive(pid))
    assert daemon.app[appkeys.TERMINALS].session_count() == 0


async def test_a_session_reattached_twice_at_once_still_becomes_an_orphan(make_daemon, connect, tmp_path) -> None:
    """Every socket counts itself out when it goes, even one whose sender never got to run."""
    daemon = await make_daemon(**terminal_env(tmp_path, PTY_ORPHAN_GRACE_PERIOD="0.3s"))
    first = await connect(daemon)
    await first.create("twice")
    pid = await shell_pid(first, "twice")
    reader, writer = await raw_client(daemon)
    message = {"type": "reattach_session", "data": {"sessionId": "twice", "rows": 24, "cols": 80}}
    reattach = ws_frame(json.dumps(message))
    writer.write(reattach + reattach)  # the second arrives before the first one's sender has run
    answers = 0
    async with asyncio.timeout(TIMEOUT):
        while answers < 2:
            answers += (await read_text_frame(reader))["type"] == "session_reattached"
    writer.close()
    await first.close()
    await until(lambda: not pid_alive(pid))
    assert daemon.app[appkeys.TERMINALS].session_count() == 0


async def test_exit_while_nobody_watches_is_reported_on_reattach(term_daemon, connect) -> None:
    first = await connect(term_daemon)
    await first.create("job")
    await first.type("job", "sleep 0.3; echo fin''ished; exit 5\r")
    await first.until_output("job", "sleep")
    await first.close()
    manager = term_daemon.app[appkeys.TERMINALS]
    session = manager.get("host", "job", "user-1")
    await until(lambda: not session.running)
    again = await connect(term_daemon)
    await again.send("list_sessions")
    listed = (await again.expect("session_list"))["data"]["sessions"]
    assert [(s["status"], s.get("exitCode")) for s in listed] == [("exited", 5)]
    await again.send("reattach_session", {"sessionId": "job", "rows": 24, "cols": 80})
    scrollback = await again.expect("scrollback")
    assert "finished" in scrollback["data"]["data"]
    closed = await again.expect("session_closed")
    assert closed["data"]["exitCode"] == 5
    await until(lambda: manager.session_count() == 0)


async def test_shutdown_says_going_away_and_kills_every_shell(make_daemon, connect, tmp_path) -> None:
    daemon = await make_daemon(**terminal_env(tmp_path))
    client = await connect(daemon)
    await client.create("s")
    pid = await shell_pid(client, "s")
    stopping = asyncio.create_task(daemon.stop())
    message = await client.ws.receive(timeout=10)
    while message.type == aiohttp.WSMsgType.TEXT:  # output still in flight (e.g. the next prompt)
        message = await client.ws.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001
    await stopping
    assert not pid_alive(pid)


async def test_closing_a_workspace_closes_its_sessions(term_daemon, connect) -> None:
    client = await connect(term_daemon)
    await client.create("w1")
    await client.create("w2")
    manager = term_daemon.app[appkeys.TERMINALS]
    assert await manager.close_workspace("host") == 2
    closed = {(await client.expect("session_closed"))["data"]["reason"] for _ in range(2)}
    assert closed == {"workspace_stopped"}
    assert manager.session_count() == 0


async def test_200_open_close_cycles_leave_no_fds_processes_or_zombies(term_daemon, connect) -> None:
    clients = [await connect(term_daemon) for _ in range(4)]
    warm = clients[0]
    await warm.create("warm")
    await warm.send("close_session", {"sessionId": "warm"})
    await warm.expect("session_closed")
    fds_before = fds_open()

    async def cycle(client, worker: int) -> None:
        for i in range(50):
            sid = f"c{worker}-{i}"
            await client.create(sid)
            await client.send("close_session", {"sessionId": sid})
            await client.expect("session_closed", sessionId=sid)

    await asyncio.gather(*(cycle(c, n) for n, c in enumerate(clients)))
    assert term_daemon.app[appkeys.TERMINALS].session_count() == 0
    assert fds_open() <= fds_before + 2
    # Nothing of ours is left: no shell, and no zombie.
    leftovers = [(pid, state) for pid, state in children() if _cmdline(pid).startswith("/bin/bash")]
    assert leftovers == []
    assert [pid for pid, state in children() if state == "Z" and "bash" in _cmdline(pid) + _comm(pid)] == []


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


async def test_c_locale_shell_output_stays_utf8(make_daemon, connect, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LANG", "C")
    monkeypatch.setenv("LC_ALL", "C")
    daemon = await make_daemon(**terminal_env(tmp_path))
    client = await connect(daemon)
    await client.create("c")
    await client.type("c", "locale | grep LC_ALL; printf 'caf\\xc3\\xa9 \\xe2\\x82\\xac 5\\n'\r")
    text = await client.until_output("c", "café € 5")
    assert "LC_ALL=C" in text
    cmd, want = marker("ascii-ok")
    await client.type("c", cmd)
    await client.until_output("c", want)
    assert json.dumps(text)  # nothing undecodable reached the client
