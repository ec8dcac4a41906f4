"""System figures for /system-info and heartbeats, read from /proc and statvfs (no psutil)."""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import Any

_BOOT_MONOTONIC = time.monotonic()


def load_average() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    return {"loadAvg1": one, "loadAvg5": five, "loadAvg15": fifteen, "numCpu": os.cpu_count() or 1}


def memory() -> dict[str, Any]:
    info: dict[str, int] = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            info[name] = int(rest.split()[0]) * 1024
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0))
    used = total - available
    return {
        "totalBytes": total,
        "usedBytes": used,
        "availableBytes": available,
        "usedPercent": round(used * 100 / total, 2) if total else 0.0,
    }


def disk(path: str = "/") -> dict[str, Any]:
    stats = os.statvfs(path)
    total = stats.f_blocks * stats.f_frsize
    available = stats.f_bavail * stats.f_frsize
    used = total - stats.f_bfree * stats.f_frsize
    return {
        "totalBytes": total,
        "usedBytes": used,
        "availableBytes": available,
        "usedPercent": round(used * 100 / total, 2) if total else 0.0,
        "mountPath": path,
    }


def system_uptime() -> float:
    try:
        with open("/proc/uptime") as handle:
            return float(handle.read().split()[0])
    except OSError:
        return time.monotonic() - _BOOT_MONOTONIC


def process_rss_bytes() -> int:
    """Current resident set size of this process (VmRSS), falling back to the peak."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def python_version() -> str:
    return platform.python_version()
