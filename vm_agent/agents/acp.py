"""JSON-RPC 2.0 over newline-delimited JSON on an agent's stdio: the framing half of our ACP client.

Why our own client instead of the ACP SDK on PyPI: the SDK dispatches every incoming
notification in its own task, so as soon as a handler awaits anything, `session/update` chunks
reach viewers out of order (85 inversions in 200 chunks measured), and it validates updates
against its schema and drops kinds it does not know, while viewers must get every update
(PROTOCOL.md §5.1, §5.2). What we need is small: one reader, ids, timeouts.

Concurrency design:
- ONE reader task per connection reads a line, parses it and handles it completely before
  reading the next. A notification is passed to `on_notification` and awaited (bounded by
  ACP_NOTIF_SERIALIZE_TIMEOUT in the driver's `deliver`). A response resolves the future of
  its request; because everything read before it was already delivered, a caller that awaits
  `request()` observes all earlier notifications first.
- A request FROM the agent (e.g. `session/request_permission`, which may wait for a human) is
  started by calling `on_request` in the reader — so whatever it emits is ordered with the
  updates around it — and its answer is awaited and written by a separate task. The reader never
  waits for an RPC answer.
- Writes go through AgentProcess.write_line (serialized by a lock), so lines never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog

from vm_agent.agents.driver import AgentCrashed
from vm_agent.agents.process import OVERSIZED, AgentProcess
from vm_agent.agents.redact import has_surrogate_escape, scrub_surrogates

log = structlog.get_logger("vm_agent.agents.acp")

METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

OnNotification = Callable[[dict[str, Any], bytes], "Awaitable[None] | None"]
"""(parsed message, its JSON text exactly as the agent wrote it) → None, or something the reader
must await before it reads the next line."""
OnRequest = Callable[[str, Any], Awaitable[Any]]
"""Called in the reader with (method, params); returns an awaitable of the result (or raises RpcError)."""


class RpcError(Exception):
    """A JSON-RPC error, from the agent's answer or to be sent as ours."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class JsonRpcConnection:
    def __init__(
        self,
        process: AgentProcess,
        *,
        on_notification: OnNotification,
        on_request: OnRequest,
        on_close: Callable[[int | None], None],
    ) -> None:
        self._process = process
        self._on_notification = on_notification
        self._on_request = on_request
        self._on_close = on_close
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._answer_tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self.malformed_lines = 0

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read_loop(), name=f"acp-reader-{self._process.pid}")

    @property
    def closed(self) -> bool:
        return self._closed

    async def request(self, method: str, params: Any, within: float) -> Any:
        """Send a request and wait for its result; RpcError, AgentCrashed or TimeoutError."""
        if self._closed:
            raise self._crashed(f"agent exited before {method}")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            # The write counts against `within` too: an agent that stopped reading its stdin
            # never answers either.
            async with asyncio.timeout(within):
                await self._write({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
                return await future
        finally:
            self._pending.pop(request_id, None)

    async def notify(self, method: str, params: Any, within: float | None = None) -> None:
        """Send a notification; `within` bounds the write (ACP_RPC_TIMEOUT by default)."""
        await self._write({"jsonrpc": "2.0", "method": method, "params": params}, within)

    async def _write(self, message: dict[str, Any], within: float | None = None) -> None:
        try:
            data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate got this far: as an escape it is still JSON
            data = json.dumps(message, separators=(",", ":")).encode()
        await self._process.write_line(data, within)

    def _crashed(self, message: str) -> AgentCrashed:
        return AgentCrashed(message, self._process.returncode, self._process.stderr_tail())

    # --- the one reader ------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while (batch := await self._process.read_batch()) is not None:
                for line in batch:
                    if line is OVERSIZED:
                        self.malformed_lines += 1
                        continue
                    try:
                        pending = self._handle_line(line)
                    except Exception:
                        # One line the agent got wrong in a way not foreseen below is that
                        # line's problem; ending the reader would abandon a live agent.
                        self.malformed_lines += 1
                        log.exception("acp_line_failed", agent=self._process.name,
                                      line=line[:200].decode("utf-8", "replace"))
                        continue
                    if pending is not None:
                        await pending
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("acp_reader_failed", agent=self._process.name)
        finally:
            await self._finish()

    def _handle_line(self, line: bytes) -> Awaitable[None] | None:
        """Handle one line completely; returns what must be awaited before the next (rarely any)."""
        try:
            # The hot path (every streamed token): orjson, ~2 µs a line against ~4 µs for the
            # standard library's scanner. What it refuses (numbers beyond 64 bits, NaN, garbage)
            # gets the standard library's parse, so exactly the same lines are accepted.
            message = orjson.loads(line)
            line = line.strip()
        except orjson.JSONDecodeError:
            line, message = _parse_slowly(line)
        if message.__class__ is not dict:
            if line:
                self.malformed_lines += 1
                log.warning("acp_malformed_line", agent=self._process.name, line=line[:200].decode("utf-8", "replace"))
            return None
        method = message.get("method")
        if method.__class__ is str:
            request_id = message.get("id")
            if request_id is not None:
                self._start_answer(request_id, method, message.get("params"))
                return None
            return self._on_notification(message, line)
        if "id" in message:
            response_id = message["id"]
            # Our ids are ints; anything else (a string, or an array, which is not even hashable)
            # answers nothing we asked.
            future = self._pending.get(response_id) if response_id.__class__ is int else None
            if future is None or future.done():
                log.warning("acp_unexpected_response", agent=self._process.name, id=str(response_id)[:100])
                return None
            error = message.get("error")
            if isinstance(error, dict):
                code = error.get("code")
                future.set_exception(RpcError(code if code.__class__ is int else INTERNAL_ERROR,
                                              str(error.get("message", "error")), error.get("data")))
            else:
                future.set_result(message.get("result"))
            return None
        self.malformed_lines += 1
        log.warning("acp_unrecognized_message", agent=self._process.name)
        return None

    def _start_answer(self, request_id: Any, method: str, params: Any) -> None:
        try:
            pending: Awaitable[Any] | None = self._on_request(method, params)
            error: RpcError | None = None
        except RpcError as exc:
            pending, error = None, exc
        except Exception as exc:
            log.exception("acp_request_handler_failed", method=method)
            pending, error = None, RpcError(INTERNAL_ERROR, str(exc))
        task = asyncio.create_task(self._answer(request_id, pending, error), name=f"acp-answer-{method}")
        self._answer_tasks.add(task)
        task.add_done_callback(self._answer_tasks.discard)

    async def _answer(self, request_id: Any, pending: Awaitable[Any] | None, error: RpcError | None) -> None:
        if pending is not None:
            try:
                result = await pending
                reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": result}
            except RpcError as exc:
                reply = {"jsonrpc": "2.0", "id": request_id, "error": exc.to_json()}
            except asyncio.CancelledError:
                return
            except Exception as exc:
                log.exception("acp_request_handler_failed")
                reply = {"jsonrpc": "2.0", "id": request_id, "error": RpcError(INTERNAL_ERROR, str(exc)).to_json()}
        else:
            assert error is not None
            reply = {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}
        with contextlib.suppress(AgentCrashed):
            await self._write(reply)

    async def _finish(self) -> None:
        """stdout is closed: the agent is gone (or going). Fail every waiter, tell the owner once."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._process.wait()
        error = self._crashed(f"agent exited (code {self._process.returncode})")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        # The owner first: it resolves what the agent was still asking (permission requests)
        # and says why; cancelling the answer tasks would cancel those questions without a word.
        self._on_close(self._process.returncode)
        for task in list(self._answer_tasks):
            task.cancel()

    async def close(self) -> None:
        """Stop reading (after the process was stopped) and fail pending requests."""
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if not self._closed:
            await self._finish()


def _parse_slowly(line: bytes) -> tuple[bytes, Any]:
    """(the line without surrounding whitespace, its value or None if it is not JSON).

    orjson refuses lone surrogates (an agent that cut an emoji in half); they arrive here and
    become U+FFFD, in the value and in the text relayed, so nothing downstream fails to encode."""
    text = line.strip()
    try:
        # json.loads would also accept UTF-16/32; the raw text is relayed as UTF-8, so a NUL
        # byte (never valid in UTF-8 JSON) marks the line as malformed.
        value = json.loads(text) if text and b"\x00" not in text else None
        if value is not None and has_surrogate_escape(text):
            scrubbed = scrub_surrogates(value)
            if scrubbed != value:
                return json.dumps(scrubbed, separators=(",", ":"), ensure_ascii=False).encode(), scrubbed
        return text, value
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return text, None
