"""Settings: defaults, units, and one clear line for every bad value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vm_agent.config import Settings, SettingsError


def test_defaults_match_the_contract():
    settings = Settings.from_env({})
    assert settings.port == 8443
    assert settings.log_level == "info" and settings.log_format == "json"
    assert settings.acp_prompt_retry_max_retries == 2
    assert settings.acp_prompt_retry_initial_backoff == 15
    assert settings.acp_prompt_retry_max_backoff == 120
    assert settings.acp_notif_serialize_timeout == 5
    assert (settings.log_retrieval_default_limit, settings.log_retrieval_max_limit) == (200, 1000)
    assert settings.log_stream_buffer_size == 100
    assert (settings.log_reader_timeout, settings.log_stream_ping_interval, settings.log_stream_pong_timeout) == (
        30,
        30,
        90,
    )
    assert settings.jwt_audience == "workspace-terminal" and settings.jwt_leeway == 60
    assert settings.jwks_refresh_interval == 3600
    assert settings.pty_output_buffer_size == 1024 * 1024
    assert settings.state_dir == "/var/lib/vm-agent"
    assert settings.node_id  # hostname when NODE_ID is unset


def test_units_and_derived_values():
    settings = Settings.from_env(
        {
            "ACP_PROMPT_RETRY_INITIAL_BACKOFF": "250ms",
            "HEARTBEAT_INTERVAL": "2m",
            "JWKS_REFRESH_INTERVAL": "1h",
            "PTY_OUTPUT_BUFFER_SIZE": "2MiB",
            "CONTROL_PLANE_URL": "https://cp.example.com/",
            "LOG_LEVEL": "WARN",
        }
    )
    assert settings.acp_prompt_retry_initial_backoff == 0.25
    assert settings.heartbeat_interval == 120
    assert settings.pty_output_buffer_size == 2 * 1024 * 1024
    assert settings.jwks_url == "https://cp.example.com/.well-known/jwks.json"
    assert settings.issuer == "https://cp.example.com"
    assert settings.log_level == "warn"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"VM_AGENT_PORT": "http"}, "VM_AGENT_PORT"),
        ({"VM_AGENT_PORT": "70000"}, "VM_AGENT_PORT"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"HEARTBEAT_INTERVAL": "soon"}, "HEARTBEAT_INTERVAL"),
        ({"HEARTBEAT_INTERVAL": "0s"}, "HEARTBEAT_INTERVAL"),
        ({"PTY_OUTPUT_BUFFER_SIZE": "lots"}, "PTY_OUTPUT_BUFFER_SIZE"),
        ({"CONTROL_PLANE_URL": "http://cp.example.com"}, "CONTROL_PLANE_URL"),
        ({"JWKS_ENDPOINT": "ftp://x"}, "JWKS_ENDPOINT"),
        ({"TLS_CERT_PATH": "/nonexistent.pem"}, "TLS_CERT_PATH"),
        ({"COOKIE_SECURE": "maybe"}, "COOKIE_SECURE"),
        ({"LOG_RETRIEVAL_DEFAULT_LIMIT": "2000"}, "LOG_RETRIEVAL_DEFAULT_LIMIT"),
    ],
)
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(needle + ":")


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "-m", "vm_agent", *args], capture_output=True, text=True, env={**clean, **env}, timeout=60
    )


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        # float() reads these; NaN then passes every `< 0` check and inf disables a bound.
        ({"JWT_LEEWAY": "inf"}, "JWT_LEEWAY"),
        ({"JWT_LEEWAY": "nan"}, "JWT_LEEWAY"),
        ({"HEARTBEAT_INTERVAL": "1e400"}, "HEARTBEAT_INTERVAL"),
        ({"WORKSPACE_CPU_LIMIT": "nan"}, "WORKSPACE_CPU_LIMIT"),
        ({"TERMINAL_WS_MESSAGE_RATE": "inf"}, "TERMINAL_WS_MESSAGE_RATE"),
        ({"PTY_OUTPUT_BUFFER_SIZE": "9" * 400}, "PTY_OUTPUT_BUFFER_SIZE"),
        # A token's life is its exp; the leeway only absorbs clock skew.
        ({"JWT_LEEWAY": "11m"}, "JWT_LEEWAY"),
        # Zero would spin the loop or hammer the control plane.
        ({"READY_INITIAL_BACKOFF": "0"}, "READY_INITIAL_BACKOFF"),
        ({"READY_MAX_BACKOFF": "0s"}, "READY_MAX_BACKOFF"),
        ({"ACP_PROMPT_RETRY_INITIAL_BACKOFF": "0"}, "ACP_PROMPT_RETRY_INITIAL_BACKOFF"),
        ({"IDENTITY_POLL_INTERVAL": "0"}, "IDENTITY_POLL_INTERVAL"),
        ({"LOG_STREAM_PING_INTERVAL": "0"}, "LOG_STREAM_PING_INTERVAL"),
        ({"ACP_PING_INTERVAL": "0"}, "ACP_PING_INTERVAL"),
        # Zero is "no limit" / "no timeout" to aiohttp and the Docker SDK.
        ({"HTTP_MAX_BODY_BYTES": "0"}, "HTTP_MAX_BODY_BYTES"),
        ({"CALLBACK_TIMEOUT": "0"}, "CALLBACK_TIMEOUT"),
        ({"JWKS_FETCH_TIMEOUT": "0"}, "JWKS_FETCH_TIMEOUT"),
        ({"DOCKER_TIMEOUT": "500ms"}, "DOCKER_TIMEOUT"),
        # Every stream would be closed at its first check, before any ping was sent.
        ({"LOG_STREAM_PING_INTERVAL": "30s", "LOG_STREAM_PONG_TIMEOUT": "10s"}, "LOG_STREAM_PONG_TIMEOUT"),
        # A close with no bound waits on a peer that never reads; one as long as the grace
        # period leaves shutdown no time for the rest of its cleanup.
        ({"WS_CLOSE_TIMEOUT": "0"}, "WS_CLOSE_TIMEOUT"),
        ({"WS_CLOSE_TIMEOUT": "15s", "GRACEFUL_SHUTDOWN_TIMEOUT": "15s"}, "WS_CLOSE_TIMEOUT"),
    ],
)
def test_values_that_would_disarm_a_protection_are_refused(env, needle):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(needle + ":")


def test_zero_keeps_its_documented_meaning_where_it_has_one():
    settings = Settings.from_env(
        {
            "VM_AGENT_PORT": "0",  # any free port
            "JWT_LEEWAY": "0",  # no skew allowance
            "JWKS_REFETCH_COOLDOWN": "0s",  # refetch on every unknown kid
            "PTY_ORPHAN_GRACE_PERIOD": "0",  # orphans live until closed
            "TERMINAL_WS_PING_INTERVAL": "0",  # no pings
            "TERMINAL_WS_READ_TIMEOUT": "0",  # no read timeout
            "TERMINAL_WS_MESSAGE_RATE": "0",  # unlimited
            "WORKSPACE_MEMORY_LIMIT": "0",  # no limit
            "ACP_STOP_GRACE_PERIOD": "0",  # kill at once
        }
    )
    assert (settings.port, settings.jwt_leeway, settings.pty_orphan_grace_period) == (0, 0, 0)
    assert Settings.from_env({"JWT_LEEWAY": "10m"}).jwt_leeway == 600


def test_a_non_finite_override_is_refused_too():
    """Overrides bypass the parsers (tests, `vm-agent dev`): validate() checks them itself."""
    with pytest.raises(SettingsError, match=r"^JWT_LEEWAY:"):
        Settings.from_env({}, jwt_leeway=float("nan"))


def test_non_finite_setting_stops_start_with_one_line():
    result = run_cli("serve", JWT_LEEWAY="nan")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("vm-agent: configuration error: JWT_LEEWAY:")


def test_bad_setting_stops_start_with_one_line_not_a_traceback():
    result = run_cli("serve", LOG_LEVEL="loud")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("vm-agent: configuration error: LOG_LEVEL:")


def test_config_command_masks_secrets():
    result = run_cli("config", CALLBACK_TOKEN="super-secret-value", NODE_ID="n1")
    assert result.returncode == 0
    assert "super-secret-value" not in result.stdout
    assert "CALLBACK_TOKEN" in result.stdout and "****" in result.stdout
    assert ["ACP_PROMPT_RETRY_INITIAL_BACKOFF", "15s"] in [line.split() for line in result.stdout.splitlines()]
