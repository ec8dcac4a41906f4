"""A process on a pseudo-terminal, driven by the event loop without a thread per session.

The master fd is non-blocking and read from `loop.add_reader`; process exit is observed via a
pidfd (Linux ≥ 5.3), so neither needs a thread or SIGCHLD handling that would race with other
subsystems' children. Each read is handed to `on_output` synchronously: the consumer must only
store it (the byte log), never wait, so a slow viewer can never hold back the program.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import struct
import termios
from collections.abc import Callable, Mapping, Sequence

from vm_agent.terminal import ingest
from vm_agent.terminal.ingest import FLOOD_PAUSE, FloodMeter
from vm_agent.terminal.spawn import spawn_on_terminal

# One PTY read is at most this much; the reader drains up to _DRAIN_BYTES per wake-up so a
# flooding program is consumed in large appends (fewer wake-ups of every viewer), yet no single
# callback holds the loop long: with hundreds of flooding terminals, /health and keystrokes of
# other sessions still get a turn every few milliseconds.
_READ_BYTES = 65536
_DRAIN_BYTES = 32 * 1024
# At exit, what the PTY still holds (its buffers keep well under this); bounded because a
# background job that outlived the shell may still be writing.
_EXIT_DRAIN_BYTES = 256 * 1024
# Exit status reported for a process killed by a signal, the shell's convention (128 + signo).
_SIGNAL_BASE = 128


# Input waiting for a program that does not read (a large paste into a busy program).
MAX_PENDING_INPUT = 1024 * 1024


class InputOverflow(Exception):
    """The program has not read its input and the waiting queue is full."""


class SpawnError(Exception):
    """The program could not be started (bad shell, missing directory, exec failure)."""


class _MissingDirectory(OSError):
    """The working directory to start in does not exist."""

    def __str__(self) -> str:
        return str(self.args[0])


def clamp_dimension(value: object, default: int) -> int:
    """Rows/cols from a client: integers clamped into 1..500, anything else the default."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return max(1, min(500, int(value)))


def _kill_abandoned(spawning: asyncio.Future[tuple[int, int]]) -> None:
    if spawning.cancelled() or spawning.exception() is not None:
        return
    pid, master = spawning.result()
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # prompt after SIGKILL; this path is rare (shutdown mid-spawn)
    with contextlib.suppress(OSError):
        os.close(master)


def _set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _start(argv: Sequence[str], env: Mapping[str, str], cwd: str | None, rows: int, cols: int) -> tuple[int, int]:
    """Open a PTY of the given size and start `argv` on it; returns (pid, master fd)."""
    path = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", os.defpath))
    if path is None:
        raise OSError(2, f"{argv[0]}: not found on PATH")
    master, slave = os.openpty()
    try:
        _set_window_size(master, rows, cols)
        pid = spawn_on_terminal(path, argv, env, cwd, os.ttyname(slave))
    except OSError:
        os.close(master)
        # posix_spawn reports a failed chdir and a failed exec with the same errno: name the
        # directory when it is the one missing, or the user hunts for a shell that is there.
        if cwd is not None and not os.path.isdir(cwd):
            raise _MissingDirectory(f"working directory {cwd!r} does not exist") from None
        raise
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)  # the child has its own; EOF on the master then means it is gone
    return pid, master


class PtyProcess:
    """One child process on its own PTY and session (its pid is its process group id)."""

    def __init__(self, pid: int, master: int, on_output: Callable[[bytes], None]) -> None:
        self.pid = pid
        self._fd: int | None = master
        self._on_output = on_output
        self._loop = asyncio.get_running_loop()
        self._exit_code: int | None = None
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._exit_callbacks: list[Callable[[int], None]] = []
        self._pending = bytearray()
        os.set_blocking(master, False)
        self._paused = False
        self._eof = False
        self._flood = FloodMeter()
        self._resting: asyncio.TimerHandle | None = None
        self._ingest = ingest.for_loop(self._loop)
        self._loop.add_reader(master, self._readable)
        self._poll_task: asyncio.Task[None] | None = None
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except OSError:
            self._pidfd = None
        if self._pidfd is not None:
            self._loop.add_reader(self._pidfd, self._reap)

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        rows: int,
        cols: int,
        on_output: Callable[[bytes], None],
    ) -> PtyProcess:
        """Start `argv` on a new PTY (see vm_agent.terminal.spawn for how).

        posix_spawn returns once the child has exec'd (that is how exec errors are reported),
        which takes a millisecond or more, so it runs in a worker thread.
        """
        spawning = asyncio.get_running_loop().run_in_executor(None, _start, argv, env, cwd, rows, cols)
        try:
            pid, master = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # The spawn cannot be called back: make sure the child does not outlive its caller.
            spawning.add_done_callback(_kill_abandoned)
            raise
        except OSError as exc:
            if isinstance(exc, _MissingDirectory):
                raise SpawnError(str(exc)) from None
            raise SpawnError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        return cls(pid, master, on_output)

    # ------------------------------------------------------------------ state
    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    @property
    def running(self) -> bool:
        return self._exit_code is None

    def wait_callback(self, callback: Callable[[int], None]) -> None:
        """Call `callback(exit_code)` synchronously as soon as the child is reaped."""
        self._exit_callbacks.append(callback)

    async def wait(self) -> int:
        """The exit code, once the process has exited and been reaped."""
        return await asyncio.shield(self._exited)

    # ------------------------------------------------------------------ io
    def write(self, data: bytes) -> None:
        """Send keystrokes (or a paste). What the PTY cannot take right now (a program that is
        not reading, a paste larger than the tty's input buffer) waits in a bounded queue that
        is flushed when the fd becomes writable, so nothing typed is lost or reordered."""
        if self._fd is None or not data:
            return
        if len(self._pending) + len(data) > MAX_PENDING_INPUT:
            raise InputOverflow(f"more than {MAX_PENDING_INPUT} bytes of input are waiting for the program")
        if self._pending:
            self._pending += data
            return
        written = self._write_some(data)
        if written < len(data):
            self._pending += data[written:]
            self._loop.add_writer(self._fd, self._flush_input)

    def _write_some(self, data: bytes | bytearray) -> int:
        assert self._fd is not None
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:  # the program is gone; its exit is reported separately
            self._pending.clear()
            return len(data)

    def _flush_input(self) -> None:
        if self._fd is None:
            return
        written = self._write_some(self._pending)
        del self._pending[:written]
        if not self._pending:
            self._loop.remove_writer(self._fd)

    def resize(self, rows: int, cols: int) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            _set_window_size(self._fd, rows, cols)

    def signal_foreground(self, signo: int) -> None:
        """Send `signo` to the terminal's foreground process group, as the kernel does."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.killpg(os.tcgetpgrp(self._fd), signo)

    def _readable(self) -> None:
        """The PTY has output: drain it now if the loop turn's budget allows, else queue for a
        turn of the ingest scheduler (reader off meanwhile)."""
        fd = self._fd
        if fd is None:
            return
        if self._ingest.drain_now(self._drain):
            if self._flooding_in_small_writes():
                self._loop.remove_reader(fd)
                self._rest()
            return
        self._loop.remove_reader(fd)
        self._ingest.queue(self._drain_queued)

    def _drain_queued(self) -> int:
        total = self._drain()
        if self._flooding_in_small_writes():
            self._rest()
        else:
            self._rearm()
        return total

    def _rest(self) -> None:
        """Leave the PTY unread for a timer tick (its reader is off), then watch it again."""
        self._resting = self._loop.call_later(FLOOD_PAUSE, self._rearm)

    def _rearm(self) -> None:
        self._resting = None
        if self._fd is not None and not self._eof and not self._paused:
            self._loop.add_reader(self._fd, self._readable)

    def _flooding_in_small_writes(self) -> bool:
        return self._fd is not None and not self._eof and self._flood.flooding_in_small_writes

    def _drain(self, to_the_end: bool = False) -> int:
        """Read up to _DRAIN_BYTES (or, at exit, all) and hand them on; returns bytes read.

        A short read usually means the PTY is empty: stopping there saves the extra read that
        would only fail with EAGAIN, a syscall and an exception per keystroke echo."""
        fd = self._fd
        if fd is None or self._eof:
            return 0
        chunks: list[bytes] = []
        total = 0
        eof = False
        limit = _EXIT_DRAIN_BYTES if to_the_end else _DRAIN_BYTES
        while total < limit:
            try:
                chunk = os.read(fd, _READ_BYTES)
            except BlockingIOError:
                break
            except OSError:  # EIO: every slave fd is closed (the program is gone)
                eof = True
                break
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
            total += len(chunk)
            if len(chunk) < 1024 and not to_the_end:
                break
        if chunks:
            self._on_output(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            self._flood.record(self._loop.time(), total, len(chunks))
        if eof:
            # Nobody holds the slave side any more; stop polling a permanently readable fd.
            self._eof = True
            self._loop.remove_reader(fd)
            if self._pidfd is None:
                self._reap_blocking_soon()
        return total

    def drain(self) -> None:
        """Read whatever the PTY still holds (called when the process has exited)."""
        if self._fd is not None:
            self._drain(to_the_end=True)

    # ------------------------------------------------------------------ exit
    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return
        self._finish(status)

    def _reap_blocking_soon(self) -> None:
        """Without a pidfd, EOF on the master means the child is exiting; poll briefly."""

        async def poll() -> None:
            while self._exit_code is None:
                self._reap()
                if self._exit_code is None:
                    await asyncio.sleep(0.05)

        self._poll_task = self._loop.create_task(poll())

    def _finish(self, status: int) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        code = os.waitstatus_to_exitcode(status)
        self._exit_code = code if code >= 0 else _SIGNAL_BASE - code
        if not self._exited.done():
            self._exited.set_result(self._exit_code)
        callbacks, self._exit_callbacks = self._exit_callbacks, []
        for callback in callbacks:
            callback(self._exit_code)

    async def terminate(self, grace: float) -> int:
        """Close the PTY, then SIGHUP, SIGTERM, SIGKILL the process group with `grace` seconds
        between, and reap the child. Idempotent; returns the exit code."""
        foreground = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                foreground = os.tcgetpgrp(self._fd)
        self.close_fd()
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGKILL):
            if self._exit_code is not None:
                break
            self._signal_groups(sig, foreground)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exited), grace if sig != signal.SIGKILL else 5.0)
        if self._exit_code is None:  # no pidfd and the poll did not see it: reap in a thread
            _pid, status = await asyncio.to_thread(os.waitpid, self.pid, 0)
            self._finish(status)
        else:
            # The shell is gone; its jobs in the same group get the hang-up too.
            self._signal_groups(signal.SIGHUP, foreground)
        return self._exit_code if self._exit_code is not None else -1

    def _signal_groups(self, sig: int, foreground: int | None) -> None:
        for group in {self.pid, foreground} - {None, 0, os.getpgrp()}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)  # type: ignore[arg-type]

    def hang_up(self) -> None:
        """After the program exited by itself: release the PTY and hang up what it left behind
        in its process group (background jobs), as closing a real terminal would."""
        self.close_fd()
        self._signal_groups(signal.SIGHUP, None)

    def pause_reading(self) -> None:
        """Stop consuming output (shutdown): a flooding program then blocks on its full PTY
        instead of keeping the loop busy while the daemon is trying to close everything."""
        self._paused = True
        if self._fd is not None:
            self._loop.remove_reader(self._fd)

    def close_fd(self) -> None:
        """Release the master fd (the slave side sees a hang-up)."""
        fd, self._fd = self._fd, None
        if self._resting is not None:
            self._resting.cancel()
        if fd is None:
            return
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        self._pending.clear()
        with contextlib.suppress(OSError):
            os.close(fd)
