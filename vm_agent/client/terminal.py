"""`vmagent term`: the daemon's terminal in the local tty, surviving a flaky network.

The local terminal is put in raw mode so every key (Ctrl-C included) goes to the remote
program; only the detach key (Ctrl-] by default, as in telnet) is kept, to leave the session
running and return to the shell. Window size changes (SIGWINCH) are sent as `resize`. When the
connection drops, the session keeps running on the daemon; this side reconnects with backoff
and reattaches at the byte offset it had printed up to, so nothing is printed twice or lost;
keys typed meanwhile are sent once the connection is back.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import termios
import tty

from vm_agent.client.api import AgentClient
from vm_agent.client.errors import ClientError, ConnectionFailed, RequestTimeout
from vm_agent.client.terminals import RemoteTerminal, TerminalError, split_input

DEFAULT_DETACH_KEY = "^]"
INPUT_QUEUE_CHUNKS = 1024  # ~4 MiB of typed/pasted input held while reconnecting


def parse_detach_key(text: str) -> bytes:
    """`^]` / `^A` (control chords), a single character, or `none` (no detach key)."""
    if text.lower() == "none":
        return b""
    if len(text) == 2 and text[0] == "^":
        code = ord(text[1].upper()) ^ 0x40
        if code < 0x20 or code == 0x7F:
            return bytes([code])
    if len(text) == 1:
        return text.encode()
    raise ValueError(f"detach key must look like ^] or ^A, one character, or none: {text!r}")


def terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
        return size.lines or 24, size.columns or 80
    except OSError:
        return 24, 80


class InteractiveTerminal:
    """Connects one local tty to one remote terminal session until exit or detach."""

    def __init__(
        self,
        client: AgentClient,
        session_id: str | None,
        *,
        detach_key: bytes = b"\x1d",
        reconnect_for: float = 120.0,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        workspace: str | None = None,
    ) -> None:
        self._client = client
        self._session_id = session_id
        self._detach_key = detach_key
        self._reconnect_for = reconnect_for
        self._in, self._out = stdin_fd, stdout_fd
        self._workspace = workspace
        self._term: RemoteTerminal | None = None
        self._input: asyncio.Queue[bytes] = asyncio.Queue(INPUT_QUEUE_CHUNKS)
        self._connected = asyncio.Event()
        self._detached = asyncio.Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._tasks: set[asyncio.Task[None]] = set()
        self.detached = False

    def notice(self, text: str) -> None:
        """A line of our own between the remote output (raw mode needs the explicit \\r)."""
        os.write(self._out, f"\r\n[vmagent] {text}\r\n".encode())

    async def _open(self) -> RemoteTerminal:
        rows, cols = terminal_size(self._out)
        if self._session_id is None:
            return await self._client.open_terminal(rows=rows, cols=cols, workspace=self._workspace)
        try:
            return await self._client.attach_terminal(self._session_id, rows=rows, cols=cols, workspace=self._workspace)
        except TerminalError as exc:
            if "not_found" not in exc.code:
                raise
            # Not running (yet): start it under the name asked for, like `tmux new -A -s NAME`.
            return await self._client.open_terminal(self._session_id, rows=rows, cols=cols, workspace=self._workspace)

    async def run(self) -> int:
        """The remote program's exit code, or 0 after a detach."""
        self._term = term = await self._open()
        self._connected.set()
        loop = asyncio.get_running_loop()
        saved = termios.tcgetattr(self._in) if os.isatty(self._in) else None
        try:
            if saved is not None:
                # TCSANOW, not the default TCSAFLUSH: keys typed before we got here must not be lost.
                tty.setraw(self._in, termios.TCSANOW)
            loop.add_reader(self._in, self._on_stdin)
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGWINCH, self._on_resize)
            self._spawn(self._pump_input())
            output = asyncio.create_task(self._pump_output(term))
            detach = asyncio.create_task(self._detached.wait())
            await asyncio.wait({output, detach}, return_when=asyncio.FIRST_COMPLETED)
            detach.cancel()
            if not output.done():
                # Keys typed just before the detach key still reach the session.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await self._input.join()
                output.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await output
                await term.detach()
                self.detached = True
                self.notice(f"detached; the session keeps running. Reattach: vmagent term {term.session_id}")
                return 0
            output.result()  # re-raise a failure to reconnect
            code = term.exit_code if term.exit_code is not None else 0
            self.notice(f"session {term.session_id} ended ({term.closed_reason}, exit code {code})")
            return code
        finally:
            loop.remove_reader(self._in)
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGWINCH)
            for task in list(self._tasks):
                task.cancel()
            if saved is not None:
                termios.tcsetattr(self._in, termios.TCSADRAIN, saved)
            await term.detach()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_stdin(self, *_: object) -> None:
        try:
            data = os.read(self._in, 4096)
        except OSError:
            data = b""
        if not data:  # stdin closed (piped input ran out): keep showing output
            asyncio.get_running_loop().remove_reader(self._in)
            return
        if self._detach_key and self._detach_key in data:
            data = data[: data.index(self._detach_key)]
            self._detached.set()
        if data:
            try:
                self._input.put_nowait(data)
            except asyncio.QueueFull:
                os.write(self._out, b"\x07")  # bell: input dropped while the link is down

    def _on_resize(self) -> None:
        if self._term is not None and self._connected.is_set():
            rows, cols = terminal_size(self._out)
            self._spawn(self._send_quietly(self._term.resize(rows, cols)))

    async def _send_quietly(self, coro: object) -> None:
        with contextlib.suppress(ClientError):
            await coro  # type: ignore[misc]

    async def _pump_input(self) -> None:
        while True:
            data = await self._input.get()
            try:
                await self._send_input(self._decoder.decode(data))
            finally:
                self._input.task_done()

    async def _send_input(self, text: str) -> None:
        # Piece by piece (each is one frame), so a connection lost halfway through a paste
        # resends only the piece that failed, not the ones the session already has.
        for piece in split_input(text):
            while True:
                await self._connected.wait()
                assert self._term is not None
                try:
                    await self._term.send(piece)
                    break
                except ConnectionFailed:
                    self._connected.clear()  # the output side notices too and reconnects

    async def _pump_output(self, term: RemoteTerminal) -> None:
        while True:
            try:
                async for chunk in term.output():
                    if chunk.gap:
                        self.notice(f"{chunk.gap} bytes of output were no longer retained")
                    os.write(self._out, chunk.data.encode("utf-8", "surrogateescape"))
                return  # the session ended
            except ConnectionFailed as exc:
                self._connected.clear()
                self.notice(f"connection lost ({exc}); reconnecting")
                await self._reconnect(term)
                self.notice(f"reconnected; resumed at byte {term.next_offset}")
                self._connected.set()

    async def _reconnect(self, term: RemoteTerminal) -> None:
        delay = 0.2
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._reconnect_for
        while True:
            term.rows, term.cols = terminal_size(self._out)
            try:
                await term.reconnect()
                return
            except (ConnectionFailed, RequestTimeout) as exc:
                if loop.time() + delay > give_up:
                    raise ConnectionFailed(f"gave up reconnecting after {self._reconnect_for:g}s: {exc}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
