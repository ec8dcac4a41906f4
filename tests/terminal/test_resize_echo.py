"""A program that relays window sizes (the docker CLI of a workspace terminal) and starts
listening for SIGWINCH late still learns of a resize made before it listened."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.terminal.conftest import TIMEOUT
from vm_agent.terminal.session import TerminalSession

# Ignores SIGWINCH until a line arrives, as the docker CLI does until its first size request to
# the engine returns; then reports every size change it is told of.
LATE_LISTENER = """
import os, signal, sys
signal.signal(signal.SIGWINCH, signal.SIG_IGN)
print("not-listening", flush=True)
sys.stdin.readline()
def report(*_):
    cols, rows = os.get_terminal_size(0)
    print(f"size={rows}x{cols}", flush=True)
signal.signal(signal.SIGWINCH, report)
print("listening", flush=True)
while True:
    signal.pause()
"""


async def _until_output(session: TerminalSession, viewer, needle: str) -> None:
    seen = viewer.replay(0).text
    async with asyncio.timeout(TIMEOUT):
        while needle not in seen:
            chunk = await viewer.next()
            assert chunk is not None, f"the program ended before printing {needle!r}: {seen!r}"
            seen += chunk.text


async def test_resize_before_the_relay_listens_still_reaches_it(tmp_path) -> None:
    session = TerminalSession("s1", workspace_id="host", user_id="u", name="t", shell=sys.executable,
                              working_directory=str(tmp_path), buffer_size=65536)
    await session.start([sys.executable, "-c", LATE_LISTENER], env=dict(os.environ), cwd=str(tmp_path),
                        rows=24, cols=80, on_exit=lambda _: None, relays_resize=True)
    viewer = session.attach()
    try:
        await _until_output(session, viewer, "not-listening")
        session.resize(33, 101)  # the kernel's one SIGWINCH is ignored here
        session.write("go\n")
        await _until_output(session, viewer, "size=33x101")
    finally:
        await session.close("test", 0.5)
