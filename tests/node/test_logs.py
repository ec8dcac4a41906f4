"""GET /logs paging and filters, and /logs/stream backlog + live records."""

from __future__ import annotations

import asyncio
import ssl
import time

import aiohttp
import structlog

from tests.stalled import open_stalled_websocket, stops_cleanly, until_send_queue_full
from vm_agent import wsutil
from vm_agent.logs import get_ring


def emit(count: int, level: str = "info", prefix: str = "test_record") -> None:
    log = structlog.get_logger("tests")
    for n in range(count):
        getattr(log, level)(prefix, n=n)


async def get_logs(daemon, **params) -> tuple[int, dict]:
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/logs", params=params, headers=daemon.auth_headers()) as r:
            return r.status, await r.json()


async def test_paging_walks_back_through_history_without_duplicates(daemon):
    emit(25, prefix="paging_record")
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": "10", **({"cursor": cursor} if cursor else {})}
        status, body = await get_logs(daemon, **params)
        assert status == 200
        page = [e for e in body["entries"] if e["message"] == "paging_record"]
        seen = [e["fields"]["n"] for e in page] + seen
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == list(range(25))


async def test_newest_entries_come_first_page_in_chronological_order(daemon):
    emit(5, prefix="order_record")
    _, body = await get_logs(daemon, limit="3")
    assert [e["fields"]["n"] for e in body["entries"]] == [2, 3, 4]
    assert body["entries"][0]["timestamp"] <= body["entries"][-1]["timestamp"]
    assert set(body["entries"][0]) >= {"timestamp", "level", "message", "fields"}


async def test_level_filter_keeps_that_level_and_above(daemon):
    emit(3, "info", "level_info")
    emit(2, "warning", "level_warn")
    emit(1, "error", "level_error")
    _, body = await get_logs(daemon, level="warn", limit="1000")
    messages = {e["message"] for e in body["entries"]}
    assert {"level_warn", "level_error"} <= messages
    assert "level_info" not in messages
    assert {e["level"] for e in body["entries"]} <= {"warn", "error"}


async def test_since_filter(daemon):
    emit(2, prefix="before_since")
    _, body = await get_logs(daemon, limit="1")
    since = body["entries"][-1]["timestamp"]
    emit(2, prefix="after_since")
    _, body = await get_logs(daemon, since=since, limit="1000")
    assert "after_since" in {e["message"] for e in body["entries"]}
    assert all(e["timestamp"] >= since for e in body["entries"])
    _, body = await get_logs(daemon, since="2999-01-01T00:00:00Z")
    assert body["entries"] == []


async def test_bad_parameters_are_400_with_a_reason(daemon):
    for params in (
        {"limit": "0"},
        {"limit": "100000"},
        {"limit": "ten"},
        {"level": "loud"},
        {"since": "yesterday-ish"},
        {"since": "1e20"},
        {"since": "nan"},
        {"cursor": "not-a-cursor"},
    ):
        status, body = await get_logs(daemon, **params)
        assert status == 400, params
        assert body["error"] == "invalid_parameter"
        assert body["message"]


async def test_logs_need_a_management_token(daemon):
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/logs", headers=daemon.auth_headers("user")) as r:
            assert r.status == 403


async def test_stream_sends_backlog_then_live_records(make_daemon):
    daemon = await make_daemon(LOG_STREAM_BUFFER_SIZE="5")
    emit(10, prefix="backlog_record")
    async with daemon.client() as http:
        async with http.ws_connect(f"{daemon.ws_url}/logs/stream", headers=daemon.auth_headers()) as ws:
            backlog = [await ws.receive_json(timeout=5) for _ in range(5)]
            numbers = [e["fields"]["n"] for e in backlog if e["message"] == "backlog_record"]
            assert numbers and numbers == list(range(10 - len(numbers), 10))  # only the newest 5 records
            emit(1, prefix="live_record")
            live = await ws.receive_json(timeout=5)
            while live["message"] != "live_record":
                live = await ws.receive_json(timeout=5)
            assert live["level"] == "info"


async def test_stream_closes_a_silent_peer(make_daemon):
    daemon = await make_daemon(LOG_STREAM_PING_INTERVAL="100ms", LOG_STREAM_PONG_TIMEOUT="300ms")
    async with daemon.client() as http:
        ws = await http.ws_connect(
            f"{daemon.ws_url}/logs/stream", headers=daemon.auth_headers(), autoping=False, heartbeat=None
        )
        closed = None
        while closed is None:
            message = await ws.receive(timeout=5)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                closed = message
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
        await ws.close()


async def test_shutdown_tells_stream_viewers_going_away(make_daemon):
    daemon = await make_daemon(GRACEFUL_SHUTDOWN_TIMEOUT="10s")
    async with daemon.client() as http:
        async with http.ws_connect(f"{daemon.ws_url}/logs/stream", headers=daemon.auth_headers()) as ws:
            await ws.receive_json(timeout=5)
            started = time.monotonic()
            stopping = asyncio.create_task(daemon.stop())
            while (await ws.receive(timeout=5)).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                pass
            assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
            await stopping
            assert time.monotonic() - started < 5  # did not wait out the grace period


async def _stall_a_viewer(daemon) -> ssl.SSLSocket:
    """Open a viewer that stops reading, then log ~20 MB: far more than the socket buffers hold.
    Returns once the daemon's kernel send queue holds data the viewer will never take."""
    token = daemon.token("management", workspace=None)
    sock = await asyncio.to_thread(open_stalled_websocket, daemon.port, "/logs/stream", token)
    (stream,) = [ws for ws in daemon.app[wsutil.OPEN_SOCKETS] if not ws.closed]
    emit_blobs = structlog.get_logger("tests")
    for n in range(200):
        emit_blobs.info("filler", n=n, blob="x" * 100_000)
    await until_send_queue_full(stream.get_extra_info("socket").fileno())
    return sock


async def _logged_soon(event: str, after: int, timeout: float) -> bool:
    """Whether the daemon logs `event` within `timeout` (awaiting the log ring, not polling)."""
    cursor = get_ring().cursor(after)
    try:
        async with asyncio.timeout(timeout):
            while True:
                batch = await cursor.next()
                if batch is not None and any(e.item["message"] == event for e in batch[1]):
                    return True
    except TimeoutError:
        return False


async def test_a_viewer_that_stops_reading_is_dropped(make_daemon):
    """A stalled viewer blocked every send and then the close itself (which drains first): it
    stayed attached long after LOG_STREAM_PONG_TIMEOUT."""
    daemon = await make_daemon(LOG_STREAM_PING_INTERVAL="500ms", LOG_STREAM_PONG_TIMEOUT="2s")
    start = get_ring().last_seq
    sock = await _stall_a_viewer(daemon)
    try:
        # Bounded sends and close: pong timeout (2 s) plus the close bound (2 s), with margin.
        assert await _logged_soon("log_stream_closed", start, timeout=15)
        assert [ws for ws in daemon.app[wsutil.OPEN_SOCKETS] if not ws.closed] == []
    finally:
        sock.close()


async def test_a_stalled_viewer_does_not_hold_up_shutdown(make_daemon):
    """At shutdown, closing a stalled viewer waited out the grace period and the cleanup after it
    was cut off (the store was never closed). Pong timeout at its 90 s default: only the close
    bound (half the 5 s grace) can save shutdown here."""
    daemon = await make_daemon(GRACEFUL_SHUTDOWN_TIMEOUT="5s")
    sock = await _stall_a_viewer(daemon)
    try:
        await stops_cleanly(daemon)
    finally:
        sock.close()
