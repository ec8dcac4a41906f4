"""The exceptions the client raises: one short hierarchy a coordinator can catch precisely.

Every failure a user can meet (wrong URL, wrong token, a certificate that does not match, a
server-side error code) becomes one of these with a message that reads well as a single line,
so the CLI can print `str(exc)` and exit with `exc.exit_code` instead of showing a traceback.
"""

from __future__ import annotations

from typing import Any

# Exit codes of the `vmagent` CLI, one per kind of failure so scripts can branch on them.
EXIT_OK = 0
EXIT_FAILURE = 1  # the operation ran and failed (server error, agent error, timeout, swarm failures)
EXIT_USAGE = 2  # bad arguments or configuration (argparse uses 2 as well)
EXIT_UNREACHABLE = 3  # cannot connect: DNS, refused, TLS verification or fingerprint mismatch
EXIT_AUTH = 4  # the server rejected the token (401) or its scope (403)
EXIT_BROKEN_PIPE = 141  # stdout's reader went away (`| head -1`): 128 + SIGPIPE, as a shell shows for `yes`


class ClientError(Exception):
    """Base of every error the client raises."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ClientError):
    """The client was given something it cannot use (bad URL, unreadable CA file, bad fingerprint)."""

    exit_code = EXIT_USAGE


class ConnectionFailed(ClientError):
    """The daemon could not be reached at all (DNS, refused, reset, timed out while connecting)."""

    exit_code = EXIT_UNREACHABLE


class TlsError(ConnectionFailed):
    """The daemon answered but its certificate is not the one we trust."""


class RequestTimeout(ClientError):
    """A request or a wait (for example `wait_idle`) did not finish within its timeout."""


class ProtocolError(ClientError):
    """The daemon answered with something the contract does not allow (not JSON, wrong shape)."""


class ApiError(ClientError):
    """The daemon answered with an error: HTTP status plus its `{"error", "message"}` body."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.server_message = message
        self.body = body or {}


class AuthError(ApiError):
    """401: the token is missing, expired, malformed or signed by a key the daemon does not know."""

    exit_code = EXIT_AUTH


class ForbiddenError(ApiError):
    """403: a valid token without the right kind, node or workspace for this route."""

    exit_code = EXIT_AUTH


class NotFoundError(ApiError):
    """404: no such workspace, session or route."""


class ConflictError(ApiError):
    """409: the resource exists with other parameters, or the transition is not allowed now."""


class UnavailableError(ApiError):
    """503: a dependency of the daemon (JWKS, Docker) is down; retrying later may succeed."""


class AgentError(ClientError):
    """The agent reported a failure for a command or a prompt (an RPC answer with success=false)."""

    def __init__(self, message: str, response: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.response = response or {}


_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    503: UnavailableError,
}


def api_error(status: int, body: Any, reason: str = "") -> ApiError:
    """The typed error for an HTTP error answer; tolerates bodies that are not the JSON shape."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body["error"]
        message = str(body.get("message") or reason or code)
    else:
        code = "http_error"
        message = reason or f"HTTP {status}"
        body = {}
    return _BY_STATUS.get(status, ApiError)(status, code, message, body)
