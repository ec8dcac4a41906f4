"""The library against a real daemon: node routes, typed errors, and each way of trusting TLS."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from vm_agent.client import (
    AgentClient,
    AuthError,
    ConfigError,
    ConnectionFailed,
    ForbiddenError,
    TlsConfig,
    TlsError,
    fetch_fingerprint,
)
from vm_agent.client.tls import INSECURE_WARNING, format_fingerprint

from .conftest import client_for, fingerprint_of


async def test_health_info_and_logs_through_a_pinned_certificate(daemon):
    async with client_for(daemon) as client:
        health = await client.health()
        info = await client.system_info()
        logs = await client.logs(limit=5)
    assert health["status"] == "healthy" and health["nodeId"] == "test-node"
    assert info["cpu"]["numCpu"] >= 1 and info["memory"]["totalBytes"] > 0
    assert info["agent"]["pid"] > 0
    assert isinstance(logs["entries"], list) and len(logs["entries"]) <= 5


async def test_fetched_fingerprint_is_the_certificate_the_daemon_serves(daemon):
    assert await fetch_fingerprint(daemon.url) == fingerprint_of(daemon)


async def test_ca_file_trusts_the_daemon_certificate(daemon):
    client = AgentClient(daemon.url, daemon.token("management", "host"), verify=str(daemon.cert_path))
    async with client:
        assert (await client.system_info())["agent"]["pid"] > 0


async def test_system_trust_store_rejects_a_self_signed_daemon(daemon):
    async with AgentClient(daemon.url, daemon.token("management", "host")) as client:
        with pytest.raises(TlsError, match="not trusted"):
            await client.health()


async def test_wrong_pinned_fingerprint_is_refused_before_the_token_is_sent(daemon):
    wrong = "ab" * 32
    client = AgentClient(daemon.url, daemon.token("management", "host"), verify=TlsConfig(fingerprint=wrong))
    async with client:
        with pytest.raises(TlsError) as caught:
            await client.system_info()
    message = str(caught.value)
    assert format_fingerprint(wrong) in message and format_fingerprint(fingerprint_of(daemon)) in message
    assert caught.value.exit_code == 3


async def test_insecure_works_but_says_so_loudly(daemon, capsys):
    async with AgentClient(daemon.url, daemon.token("management", "host"), verify=False) as client:
        assert (await client.health())["status"] == "healthy"
    assert INSECURE_WARNING in capsys.readouterr().err


async def test_bad_token_and_wrong_token_kind_are_typed_errors(daemon):
    async with client_for(daemon, token="not-a-jwt") as client:
        with pytest.raises(AuthError) as caught:
            await client.system_info()
    assert caught.value.status == 401 and caught.value.code == "invalid_token"
    async with client_for(daemon, kind="user") as client:
        with pytest.raises(ForbiddenError) as forbidden:
            await client.system_info()
    assert forbidden.value.status == 403 and forbidden.value.exit_code == 4


async def test_unreachable_daemon_is_a_connection_error_naming_the_address():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AgentClient(f"https://127.0.0.1:{port}", "t", verify=False) as client:
        with pytest.raises(ConnectionFailed, match=f"127.0.0.1:{port}"):
            await client.health()


@pytest.mark.parametrize("url", ["", "ftp://vm", "https://"])
def test_unusable_urls_are_configuration_errors(url):
    with pytest.raises(ConfigError):
        AgentClient(url, "token")


def test_fingerprint_accepts_the_usual_spellings():
    digest = "0a" * 32
    for spelling in (digest.upper(), format_fingerprint(digest), f"sha256:{digest}"):
        assert TlsConfig(fingerprint=spelling).fingerprint == digest
    with pytest.raises(ConfigError):
        TlsConfig(fingerprint="abcd")
    with pytest.raises(ConfigError):
        TlsConfig(fingerprint=digest, insecure=True)


async def test_client_runs_without_any_daemon_module():
    """The client is installed on coordinators that run no daemon: only aiohttp may come with it."""
    code = (
        "import sys, vm_agent.client, vm_agent.client.cli\n"
        "bad = sorted(m for m in sys.modules if (m.startswith('vm_agent.') and not m.startswith('vm_agent.client'))"
        " or m.split('.')[0] in ('structlog', 'jwt', 'docker', 'ptyprocess', 'cryptography', 'orjson'))\n"
        "print(','.join(bad))\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and out.decode().strip() == ""
