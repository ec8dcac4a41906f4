"""Repeated runs of one benchmark row, and the single figure the table shows for them.

A 2-vCPU VM on a shared host gives figures that move by tens of percent from one minute to the
next: the hypervisor steals CPU for a noisy neighbour, and the host's own speed changes too (the
raw PTY rate was seen at 96 and at 135 MB/s seconds apart, both at under 1% steal). A row at its
target passes on some runs and misses on others, so one run cannot settle it. Each row is
therefore measured `--repeat` times, peers taking turns, and the table shows the median of the
calm runs (steal at most CALM_STEAL), with how many runs were calm and the range they spanned.
Every run's ratio is against its own ceiling or floor, measured just before and after it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

# A run during which the hypervisor took at most this share (%) of the VM's CPU counts as calm.
CALM_STEAL = 2.0


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a row: the figure, its ratio to the reference measured around it, the CPU
    steal (%) while it ran, the server's CPU cost per unit (MB, session), and for throughput
    the host's idle CPU (%) while the server relayed."""

    value: float
    ratio: float
    steal: float
    cpu: float
    idle: float | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    """The median over the runs that count (the calm ones, or all when none was calm)."""

    value: float
    ratio: float
    cpu: float
    steal: float  # the highest steal among the runs that count
    calm: int
    runs: int
    low: float  # the lowest and highest ratio among the runs that count
    high: float
    idle: float | None  # the median host idle CPU (%), where the runs measured it


class Repeats:
    """Runs per (row, peer), in the order they were taken."""

    def __init__(self) -> None:
        self._runs: defaultdict[tuple[str, str], list[Run]] = defaultdict(list)

    def add(self, row: str, peer: str, run: Run) -> None:
        self._runs[row, peer].append(run)

    def rows(self) -> list[str]:
        return list(dict.fromkeys(row for row, _peer in self._runs))

    def peers(self, row: str) -> list[str]:
        return [peer for key_row, peer in self._runs if key_row == row]

    def summary(self, row: str, peer: str) -> Summary:
        runs = self._runs[row, peer]
        calm = [run for run in runs if run.steal <= CALM_STEAL]
        counted = calm or runs
        ratios = [run.ratio for run in counted]
        idles = [run.idle for run in counted if run.idle is not None]
        return Summary(
            value=statistics.median(run.value for run in counted),
            ratio=statistics.median(ratios),
            cpu=statistics.median(run.cpu for run in counted),
            steal=max(run.steal for run in counted),
            calm=len(calm),
            runs=len(runs),
            low=min(ratios),
            high=max(ratios),
            idle=statistics.median(idles) if idles else None,
        )
