"""What a viewer receives, whatever the transport (/agent/ws frames or /events Server-Sent Events).

`follow(session, after)` yields Batches: first `session_state`, then the retained history after
`after`, then `session_replay_complete`, then live messages as they are appended. Messages
without a seq (state, replay marker, gaps) travel as a batch's `note`, ahead of its entries. A
viewer that falls behind what the log retains gets `session_gap {from, to}` and continues —
never a silent drop. Each viewer reads at its own pace from its own cursor; the agent never
waits for it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from vm_agent.agents.session import AgentSession
from vm_agent.streams import Entry, Gap

BATCH = 512


@dataclass(slots=True)
class Batch:
    """One send's worth: `note` (a message without a seq) if any, then `entries` in seq order.

    The entries are the log's own objects, not copies: a batch costs the same for ten viewers
    as for one, and viewers can share the framed bytes (wsframes.py)."""

    entries: list[Entry[bytes]]
    note: bytes | None = None

    def payloads(self) -> list[bytes]:
        items = [entry.item for entry in self.entries]
        if self.note is not None:
            items.insert(0, self.note)
        return items


def _dumps(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _gap(gap: Gap | None) -> bytes | None:
    return _dumps({"type": "session_gap", "from": gap.first, "to": gap.last}) if gap else None


async def follow(session: AgentSession, after: int = 0) -> AsyncIterator[Batch]:
    """Replay then live; ends when the session is closed."""
    log = session.log
    after = max(0, min(after, log.last_seq))
    replay_until = log.last_seq
    replay_count = max(0, replay_until - max(after, log.first_seq - 1))
    state: dict[str, Any] = {"type": "session_state", "status": session.status, "agentType": session.agent_type,
                             "replayCount": replay_count, "lastSeq": replay_until, "sessionId": session.id,
                             "acpSessionId": session.acp_session_id}
    if session.error:
        state["error"] = session.error
    yield Batch([], _dumps(state))
    cursor = log.cursor(after)
    while cursor.after < replay_until:
        gap, entries = cursor.read_now(BATCH)
        if not entries and not gap:
            break
        if entries and entries[-1].seq > replay_until:
            entries = [e for e in entries if e.seq <= replay_until]
            cursor.after = replay_until
        if entries or gap:
            yield Batch(entries, _gap(gap))
    yield Batch([], _dumps({"type": "session_replay_complete", "lastSeq": replay_until}))
    while True:
        if cursor.after >= log.last_seq:
            if not await log.wait_beyond(cursor.after):
                return
            # Woken by the first append of a burst: give its producers the rest of this loop
            # turn, so that e.g. an agent's last chunk, the prompt result and session_prompt_done
            # leave in one write (one TLS record, one syscall) instead of two.
            await asyncio.sleep(0)
        gap, entries = cursor.read_now(BATCH)
        if entries or gap:
            yield Batch(entries, _gap(gap))
