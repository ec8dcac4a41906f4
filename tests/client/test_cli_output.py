"""Where the CLI's output goes: a pipe whose reader has left, and a live table in an 80-column tty."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pexpect

from .conftest import cli_env, fingerprint_of, run_cli

WAIT = 30
BROKEN_PIPE = 141  # what a shell shows for `yes | head -1`: 128 + SIGPIPE


async def test_output_into_a_pipe_nobody_reads_ends_quietly(agent_daemon):
    env = cli_env(agent_daemon)
    await run_cli("prompt", "--wait", "chunks 50", env=env)
    for command in (["health"], ["watch", "--json", "--until-idle"], ["state"]):
        result = await run_cli(*command, env=env, closed_stdout=True)
        assert (result.code, result.err) == (BROKEN_PIPE, ""), command


async def test_swarm_table_fits_an_80_column_terminal_whatever_the_replies_contain(agent_daemon):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env |= cli_env(agent_daemon) | {"TERM": "xterm"}
    fingerprint = fingerprint_of(agent_daemon)
    hosts = [f"{name}={agent_daemon.url} session={name} fingerprint={fingerprint}" for name in ("alpha", "beta")]
    reply = "\x1b]0;owned\x07\x1b[1mThe\x1b[0m\tquick brown fox jumps over the lazy dog while the coordinator waits"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "vm_agent.client.cli", "swarm", "--no-texts", *hosts, "--task", f"echo {reply}"],
        env=env,
        dimensions=(30, 80),
        timeout=WAIT,
        encoding="utf-8",
    )
    try:
        await asyncio.to_thread(child.expect, pexpect.EOF)
        child.wait()
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    output = child.before
    # Every row is drawn as ESC[2K + text + newline, after moving the cursor up one line per row
    # of the previous drawing: a row that wraps (80 columns or more) or moves the cursor itself
    # breaks the next redraw.
    rows = [part.split("\r\n", 1)[0] for part in output.split("\x1b[2K")[1:]]
    assert rows and any("The quick brown" in row for row in rows)
    for row in rows:
        assert len(row) <= 79, row
        assert not re.search(r"[\x00-\x1f\x7f]", row), repr(row)
