"""When a terminal produced more output during a disconnection than the daemon keeps, the resumed
tab says how much was lost (a marker line) and goes on with what was kept."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from vm_agent import appkeys

pytestmark = pytest.mark.browser


@pytest.fixture
def agent_settings(agent_settings: dict[str, str]) -> dict[str, str]:
    return {**agent_settings, "PTY_OUTPUT_BUFFER_SIZE": "2KiB"}


async def test_output_lost_while_disconnected_is_marked(
    console_daemon: Any, relay: Any, open_console: Any, tmp_path: Any
) -> None:
    from playwright.async_api import expect

    go = tmp_path / "go"

    console = await open_console()
    await console.login(console_daemon.token("user", "host"))
    await console.type_in_terminal("echo ready-$((1+1))\n")
    await console.wait_terminal_text(r"ready-2")

    # The program writes 200 KB once the connection has dropped (it waits for the test's signal).
    await console.type_in_terminal(
        f"while [ ! -e {go} ]; do sleep 0.05; done; head -c 200000 /dev/zero | tr '\\0' x; echo; "
        "echo finished-$((2*3))\n"
    )
    await console.wait_terminal_text(r"while \[")  # the command line reached the shell
    relay.hold()
    relay.cut()
    await expect(console.page.locator(".tab-terminal")).to_have_attribute("data-state", "reconnecting")
    (session,) = console_daemon.app[appkeys.TERMINALS].list("host", "user-1")
    flood_ends_at = session.output.end + 200_000
    go.touch()
    async with asyncio.timeout(30):  # the daemon has read the whole flood while nobody watched
        await session.output.log.wait_beyond(flood_ends_at)
    relay.release()

    # Far more than the 2 KiB kept: the resumed tab marks the bytes it never got, then shows the
    # end of the output and the rest of the session.
    await console.wait_terminal_text(r"^finished-6\s*$")
    await expect(console.terminal().locator(".term-banner")).to_be_hidden()
    rows = console.terminal().locator(".xterm-rows > div")
    marker = rows.filter(has_text=re.compile(r"bytes of output were not kept"))
    await expect(marker.first).to_be_visible()
    # Usually one marker (the resume); a second when the socket also fell behind the live output.
    lost = sum(int(re.search(r"\[… (\d+) bytes", text).group(1)) for text in await marker.all_inner_texts())
    assert 100_000 < lost <= 200_000 + 200  # the x's, their newline and a prompt at most
    await console.shot("gap-marker")

