"""One terminal session: a program on a PTY, its output log, and who is watching.

The session knows nothing about sockets. Viewers are `output.Viewer`s handed out by `attach`;
the manager counts them to decide when a session is orphaned.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from vm_agent import metrics
from vm_agent.errors import TooManyRequests
from vm_agent.terminal.output import TerminalOutput, Viewer
from vm_agent.terminal.pty import InputOverflow, PtyProcess
from vm_agent.terminal.resize_echo import ResizeEcho

log = structlog.get_logger("vm_agent.terminal")

RUNNING = "running"
EXITED = "exited"


class TerminalSession:
    def __init__(
        self,
        session_id: str,
        *,
        workspace_id: str,
        user_id: str,
        name: str,
        shell: str,
        working_directory: str,
        buffer_size: int,
        ephemeral: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = session_id
        self.workspace_id = workspace_id
        self.user_id = user_id
        self.name = name
        self.shell = shell
        self.working_directory = working_directory
        self.ephemeral = ephemeral  # lives and dies with one `/terminal/ws` socket
        self._clock = clock
        self.created_at = clock()
        self.last_activity_at = self.created_at
        self.output = TerminalOutput(buffer_size)
        self.status = RUNNING
        self.exit_code: int | None = None
        self.close_reason: str | None = None
        self.viewers = 0
        self._pty: PtyProcess | None = None
        self._on_exit: Callable[[TerminalSession], None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._resize_echo: ResizeEcho | None = None

    async def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        rows: int,
        cols: int,
        on_exit: Callable[[TerminalSession], None],
        relays_resize: bool = False,
    ) -> None:
        """`relays_resize`: the program forwards size changes elsewhere and may miss the first
        ones (see vm_agent.terminal.resize_echo)."""
        self._on_exit = on_exit
        self._pty = pty = await PtyProcess.spawn(argv, env=env, cwd=cwd, rows=rows, cols=cols, on_output=self._output)
        pty.wait_callback(self._exited)
        if relays_resize:
            self._resize_echo = ResizeEcho(lambda: pty.signal_foreground(signal.SIGWINCH))

    @property
    def pid(self) -> int | None:
        return self._pty.pid if self._pty else None

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def _output(self, data: bytes) -> None:
        self.last_activity_at = self._clock()
        self.output.append(data)
        metrics.TERMINAL_BYTES.produced += len(data)

    def _exited(self, code: int) -> None:
        """The program ended (by itself or because we closed it): flush and end the stream."""
        if self.status == EXITED:
            return
        if self._pty is not None:
            self._pty.drain()
            self._pty.hang_up()
        if self._resize_echo is not None:
            self._resize_echo.cancel()
        self.status = EXITED
        self.exit_code = code
        if self.close_reason is None:
            self.close_reason = "process_exit"
        self.output.close()
        log.info("terminal_exited", session_id=self.id, exit_code=code, reason=self.close_reason)
        if self._on_exit is not None:
            self._on_exit(self)

    # ------------------------------------------------------------------ viewers
    def attach(self) -> Viewer:
        self.viewers += 1
        return self.output.viewer()

    def detach(self) -> None:
        self.viewers = max(0, self.viewers - 1)

    # ------------------------------------------------------------------ input
    def write(self, data: str) -> None:
        if self._pty is not None and self.running:
            self.last_activity_at = self._clock()
            encoded = data.encode("utf-8", "replace")
            metrics.TERMINAL_BYTES.typed += len(encoded)
            try:
                self._pty.write(encoded)
            except InputOverflow as exc:
                raise TooManyRequests(str(exc), code="input_overflow") from None

    def resize(self, rows: int, cols: int) -> None:
        if self._pty is not None and self.running:
            self._pty.resize(rows, cols)
            if self._resize_echo is not None:
                self._resize_echo.resized()

    # ------------------------------------------------------------------ end
    def pause_output(self) -> None:
        if self._pty is not None:
            self._pty.pause_reading()

    async def close(self, reason: str, grace: float) -> None:
        """Stop the program (HUP, TERM, KILL with `grace` between) and end the output stream.
        Concurrent callers share one closing sequence."""
        if self.close_reason is None:
            self.close_reason = reason
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(grace))
        await asyncio.shield(self._closing)

    async def _close(self, grace: float) -> None:
        if self._pty is not None:
            code = await self._pty.terminate(grace)
            self._exited(code)
        else:
            self.status = EXITED
            self.output.close()

    def describe(self) -> dict[str, Any]:
        """The session as `session_list` shows it."""
        item: dict[str, Any] = {
            "sessionId": self.id,
            "name": self.name,
            "status": self.status,
            "workingDirectory": self.working_directory,
            "createdAt": _iso(self.created_at),
            "lastActivityAt": _iso(self.last_activity_at),
        }
        if self.exit_code is not None:
            item["exitCode"] = self.exit_code
        return item


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
