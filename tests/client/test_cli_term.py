"""`vmagent term` in a real pseudo-terminal: keys, window size, a network drop, detach, exit code."""

from __future__ import annotations

import asyncio
import io
import os
import sys

import pexpect

from .conftest import cli_env

TIMEOUT = 30


class Tty:
    """`vmagent term ...` under pexpect; every blocking call runs in a thread so the daemon,
    which lives in this test's event loop, keeps serving meanwhile."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.transcript = io.BytesIO()
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "vm_agent.client.cli", "term", *args],
            env=env,
            dimensions=(24, 80),
            timeout=TIMEOUT,
        )
        self.child.logfile_read = self.transcript

    async def expect(self, pattern: str, timeout: float = TIMEOUT) -> None:
        await asyncio.to_thread(self.child.expect, pattern, timeout=timeout)

    def send(self, text: str) -> None:
        self.child.send(text)

    async def wait_exit(self) -> int:
        await asyncio.to_thread(self.child.expect, pexpect.EOF, timeout=TIMEOUT)
        await asyncio.to_thread(self.child.wait)
        return self.child.exitstatus

    def text(self) -> str:
        return self.transcript.getvalue().decode("utf-8", "replace")


def env_for(daemon, url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VMAGENT_")}
    return {**base, **cli_env(daemon, kind="user", url=url), "TERM": "xterm"}


async def test_term_session_lives_through_resize_drop_detach_and_reattach(term_daemon, relay_to):
    relay = await relay_to(term_daemon)
    env = env_for(term_daemon, relay.url)
    tty = Tty(["work"], env)
    try:
        await tty.expect(r"[#$] ")  # the remote shell's prompt
        tty.send("printf 'R%s\\n' EADY\r")
        await tty.expect("READY")

        # The local window size is the remote one, at start and after SIGWINCH.
        tty.send("stty size\r")
        await tty.expect("24 80")
        tty.child.setwinsize(33, 101)
        for _attempt in range(3):  # the resize and the next keys travel separately
            tty.send("stty size\r")
            try:
                await tty.expect("33 101", timeout=3)
                break
            except pexpect.TIMEOUT:
                continue
        else:
            raise AssertionError("remote terminal never saw the new window size")

        # Ctrl-C goes to the remote program, not to vmagent.
        tty.send("sh -c 'printf \"ST%sED\\\\n\" ART; exec sleep 30'\r")
        await tty.expect("STARTED")
        tty.send("\x03")
        tty.send("printf 'S%s\\n' URVIVED\r")
        await tty.expect("SURVIVED")

        # The network drops while output is flowing: vmagent reconnects, nothing repeats or goes missing.
        tty.send("for i in $(seq 1 40); do echo n-$i; sleep 0.03; done; printf 'F%s\\n' IN\r")
        await tty.expect("n-3\r\n")
        assert relay.drop() >= 1
        await tty.expect("connection lost")
        await tty.expect("reconnected; resumed at byte")
        await tty.expect("FIN")
        text = tty.text()
        for i in range(1, 41):
            assert text.count(f"n-{i}\r\n") == 1, f"n-{i} appears {text.count(f'n-{i}')} times"

        # Detach leaves the session running.
        tty.send("export MARK=kept\r")
        tty.send("\x1d")
        await tty.expect("detached; the session keeps running")
        assert await tty.wait_exit() == 0
    finally:
        tty.child.close(force=True)

    again = Tty(["work"], env)
    try:
        again.send("printf '%s-%s\\n' $MARK here\r")
        await again.expect("kept-here")  # same shell, its variables intact
        again.send("exit 5\r")
        await again.expect("ended")
        assert await again.wait_exit() == 5
    finally:
        again.child.close(force=True)


async def test_term_with_a_bad_token_says_so_and_restores_nothing(term_daemon):
    env = env_for(term_daemon, term_daemon.url)
    env["VMAGENT_TOKEN"] = "bad"
    tty = Tty([], env)
    try:
        await tty.expect("vmagent: ")
        status = await tty.wait_exit()
    finally:
        tty.child.close(force=True)
    assert status == 4
    assert "Traceback" not in tty.text() and "HTTP 401" in tty.text()
