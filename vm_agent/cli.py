"""`vm-agent serve | dev | token | config | version`.

`serve` is what systemd runs: settings from the environment only. `dev` is the embedded
default for a newcomer: self-signed TLS, a development JWKS on loopback, printed tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from vm_agent import __version__
from vm_agent.config import Settings, SettingsError
from vm_agent.logs import configure_logging


def _settings(**overrides: object) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except SettingsError as exc:
        print(f"vm-agent: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(_args: argparse.Namespace) -> int:
    from vm_agent.server import serve_until_signalled

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format, settings.log_ring_size)
    try:
        asyncio.run(serve_until_signalled(settings))
    except OSError as exc:
        print(f"vm-agent: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from vm_agent import devkeys
    from vm_agent.server import RunningServer, serve_until_signalled
    from vm_agent.tlscert import fingerprint

    state_dir = os.environ.get("VM_AGENT_STATE_DIR") or str(devkeys.dev_state_dir())
    key = devkeys.DevKey.load_or_create(devkeys.dev_state_dir() / "dev")
    env_format = os.environ.get("LOG_FORMAT", "text")

    async def main() -> None:
        jwks_runner, jwks_url = await devkeys.serve_jwks(key)
        settings = _settings(
            state_dir=state_dir,
            host=args.host or os.environ.get("VM_AGENT_HOST", "127.0.0.1"),
            port=args.port or int(os.environ.get("VM_AGENT_PORT", "8443")),
            jwks_endpoint=jwks_url,
            jwt_issuer=devkeys.DEV_ISSUER,
            control_plane_url=None,
            log_format=env_format if env_format in ("json", "text") else "text",
            dev_mode=True,
        )
        configure_logging(settings.log_level, settings.log_format, settings.log_ring_size)

        def banner(server: RunningServer) -> None:
            user = key.mint(kind="user", workspace="host", user="dev-user")
            manage = key.mint(kind="management", workspace=None, node=settings.node_id, user="dev-admin")
            print(
                _BANNER.format(
                    url=server.url,
                    fp=fingerprint(server.cert_path),
                    user=user,
                    manage=manage,
                    state=settings.state_dir,
                    node=settings.node_id,
                ),
                file=sys.stderr,
                flush=True,
            )

        try:
            await serve_until_signalled(settings, banner)
        finally:
            await jwks_runner.cleanup()

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"vm-agent: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


_BANNER = """
  vm-agent (development mode) is listening on {url}
  open the console: {url}/?token={user}
  node id: {node}   state: {state}
  certificate (self-signed) SHA-256: {fp}

  user token (workspace "host", 24h):
    {user}

  management token (node-wide, 24h):
    {manage}

  try:
    curl -k {url}/health
    curl -k -H "Authorization: Bearer $MGMT" {url}/system-info
    curl -k -H "Authorization: Bearer $MGMT" "{url}/logs?limit=5"
  more tokens: vm-agent token --kind user|management --workspace W
"""


def cmd_token(args: argparse.Namespace) -> int:
    from vm_agent import devkeys

    key = devkeys.DevKey.load_or_create(devkeys.dev_state_dir() / "dev")
    node = args.node or os.environ.get("NODE_ID") or __import__("socket").gethostname()
    workspace = args.workspace if args.workspace else ("host" if args.kind == "user" else None)
    from vm_agent._units import parse_duration

    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        print(f"vm-agent: --ttl: {exc}", file=sys.stderr)
        return 2
    print(
        key.mint(
            kind=args.kind,
            workspace=workspace,
            node=node if args.kind == "management" else None,
            user=args.user,
            ttl=ttl,
        )
    )
    return 0


def cmd_config(_args: argparse.Namespace) -> int:
    settings = _settings()
    rows = settings.describe()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return 0


def cmd_version(_args: argparse.Namespace) -> int:
    print(f"vm-agent {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vm-agent", description="The daemon inside every Vers VM.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run with settings from the environment (systemd)").set_defaults(func=cmd_serve)
    dev = commands.add_parser("dev", help="run locally: self-signed TLS, dev JWKS, printed tokens")
    dev.add_argument("--port", type=int, default=0, help="listen port (default VM_AGENT_PORT or 8443)")
    dev.add_argument("--host", default="", help="listen address (default 127.0.0.1)")
    dev.set_defaults(func=cmd_dev)
    token = commands.add_parser("token", help="mint a token signed by the development key")
    token.add_argument("--kind", choices=("user", "management"), default="user")
    token.add_argument("--workspace", default="", help='workspace claim (user tokens default to "host")')
    token.add_argument("--user", default="dev-user", help="sub claim")
    token.add_argument("--node", default="", help="node claim for management tokens (default NODE_ID or hostname)")
    token.add_argument("--ttl", default="24h", help="lifetime, e.g. 15m, 24h")
    token.set_defaults(func=cmd_token)
    commands.add_parser("config", help="print the effective settings, secrets masked").set_defaults(func=cmd_config)
    commands.add_parser("version", help="print the version").set_defaults(func=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
