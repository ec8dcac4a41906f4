"""`vmagent swarm`: hosts from arguments or a file, tasks for all or per host, a live table.

Hosts file: one host per line, `#` comments. Either `[NAME=]URL [token=T] [fingerprint=F]`
or a JSON object `{"name", "url", "token", "fingerprint", "caFile", "task", "session",
"workspace"}`. VMs branched from one golden image share its certificate, so a single
`--fingerprint` often fits all; per-host values override the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import shutil
import sys
import unicodedata
from pathlib import Path
from typing import Any, TextIO

from vm_agent.client._options import _env, tls_from, token_from
from vm_agent.client.api import AgentClient
from vm_agent.client.errors import EXIT_FAILURE, EXIT_OK, ConfigError
from vm_agent.client.swarm import AgentRun, AgentStatus, Swarm
from vm_agent.client.tls import TlsConfig

SPINNER = "|/-\\"
# Escape sequences (CSI, OSC, two-character ESC x) an agent's reply may contain, then any other
# control character: either would move the cursor or recolour the table when drawn.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def printable(text: str) -> str:
    """`text` as one line that draws only itself: escape sequences dropped, controls as spaces."""
    return _CONTROLS.sub(" ", _ESCAPES.sub("", text))


def fit(text: str, columns: int) -> str:
    """The longest start of `text` that fits in `columns` terminal cells (wide CJK and emoji
    characters take two, combining marks none)."""
    used = 0
    for index, char in enumerate(text):
        width = 0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        if used + width > columns:
            return text[:index]
        used += width
    return text


HOSTS_HELP = """hosts file: one host per line, '#' starts a comment
  [NAME=]URL [token=T] [fingerprint=F] [session=S] [workspace=W]
  {"name": ..., "url": ..., "token": ..., "fingerprint": ..., "caFile": ..., "task": ...}
values on a line override the flags and the VMAGENT_* environment.
exit code: 0 when every agent finished, 1 when any failed (each failure is one line on stderr)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = HOSTS_HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("hosts", nargs="*", help="daemon URLs, optionally NAME=URL")
    p.add_argument("--hosts-file", help="one host per line (see `vmagent swarm --help`)")
    p.add_argument("--task", help="the prompt every agent gets")
    p.add_argument("--tasks-file", help="one task per line in host order, or a JSON object name -> task")
    p.add_argument("--concurrency", type=int, default=16, help="prompts submitted at once (default 16)")
    p.add_argument("--wait-timeout", type=float, default=None, help="seconds each agent may take")
    p.add_argument("--retries", type=int, default=8, help="reconnect attempts per agent before it counts as failed")
    p.add_argument("--no-texts", action="store_true", help="do not print the agents' final replies")


def _parse_host_line(line: str) -> dict[str, Any]:
    if line.startswith("{"):
        try:
            spec = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"hosts file: bad JSON line {line[:60]!r}: {exc}") from None
        if not isinstance(spec, dict) or not spec.get("url"):
            raise ConfigError(f'hosts file: a JSON line needs a "url": {line[:60]!r}')
        return spec
    first, *rest = line.split()
    spec: dict[str, Any] = {}
    if "=" in first and "://" not in first.split("=", 1)[0]:
        spec["name"], spec["url"] = first.split("=", 1)
    else:
        spec["url"] = first
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or key not in ("token", "fingerprint", "session", "workspace"):
            raise ConfigError(f"hosts file: unknown field {item!r} (token=, fingerprint=, session=, workspace=)")
        spec[key] = value
    return spec


def load_hosts(args: argparse.Namespace) -> list[dict[str, Any]]:
    specs = [_parse_host_line(h) for h in args.hosts]
    if args.hosts_file:
        try:
            text = Path(args.hosts_file).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read hosts file {args.hosts_file}: {exc.strerror}") from None
        specs += [
            _parse_host_line(s.strip()) for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")
        ]
    if not specs:
        raise ConfigError("no hosts given (pass URLs or --hosts-file)")
    return specs


def load_tasks(args: argparse.Namespace, specs: list[dict[str, Any]], names: list[str]) -> dict[str, str]:
    tasks: dict[str, str] = {}
    if args.tasks_file:
        try:
            text = Path(args.tasks_file).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read tasks file {args.tasks_file}: {exc.strerror}") from None
        if text.lstrip().startswith("{"):
            tasks = {str(k): str(v) for k, v in json.loads(text).items()}
        else:
            lines = [line for line in text.splitlines() if line.strip()]
            if len(lines) != len(names):
                raise ConfigError(f"tasks file has {len(lines)} tasks for {len(names)} hosts")
            tasks = dict(zip(names, lines, strict=True))
    for name, spec in zip(names, specs, strict=True):
        if spec.get("task"):
            tasks[name] = str(spec["task"])
        elif name not in tasks and args.task:
            tasks[name] = args.task
    missing = [n for n in names if n not in tasks]
    if missing:
        raise ConfigError(f"no task for {', '.join(missing[:5])} (pass --task, --tasks-file or task in the hosts file)")
    return tasks


def build_clients(args: argparse.Namespace, specs: list[dict[str, Any]]) -> list[AgentClient]:
    default_tls = tls_from(args)
    clients = []
    for spec in specs:
        tls = default_tls
        if spec.get("fingerprint") or spec.get("caFile"):
            tls = TlsConfig(ca_file=spec.get("caFile"), fingerprint=spec.get("fingerprint"))
        clients.append(
            AgentClient(
                spec["url"],
                spec.get("token") or token_from(args),
                workspace=spec.get("workspace") or args.workspace or _env("VMAGENT_WORKSPACE") or "host",
                session=spec.get("session") or args.session or _env("VMAGENT_SESSION") or "main",
                verify=tls,
                timeout=args.timeout,
                name=spec.get("name"),
                reconnect_attempts=args.retries,
            )
        )
    return clients


class LiveTable:
    """Redraws every agent's row in place on a tty; elsewhere prints one line per change."""

    def __init__(self, out: TextIO, live: bool, quiet: bool = False) -> None:
        """`live` redraws rows in place; it moves the cursor up one line per row drawn, which
        is only right when no row wraps: each row is cut to the terminal's width (read at every
        redraw, so a resized window is followed), minus one column, because a line that fills
        the last column leaves some terminals' cursor in a pending-wrap state."""
        self.out = out
        self.live = live
        self.quiet = quiet
        self.runs: list[AgentRun] = []
        self._drawn = 0
        self._spin = itertools.cycle(SPINNER)

    def changed(self, run: AgentRun) -> None:
        if self.live or self.quiet:
            return  # the ticker redraws, or only the final JSON is wanted
        detail = f" ({run.elapsed:.1f}s)" if run.status is AgentStatus.DONE else ""
        detail = f": {printable(run.error)}" if run.error else detail
        self.out.write(f"{run.name}: {run.status}{detail}\n")
        self.out.flush()

    def row(self, run: AgentRun, spin: str) -> str:
        state = {AgentStatus.WORKING: f"working {spin}", AgentStatus.ERROR: "ERROR"}.get(run.status, str(run.status))
        lines = (run.error or run.text).strip().splitlines()
        first = printable(lines[0]).strip()[:60] if lines else ""
        return f"{printable(run.name):<24} {state:<10} {run.elapsed:6.1f}s {run.events:5d} ev  {first}"

    def draw(self) -> None:
        spin = next(self._spin)
        done = sum(r.status is AgentStatus.DONE for r in self.runs)
        failed = sum(r.status is AgentStatus.ERROR for r in self.runs)
        lines = [f"swarm: {done}/{len(self.runs)} done, {failed} failed", *(self.row(r, spin) for r in self.runs)]
        columns = max(1, shutil.get_terminal_size().columns - 1)
        lines = [fit(line, columns) for line in lines]
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")
        self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self._drawn = len(lines)

    async def tick(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(0.1)


async def cmd_swarm(args: argparse.Namespace) -> int:
    specs = load_hosts(args)
    clients = build_clients(args, specs)
    names = [c.name for c in clients]
    if len(set(names)) != len(names):
        raise ConfigError("two hosts have the same name; give them NAME=URL")
    tasks = load_tasks(args, specs, names)
    table = LiveTable(sys.stdout, live=sys.stdout.isatty() and not args.json, quiet=args.json)
    async with Swarm(clients, concurrency=args.concurrency, on_change=table.changed) as swarm:
        table.runs = swarm.runs
        ticker = asyncio.create_task(table.tick()) if table.live else None
        try:
            await swarm.run(tasks, args.wait_timeout)
        finally:
            if ticker is not None:
                ticker.cancel()
                table.draw()
    runs = swarm.runs
    failed = swarm.failures
    if args.json:
        summary = {"agents": [r.summary() for r in runs], "done": len(runs) - len(failed), "failed": len(failed)}
        print(json.dumps(summary, indent=2))
    else:
        if not table.live:
            print(f"swarm: {len(runs) - len(failed)}/{len(runs)} done, {len(failed)} failed")
        if not args.no_texts:
            for run in runs:
                if run.status is AgentStatus.DONE:
                    print(f"\n== {run.name} ==\n{run.text.rstrip()}")
        for run in failed:
            print(f"vmagent: {run.name}: {run.error}", file=sys.stderr)
    return EXIT_FAILURE if failed else EXIT_OK
