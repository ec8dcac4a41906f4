"""The terminal benchmark's references: what PTYs cost with no server involved, the raw output
rate (a ceiling) and the time to start the shells (a floor).

A server's figures are read against these, measured in the same run beside it, because on a
shared 2-vCPU machine they move from minute to minute.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import ptyprocess


class RawPtyRun(NamedTuple):
    """One command's output read straight from a PTY: bytes/s, bytes in all, and reads taken."""

    rate: float
    size: int
    reads: int


def raw_pty_rate(shell: str, command: str, cwd: Path, work_per_read: float = 0.0) -> RawPtyRun:
    """`command`'s output read straight from a PTY with 64 KiB reads. With `work_per_read`
    (seconds) the reader spins that long after each read, standing in for what a server does
    with the bytes (bench/pty_read_budget.py)."""
    started = time.perf_counter()
    proc = ptyprocess.PtyProcess.spawn([shell, "-c", command], cwd=str(cwd), dimensions=(24, 80))
    total = reads = 0
    while True:
        try:
            chunk = os.read(proc.fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        total += len(chunk)
        reads += 1
        if work_per_read:
            until = time.perf_counter() + work_per_read
            while time.perf_counter() < until:
                pass
    elapsed = time.perf_counter() - started
    proc.close(force=True)
    return RawPtyRun(total / elapsed, total, reads)


def raw_spawn_seconds(shell: str, count: int, env: Mapping[str, str]) -> float:
    """Seconds a plain loop takes to start `count` login shells, each the session leader of its
    own PTY (posix_spawn: setsid, then open the PTY by path, which makes it the controlling
    terminal): the floor under "open N sessions", with no server, protocol or bookkeeping.
    It calls the standard library's posix_spawn, not vm-agent's spawner, so that the floor
    measures the kernel and the shells and nothing of the code under test.

    The shells are left to start for a second, as a server's would be, then killed and reaped.
    """
    children: list[tuple[int, int]] = []
    try:
        started = time.perf_counter()
        for _ in range(count):
            master, slave = os.openpty()
            try:
                actions = [(os.POSIX_SPAWN_OPEN, 0, os.ttyname(slave), os.O_RDWR, 0),
                           (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)]
                pid = os.posix_spawn(shell, [shell, "-l"], env, file_actions=actions, setsid=True)
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            children.append((pid, master))
        elapsed = time.perf_counter() - started
        time.sleep(1.0)
    finally:
        for pid, master in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            os.close(master)
    return elapsed
