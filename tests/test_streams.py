"""The bounded byte log behind terminal replay: exact bytes by absolute position, gaps counted.

Checked against a plain reference (everything ever appended) over random appends and reads,
including appends larger than the log and reads that straddle the ring's wrap point.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vm_agent.streams import ByteLog

appends = st.lists(st.binary(min_size=0, max_size=700), min_size=1, max_size=60)
reads = st.lists(st.tuples(st.integers(0, 20_000), st.integers(1, 1500)), min_size=1, max_size=10)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 1200), chunks=appends, probes=reads)
def test_reads_return_exactly_the_retained_bytes(capacity: int, chunks: list[bytes], probes) -> None:
    log = ByteLog(capacity)
    everything = bytearray()
    for chunk in chunks:
        log.append(chunk)
        everything += chunk
        assert log.end == len(everything)
        assert log.start == max(0, len(everything) - capacity)
        for position, limit in probes:
            position = min(position, len(everything))
            piece = log.read(position, limit)
            first = max(position, log.start)
            assert piece.offset == first
            assert piece.gap == first - position
            assert piece.data == bytes(everything[first : first + limit])
            assert log.peek(position, position + limit) == bytes(everything[first : max(first, position + limit)])


def test_an_idle_log_stays_small_and_a_full_one_never_exceeds_its_capacity() -> None:
    log = ByteLog(1 << 20)
    log.append(b"$ ")
    assert len(log._ring) <= 4096
    for _ in range(100):
        log.append(b"x" * 30_000)
    assert len(log._ring) == 1 << 20
    assert log.read(0, 10).gap == log.start
