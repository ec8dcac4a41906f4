"""What a viewer receives, whatever the transport (/agent/ws frames or /events Server-Sent Events).

`follow(session, after)` yields batches of (seq, json_text): first `session_state`, then the
retained history after `after`, then `session_replay_complete`, then live messages as they are
appended. Messages without a seq (state, replay marker, gaps) carry seq None. A viewer that
falls behind what the log retains gets `session_gap {from, to}` and continues — never a silent
drop. Each viewer reads at its own pace from its own cursor; the agent never waits for it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from vm_agent.agents.session import AgentSession
from vm_agent.streams import Gap

Batch = list[tuple[int | None, bytes]]
BATCH = 512


def _dumps(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _gap(gap: Gap) -> tuple[None, bytes]:
    return None, _dumps({"type": "session_gap", "from": gap.first, "to": gap.last})


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
    yield [(None, _dumps(state))]
    cursor = log.cursor(after)
    while cursor.after < replay_until:
        gap, entries = cursor.read_now(BATCH)
        batch: Batch = [_gap(gap)] if gap else []
        batch.extend((e.seq, e.item) for e in entries if e.seq <= replay_until)
        if not entries and not gap:
            break
        if entries and entries[-1].seq > replay_until:
            cursor.after = replay_until
        yield batch
    yield [(None, _dumps({"type": "session_replay_complete", "lastSeq": replay_until}))]
    while True:
        result = await cursor.next(BATCH)
        if result is None:
            return
        gap, entries = result
        batch = [_gap(gap)] if gap else []
        batch.extend((e.seq, e.item) for e in entries)
        if batch:
            yield batch
