"""Wire shapes of the two model APIs the fake LLM speaks, built from a scripted `Reply`.

OpenAI chat completions: `chat.completion.chunk` SSE frames (`data:` only, `[DONE]` at the end),
reasoning as `reasoning_content` deltas, tool calls as indexed `tool_calls` deltas whose
arguments stream in pieces. Anthropic messages: named SSE events (`message_start`,
`content_block_*` with text/thinking/input_json/signature deltas, `message_delta`,
`message_stop`). Errors in each provider's body format. Each event is (name, data, is_delta):
deltas are what a cut or a gate counts.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.fake_llm import Reply

Event = tuple[str, Any, bool]


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), max(1, size))]


USAGE = {"input": 12, "output": 7}


# -------------------------------------------------------------------- OpenAI chat completions
def openai_error(status: int) -> dict[str, Any]:
    kinds = {429: ("rate_limit_exceeded", "Rate limit reached"), 529: ("overloaded", "Overloaded"),
             503: ("overloaded", "Service unavailable")}
    code, message = kinds.get(status, ("server_error", "The server had an error processing your request"))
    return {"error": {"message": message, "type": code, "param": None, "code": code}}


def openai_events(reply: Reply, model: str, n: int, body: dict[str, Any]) -> list[Event]:
    base = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_fake"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    events: list[Event] = [("", chunk({"role": "assistant", "content": ""}), False)]
    for piece in _pieces(reply.thinking, reply.chunk):
        events.append(("", chunk({"reasoning_content": piece}), True))
    for piece in _pieces(reply.text, reply.chunk):
        events.append(("", chunk({"content": piece}), True))
    for index, call in enumerate(reply.tool_calls):
        arguments = json.dumps(call.arguments)
        events.append(("", chunk({"tool_calls": [{"index": index, "id": f"call_{n}_{index}", "type": "function",
                                                  "function": {"name": call.name, "arguments": ""}}]}), True))
        for piece in _pieces(arguments, 16):
            events.append(("", chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}), True))
    events.append(("", chunk({}, "tool_calls" if reply.tool_calls else "stop"), False))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": USAGE["input"], "completion_tokens": USAGE["output"],
                 "total_tokens": USAGE["input"] + USAGE["output"]}
        events.append(("", {**base, "choices": [], "usage": usage}, False))
    events.append(("", "[DONE]", False))
    return events


def openai_message(reply: Reply, model: str, n: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.thinking:
        message["reasoning_content"] = reply.thinking
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{n}_{i}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for i, c in enumerate(reply.tool_calls)
        ]
    return {
        "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
        "usage": {"prompt_tokens": USAGE["input"], "completion_tokens": USAGE["output"],
                  "total_tokens": USAGE["input"] + USAGE["output"]},
    }


# -------------------------------------------------------------------- Anthropic messages
def anthropic_error(status: int) -> dict[str, Any]:
    kinds = {529: ("overloaded_error", "Overloaded"), 429: ("rate_limit_error", "Rate limited"),
             400: ("invalid_request_error", "Invalid request"), 401: ("authentication_error", "invalid x-api-key")}
    kind, message = kinds.get(status, ("api_error", "Internal server error"))
    return {"type": "error", "error": {"type": kind, "message": message}}


def _anthropic_usage(output: int) -> dict[str, Any]:
    return {"input_tokens": USAGE["input"], "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": output}


def anthropic_events(reply: Reply, model: str, n: int) -> list[Event]:
    start = {"id": f"msg_fake{n}", "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": _anthropic_usage(1)}
    events: list[Event] = [("message_start", {"type": "message_start", "message": start}, False),
                                           ("ping", {"type": "ping"}, False)]
    index = 0

    def block(content_block: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        nonlocal index
        events.append(("content_block_start",
                       {"type": "content_block_start", "index": index, "content_block": content_block}, False))
        for delta in deltas:
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta},
                           delta["type"] != "signature_delta"))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}, False))
        index += 1

    if reply.thinking:
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(reply.thinking, reply.chunk)]
        block({"type": "thinking", "thinking": "", "signature": ""},
              [*deltas, {"type": "signature_delta", "signature": f"sig-fake-{n}"}])
    if reply.text:
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(reply.text, reply.chunk)]
        block({"type": "text", "text": ""}, deltas)
    for i, call in enumerate(reply.tool_calls):
        arguments = json.dumps(call.arguments)
        block({"type": "tool_use", "id": f"toolu_fake{n}_{i}", "name": call.name, "input": {}},
              [{"type": "input_json_delta", "partial_json": p} for p in _pieces(arguments, 16)])
    stop = "tool_use" if reply.tool_calls else "end_turn"
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": USAGE["output"]}}, False))
    events.append(("message_stop", {"type": "message_stop"}, False))
    return events


def anthropic_message(reply: Reply, model: str, n: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.thinking:
        content.append({"type": "thinking", "thinking": reply.thinking, "signature": f"sig-fake-{n}"})
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for i, call in enumerate(reply.tool_calls):
        content.append({"type": "tool_use", "id": f"toolu_fake{n}_{i}", "name": call.name, "input": call.arguments})
    return {"id": f"msg_fake{n}", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None,
            "usage": _anthropic_usage(USAGE["output"])}
