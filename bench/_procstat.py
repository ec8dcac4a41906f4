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


def _host_cpu_ticks() -> list[int]:
    """user, nice, system, idle, iowait, irq, softirq, steal: ticks summed over the host's CPUs."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields + [0] * (8 - len(fields))


class HostCpuMeter:
    """How the host's CPU time was spent while a measurement ran.

    Stolen: the hypervisor took it for a noisy neighbour, and the run is not comparable with a
    calm one. Idle: nobody had work; a relay that leaves the machine idle while it falls short
    of the raw rate is held back by waiting (PTY wake-ups), not by the CPU it spends.
    """

    def __init__(self) -> None:
        self._start = _host_cpu_ticks()

    def _share(self, *columns: int) -> float:
        now = _host_cpu_ticks()
        spent = [after - before for after, before in zip(now, self._start, strict=True)]
        return 100 * sum(spent[column] for column in columns) / max(sum(spent), 1)

    def stolen(self) -> float:
        return self._share(7)

    def idle(self) -> float:
        return self._share(3, 4)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
