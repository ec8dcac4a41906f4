"""The pieces that need no Docker: the exec wrapper, the credential helper, parameter checks."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from vm_agent.errors import BadRequest
from vm_agent.workspaces.container import ContainerPlacement
from vm_agent.workspaces.gitcreds import CredentialFiles, git_setup_argv
from vm_agent.workspaces.model import WorkspaceSpec, repository_dir, validate_workspace_id


def _docker_part(argv: list[str]) -> list[str]:
    """The docker CLI command inside the host wrapper (`sh -c W vm-agent-exec ctr pidfile ...`)."""
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3] == "vm-agent-exec"
    return argv[6:]


def _program(docker_argv: list[str], container: str) -> list[str]:
    """What runs in the container, after the pid-recording `sh -c`."""
    after = docker_argv[docker_argv.index(container) + 1:]
    assert after[:2] == ["/bin/sh", "-c"]
    return after[4:]


def test_terminal_and_agent_commands_become_docker_exec():
    placement = ContainerPlacement("w1", "/workspaces/repo", "vm-agent-ws-w1", ("docker", "-H", "unix:///x.sock"))
    term = _docker_part(placement.wrap(["/bin/sh", "-l"], tty=True, env={"TERM": "xterm-256color"}).argv)
    assert term[:5] == ["docker", "-H", "unix:///x.sock", "exec", "-it"]
    assert _program(term, "vm-agent-ws-w1") == ["/bin/sh", "-l"]
    assert term[term.index("-w") + 1] == "/workspaces/repo"
    assert "TERM=xterm-256color" in term
    agent = _docker_part(placement.wrap(["pi", "--mode", "rpc"], tty=False, cwd="sub/dir").argv)
    assert agent[3:5] == ["exec", "-i"] and "--detach-keys" not in agent
    assert agent[agent.index("-w") + 1] == "/workspaces/repo/sub/dir"
    assert _program(agent, "vm-agent-ws-w1") == ["pi", "--mode", "rpc"]
    other = _docker_part(placement.wrap(["x"], tty=False, cwd="/etc").argv)
    assert other[other.index("-w") + 1] == "/etc"


def test_secret_env_goes_to_a_private_file_never_argv():
    placement = ContainerPlacement("w1", "/workspaces", "c")
    command = placement.wrap(["agent"], tty=False, env={"A": "1"}, secret_env={"API_KEY": "sk-123", "B": "x=y"})
    try:
        assert not any("sk-123" in arg for arg in command.argv)
        (path,) = command.cleanup_paths
        assert command.argv[command.argv.index("--env-file") + 1] == path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        assert Path(path).read_text() == "API_KEY=sk-123\nB=x=y\n"
    finally:
        for p in command.cleanup_paths:
            os.unlink(p)
    with pytest.raises(ValueError):
        placement.wrap(["agent"], tty=False, secret_env={"MULTI": "line\nbreak"})


async def _helper(directory: Path, stdin: str, action: str = "get") -> str:
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", str(directory / "helper"), action,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(stdin.encode())
    assert proc.returncode == 0
    return out.decode()


async def test_credential_helper_answers_only_for_the_repository_host(tmp_path):
    files = CredentialFiles(tmp_path)
    directory = await files.prepare("w1", "https://git.example.com:8443/org/repo.git", "tok-1")
    assert stat.S_IMODE((directory / "credentials").stat().st_mode) == 0o600
    request = "protocol=https\nhost=git.example.com:8443\npath=org/repo.git\n\n"
    assert await _helper(directory, request) == "username=x-access-token\npassword=tok-1\n"
    assert await _helper(directory, "protocol=https\nhost=evil.example.com\n\n") == ""
    assert await _helper(directory, request, action="store") == ""
    await files.prepare("w1", "https://git.example.com:8443/org/repo.git", "tok-2")  # rotation
    assert await _helper(directory, request) == "username=x-access-token\npassword=tok-2\n"
    await files.remove("w1")
    assert not (tmp_path / "w1").exists()


def test_git_setup_passes_values_as_arguments_not_script():
    argv = git_setup_argv("/workspaces/repo", repository="https://h/r.git", branch="dev; rm -rf /",
                          user_name="$(whoami)", user_email="a@b")
    script = argv[2]
    assert "$(whoami)" not in script and "rm -rf /\n" not in script and "https://h/r.git" not in script
    assert argv[-4:] == ["$(whoami)", "a@b", "https://h/r.git", "dev; rm -rf /"]


@pytest.mark.parametrize(("repository", "directory"), [
    ("https://github.com/org/project.git", "/workspaces/project"),
    ("https://gitlab.example.com/group/sub/tool/", "/workspaces/tool"),
    ("git@github.com:org/thing.git", "/workspaces/thing"),
    ("ssh://git@github.com/org/other", "/workspaces/other"),
    (None, "/workspaces"),
])
def test_workdir_is_the_clone(repository, directory):
    spec, token = WorkspaceSpec.from_request({"workspaceId": "w", "repository": repository}, default_image="img")
    assert spec.workdir == directory and spec.branch == "main" and spec.image == "img" and token is None


@pytest.mark.parametrize("body", [
    {"repository": "file:///etc"},
    {"repository": "https://ghp_secret@github.com/org/repo.git"},
    {"repository": "https://user:ghp_secret@github.com/org/repo.git"},
    {"repository": "https://example.com/"},
    {"repository": "https://example.com/.."},
    {"image": "--privileged"},
    {"gitToken": "two words"},
    {"gitUserName": "line\nbreak"},
    {"branch": "a..b"},
])
def test_unsafe_parameters_are_rejected(body):
    with pytest.raises(BadRequest):
        WorkspaceSpec.from_request({"workspaceId": "w", **body}, default_image="img")


@pytest.mark.parametrize("body", [
    {"workspaceId": "w\n"},
    {"env": {"NAME\n": "x"}},
])
def test_a_trailing_newline_is_not_a_valid_name(body):
    """`$` matches before a final newline: `^...$` with `.match` let "w\\n" through as an id (and
    into container names and the credentials path)."""
    with pytest.raises(BadRequest):
        WorkspaceSpec.from_request({"workspaceId": "w", **body}, default_image="img")


def test_a_trailing_newline_never_names_a_workspace_or_its_clone():
    with pytest.raises(BadRequest):
        validate_workspace_id("ws\n")
    assert repository_dir("git@example.com:org/name\n") == "name"  # was "name\n"


async def test_path_routes_refuse_an_id_with_a_trailing_newline(daemon):
    """Tabs need no Docker, so this runs everywhere: `/workspaces/w%0A/tabs` is a 400, not w's tabs."""
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/workspaces/host%0A/tabs", headers=daemon.auth_headers()) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "invalid_workspace_id"
