"""pi's RPC events as ACP `session/update` notifications, so viewers never learn which driver runs.

pi (`pi --mode rpc`) streams its own event vocabulary: `message_update` records carrying text,
thinking and tool-call deltas, and `tool_execution_*` records while a tool runs. Viewers of the
gateway speak ACP, so each pi event becomes zero or more ACP notifications:

    text_delta / thinking_delta            → agent_message_chunk / agent_thought_chunk
    toolcall_start                         → tool_call (pending; the arguments still stream)
    toolcall_end                           → tool_call_update (title, kind, rawInput, locations)
    tool_execution_start / _update / _end  → tool_call_update (in_progress, content, completed|failed)
    user message injected by steer/follow  → user_message_chunk
    session_info_changed                   → session_info_update

pi events with no ACP counterpart that a viewer still wants (retries, compaction, pi's own
queue) are relayed as `_pi/<event>` extension notifications, which ACP clients must pass through
or ignore. Bookkeeping events (agent/turn start and end, message boundaries, argument deltas)
are dropped: the final text of a block is the concatenation of its deltas.

A running tool's progress (`tool_execution_update`) is a snapshot of its whole output so far
(pi's bash sends up to 50 KB every 100 ms), so relaying every one would fill the session's
bounded history with copies and push the conversation out of it. At most one per tool call per
TOOL_UPDATE_INTERVAL is relayed; nothing is lost, as `tool_execution_end` carries the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vm_agent.agents.driver import ContentBlocks

RELAYED = frozenset({
    "auto_retry_start", "auto_retry_end", "compaction_start", "compaction_end", "queue_update",
    "extension_error", "summarization_retry_scheduled", "summarization_retry_attempt_start",
    "summarization_retry_finished",
})

TOOL_UPDATE_INTERVAL = 1.0  # seconds between relayed progress snapshots of one tool call

_KINDS = {"read": "read", "bash": "execute", "edit": "edit", "write": "edit", "grep": "search",
          "find": "search", "ls": "search", "fetch": "fetch", "web_fetch": "fetch"}


def tool_kind(name: str) -> str:
    """ACP ToolKind of a pi tool (pi's built-ins; anything else is "other")."""
    return _KINDS.get(name, "other")


def to_pi_message(content: ContentBlocks) -> tuple[str, list[dict[str, Any]]]:
    """ACP ContentBlocks → pi's (message text, images). pi takes one text and ImageContent list;
    resources are inlined as text so the model still sees them."""
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "image" and block.get("data"):
            images.append({"type": "image", "data": block["data"], "mimeType": block.get("mimeType", "image/png")})
        elif kind == "resource_link":
            texts.append(f"@{block.get('uri', '')}")
        elif kind == "resource":
            resource = block.get("resource") or {}
            body = resource.get("text")
            texts.append(f"{resource.get('uri', '')}:\n{body}" if body is not None else f"@{resource.get('uri', '')}")
    return "\n\n".join(t for t in texts if t), images


def _acp_content(result: Any) -> list[dict[str, Any]]:
    """pi tool result {"content": [text|image blocks]} → ACP ToolCallContent list."""
    blocks = result.get("content") if isinstance(result, dict) else None
    out: list[dict[str, Any]] = []
    for block in blocks or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            out.append({"type": "content", "content": {"type": "text", "text": str(block.get("text", ""))}})
        elif block.get("type") == "image":
            out.append({"type": "content", "content": {"type": "image", "data": block.get("data", ""),
                                                        "mimeType": block.get("mimeType", "image/png")}})
    return out


def _title(name: str, args: Any) -> str:
    if not isinstance(args, dict):
        return name
    for key in ("command", "path", "pattern", "url", "query"):
        value = args.get(key)
        if isinstance(value, str) and value:
            return f"{name}: {value[:120]}"
    return name


def _locations(args: Any) -> list[dict[str, Any]]:
    path = args.get("path") if isinstance(args, dict) else None
    return [{"path": path}] if isinstance(path, str) and path else []


class PiEventTranslator:
    """Stateful only in one respect: the echo of a prompt's own user message is not repeated to
    viewers (the gateway already shows the prompt), while user messages pi injects later in the
    same run (steering, follow-ups) are, so viewers see where the conversation turned."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 tool_update_interval: float = TOOL_UPDATE_INTERVAL) -> None:
        self.session_id = ""
        self.skip_prompt_echo = False
        """Set just before a `prompt` command is sent, cleared if pi rejects it."""
        self._clock = clock
        self._tool_update_interval = tool_update_interval
        self._last_tool_update: dict[Any, float] = {}

    def translate(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_update":
            return self._message_update(event.get("assistantMessageEvent"))
        if kind == "message_start":
            return self._message_start(event.get("message"))
        if kind == "tool_execution_start":
            return [self._update({"sessionUpdate": "tool_call_update", "toolCallId": event.get("toolCallId"),
                                  "status": "in_progress", "rawInput": event.get("args")})]
        if kind == "tool_execution_update":
            if not self._progress_due(event.get("toolCallId")):
                return []
            return [self._update({"sessionUpdate": "tool_call_update", "toolCallId": event.get("toolCallId"),
                                  "status": "in_progress", "content": _acp_content(event.get("partialResult"))})]
        if kind == "tool_execution_end":
            self._last_tool_update.pop(event.get("toolCallId"), None)
            status = "failed" if event.get("isError") else "completed"
            return [self._update({"sessionUpdate": "tool_call_update", "toolCallId": event.get("toolCallId"),
                                  "status": status, "content": _acp_content(event.get("result")),
                                  "rawOutput": event.get("result")})]
        if kind == "session_info_changed":
            return [self._update({"sessionUpdate": "session_info_update", "title": event.get("name")})]
        if kind in RELAYED:
            params = {k: v for k, v in event.items() if k != "type"}
            return [{"jsonrpc": "2.0", "method": f"_pi/{kind}", "params": {"sessionId": self.session_id, **params}}]
        return []

    def _progress_due(self, tool_call_id: Any) -> bool:
        now = self._clock()
        last = self._last_tool_update.get(tool_call_id)
        if last is not None and now - last < self._tool_update_interval:
            return False
        self._last_tool_update[tool_call_id] = now
        return True

    def _update(self, update: dict[str, Any]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": "session/update",
                "params": {"sessionId": self.session_id, "update": update}}

    def _chunk(self, kind: str, text: Any) -> list[dict[str, Any]]:
        if not isinstance(text, str) or not text:
            return []
        return [self._update({"sessionUpdate": kind, "content": {"type": "text", "text": text}})]

    def _message_update(self, update: Any) -> list[dict[str, Any]]:
        if not isinstance(update, dict):
            return []
        kind = update.get("type")
        if kind == "text_delta":
            return self._chunk("agent_message_chunk", update.get("delta"))
        if kind == "thinking_delta":
            return self._chunk("agent_thought_chunk", update.get("delta"))
        if kind == "toolcall_start":
            name = str(update.get("toolName", ""))
            return [self._update({"sessionUpdate": "tool_call", "toolCallId": update.get("id"), "title": name,
                                  "kind": tool_kind(name), "status": "pending", "rawInput": {}})]
        if kind == "toolcall_end":
            call = update.get("toolCall") or {}
            name, args = str(call.get("name", "")), call.get("arguments")
            return [self._update({"sessionUpdate": "tool_call_update", "toolCallId": call.get("id"),
                                  "title": _title(name, args), "kind": tool_kind(name), "rawInput": args,
                                  "locations": _locations(args)})]
        return []

    def _message_start(self, message: Any) -> list[dict[str, Any]]:
        if not isinstance(message, dict) or message.get("role") != "user":
            return []
        if self.skip_prompt_echo:
            self.skip_prompt_echo = False
            return []
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        out = []
        for block in blocks:
            if isinstance(block, dict) and block.get("type") in ("text", "image"):
                out.append(self._update({"sessionUpdate": "user_message_chunk", "content": block}))
        return out
