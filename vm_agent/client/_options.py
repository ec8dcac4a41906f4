"""Connection settings for the CLI: flags first, then the VMAGENT_* environment."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vm_agent.client.api import AgentClient
from vm_agent.client.errors import ConfigError
from vm_agent.client.tls import TlsConfig


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def tls_from(args: argparse.Namespace) -> TlsConfig:
    """Flags beat the environment; two trust choices at the same level are refused."""
    if args.insecure:
        return TlsConfig(insecure=True)
    if args.fingerprint or args.ca_file:
        return TlsConfig(ca_file=args.ca_file, fingerprint=args.fingerprint)
    return TlsConfig(ca_file=_env("VMAGENT_CA_FILE"), fingerprint=_env("VMAGENT_FINGERPRINT"))


def token_from(args: argparse.Namespace) -> str:
    """--token, then --token-file, then VMAGENT_TOKEN, then VMAGENT_TOKEN_FILE."""
    for token, path in ((args.token, args.token_file), (_env("VMAGENT_TOKEN"), _env("VMAGENT_TOKEN_FILE"))):
        if token:
            return token
        if path:
            try:
                text = Path(path).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read token file {path}: {exc.strerror}") from None
            if not text:
                raise ConfigError(f"token file {path} is empty")
            return text
    raise ConfigError("no token given (set VMAGENT_TOKEN or VMAGENT_TOKEN_FILE, or pass --token-file)")


def client_from(args: argparse.Namespace) -> AgentClient:
    return AgentClient(
        args.url or _env("VMAGENT_URL") or "",
        token_from(args),
        workspace=args.workspace or _env("VMAGENT_WORKSPACE") or "host",
        session=args.session or _env("VMAGENT_SESSION") or "main",
        verify=tls_from(args),
        timeout=args.timeout,
    )
