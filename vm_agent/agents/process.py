"""One agent subprocess: spawned through the workspace placement, in its own process group.

Drivers use this for the bytes and leave the protocol to themselves. Things learned the hard way:
- stdin stays open for the life of the process: pi exits at once when its stdin closes.
- stdout lines can be megabytes (a tool result with a whole file), so the StreamReader limit is
  raised from asyncio's 64 KiB to ACP_MAX_LINE_BYTES; a line over even that is skipped whole
  (reported by `read_line` as OVERSIZED) instead of being split into garbage lines.
- stderr is always drained (an undrained pipe blocks the agent once 64 KiB accumulate) into a
  bounded tail used for crash reports.
- stop closes stdin, then SIGTERM, then SIGKILL to the whole process group, so tool
  subprocesses the agent started die with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import TYPE_CHECKING, Final

import structlog

from vm_agent.agents.driver import AgentCrashed, AgentStartError
from vm_agent.config import Settings
from vm_agent.workspaces.placement import HOST_WORKSPACE, Command

if TYPE_CHECKING:
    from vm_agent.agents.driver import Launch
    from vm_agent.agents.registry import AgentSpec

log = structlog.get_logger("vm_agent.agents.process")

OVERSIZED: Final = b"\x00<line over ACP_MAX_LINE_BYTES skipped>"
"""Returned by read_line/read_batch for a line longer than ACP_MAX_LINE_BYTES (it was discarded).
Compare with `is`: it is a sentinel object, not a value that a real line could match by identity."""

HOST_ONLY_ENV = frozenset(("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                           "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE"))
_SPAWN_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "DOCKER_HOST", "DOCKER_CONFIG",
              "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")


class AgentProcess:
    def __init__(self, proc: asyncio.subprocess.Process, command: Command, settings: Settings,
                 name: str) -> None:
        self._proc = proc
        self._command = command
        self._settings = settings
        self.name = name
        self._stderr = bytearray()
        self._skip_rest_of_line = False
        self._batch_buffer = bytearray()
        self._stderr_task = asyncio.create_task(self._drain_stderr(), name=f"agent-stderr-{proc.pid}")
        self._write_lock = asyncio.Lock()

    @classmethod
    async def spawn(cls, spec: AgentSpec, launch: Launch, settings: Settings) -> AgentProcess:
        env, secret_env = spec.environment()
        if launch.placement.workspace_id != HOST_WORKSPACE:
            # The host's PATH, HOME, ... mean nothing inside a container: it keeps its own.
            env = {k: v for k, v in env.items() if k not in HOST_ONLY_ENV}
        elif settings.agent_path:
            # VM_AGENT_AGENT_PATH: where the pinned agents (and the Node they need) live on the VM
            env["PATH"] = os.pathsep.join(p for p in (settings.agent_path, env.get("PATH", os.defpath)) if p)
        env.update(launch.env)
        secret_env.update(launch.secret_env)
        command = launch.placement.wrap(list(spec.argv), tty=False, env=env, secret_env=secret_env,
                                        cwd=launch.cwd)
        spawn_env = {k: os.environ[k] for k in _SPAWN_ENV if k in os.environ}
        spawn_env.update(command.env)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=spawn_env,
                cwd=command.cwd,
                start_new_session=True,
                limit=settings.acp_max_line_bytes,
            )
        except (FileNotFoundError, PermissionError) as exc:
            _remove(command.cleanup_paths)
            hint = f"; install it: {spec.install_hint}" if spec.install_hint else ""
            raise AgentStartError(
                f"cannot run {command.argv[0]!r} for {spec.name!r} in {command.cwd}: {exc.strerror}{hint}"
            ) from exc
        log.info("agent_process_started", agent=spec.name, pid=proc.pid,
                 workspace=launch.placement.workspace_id)
        return cls(proc, command, settings, spec.name)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def read_line(self) -> bytes | None:
        """The next stdout line (with its newline), OVERSIZED for a skipped huge line, None at EOF."""
        stdout = self._proc.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except ValueError as exc:
                # asyncio dropped what it buffered; if the separator was not reached yet, the rest
                # of this line still has to be skipped when it arrives.
                self._skip_rest_of_line = "not found" in str(exc)
                log.warning("agent_line_too_long", agent=self.name, limit=self._settings.acp_max_line_bytes)
                return OVERSIZED
            if not line:
                return None
            if self._skip_rest_of_line:
                self._skip_rest_of_line = not line.endswith(b"\n")
                continue
            return line

    async def read_batch(self) -> list[bytes] | None:
        """Every complete stdout line available now (waiting for at least one), newlines removed;
        an over-long line appears as OVERSIZED. None at EOF.

        The fast path for chatty agents: one read() and one split() for hundreds of lines instead
        of a readline() await per line. Do not mix with read_line() on the same process."""
        stdout = self._proc.stdout
        assert stdout is not None
        limit = self._settings.acp_max_line_bytes
        while True:
            data = await stdout.read(262144)
            if not data:
                return None
            if self._skip_rest_of_line:
                cut = data.find(b"\n")
                if cut < 0:
                    continue
                self._skip_rest_of_line = False
                data = data[cut + 1 :]
            if b"\n" not in data:
                self._batch_buffer += data
                if len(self._batch_buffer) > limit:
                    self._batch_buffer.clear()
                    self._skip_rest_of_line = True
                    log.warning("agent_line_too_long", agent=self.name, limit=limit)
                    return [OVERSIZED]
                continue
            lines = data.split(b"\n")
            rest = lines.pop()  # the start of a line still being written (usually empty)
            if self._batch_buffer:
                self._batch_buffer += lines[0]
                lines[0] = bytes(self._batch_buffer)
                self._batch_buffer.clear()
            if rest:
                self._batch_buffer += rest
            if len(data) <= limit and len(lines[0]) <= limit:  # then no line is over it
                return lines
            return [line if len(line) <= limit else OVERSIZED for line in lines]

    async def write_line(self, data: bytes, timeout: float | None = None) -> None:
        """Write one line (newline added) to stdin; AgentCrashed when the pipe is gone, or when
        the agent has not taken the line within `timeout` (ACP_RPC_TIMEOUT by default).

        An agent that stops reading its stdin is hung: once the pipe is full a write would wait
        for it forever, and with it everything queued behind the lock, cancel and stop included.
        A line is never torn: the timeout hits while waiting for the lock (nothing written) or
        while draining (the whole line is in the pipe or in the transport's buffer)."""
        stdin = self._proc.stdin
        assert stdin is not None
        limit = self._settings.acp_rpc_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                async with self._write_lock:
                    stdin.write(data + b"\n")
                    await stdin.drain()
        except TimeoutError:
            raise AgentCrashed(f"agent did not read its stdin for {limit:g}s", self._proc.returncode,
                               self.stderr_tail()) from None
        except (BrokenPipeError, ConnectionResetError, RuntimeError) as exc:
            raise AgentCrashed("agent stdin closed", self._proc.returncode, self.stderr_tail()) from exc

    async def _drain_stderr(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        cap = self._settings.acp_stderr_buffer_bytes
        with contextlib.suppress(Exception):
            while chunk := await stderr.read(65536):
                self._stderr += chunk
                if len(self._stderr) > cap:
                    del self._stderr[: len(self._stderr) - cap]

    def stderr_tail(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    async def wait(self) -> int:
        code = await self._proc.wait()
        # stderr may still hold the last words of a crash: let the drain finish (briefly).
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(1.0):
                await asyncio.shield(self._stderr_task)
        _remove(self._command.cleanup_paths)
        return code

    async def stop(self, grace: float | None = None) -> int | None:
        """Close stdin, then TERM, then KILL the process group, `grace` seconds apart."""
        grace = self._settings.acp_stop_grace_period if grace is None else grace
        if self.alive and self._proc.stdin is not None:
            with contextlib.suppress(Exception):
                self._proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                self._signal_group(sig)
            try:
                async with asyncio.timeout(grace if sig is not signal.SIGKILL else 5.0):
                    await self._proc.wait()
                break
            except TimeoutError:
                continue
        if self.alive:
            log.error("agent_process_unkillable", agent=self.name, pid=self.pid)
        else:
            self._signal_group(signal.SIGKILL)  # leftovers of the group (tool subprocesses)
        self._stderr_task.cancel()
        with contextlib.suppress(BaseException):
            await self._stderr_task
        _remove(self._command.cleanup_paths)
        log.info("agent_process_stopped", agent=self.name, pid=self.pid, returncode=self._proc.returncode)
        return self._proc.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)


def _remove(paths: tuple[str, ...]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
