"""Plain-text renderings of the daemon's JSON answers for the CLI's human output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def human_bytes(value: Any) -> str:
    if not isinstance(value, int | float):
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "?"
    seconds = int(value)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | dict):
        return str(len(value)) if isinstance(value, list) else "{...}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 48 else text[:47] + "…"


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, empty: str) -> str:
    if not rows:
        return empty
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def render_mapping(data: Mapping[str, Any], indent: str = "") -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            lines.append(f"{indent}{key}:")
            lines.append(render_mapping(value, indent + "  "))
        elif isinstance(value, list):
            lines.append(f"{indent}{key}: {len(value)} item(s)")
            lines += [f"{indent}  - {_cell(item)}" for item in value]
        else:
            lines.append(f"{indent}{key}: {_cell(value)}")
    return "\n".join(lines)


def render_health(health: Mapping[str, Any]) -> str:
    head = (
        f"{health.get('status', '?')}  version {health.get('version', '?')}  node {health.get('nodeId') or '-'}"
        f"  up {human_seconds(health.get('uptimeSeconds'))}"
    )
    lines = [head]
    for name, check in (health.get("checks") or {}).items():
        if isinstance(check, Mapping):
            ok = check.get("ok", check.get("status") == "ok")
            detail = check.get("error") or check.get("message") or ""
            lines.append(f"  {name}: {'ok' if ok else 'FAILING'}{'  ' + str(detail) if detail else ''}")
        else:
            lines.append(f"  {name}: {check}")
    return "\n".join(lines)


def render_info(info: Mapping[str, Any]) -> str:
    cpu, mem, disk = info.get("cpu") or {}, info.get("memory") or {}, info.get("disk") or {}
    docker, agent = info.get("docker") or {}, info.get("agent") or {}
    lines = [
        f"cpu:    {cpu.get('numCpu', '?')} cores, load {cpu.get('loadAvg1', '?')} {cpu.get('loadAvg5', '?')} "
        f"{cpu.get('loadAvg15', '?')}",
        f"memory: {human_bytes(mem.get('usedBytes'))} used of {human_bytes(mem.get('totalBytes'))} "
        f"({mem.get('usedPercent', '?')}%)",
        f"disk:   {human_bytes(disk.get('usedBytes'))} used of {human_bytes(disk.get('totalBytes'))} "
        f"({disk.get('usedPercent', '?')}%) on {disk.get('mountPath', '?')}",
        f"uptime: {human_seconds((info.get('uptime') or {}).get('seconds'))}",
        "docker: "
        + (
            f"error: {docker['error']}"
            if docker.get("error")
            else f"{docker.get('version', '?')}, {docker.get('containers', '?')} containers"
        ),
        f"agent:  vm-agent {agent.get('version', '?')} (python {agent.get('python', '?')}, "
        f"pid {agent.get('pid', '?')}, "
        f"rss {human_bytes(agent.get('rssBytes'))}), {agent.get('terminalSessions', 0)} terminals, "
        f"{agent.get('agentSessions', 0)} agent sessions",
    ]
    return "\n".join(lines)


def render_logs(logs: Mapping[str, Any]) -> str:
    lines = []
    for entry in logs.get("entries") or []:
        fields = entry.get("fields") or {}
        extra = " ".join(f"{k}={v}" for k, v in fields.items()) if isinstance(fields, Mapping) else ""
        lines.append(
            f"{entry.get('timestamp', '')} {str(entry.get('level', '')).upper():7} {entry.get('message', '')}"
            + (f"  {extra}" if extra else "")
        )
    return "\n".join(lines) if lines else "no log entries"
