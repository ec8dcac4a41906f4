"""What a workspace is: the parameters it was created with, its status, and their validation.

Validation happens here, once, at the edge: everything past `WorkspaceSpec.from_request` can
put these values into container names, argv and git config without re-checking them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from vm_agent.errors import BadRequest
from vm_agent.workspaces.placement import HOST_WORKSPACE

CREATING, RUNNING, STOPPED, REBUILDING, ERROR = "creating", "running", "stopped", "rebuilding", "error"
STATUSES = (CREATING, RUNNING, STOPPED, REBUILDING, ERROR)

# Anchored with \A and \Z, never ^ and $: `$` also matches before a trailing newline, so "x\n"
# would pass a `.match`. Callers use `fullmatch` anyway; the anchors keep any `.match` honest.
WORKSPACE_ID_RE = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
_ENV_KEY_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_REPO_DIR_RE = re.compile(r"\A[A-Za-z0-9._-]{1,100}\Z")
_SCP_LIKE_RE = re.compile(r"\A[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_MAX_ENV_ENTRIES = 100
_MAX_ENV_BYTES = 64 * 1024

VOLUME_MOUNT = "/workspaces"


def validate_workspace_id(value: Any) -> str:
    if not isinstance(value, str) or not WORKSPACE_ID_RE.fullmatch(value):
        raise BadRequest(
            "workspace id must be 1-64 characters of letters, digits, '_' and '-'",
            code="invalid_workspace_id",
        )
    return value


def _text(body: dict[str, Any], key: str, *, max_len: int, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string", code="invalid_request")
    if len(value) > max_len or _CONTROL_RE.search(value):
        raise BadRequest(
            f"{key} must be at most {max_len} characters without control characters", code="invalid_request"
        )
    return value


def _repository(value: str | None) -> str | None:
    if value is None:
        return None
    if value.startswith("-") or any(ch.isspace() for ch in value):
        raise BadRequest("repository is not a git URL", code="invalid_repository")
    if _SCP_LIKE_RE.fullmatch(value):
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http", "ssh", "git") or not parts.hostname:
        raise BadRequest("repository must be an https, http, ssh or git URL", code="invalid_repository")
    if parts.password or (parts.username and parts.scheme in ("http", "https")):
        # A token in the URL (forges accept one as the user name too) would land in .git/config,
        # in `ps` and in logs: it belongs in gitToken.
        raise BadRequest(
            "repository URL must not contain credentials; send gitToken instead", code="invalid_repository"
        )
    return value


def repository_dir(repository: str) -> str:
    """The directory under /workspaces a repository is cloned into: its last path segment."""
    path = repository.rsplit(":", 1)[-1] if _SCP_LIKE_RE.fullmatch(repository) else urlsplit(repository).path
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name.endswith(".git"):
        name = name[:-4]
    if not _REPO_DIR_RE.fullmatch(name) or name in (".", ".."):
        raise BadRequest("cannot derive a directory name from the repository URL", code="invalid_repository")
    return name


def _branch(value: str | None) -> str:
    value = value or "main"
    if value.startswith("-") or any(ch.isspace() for ch in value) or ".." in value or len(value) > 255:
        raise BadRequest("branch is not a valid git branch name", code="invalid_request")
    return value


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > _MAX_ENV_ENTRIES:
        raise BadRequest(f"env must be an object of at most {_MAX_ENV_ENTRIES} string values", code="invalid_request")
    total = 0
    for key, val in value.items():
        if not _ENV_KEY_RE.fullmatch(key) or not isinstance(val, str) or "\x00" in val:
            raise BadRequest(f"env entry {key!r} must be NAME (letters, digits, _) = string", code="invalid_request")
        total += len(key) + len(val)
    if total > _MAX_ENV_BYTES:
        raise BadRequest("env is too large", code="invalid_request")
    return dict(value)


@dataclass(frozen=True)
class WorkspaceSpec:
    """The parameters a workspace is created with; two POSTs conflict when these differ.

    The git token is deliberately not part of it: tokens rotate, and a repeated POST with a new
    token replaces the credential file instead of being refused.
    """

    workspace_id: str
    image: str
    repository: str | None = None
    branch: str = "main"
    env: dict[str, str] = field(default_factory=dict)
    git_user_name: str | None = None
    git_user_email: str | None = None

    @classmethod
    def from_request(cls, body: dict[str, Any], *, default_image: str) -> tuple[WorkspaceSpec, str | None]:
        """(spec, git token) from a POST /workspaces body; 400 for anything malformed."""
        workspace_id = validate_workspace_id(body.get("workspaceId"))
        if workspace_id == HOST_WORKSPACE:
            raise BadRequest("'host' is the VM itself, not a container workspace", code="invalid_workspace_id")
        repository = _repository(_text(body, "repository", max_len=2048))
        if repository is not None:
            repository_dir(repository)
        image = _text(body, "image", max_len=512) or default_image
        if image.startswith("-") or any(ch.isspace() for ch in image):
            raise BadRequest("image is not a valid image reference", code="invalid_request")
        token = _text(body, "gitToken", max_len=4096)
        if token is not None and any(ch.isspace() for ch in token):
            raise BadRequest("gitToken must not contain whitespace", code="invalid_request")
        spec = cls(
            workspace_id=workspace_id,
            image=image,
            repository=repository,
            branch=_branch(_text(body, "branch", max_len=255)),
            env=_env(body.get("env")),
            git_user_name=_text(body, "gitUserName", max_len=256),
            git_user_email=_text(body, "gitUserEmail", max_len=256),
        )
        return spec, token

    @property
    def workdir(self) -> str:
        """Where terminals and agents of this workspace start: the clone, else the volume."""
        if self.repository:
            return f"{VOLUME_MOUNT}/{repository_dir(self.repository)}"
        return VOLUME_MOUNT


@dataclass
class Workspace:
    """One workspace's record. Mutated only by `WorkspaceManager`, on the event loop."""

    spec: WorkspaceSpec
    status: str
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    # The operation in progress (create, stop, restart, rebuild, delete); None when idle.
    # Set before the first await of an operation: this is the compare-and-set that makes a
    # racing request fail with 409 instead of interleaving with it.
    operation: str | None = None

    @property
    def id(self) -> str:
        return self.spec.workspace_id

    def to_json(self, sessions: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "repository": self.spec.repository or "",
            "branch": self.spec.branch,
            "status": self.status,
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.updated_at),
            "sessions": sessions,
            "image": self.spec.image,
        }
        if self.status == ERROR and self.error:
            out["errorMessage"] = self.error
        return out


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
