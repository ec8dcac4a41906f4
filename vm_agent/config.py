"""Settings: every environment variable the daemon reads, typed, defaulted and validated here.

One frozen object is built at start and passed down; nothing else reads `os.environ` for
configuration. A bad value raises `SettingsError` naming the variable, which the CLI prints
as one line and exits (no traceback), so a typo in /etc/vm-agent/env is obvious in journald.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vm_agent._units import format_duration, parse_bool, parse_duration, parse_float, parse_size


class SettingsError(ValueError):
    """A setting has a value the daemon cannot run with."""


MAX_JWT_LEEWAY = 600.0  # clock skew worth tolerating is seconds; more only stretches a token's life

# Settings that must be greater than zero. Zero is not "off" for these: it means an interval
# that spins the loop (a poll, a ping, a backoff), a timeout that fails every wait, or a
# timeout aiohttp or the Docker SDK read as "none" (callbacks, JWKS, HTTP_MAX_BODY_BYTES).
# The numeric settings missing here keep a documented meaning for 0: VM_AGENT_PORT (any free
# port), JWT_LEEWAY (none), JWKS_REFETCH_COOLDOWN (refetch on every unknown kid),
# PTY_ORPHAN_GRACE_PERIOD (keep orphans until closed), PTY_CLOSE_GRACE_PERIOD and
# ACP_STOP_GRACE_PERIOD (escalate at once), TERMINAL_WS_PING_INTERVAL and
# TERMINAL_WS_READ_TIMEOUT (off), TERMINAL_WS_MESSAGE_RATE (unlimited), the WORKSPACE_*_LIMITs
# (no limit), and the counts (PTY_MAX_SESSIONS*, ACP_MAX_SESSIONS, *_RETRIES, *_ATTEMPTS: none).
_POSITIVE = (
    "pty_output_buffer_size log_ring_size log_retrieval_default_limit log_retrieval_max_limit "
    "log_stream_buffer_size acp_message_buffer_size acp_message_buffer_bytes "
    "acp_stderr_buffer_bytes terminal_ws_max_message_bytes acp_ws_max_message_bytes "
    "session_max_count heartbeat_interval jwks_refresh_interval acp_max_line_bytes "
    "identity_poll_interval http_max_body_bytes graceful_shutdown_timeout ws_close_timeout callback_timeout "
    "ready_initial_backoff ready_max_backoff jwks_fetch_timeout session_ttl jwt_max_token_bytes "
    "log_reader_timeout log_stream_ping_interval log_stream_pong_timeout "
    "acp_prompt_retry_initial_backoff acp_prompt_retry_max_backoff acp_notif_serialize_timeout "
    "acp_restart_decay_window acp_init_timeout acp_rpc_timeout acp_prompt_timeout "
    "acp_permission_timeout acp_ping_interval acp_pong_timeout docker_timeout"
).split()


def _setting(env: str, default: Any, kind: str = "str", *, secret: bool = False, choices: tuple = ()) -> Any:
    return field(default=default, metadata={"env": env, "kind": kind, "secret": secret, "choices": choices})


_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": parse_float,
    "bool": parse_bool,
    "duration": parse_duration,
    "size": parse_size,
    "optional_str": lambda text: text or None,
}


@dataclass(frozen=True)
class Settings:
    # --- node identity and listener
    node_id: str = _setting("NODE_ID", "")
    workspace_id: str = _setting("WORKSPACE_ID", "host")
    identity_file: str | None = _setting("IDENTITY_FILE", "/root/.swarm/identity.json", "optional_str")
    identity_poll_interval: float = _setting("IDENTITY_POLL_INTERVAL", 5.0, "duration")
    host: str = _setting("VM_AGENT_HOST", "0.0.0.0")
    port: int = _setting("VM_AGENT_PORT", 8443, "int")
    tls_cert_path: str | None = _setting("TLS_CERT_PATH", None, "optional_str")
    tls_key_path: str | None = _setting("TLS_KEY_PATH", None, "optional_str")
    state_dir: str = _setting("VM_AGENT_STATE_DIR", "/var/lib/vm-agent")
    metrics_address: str | None = _setting("METRICS_ADDRESS", None, "optional_str")
    http_max_body_bytes: int = _setting("HTTP_MAX_BODY_BYTES", 1024 * 1024, "size")
    graceful_shutdown_timeout: float = _setting("GRACEFUL_SHUTDOWN_TIMEOUT", 15.0, "duration")
    # A WebSocket close flushes what is queued first; a peer that stopped reading never lets it
    # finish, so after this long the connection is aborted instead (every socket, and shutdown).
    ws_close_timeout: float = _setting("WS_CLOSE_TIMEOUT", 2.0, "duration")

    # --- control plane
    control_plane_url: str | None = _setting("CONTROL_PLANE_URL", None, "optional_str")
    callback_token: str | None = _setting("CALLBACK_TOKEN", None, "optional_str", secret=True)
    callback_token_file: str | None = _setting("CALLBACK_TOKEN_FILE", None, "optional_str")
    heartbeat_interval: float = _setting("HEARTBEAT_INTERVAL", 60.0, "duration")
    callback_timeout: float = _setting("CALLBACK_TIMEOUT", 10.0, "duration")
    ready_initial_backoff: float = _setting("READY_INITIAL_BACKOFF", 1.0, "duration")
    ready_max_backoff: float = _setting("READY_MAX_BACKOFF", 60.0, "duration")

    # --- authentication
    jwks_endpoint: str | None = _setting("JWKS_ENDPOINT", None, "optional_str")
    jwt_issuer: str | None = _setting("JWT_ISSUER", None, "optional_str")
    jwt_audience: str = _setting("JWT_AUDIENCE", "workspace-terminal")
    jwt_leeway: float = _setting("JWT_LEEWAY", 60.0, "duration")
    jwt_max_token_bytes: int = _setting("JWT_MAX_TOKEN_BYTES", 16 * 1024, "size")
    jwks_refresh_interval: float = _setting("JWKS_REFRESH_INTERVAL", 3600.0, "duration")
    jwks_refetch_cooldown: float = _setting("JWKS_REFETCH_COOLDOWN", 30.0, "duration")
    jwks_fetch_timeout: float = _setting("JWKS_FETCH_TIMEOUT", 10.0, "duration")
    session_ttl: float = _setting("SESSION_TTL", 86400.0, "duration")
    session_max_count: int = _setting("SESSION_MAX_COUNT", 100, "int")
    cookie_secure: bool = _setting("COOKIE_SECURE", True, "bool")

    # --- logs
    log_level: str = _setting("LOG_LEVEL", "info", choices=("debug", "info", "warn", "error"))
    log_format: str = _setting("LOG_FORMAT", "json", choices=("json", "text"))
    log_ring_size: int = _setting("LOG_RING_SIZE", 5000, "int")
    log_retrieval_default_limit: int = _setting("LOG_RETRIEVAL_DEFAULT_LIMIT", 200, "int")
    log_retrieval_max_limit: int = _setting("LOG_RETRIEVAL_MAX_LIMIT", 1000, "int")
    log_stream_buffer_size: int = _setting("LOG_STREAM_BUFFER_SIZE", 100, "int")
    log_reader_timeout: float = _setting("LOG_READER_TIMEOUT", 30.0, "duration")
    log_stream_ping_interval: float = _setting("LOG_STREAM_PING_INTERVAL", 30.0, "duration")
    log_stream_pong_timeout: float = _setting("LOG_STREAM_PONG_TIMEOUT", 90.0, "duration")
    log_source: str = _setting("LOG_SOURCE", "auto", choices=("auto", "journald", "memory"))
    log_journal_unit: str = _setting("LOG_JOURNAL_UNIT", "vm-agent.service")

    # --- terminals
    default_shell: str = _setting("DEFAULT_SHELL", "")
    host_workspace_dir: str = _setting("HOST_WORKSPACE_DIR", "")
    pty_output_buffer_size: int = _setting("PTY_OUTPUT_BUFFER_SIZE", 1024 * 1024, "size")
    pty_orphan_grace_period: float = _setting("PTY_ORPHAN_GRACE_PERIOD", 0.0, "duration")
    pty_close_grace_period: float = _setting("PTY_CLOSE_GRACE_PERIOD", 0.25, "duration")
    pty_max_sessions: int = _setting("PTY_MAX_SESSIONS", 2000, "int")
    pty_max_sessions_per_user: int = _setting("PTY_MAX_SESSIONS_PER_USER", 1000, "int")
    terminal_ws_max_message_bytes: int = _setting("TERMINAL_WS_MAX_MESSAGE_BYTES", 64 * 1024, "size")
    terminal_ws_ping_interval: float = _setting("TERMINAL_WS_PING_INTERVAL", 30.0, "duration")
    terminal_ws_read_timeout: float = _setting("TERMINAL_WS_READ_TIMEOUT", 90.0, "duration")
    terminal_ws_message_rate: float = _setting("TERMINAL_WS_MESSAGE_RATE", 500.0, "float")
    terminal_ws_message_burst: int = _setting("TERMINAL_WS_MESSAGE_BURST", 1000, "int")

    # --- agents
    agents_config: str | None = _setting("AGENTS_CONFIG", None, "optional_str")
    agent_path: str = _setting("VM_AGENT_AGENT_PATH", "")  # dirs prepended to PATH for agent processes
    acp_prompt_retry_max_retries: int = _setting("ACP_PROMPT_RETRY_MAX_RETRIES", 2, "int")
    acp_prompt_retry_initial_backoff: float = _setting("ACP_PROMPT_RETRY_INITIAL_BACKOFF", 15.0, "duration")
    acp_prompt_retry_max_backoff: float = _setting("ACP_PROMPT_RETRY_MAX_BACKOFF", 120.0, "duration")
    acp_notif_serialize_timeout: float = _setting("ACP_NOTIF_SERIALIZE_TIMEOUT", 5.0, "duration")
    acp_message_buffer_size: int = _setting("ACP_MESSAGE_BUFFER_SIZE", 5000, "int")
    acp_message_buffer_bytes: int = _setting("ACP_MESSAGE_BUFFER_BYTES", 16 * 1024 * 1024, "size")
    acp_stderr_buffer_bytes: int = _setting("ACP_STDERR_BUFFER_BYTES", 64 * 1024, "size")
    acp_max_line_bytes: int = _setting("ACP_MAX_LINE_BYTES", 64 * 1024 * 1024, "size")
    acp_max_restart_attempts: int = _setting("ACP_MAX_RESTART_ATTEMPTS", 3, "int")
    acp_restart_decay_window: float = _setting("ACP_RESTART_DECAY_WINDOW", 600.0, "duration")
    acp_init_timeout: float = _setting("ACP_INIT_TIMEOUT", 60.0, "duration")
    acp_rpc_timeout: float = _setting("ACP_RPC_TIMEOUT", 30.0, "duration")
    acp_prompt_timeout: float = _setting("ACP_PROMPT_TIMEOUT", 3600.0, "duration")
    acp_permission_policy: str = _setting("ACP_PERMISSION_POLICY", "auto", choices=("auto", "ask", "deny"))
    acp_permission_timeout: float = _setting("ACP_PERMISSION_TIMEOUT", 300.0, "duration")
    acp_ping_interval: float = _setting("ACP_PING_INTERVAL", 30.0, "duration")
    acp_pong_timeout: float = _setting("ACP_PONG_TIMEOUT", 90.0, "duration")
    acp_ws_max_message_bytes: int = _setting("ACP_WS_MAX_MESSAGE_BYTES", 1024 * 1024, "size")
    acp_max_sessions: int = _setting("ACP_MAX_SESSIONS", 100, "int")
    acp_stop_grace_period: float = _setting("ACP_STOP_GRACE_PERIOD", 3.0, "duration")

    # --- workspaces (Docker)
    workspace_image: str = _setting("WORKSPACE_IMAGE", "vm-agent-workspace:latest")
    workspace_shell: str = _setting("WORKSPACE_SHELL", "/bin/sh")
    workspace_cpu_limit: float = _setting("WORKSPACE_CPU_LIMIT", 0.0, "float")
    workspace_memory_limit: int = _setting("WORKSPACE_MEMORY_LIMIT", 0, "size")
    workspace_pids_limit: int = _setting("WORKSPACE_PIDS_LIMIT", 0, "int")
    docker_timeout: float = _setting("DOCKER_TIMEOUT", 120.0, "duration")
    docker_host: str | None = _setting("DOCKER_HOST", None, "optional_str")  # else the docker SDK default

    # --- development mode (set by `vm-agent dev`, never from the environment in production)
    dev_mode: bool = _setting("VM_AGENT_DEV", False, "bool")

    # ---------------------------------------------------------------- derived values
    @property
    def issuer(self) -> str | None:
        return self.jwt_issuer or (self.control_plane_url.rstrip("/") if self.control_plane_url else None)

    @property
    def jwks_url(self) -> str | None:
        if self.jwks_endpoint:
            return self.jwks_endpoint
        if self.control_plane_url:
            return self.control_plane_url.rstrip("/") + "/.well-known/jwks.json"
        return None

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    def read_callback_token(self) -> str | None:
        """CALLBACK_TOKEN, else the first line of CALLBACK_TOKEN_FILE (re-read: it may rotate)."""
        if self.callback_token:
            return self.callback_token
        if self.callback_token_file:
            try:
                return Path(self.callback_token_file).read_text().strip() or None
            except OSError:
                return None
        return None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            name = spec.metadata["env"]
            if name in env:
                values[spec.name] = _parse(spec, env[name])
        values.update(overrides)
        settings = cls(**values)
        if not settings.node_id:
            settings = dataclasses.replace(settings, node_id=socket.gethostname())
        settings.validate()
        return settings

    def validate(self) -> None:
        def fail(env: str, problem: str) -> None:
            raise SettingsError(f"{env}: {problem}")

        if not 0 <= self.port < 65536:
            fail("VM_AGENT_PORT", f"{self.port} is not a TCP port (0-65535; 0 picks a free one)")
        if bool(self.tls_cert_path) != bool(self.tls_key_path):
            fail("TLS_CERT_PATH", "TLS_CERT_PATH and TLS_KEY_PATH must be set together")
        for path_env, path in (("TLS_CERT_PATH", self.tls_cert_path), ("TLS_KEY_PATH", self.tls_key_path)):
            if path and not Path(path).is_file():
                fail(path_env, f"{path} does not exist or is not a file")
        for env, url in (("CONTROL_PLANE_URL", self.control_plane_url), ("JWKS_ENDPOINT", self.jwks_endpoint)):
            if url:
                _check_url(env, url, fail)
        if self.metrics_address:
            host, _, port = self.metrics_address.rpartition(":")
            if host.strip("[]") not in ("127.0.0.1", "localhost", "::1") or not port.isdigit():
                fail("METRICS_ADDRESS", "must be a loopback host:port, e.g. 127.0.0.1:9464 (it has no auth)")
        if self.callback_token_file and not Path(self.callback_token_file).is_file():
            fail("CALLBACK_TOKEN_FILE", f"{self.callback_token_file} does not exist")
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            kind = spec.metadata["kind"]
            if kind in ("duration", "float") and not math.isfinite(value):
                fail(spec.metadata["env"], "must be a finite number")  # first: NaN fails no comparison
            if kind in ("int", "size", "duration", "float") and value < 0:
                fail(spec.metadata["env"], "must not be negative")
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                fail(_env_of(name), "must be greater than zero")
        if self.jwt_leeway > MAX_JWT_LEEWAY:
            fail("JWT_LEEWAY", f"must be at most {format_duration(MAX_JWT_LEEWAY)} (it extends every token's life)")
        if self.docker_timeout < 1:
            fail("DOCKER_TIMEOUT", "must be at least 1s (the Docker client counts whole seconds; 0 means none)")
        if self.ws_close_timeout >= self.graceful_shutdown_timeout:
            fail("WS_CLOSE_TIMEOUT", "must be shorter than GRACEFUL_SHUTDOWN_TIMEOUT (shutdown closes every socket)")
        if self.log_stream_pong_timeout <= self.log_stream_ping_interval:
            fail("LOG_STREAM_PONG_TIMEOUT", "must be longer than LOG_STREAM_PING_INTERVAL")
        if self.log_retrieval_default_limit > self.log_retrieval_max_limit:
            fail("LOG_RETRIEVAL_DEFAULT_LIMIT", "must not exceed LOG_RETRIEVAL_MAX_LIMIT")
        if self.acp_max_line_bytes < 65536:
            fail("ACP_MAX_LINE_BYTES", "must be at least 64KiB")

    def describe(self) -> list[tuple[str, str]]:
        """(ENV_NAME, effective value) for every setting, secrets masked: `vm-agent config`."""
        rows = []
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.metadata["secret"] and value:
                shown = "****"
            elif spec.metadata["kind"] == "duration":
                shown = format_duration(value)
            elif value is None:
                shown = "(unset)"
            else:
                shown = str(value)
            rows.append((spec.metadata["env"], shown))
        return rows


def _env_of(field_name: str) -> str:
    return next(f.metadata["env"] for f in dataclasses.fields(Settings) if f.name == field_name)


def _parse(spec: dataclasses.Field, raw: str) -> Any:
    env, kind, choices = spec.metadata["env"], spec.metadata["kind"], spec.metadata["choices"]
    try:
        value = _PARSERS[kind](raw.strip())
    except ValueError as exc:
        detail = str(exc) if kind in ("duration", "size", "bool", "float") else f"{raw!r} is not a valid {kind}"
        raise SettingsError(f"{env}: {detail}") from None
    if choices:
        value = value.lower()
        if value not in choices:
            raise SettingsError(f"{env}: {raw!r} is not one of {', '.join(choices)}")
    return value


def _check_url(env: str, url: str, fail: Callable[[str, str], None]) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        fail(env, f"{url!r} is not an http(s) URL")
    if parsed.scheme == "http" and parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        fail(env, "must use https (plain http is allowed only for loopback)")
