#!/usr/bin/env python3
"""The fake ACP agent (tests/fakes/fake_acp_agent.py) plus one scripted prompt for the console:

  tools            a tool call that goes pending → in_progress → completed (with output), a second
                   that fails, then the reply "tools done", end_turn

Everything else behaves exactly as the fake agent does.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes import fake_acp_agent as fake


class ToolAgent(fake.Agent):
    async def run(self, sid: str, word: str, arg: str, text: str) -> dict[str, Any]:
        if word != "tools":
            return await super().run(sid, word, arg, text)
        fake.send(fake.update(sid, {"sessionUpdate": "tool_call", "toolCallId": "t1", "title": "Read README.md",
                                    "kind": "read", "status": "pending", "rawInput": {"path": "README.md"}}))
        fake.send(fake.update(sid, {"sessionUpdate": "tool_call_update", "toolCallId": "t1",
                                    "status": "in_progress"}))
        fake.send(fake.update(sid, {"sessionUpdate": "tool_call_update", "toolCallId": "t1", "status": "completed",
                                    "content": [{"type": "content",
                                                 "content": {"type": "text", "text": "# vm-agent"}}]}))
        fake.send(fake.update(sid, {"sessionUpdate": "tool_call", "toolCallId": "t2", "title": "Run make test",
                                    "kind": "execute", "status": "in_progress"}))
        fake.send(fake.update(sid, {"sessionUpdate": "tool_call_update", "toolCallId": "t2", "status": "failed"}))
        fake.send(fake.chunk(sid, "tools done"))
        return {"stopReason": "end_turn"}


if __name__ == "__main__":
    fake.Agent = ToolAgent  # type: ignore[misc]
    asyncio.run(fake.main())
