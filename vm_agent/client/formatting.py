"""Agent events as text a person can follow in a terminal (`vmagent watch`, `prompt --follow`).

Assistant text arrives as many small chunks that must be printed as they come, without a
newline each; everything else (tool calls, status changes) is a line of its own. `EventPrinter`
keeps track of whether the cursor is in the middle of assistant text so that a status line
never gets glued to the end of a sentence.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from vm_agent.client.events import Event
from vm_agent.client.prompts import crash_detail

_DIM, _BOLD, _RED, _RESET = "\x1b[2m", "\x1b[1m", "\x1b[31m", "\x1b[0m"


def _text_of(content: Any) -> str:
    if isinstance(content, dict):
        if content.get("type") == "content":  # tool call content wraps a content block
            return _text_of(content.get("content"))
        return str(content.get("text", ""))
    if isinstance(content, list):
        return "".join(_text_of(c) for c in content)
    return ""


def describe(event: Event) -> tuple[str, str] | None:
    """(style, text) for one event: style is `text`, `thought`, `info` or `error`; None hides it."""
    data, kind = event.data, event.kind
    update = event.update
    if update:
        what = update.get("sessionUpdate")
        if what == "agent_message_chunk":
            return "text", _text_of(update.get("content"))
        if what == "agent_thought_chunk":
            return "thought", _text_of(update.get("content"))
        if what == "user_message_chunk":
            return "info", f"> {_text_of(update.get('content'))}"
        if what == "tool_call":
            title = update.get("title") or update.get("kind") or update.get("toolCallId") or "tool"
            return "info", f"[tool] {title} ({update.get('status', 'pending')})"
        if what == "tool_call_update":
            status = update.get("status")
            if status in ("completed", "failed"):
                return ("error" if status == "failed" else "info"), f"[tool {status}] {update.get('toolCallId', '')}"
            return None
        if what == "plan":
            entries = update.get("entries") or []
            lines = [f"  - [{e.get('status', '')}] {e.get('content', '')}" for e in entries if isinstance(e, dict)]
            return "info", "\n".join(["[plan]", *lines])
        if what in ("available_commands_update", "usage_update", "session_info_update", "current_mode_update"):
            return None
        return "info", f"[{what}]"
    if kind == "session_prompting":
        what = data.get("kind", "prompt")
        label = "> " if what == "prompt" else f"[{str(what).replace('_', '-')}] > "
        return "info", label + _text_of(data.get("prompt"))
    if kind == "session_prompt_done":
        if data.get("error"):
            return "error", f"[failed: {data['error']}]"
        return "info", f"[done: {data.get('stopReason', '?')}]"
    if kind in ("prompt_result", "prompt_error"):
        return None  # the session_prompt_done that follows says the same, for every viewer
    if kind == "agent_status":
        if data.get("status") == "prompting":
            return None  # said by session_prompting
        error = f": {data['error']}" if data.get("error") else ""
        return ("error" if data.get("status") == "error" else "info"), f"[agent {data.get('status')}{error}]"
    if kind == "agent_crash_report":
        # Whether the daemon recovers is not known yet: the prompt's `[done: recovered]` (or its
        # failure) says so next. The last line of the agent's (redacted) stderr is usually the why.
        stderr = [line for line in str(data.get("stderr") or "").splitlines() if line.strip()]
        last_words = f"; stderr: {stderr[-1].strip()[:200]}" if stderr else ""
        return "error", f"[agent crashed: {crash_detail(data)}{last_words}]"
    if kind == "prompt_retry":
        detail = ", ".join(f"{k}={v}" for k, v in data.items() if k not in ("type", "seq"))
        return "info", f"[retrying: {detail}]"
    if kind == "queue_update":
        queue = data.get("queue")
        size = len(queue) if isinstance(queue, list) else data.get("length", queue)
        return "info", f"[queue: {size} waiting]"
    if kind == "session_gap":
        return "error", f"[missed events {data.get('from')}..{data.get('to')}: no longer retained]"
    if kind == "permission/request":
        params = data.get("params") or {}
        title = (params.get("toolCall") or {}).get("title") or "a tool"
        return "info", f"[permission requested for {title}]"
    if kind == "session_restarted":
        return "error", "[the daemon restarted: its event history begins again]"
    if kind == "session_new":
        return "info", "[new conversation]"
    if kind == "steer_delivered":
        return "info", "[steer delivered]"
    if kind == "permission_resolved":
        return "info", f"[permission {data.get('outcome', 'resolved')}]"
    if kind in ("session_state", "session_replay_complete", "pong"):
        return None
    return "info", f"[{kind}]"


class EventPrinter:
    """Writes events to a stream as readable text, or as JSON lines with `json_lines=True`."""

    def __init__(self, out: TextIO, *, json_lines: bool = False, color: bool = False) -> None:
        self._out = out
        self._json = json_lines
        self._color = color
        self._mid_line = False
        self._stream: str | None = None

    def _paint(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self._color else text

    def print(self, event: Event) -> None:
        if self._json:
            self._out.write(json.dumps(event.data, separators=(",", ":")) + "\n")
            self._out.flush()
            return
        described = describe(event)
        if described is None:
            return
        style, text = described
        if style in ("text", "thought"):
            # Streamed a few characters at a time: no newline per chunk, one when the stream switches.
            if self._mid_line and self._stream != style:
                self._out.write("\n")
            self._out.write(self._paint(_DIM, text) if style == "thought" and text else text)
            self._stream = style
            self._mid_line = (not text.endswith("\n")) if text else self._mid_line
        else:
            if self._mid_line:
                self._out.write("\n")
            self._out.write(self._paint(_RED if style == "error" else _BOLD, text) + "\n")
            self._mid_line = False
        self._out.flush()

    def finish(self) -> None:
        """End a pending line of assistant text so the shell prompt starts on its own line."""
        if self._mid_line:
            self._out.write("\n")
            self._out.flush()
            self._mid_line = False
