"""A fake model provider on 127.0.0.1 that real coding agents (pi, Claude Code) talk to in tests.

It speaks the two wire protocols the agents use — OpenAI chat completions (`/v1/chat/completions`)
and Anthropic messages (`/v1/messages`) — streamed as Server-Sent Events or as one JSON body,
closely enough that the agents' own SDKs parse it unchanged. What it answers is scripted: each
request takes the next `Reply` from a queue (text, thinking, tool calls) or an injected fault
(529 overloaded, 500, a stream cut mid-reply, a hang). Every request is recorded so a test can
assert what the agent actually sent (e.g. that a steering message reached the model).

Agents also make requests a test did not script (Claude Code asks for a conversation title and
counts tokens); `is_main` tells those apart so they never consume scripted replies. The byte
shapes of each API live in llm_wire.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes import llm_wire as wire

OPENAI = "openai"
ANTHROPIC = "anthropic"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class Reply:
    """One scripted answer. Build with the class methods; fields are the knobs they set."""

    text: str = ""
    thinking: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    status: int = 200
    """Non-200: answer with the provider's error body for this status instead of a reply."""
    cut_after: int | None = None
    stream_error: int | None = None
    """With `cut_after`: instead of dropping the connection, send the provider's in-stream error
    event for this status (what Anthropic does when it overloads mid-reply) and end the stream."""
    """Drop the connection after this many content deltas (a stream cut mid-reply)."""
    hangs: bool = False
    """Accept the request and never answer (until the server closes or `release()`)."""
    gate: asyncio.Event | None = None
    """Streaming pauses after the first delta until this is set: a reply "in progress"."""
    chunk: int = 6
    """Characters per text/thinking delta."""

    @classmethod
    def say(cls, text: str, *, thinking: str = "", gate: asyncio.Event | None = None,
            chunk: int = 6) -> Reply:
        return cls(text=text, thinking=thinking, gate=gate, chunk=chunk)

    @classmethod
    def call(cls, name: str, arguments: dict[str, Any], *, text: str = "",
             gate: asyncio.Event | None = None) -> Reply:
        return cls(text=text, tool_calls=(ToolCall(name, arguments),), gate=gate)

    @classmethod
    def overloaded(cls) -> Reply:
        return cls(status=529)

    @classmethod
    def error(cls, status: int = 500) -> Reply:
        return cls(status=status)

    @classmethod
    def cut(cls, text: str = "This reply is cut off in the middle") -> Reply:
        return cls(text=text, cut_after=2)

    @classmethod
    def overloaded_mid_stream(cls, text: str = "This reply stops with an overloaded error") -> Reply:
        return cls(text=text, cut_after=2, stream_error=529)

    @classmethod
    def hang(cls) -> Reply:
        return cls(hangs=True)


@dataclass
class LLMRequest:
    """One request as the fake received it."""

    api: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    main: bool
    received_at: float
    reply: Reply | None = None

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def tools(self) -> list[str]:
        names = []
        for tool in self.body.get("tools") or []:
            names.append(tool.get("name") or (tool.get("function") or {}).get("name", ""))
        return names

    def texts(self) -> list[str]:
        """Every text the request carries (system, user, assistant, tool results), in order."""
        out: list[str] = []
        system = self.body.get("system")
        _collect_text(system, out)
        for message in self.body.get("messages") or []:
            _collect_text(message.get("content"), out)
        return out

    def user_texts(self) -> list[str]:
        out: list[str] = []
        for message in self.body.get("messages") or []:
            if message.get("role") == "user":
                _collect_text(message.get("content"), out, skip_tool_results=True)
        return out

    def tool_results(self) -> list[str]:
        """Text of the tool results sent back to the model (both protocols)."""
        out: list[str] = []
        for message in self.body.get("messages") or []:
            if message.get("role") == "tool":
                _collect_text(message.get("content"), out)
            elif isinstance(message.get("content"), list):
                for block in message["content"]:
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        _collect_text(block.get("content"), out)
        return out


def _collect_text(content: Any, out: list[str], *, skip_tool_results: bool = False) -> None:
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_result":
                if not skip_tool_results:
                    _collect_text(block.get("content"), out)
            elif isinstance(block.get("text"), str):
                out.append(block["text"])


def default_is_main(api: str, body: dict[str, Any]) -> bool:
    """Requests that belong to the conversation. pi always sends its tool list; Claude Code's side
    calls either offer no tools (conversation title) or are its "what would the user type next"
    suggestion, which carries the full tool list but starts its last user text with a marker."""
    if not body.get("tools"):
        return False
    probe = LLMRequest(api, "", {}, body, True, 0.0)
    users = probe.user_texts()
    return not (users and users[-1].lstrip().startswith("[SUGGESTION MODE"))


class FakeLLM:
    """Start with `await FakeLLM().start()`, script with `script(...)`, stop with `close()`."""

    def __init__(self, *, default: Reply | None = None,
                 is_main: Callable[[str, dict[str, Any]], bool] = default_is_main) -> None:
        self.default = default or Reply.say("Done.")
        self.is_main = is_main
        self.requests: list[LLMRequest] = []
        self._script: list[Reply] = []
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> FakeLLM:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        self.release()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeLLM:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # ---------------------------------------------------------------- scripting and asserting
    def script(self, *replies: Reply) -> None:
        """Queue replies for the next main requests, in order; then `default` answers."""
        self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not consumed yet."""
        return len(self._script)

    def release(self) -> None:
        """End every hanging request (its connection is dropped)."""
        self._released.set()

    @property
    def main_requests(self) -> list[LLMRequest]:
        return [r for r in self.requests if r.main]

    async def wait_for_requests(self, count: int, timeout: float = 30.0) -> LLMRequest:
        """Wait until `count` main requests arrived; returns the `count`-th."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.main_requests) >= count)
        return self.main_requests[count - 1]

    # ---------------------------------------------------------------- handlers
    async def _record(self, api: str, request: web.Request) -> LLMRequest:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        main = self.is_main(api, body) if isinstance(body, dict) else False
        reply = None
        if main:
            reply = self._script.pop(0) if self._script else self.default
        record = LLMRequest(api, request.path, dict(request.headers), body if isinstance(body, dict) else {},
                            main, time.monotonic(), reply)
        self.requests.append(record)
        async with self._changed:
            self._changed.notify_all()
        return record

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(OPENAI, request)
        reply = record.reply or self.default
        model = record.body.get("model", "fake-model")
        if reply.hangs:
            return await self._hang(request)
        if reply.status != 200:
            return web.json_response(wire.openai_error(reply.status), status=reply.status)
        if not record.stream:
            return web.json_response(wire.openai_message(reply, model, next(self._ids)))
        return await self._sse(request, reply, wire.openai_events(reply, model, next(self._ids), record.body),
                               named=False)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(ANTHROPIC, request)
        reply = record.reply or self.default
        if not record.main:
            reply = Reply.say("Fake conversation")
        model = record.body.get("model", "fake-model")
        if reply.hangs:
            return await self._hang(request)
        if reply.status != 200:
            return web.json_response(wire.anthropic_error(reply.status), status=reply.status,
                                     headers={"request-id": f"req_{next(self._ids)}"})
        if not record.stream:
            return web.json_response(wire.anthropic_message(reply, model, next(self._ids)))
        return await self._sse(request, reply, wire.anthropic_events(reply, model, next(self._ids)), named=True)

    async def _count_tokens(self, request: web.Request) -> web.Response:
        await self._record(ANTHROPIC, request)
        return web.json_response({"input_tokens": 42})

    async def _unknown(self, request: web.Request) -> web.Response:
        await self._record("unknown", request)
        return web.json_response({"error": {"type": "not_found_error", "message": f"no route {request.path}"}},
                                 status=404)

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        await self._released.wait()
        _drop(request)
        return web.Response(status=500)

    async def _sse(self, request: web.Request, reply: Reply, events: list[tuple[str, dict[str, Any] | str, bool]],
                   *, named: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            await self._stream(request, response, reply, events, named)
        except ConnectionResetError:
            pass  # the agent hung up (an abort): nothing to finish
        return response

    async def _stream(self, request: web.Request, response: web.StreamResponse, reply: Reply,
                      events: list[tuple[str, dict[str, Any] | str, bool]], named: bool) -> None:
        deltas = 0
        for name, data, is_delta in events:
            payload = data if isinstance(data, str) else json.dumps(data)
            frame = (f"event: {name}\n" if named else "") + f"data: {payload}\n\n"
            await response.write(frame.encode())
            if not is_delta:
                continue
            deltas += 1
            if reply.cut_after is not None and deltas >= reply.cut_after:
                if reply.stream_error is None:
                    _drop(request)
                    return
                error = wire.anthropic_error(reply.stream_error) if named else wire.openai_error(reply.stream_error)
                await response.write((("event: error\n" if named else "") + f"data: {json.dumps(error)}\n\n").encode())
                break
            if reply.gate is not None and deltas == 1:
                await self._wait_gate(reply.gate)
        await response.write_eof()

    async def _wait_gate(self, gate: asyncio.Event) -> None:
        opened = asyncio.ensure_future(gate.wait())
        released = asyncio.ensure_future(self._released.wait())
        try:
            await asyncio.wait({opened, released}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            released.cancel()


def _drop(request: web.Request) -> None:
    """Close the TCP connection without ending the HTTP response: what a cut stream looks like."""
    if request.transport is not None:
        request.transport.abort()
