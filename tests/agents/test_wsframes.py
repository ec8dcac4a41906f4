"""Frames shared by a session's viewers: whatever each viewer's batches, it gets exactly its messages."""

from __future__ import annotations

import random

from vm_agent.agents.wsframes import SharedFrames
from vm_agent.streams import Entry
from vm_agent.wsframe import text_frames


def entries(first: int, last: int, sizes: dict[int, int]) -> list[Entry[bytes]]:
    out = []
    for seq in range(first, last + 1):
        body = b'{"seq":%d,"x":"%b"}' % (seq, b"y" * sizes[seq])
        out.append(Entry(seq, body, len(body)))
    return out


def test_viewers_reading_at_their_own_pace_get_exactly_their_frames():
    rng = random.Random(7)
    # sizes cross the 126 and 65536 frame-header boundaries; the small capacity forces trimming
    sizes = {seq: rng.choice((1, 100, 200, 70_000)) for seq in range(1, 3001)}
    shared = SharedFrames(capacity=300_000)
    positions = [0, 0, 0]  # three viewers; the third starts late and replays from the start
    last_seq = 0
    while min(positions) < 3000:
        last_seq = min(3000, last_seq + rng.randint(1, 40))  # the agent appends a burst
        for viewer in rng.sample(range(3), 3):
            if viewer == 2 and last_seq < 1500:
                continue
            first = positions[viewer] + 1
            last = min(last_seq, first + rng.randint(0, 60))
            if first > last:
                continue
            batch = entries(first, last, sizes)
            assert shared.frames(batch) == text_frames([e.item for e in batch])
            positions[viewer] = last


def test_a_jump_ahead_starts_over_instead_of_mixing_messages():
    sizes = {seq: 10 for seq in range(1, 101)}
    shared = SharedFrames()
    assert shared.frames(entries(1, 5, sizes)) == text_frames([e.item for e in entries(1, 5, sizes)])
    later = entries(50, 60, sizes)
    assert shared.frames(later) == text_frames([e.item for e in later])
    again = entries(3, 4, sizes)  # now older than what is held: framed on its own
    assert shared.frames(again) == text_frames([e.item for e in again])
