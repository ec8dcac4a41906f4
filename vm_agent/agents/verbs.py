"""The prompt-queue verbs in the FIFO message shape the Vers coordinator already speaks.

Request: `{"type": "prompt"|"steer"|"follow_up"|"abort"|"get_state"|"new_session", "message"?}`
(the prompt as text or ContentBlocks; `prompt` is accepted as an alias of `message`).
Answer: `{"type": "response", "command": <type>, "success": true, ...}` or `success: false` with
`error`. Used by `POST …/{sid}/rpc` and by the [ext] verbs on `/agent/ws`.
"""

from __future__ import annotations

from typing import Any

from vm_agent.agents.driver import AgentError
from vm_agent.agents.prompts import text_blocks
from vm_agent.agents.session import AgentSession

VERBS = ("prompt", "steer", "follow_up", "abort", "get_state", "new_session")
PROMPT_VERBS = ("prompt", "steer", "follow_up")


class VerbError(ValueError):
    """The request is malformed (unknown verb, missing message)."""


def parse_verb(body: Any) -> tuple[str, Any]:
    if not isinstance(body, dict) or body.get("type") not in VERBS:
        raise VerbError(f"type must be one of {', '.join(VERBS)}")
    verb = body["type"]
    content = None
    if verb in PROMPT_VERBS:
        raw = body.get("message", body.get("prompt"))
        if raw is None or raw == "" or raw == []:
            raise VerbError(f"{verb} needs a non-empty message")
        try:
            content = text_blocks(raw)
        except ValueError as exc:
            raise VerbError(str(exc)) from None
    return verb, content


async def run_verb(session: AgentSession, body: Any, request_id: Any = None) -> dict[str, Any]:
    """Apply one verb; never raises for bad input (the answer says what was wrong)."""
    command = body.get("type") if isinstance(body, dict) else None
    try:
        verb, content = parse_verb(body)
        if verb == "prompt":
            data = session.prompt(content, request_id=request_id)
        elif verb == "follow_up":
            data = await session.follow_up(content, request_id=request_id)
        elif verb == "steer":
            data = await session.steer(content, request_id=request_id)
        elif verb == "abort":
            data = await session.abort()
        elif verb == "new_session":
            data = {"acpSessionId": await session.new_session()}
        else:
            return {"type": "response", "command": verb, "success": True, "data": session.get_state()}
    except (VerbError, AgentError) as exc:
        return {"type": "response", "command": command, "success": False, "error": str(exc)}
    return {"type": "response", "command": verb, "success": True, **data}
