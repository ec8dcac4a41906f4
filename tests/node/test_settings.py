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
