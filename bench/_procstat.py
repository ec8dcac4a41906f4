"""What the benchmarks read about processes and the host: free ports, a process's memory and CPU,
and the CPU the hypervisor stole. Shared by every script under bench/."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """CPU time the process's live threads have run, from the scheduler's nanosecond counters
    (/proc/…/stat's tick sampling over-charges a process whose wake-ups follow the timer tick,
    as keystroke echoes through a PTY do)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


def host_cpu_ticks() -> tuple[int, int]:
    """(ticks stolen by the hypervisor, all ticks) summed over the host's CPUs, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


class StealMeter:
    """Share of CPU time the hypervisor took from this VM while a measurement ran: a noisy
    neighbour shows here, and its rows are not comparable with a calm run's."""

    def __init__(self) -> None:
        self._steal, self._total = host_cpu_ticks()

    def percent(self) -> float:
        steal, total = host_cpu_ticks()
        return 100 * (steal - self._steal) / max(total - self._total, 1)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
