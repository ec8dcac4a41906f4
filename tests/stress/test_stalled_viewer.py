"""A viewer that stops reading while the program prints tens of MB: the daemon's memory grows by
at most the session's log cap (plus bounded socket buffers), the program is never held back,
another viewer of the same session keeps full speed, and the stalled viewer, once it reads
again, is told exactly how much it missed (`gap`) instead of getting everything or nothing.

The daemon runs in its own process so its RSS is measured alone.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from tests.stress.conftest import PROFILE, plain_shell, record, rss_bytes

pytestmark = pytest.mark.stress

LOG_CAP = 1024 * 1024  # PTY_OUTPUT_BUFFER_SIZE default
SLACK = 24 * 1024 * 1024  # socket and TLS buffers, allocator arenas: bounded, independent of output size


class Viewer:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages = 0
        self.bytes = 0
        self.gap = 0
        self.text_tail = ""

    async def read_until(self, needle: str, timeout: float, any_output: bool = False) -> None:
        async with asyncio.timeout(timeout):
            while (needle not in self.text_tail) if not any_output else not self.bytes:
                msg = await self.ws.receive()
                assert msg.type == aiohttp.WSMsgType.TEXT, f"socket ended: {msg.type} {msg.data!r}"
                message = json.loads(msg.data)
                self.messages += 1
                if message["type"] in ("output", "scrollback"):
                    data = message["data"]
                    self.bytes += len(data["data"])
                    self.gap += int(data.get("gap") or 0)
                    self.text_tail = (self.text_tail + data["data"])[-200:]


async def open_viewer(http: aiohttp.ClientSession, daemon: Any, first: dict[str, Any]) -> Viewer:
    ws = await http.ws_connect(f"{daemon.ws_url}/terminal/ws/multi", params={"token": daemon.token()},
                               max_msg_size=0)
    await ws.send_json(first)
    return Viewer(ws)


async def timed_print(daemon: Any, reader: Viewer, megabytes: int, mark: str) -> tuple[float, int]:
    """Make the program print `megabytes` MB; seconds until `reader` saw it all, and the daemon's peak RSS."""
    peak = rss_bytes(daemon.pid)
    command = f"head -c {megabytes}M /dev/zero | base64 -w 100; echo {mark[:3]}''{mark[3:]}\r"
    await reader.ws.send_json({"type": "input", "sessionId": "stall", "data": {"data": command}})
    started = time.monotonic()
    done = asyncio.create_task(reader.read_until(mark, timeout=300))
    while not done.done():
        peak = max(peak, rss_bytes(daemon.pid))
        await asyncio.wait({done}, timeout=0.05)
    await done
    return time.monotonic() - started, peak


async def test_a_stalled_viewer_costs_at_most_the_log_cap_and_slows_nobody(spawn_daemon, tmp_path):
    daemon = await spawn_daemon(DEFAULT_SHELL=plain_shell(tmp_path), HOST_WORKSPACE_DIR=str(tmp_path))
    size = PROFILE.stalled_megabytes
    async with daemon.client() as http:
        fast = await open_viewer(http, daemon, {"type": "create_session",
                                                "data": {"sessionId": "stall", "rows": 24, "cols": 80}})
        await fast.read_until("", timeout=15, any_output=True)  # the prompt: bash drops what is typed before it
        await fast.ws.send_json({"type": "input", "sessionId": "stall", "data": {"data": "echo rea''dy\r"}})
        await fast.read_until("ready", timeout=15)

        start_rss = rss_bytes(daemon.pid)
        alone, alone_peak = await timed_print(daemon, fast, size, "DONE1")  # the same program with no stalled peer

        stalled = await open_viewer(http, daemon, {"type": "reattach_session",
                                                   "data": {"sessionId": "stall", "rows": 24, "cols": 80}})
        await stalled.read_until("DONE1", timeout=15)  # it got the replay; from now on it never reads
        baseline = rss_bytes(daemon.pid)
        with_stall, peak = await timed_print(daemon, fast, size, "DONE2")
        growth = peak - baseline

        await stalled.read_until("DONE2", timeout=60)  # reading again: it skips to a safe point, told the gap
    record(f"stalled viewer: daemon RSS growth while {size} MB printed", round(growth / 2**20, 1), "MiB",
           f"<= log cap {LOG_CAP // 2**20} MiB + {SLACK // 2**20} MiB buffers")
    record(f"one reading viewer: daemon RSS growth while {size} MB printed", round((alone_peak - start_rss) / 2**20, 1),
           "MiB", "bounded by the log cap + buffers")
    record("stalled viewer: other viewer, time with / without the stall", round(with_stall / alone, 2), "x",
           f"~1 ({alone:.2f}s alone, {with_stall:.2f}s with)")
    record("stalled viewer: bytes it was told it missed (gap)", stalled.gap, "B", "> 0")
    record("stalled viewer: bytes the reading viewer missed", fast.gap, "B", "0 unless it reads slower than the PTY")
    assert growth <= LOG_CAP + SLACK, f"daemon grew {growth / 2**20:.1f} MiB for one stalled viewer"
    assert stalled.gap > 0, "the stalled viewer was told how much it missed"
