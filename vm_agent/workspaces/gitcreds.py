"""Git credentials for a workspace, without the token ever touching argv, env, URL or image.

The daemon writes, per workspace, a directory on the host holding a 0600 `credentials` file
(host, username, token) and a small `helper` script; the directory is bind-mounted read-only into
the container at CREDENTIALS_MOUNT and git there is configured with
`credential.helper = <mount>/helper`. When git needs a password it runs the helper, which
prints the credentials only for the repository's host. The token travels file → helper's stdout
→ git: never an argument, never an environment variable, never in `.git/config`.

The directory (not the file) is mounted so that rotating the token (write a new file, rename it
over the old one) is seen by the container at once: a file bind mount would pin the old inode.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

CREDENTIALS_MOUNT = "/run/vm-agent/git"
TOKEN_USERNAME = "x-access-token"

# POSIX sh (busybox, dash, bash): `read` and `case` are builtins, so the request is parsed
# without any process whose argv could show it; only `grep` reads the file, by path.
HELPER_SCRIPT = """#!/bin/sh
# git credential helper of vm-agent workspaces: answers `get` from the file next to it.
[ "$1" = get ] || exit 0
creds="${0%/*}/credentials"
[ -r "$creds" ] || exit 0
want=
while IFS= read -r line && [ -n "$line" ]; do
    case "$line" in host=*) want=${line#host=} ;; esac
done
have=
while IFS= read -r line; do
    case "$line" in host=*) have=${line#host=} ;; esac
done < "$creds"
[ -n "$want" ] && [ "$want" = "$have" ] || exit 0
grep -E '^(username|password)=' "$creds"
"""


def credential_host(repository: str) -> str | None:
    """host[:port] git will ask the helper about, for http(s) repositories; None otherwise."""
    parts = urlsplit(repository)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.netloc.rsplit("@", 1)[-1]


class CredentialFiles:
    """The per-workspace credential directories under `<state dir>/workspaces/<id>/git`."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def directory(self, workspace_id: str) -> Path:
        return self._root / workspace_id / "git"

    async def prepare(self, workspace_id: str, repository: str | None, token: str | None) -> Path:
        """Create the directory with its helper; write the token when one is given (rotation)."""
        return await asyncio.to_thread(self._prepare, workspace_id, repository, token)

    def _prepare(self, workspace_id: str, repository: str | None, token: str | None) -> Path:
        directory = self.directory(workspace_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        _write_atomic(directory / "helper", HELPER_SCRIPT.encode(), 0o700)
        host = credential_host(repository) if repository else None
        if token and host:
            body = f"protocol={urlsplit(repository or '').scheme}\nhost={host}\n"
            body += f"username={TOKEN_USERNAME}\npassword={token}\n"
            _write_atomic(directory / "credentials", body.encode(), 0o600)
        return directory

    async def remove(self, workspace_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self._root / workspace_id, True)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


NO_GIT_EXIT = 127

# One `docker exec` does all git setup (each exec costs tens of milliseconds): identity, the
# credential helper, then the clone. Values arrive as positional parameters, never spliced
# into the script. The clone lands in a directory of its own and is renamed into place once
# complete: a clone cut short (the daemon restarted mid-create) may already have written HEAD,
# and must neither pass for a finished one when the create resumes nor wedge it. The exec of an
# interrupted clone can still be running, hence a directory per attempt.
_SETUP_SCRIPT = """set -e
command -v git >/dev/null 2>&1 || exit {no_git}
git config --global credential.helper "$1"
[ -z "$2" ] || git config --global user.name "$2"
[ -z "$3" ] || git config --global user.email "$3"
[ -n "$4" ] || exit 0
if git -C "{workdir}" rev-parse --verify HEAD >/dev/null 2>&1; then exit 0; fi
rm -rf "{workdir}" "{workdir}".cloning.*
git clone --branch "$5" -- "$4" "{workdir}.cloning.$$"
rm -rf "{workdir}"
mv "{workdir}.cloning.$$" "{workdir}"
"""


def git_setup_argv(
    workdir: str,
    *,
    repository: str | None,
    branch: str,
    user_name: str | None,
    user_email: str | None,
) -> list[str]:
    """argv (run in the container) that configures git and clones `repository` into `workdir`.

    `workdir` comes from a validated repository name ([A-Za-z0-9._-]), so it is safe to quote.
    """
    script = _SETUP_SCRIPT.format(no_git=NO_GIT_EXIT, workdir=workdir)
    return [
        "/bin/sh",
        "-c",
        script,
        "sh",
        f"{CREDENTIALS_MOUNT}/helper",
        user_name or "",
        user_email or "",
        repository or "",
        branch,
    ]
