"""A prompt as the gateway takes it from a client: validated content and its queue entry.

`text_blocks` is the input boundary for every prompt (HTTP `prompt`/`start`/`rpc`, `/agent/ws`):
what it accepts is queued, shown to viewers, persisted as the session's last prompt and written
to the agent. So it refuses what would break any of those later, away from the client that sent
it (a `text` block whose text is not a string made `summary` raise after the item was queued,
which wedged the session), and replaces lone surrogates, which cannot be encoded as UTF-8.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from vm_agent.agents.driver import ContentBlocks
from vm_agent.agents.redact import scrub_surrogates

_ids = itertools.count(1)


@dataclass
class PromptItem:
    content: ContentBlocks
    kind: str = "prompt"  # prompt | follow_up | steer
    request_id: Any = None  # the viewer's JSON-RPC id, echoed in the result
    id: str = field(default_factory=lambda: f"p{next(_ids)}")
    done: bool = False
    queued: bool = False  # viewers were told it waits (so they get a queue_update when it starts)
    queued_at: float = field(default_factory=time.time)

    def summary(self) -> dict[str, Any]:
        # Only strings: content that skipped text_blocks (an in-process caller) must not make
        # the queue unreadable.
        text = " ".join(b["text"] for b in self.content
                        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
        return {"id": self.id, "kind": self.kind, "text": text[:200]}


def text_blocks(message: Any) -> ContentBlocks:
    """A prompt as ContentBlocks: a string, one block, or a list of blocks. ValueError otherwise
    (the caller answers 400 / JSON-RPC -32602); lone surrogates become U+FFFD."""
    if isinstance(message, str):
        blocks: ContentBlocks = [{"type": "text", "text": message}]
    elif isinstance(message, dict) and isinstance(message.get("type"), str):
        blocks = [message]
    elif isinstance(message, list) and message and all(isinstance(b, dict) and isinstance(b.get("type"), str)
                                                       for b in message):
        blocks = message
    else:
        raise ValueError("prompt must be a string or a list of content blocks")
    if any(b["type"] == "text" and not isinstance(b.get("text"), str) for b in blocks):
        raise ValueError("a text block needs a string `text`")
    try:
        return scrub_surrogates(blocks)
    except RecursionError:
        raise ValueError("prompt content is nested too deeply") from None
