"""`vmagent`: drive a VM's daemon (or a swarm of them) from a shell.

Connection settings come from flags or the environment (VMAGENT_URL, VMAGENT_TOKEN or
VMAGENT_TOKEN_FILE, VMAGENT_WORKSPACE, VMAGENT_SESSION, VMAGENT_CA_FILE, VMAGENT_FINGERPRINT);
a token is best passed by environment or file, since flags show in `ps`. Output is text for
people, or one JSON document (`--json`) for scripts. Every failure is one line on stderr and an
exit code that says what kind of failure it was (see `vm_agent.client.errors`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from vm_agent.client import _swarm_cli
from vm_agent.client._options import _env, client_from
from vm_agent.client._render import render_health, render_info, render_logs, render_mapping, render_table
from vm_agent.client._transport import parse_base_url
from vm_agent.client.errors import EXIT_BROKEN_PIPE, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ClientError, ConfigError
from vm_agent.client.formatting import EventPrinter
from vm_agent.client.settling import Settling, is_idle, last_seq
from vm_agent.client.terminal import DEFAULT_DETACH_KEY, InteractiveTerminal, parse_detach_key
from vm_agent.client.tls import fetch_fingerprint, format_fingerprint

Command = Callable[[argparse.Namespace], Awaitable[int]]


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else human)


# --- commands -----------------------------------------------------------------------------


async def cmd_health(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        health = await client.health()
    emit(args, health, render_health(health))
    return EXIT_OK if health.get("status") == "healthy" else EXIT_FAILURE


async def cmd_info(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        info = await client.system_info()
    emit(args, info, render_info(info))
    return EXIT_OK


async def cmd_logs(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        logs = await client.logs(limit=args.limit, level=args.level, since=args.since, cursor=args.cursor)
    emit(args, logs, render_logs(logs))
    return EXIT_OK


async def cmd_fingerprint(args: argparse.Namespace) -> int:
    url = args.url or _env("VMAGENT_URL") or ""
    digest = await fetch_fingerprint(str(parse_base_url(url)), args.timeout)
    emit(args, {"sha256": digest}, format_fingerprint(digest))
    return EXIT_OK


async def cmd_sessions(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        sessions = await client.list_sessions()
    columns = ["id", "status", "agentType", "label", "lastPrompt"]
    emit(args, {"sessions": sessions}, render_table(sessions, columns, empty="no agent sessions"))
    return EXIT_OK


async def cmd_prompt(args: argparse.Namespace) -> int:
    text = " ".join(args.text)
    async with client_from(args) as client:
        await client.ensure_session(agent_type=args.agent)
        if not (args.follow or args.wait):
            answer = await client.prompt(text)
            where = f"position {answer['position']} in the queue" if answer.get("status") == "queued" else "running"
            emit(args, answer, f"prompt sent to {client.session} on {client.name}: {where}")
            return EXIT_OK
        printer = EventPrinter(sys.stdout, json_lines=args.json, color=sys.stdout.isatty())
        if args.follow:
            client.on_event = printer.print
        sent = await client.send_prompt(text)
        result = await client.wait_result(sent, args.wait_timeout)
        printer.finish()
        if args.wait and not args.follow:
            answer = {"text": result.text, "stopReason": result.stop_reason, "error": result.failure}
            emit(args, answer | {"promptId": result.prompt_id}, result.text)
    if result.failure:
        reason = f"agent failed: {result.error}" if result.error else result.failure
        print(f"vmagent: {reason}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _rpc_command(verb: str, needs_text: bool) -> Command:
    async def run(args: argparse.Namespace) -> int:
        text = " ".join(args.text) if needs_text else None
        async with client_from(args) as client:
            answer = await client.rpc(verb, text)
        emit(args, answer, f"{verb.replace('_', '-')}: ok")
        return EXIT_OK

    return run


async def cmd_state(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        state = await client.get_state()
    emit(args, state, render_mapping(state))
    return EXIT_OK


def _action_command(action: str) -> Command:
    async def run(args: argparse.Namespace) -> int:
        async with client_from(args) as client:
            answer = await client.session_action(action)
        emit(args, answer, f"{action}: {answer.get('status', 'ok') if isinstance(answer, dict) else 'ok'}")
        return EXIT_OK

    return run


async def cmd_wait(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        state = await client.wait_idle(args.wait_timeout)
    emit(args, state, f"idle: {state.get('status', 'idle')}" if is_idle(state) else render_mapping(state))
    return EXIT_OK


async def cmd_watch(args: argparse.Namespace) -> int:
    printer = EventPrinter(sys.stdout, json_lines=args.json, color=sys.stdout.isatty())
    async with client_from(args) as client:
        settled = Settling(client.get_state)
        if args.until_idle:
            # Settling otherwise only looks at the state when a settling event arrives; resuming
            # after the last event of finished work, none ever would.
            state = await client.get_state()
            if is_idle(state) and last_seq(state) <= args.after:
                return EXIT_OK
            settled.seed(state)
        events = client.events(args.after)
        try:
            async for event in events:
                printer.print(event)
                if args.until_idle and await settled.check(event):
                    break
        finally:
            await events.aclose()
            printer.finish()
    return EXIT_OK


async def cmd_term(args: argparse.Namespace) -> int:
    try:
        detach_key = parse_detach_key(args.detach_key)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    async with client_from(args) as client:
        interactive = InteractiveTerminal(
            client,
            args.session_id,
            detach_key=detach_key,
            reconnect_for=args.reconnect_for,
            workspace=client.workspace,
        )
        return await interactive.run()


async def cmd_terminals(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        sessions = await client.list_terminals()
    columns = ["sessionId", "name", "status", "workingDirectory", "exitCode"]
    emit(args, {"sessions": sessions}, render_table(sessions, columns, empty="no terminal sessions"))
    return EXIT_OK


async def cmd_workspaces(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        action = args.ws_action or "list"
        if action == "list":
            found = await client.list_workspaces()
            columns = ["id", "status", "repository", "branch", "sessions"]
            emit(args, {"workspaces": found}, render_table(found, columns, empty="no workspaces"))
            return EXIT_OK
        if action == "create":
            fields = {"repository": args.repository, "branch": args.branch, "image": args.image}
            answer = await client.create_workspace(args.id, **fields)
        elif action == "delete":
            answer = await client.delete_workspace(args.id)
        elif action == "tabs":
            tabs = await client.tabs(args.id)
            columns = ["id", "type", "label", "agentId", "sortOrder"]
            emit(args, {"tabs": tabs}, render_table(tabs, columns, empty="no tabs"))
            return EXIT_OK
        else:
            answer = await client.workspace_action(args.id, action)
    emit(args, answer, f"{args.id}: {answer.get('status', 'ok') if 'status' in answer else 'ok'}")
    return EXIT_OK


# --- parser -------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Connection flags, accepted before or after the command name."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection")
    group.add_argument("--url", default=default(None), help="daemon URL (env VMAGENT_URL)")
    group.add_argument("--token", default=default(None), help="token (env VMAGENT_TOKEN; visible in ps)")
    group.add_argument("--token-file", default=default(None), help="file holding the token (env VMAGENT_TOKEN_FILE)")
    group.add_argument("--workspace", default=default(None), help="workspace id (env VMAGENT_WORKSPACE, default host)")
    group.add_argument("--session", default=default(None), help="agent session id (env VMAGENT_SESSION, default main)")
    group.add_argument("--ca-file", default=default(None), help="CA certificate file to trust (env VMAGENT_CA_FILE)")
    group.add_argument("--fingerprint", default=default(None), help="pinned SHA-256 certificate fingerprint")
    group.add_argument("--insecure", action="store_true", default=default(False), help="skip TLS verification (unsafe)")
    group.add_argument("--timeout", type=float, default=default(30.0), help="seconds per request (default 30)")
    group.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmagent",
        description="Drive vm-agent daemons: agents, terminals, swarms.",
        epilog="exit codes: 0 ok, 1 failed, 2 usage or configuration, 3 unreachable or TLS mismatch, "
        "4 token refused, 130 interrupted, 141 stdout closed by its reader",
    )
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, suppress=True)
        p.set_defaults(func=func)
        return p

    add("health", cmd_health, "daemon health (exit 1 when degraded)")
    add("info", cmd_info, "system information: cpu, memory, disk, docker, agent")
    p = add("logs", cmd_logs, "recent daemon log entries")
    p.add_argument("--limit", type=int)
    p.add_argument("--level")
    p.add_argument("--since")
    p.add_argument("--cursor")
    add("fingerprint", cmd_fingerprint, "print the SHA-256 fingerprint of the daemon's certificate, to pin it")
    add("sessions", cmd_sessions, "list agent sessions of the workspace")
    p = add("prompt", cmd_prompt, "send a prompt (runs now, or queues behind the running one)")
    p.add_argument("text", nargs="+")
    p.add_argument("--follow", "-f", action="store_true", help="stream the agent's events until it settles")
    p.add_argument("--wait", "-w", action="store_true", help="wait and print the final reply")
    p.add_argument("--wait-timeout", type=float, default=None, help="give up waiting after this many seconds")
    p.add_argument("--agent", help="agent type when the session has to be created (default: the daemon's)")
    for verb, help_text in (("steer", "redirect the running prompt"), ("follow_up", "queue after the current work")):
        add(verb.replace("_", "-"), _rpc_command(verb, True), help_text).add_argument("text", nargs="+")
    add("abort", _rpc_command("abort", False), "cancel the running prompt and clear the queue")
    add("new-session", _rpc_command("new_session", False), "start a fresh conversation")
    add("state", cmd_state, "the session's state: status, queue, last stop reason, usage")
    for action in ("cancel", "stop", "suspend", "resume"):
        add(action, _action_command(action), f"{action} the agent session")
    p = add("wait", cmd_wait, "wait until the session is idle")
    p.add_argument("--wait-timeout", type=float, default=None)
    p = add("watch", cmd_watch, "stream the session's events as text (or --json lines)")
    p.add_argument("--after", type=int, default=0, help="start after this seq (default: whole history)")
    p.add_argument("--until-idle", action="store_true", help="stop once the session is idle")
    p = add("term", cmd_term, "interactive terminal in this tty (detach with the detach key)")
    p.add_argument("session_id", nargs="?", help="attach to (or create) this session id; default: a new one")
    p.add_argument("--detach-key", default=DEFAULT_DETACH_KEY, help="default ^] ; 'none' disables")
    p.add_argument("--reconnect-for", type=float, default=120.0, help="seconds to keep retrying a lost connection")
    add("terminals", cmd_terminals, "list your terminal sessions")
    p = add("workspaces", cmd_workspaces, "list, create, stop, restart, rebuild, delete workspaces; show tabs")
    p.add_argument("ws_action", nargs="?", choices=["list", "create", "stop", "restart", "rebuild", "delete", "tabs"])
    p.add_argument("id", nargs="?")
    p.add_argument("--repository")
    p.add_argument("--branch")
    p.add_argument("--image")
    p = add("swarm", _swarm_cli.cmd_swarm, "send tasks to many daemons and follow them in a live table")
    _swarm_cli.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (see `vm_agent.client.errors` and the epilog).

    When whoever reads stdout stops reading (`vmagent watch --json | head -1`), the output is
    simply cut short, as for any Unix tool: no traceback, exit code 141, the status a shell
    shows for a program killed by SIGPIPE, so a `set -o pipefail` script can still tell that
    the output was truncated. stdout is pointed at /dev/null first, so that the flush at exit
    does not fail a second time.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "ws_action", None) not in (None, "list") and not args.id:
        parser.error(f"workspaces {args.ws_action} needs a workspace id")
    try:
        code = _run(args)
        sys.stdout.flush()  # here, not at exit, so that a reader that went away is handled below
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(args: argparse.Namespace) -> int:
    """The command's exit code; every failure it can meet becomes one line on stderr."""
    try:
        return asyncio.run(args.func(args))
    except ClientError as exc:
        print(f"vmagent: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # bad combinations the library refuses (e.g. swarm task counts)
        print(f"vmagent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
