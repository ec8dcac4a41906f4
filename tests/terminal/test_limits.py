"""Bad input, limits and liveness: the socket answers clearly and the daemon stays healthy."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.terminal.conftest import marker, terminal_env


async def test_malformed_and_unknown_messages_get_errors_and_the_socket_stays_up(term_daemon, connect) -> None:
    client = await connect(term_daemon)
    await client.ws.send_str("not json")
    assert (await client.expect("error"))["data"]["error"] == "invalid_json"
    await client.ws.send_str("[1, 2]")
    assert (await client.expect("error"))["data"]["error"] == "invalid_message"
    await client.send("launch_missiles")
    assert (await client.expect("error"))["data"]["error"] == "unknown_type"
    await client.send("input", {"data": "ls\r"}, "nobody")
    error = await client.expect("error")
    assert error["data"]["error"] == "session_not_found" and error["sessionId"] == "nobody"
    await client.send("create_session", {"sessionId": "bad id!", "rows": 24, "cols": 80})
    assert (await client.expect("error"))["data"]["error"] == "invalid_session_id"
    await client.send("create_session", {"sessionId": "x" * 129})
    assert (await client.expect("error"))["data"]["error"] == "invalid_session_id"
    await client.send("create_session", {"sessionId": "ok", "workDir": 42})
    assert (await client.expect("error"))["data"]["error"] == "invalid_message"
    await client.send("create_session", {"sessionId": "nodir", "workDir": "/does/not/exist"})
    assert (await client.expect("error"))["data"]["error"] == "spawn_failed"
    await client.ws.send_bytes(b"\x00\x01")
    assert (await client.expect("error"))["data"]["error"] == "invalid_message"

    await client.create("ok")
    await client.send("create_session", {"sessionId": "ok", "rows": 24, "cols": 80})
    assert (await client.expect("error"))["data"]["error"] == "session_exists"
    await client.send("reattach_session", {"sessionId": "ok", "offset": -1})
    assert (await client.expect("error"))["data"]["error"] == "invalid_message"
    await client.send("input", {"data": 7}, "ok")
    assert (await client.expect("error"))["data"]["error"] == "invalid_message"
    # a keystroke with a malformed top-level sessionId is refused even when data names the session
    await client.ws.send_str(json.dumps({"type": "input", "sessionId": 5, "data": {"sessionId": "ok", "data": "x"}}))
    assert (await client.expect("error"))["data"]["error"] == "invalid_message"
    await client.send("resize", {"rows": "many", "cols": None}, "ok")  # falls back to 24x80
    cmd, want = marker("still-fine")
    await client.type("ok", cmd)
    await client.until_output("ok", want)
    await client.send("ping")
    await client.expect("pong")


async def test_session_limits_per_user_and_per_node(make_daemon, connect, tmp_path) -> None:
    daemon = await make_daemon(**terminal_env(tmp_path, PTY_MAX_SESSIONS_PER_USER="2", PTY_MAX_SESSIONS="3"))
    alice = await connect(daemon)
    await alice.create("a1")
    await alice.send("create_session", {"sessionId": "nodir", "workDir": "/does/not/exist"})
    assert (await alice.expect("error"))["data"]["error"] == "spawn_failed"  # holds no slot after
    await alice.create("a2")
    await alice.send("create_session", {"sessionId": "a3", "rows": 24, "cols": 80})
    refused = await alice.expect("error")
    assert refused["data"]["error"] == "session_limit"
    bob = await connect(daemon, token=daemon.token(user="bob"))
    await bob.create("b1")
    await bob.send("create_session", {"sessionId": "b2", "rows": 24, "cols": 80})
    assert (await bob.expect("error"))["data"]["error"] == "session_limit"  # node-wide limit
    await alice.send("close_session", {"sessionId": "a1"})
    await alice.expect("session_closed")
    await alice.create("a3")  # her slot came back
    await alice.send("close_session", {"sessionId": "a2"})
    await alice.expect("session_closed", sessionId="a2")
    await bob.create("b2")  # and the node's


async def test_oversized_message_closes_with_1009(term_daemon, connect) -> None:
    client = await connect(term_daemon)
    await client.ws.send_str(json.dumps({"type": "ping", "pad": "x" * 70_000}))
    message = await client.ws.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert message.data == 1009


async def test_message_flood_closes_with_1008(make_daemon, connect, tmp_path) -> None:
    daemon = await make_daemon(**terminal_env(tmp_path, TERMINAL_WS_MESSAGE_RATE="0.1", TERMINAL_WS_MESSAGE_BURST="10"))
    client = await connect(daemon)
    for _ in range(30):
        await client.send("ping")
    pongs = 0
    while True:
        message = await client.ws.receive(timeout=10)
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        pongs += 1
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1008
    assert pongs == 10  # the burst was served, then the flood was cut off


async def test_silent_peer_is_closed_and_a_live_one_is_kept(make_daemon, tmp_path) -> None:
    daemon = await make_daemon(
        **terminal_env(tmp_path, TERMINAL_WS_READ_TIMEOUT="1.5s", TERMINAL_WS_PING_INTERVAL="0.3s")
    )
    url = daemon.ws_url + "/terminal/ws/multi"
    async with daemon.client() as http:
        silent = await http.ws_connect(url, params={"token": daemon.token()}, autoping=False)
        live = await http.ws_connect(url, params={"token": daemon.token()})  # answers pings
        replies: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()

        async def keep_reading() -> None:  # a client only answers pings while it reads
            while True:
                await replies.put(await live.receive())

        reader = asyncio.create_task(keep_reading())
        pings = 0
        while True:
            message = await silent.receive(timeout=10)
            if message.type == aiohttp.WSMsgType.PING:
                pings += 1  # server pings keep coming, but we never answer
                continue
            break
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001
        assert pings >= 1
        # The live socket has been up for longer than the read timeout and still answers.
        await live.send_str('{"type":"ping"}')
        reply = await asyncio.wait_for(replies.get(), 5)
        assert json.loads(reply.data)["type"] == "pong"
        reader.cancel()
        await live.close()
