"""`vmagent` as a user runs it: node commands, and one clear line for every way connecting fails."""

from __future__ import annotations

import json
import socket

from vm_agent.client.tls import format_fingerprint

from .conftest import cli_env, fingerprint_of, run_cli


def assert_one_line_error(result, *fragments: str) -> None:
    lines = result.err.strip().splitlines()
    assert "Traceback" not in result.err, result.err
    assert len(lines) == 1, result.err
    assert lines[0].startswith("vmagent: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


async def test_health_prints_status_and_checks(daemon):
    result = await run_cli("health", env=cli_env(daemon))
    assert result.code == 0, result.err
    assert result.out.startswith("healthy  version ")
    assert "node test-node" in result.out and "store: ok" in result.out


async def test_json_output_is_the_daemon_answer(daemon):
    result = await run_cli("--json", "health", env=cli_env(daemon))
    assert result.code == 0
    assert json.loads(result.out)["nodeId"] == "test-node"
    # flags are accepted after the command name as well
    result = await run_cli("info", "--json", env=cli_env(daemon))
    assert json.loads(result.out)["agent"]["pid"] > 0


async def test_info_and_logs_are_readable(daemon):
    info = await run_cli("info", env=cli_env(daemon))
    assert info.code == 0 and info.out.startswith("cpu:") and "memory:" in info.out and "agent:  vm-agent" in info.out
    logs = await run_cli("logs", "--limit", "3", "--json", env=cli_env(daemon))
    assert logs.code == 0 and len(json.loads(logs.out)["entries"]) <= 3


async def test_fingerprint_command_prints_what_to_pin(daemon):
    result = await run_cli("fingerprint", "--url", daemon.url)
    assert result.code == 0
    assert result.out.strip() == format_fingerprint(fingerprint_of(daemon))


async def test_unreachable_url_is_one_line_and_exit_3():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await run_cli("health", env={"VMAGENT_URL": f"https://127.0.0.1:{port}", "VMAGENT_TOKEN": "x"})
    assert result.code == 3
    assert_one_line_error(result, "cannot connect", f"127.0.0.1:{port}")


async def test_malformed_url_is_one_line_and_exit_2():
    result = await run_cli("health", env={"VMAGENT_URL": "ftp://vm", "VMAGENT_TOKEN": "x"})
    assert result.code == 2
    assert_one_line_error(result, "not an https URL")


async def test_bad_token_is_one_line_and_exit_4(daemon):
    result = await run_cli("info", env=cli_env(daemon, VMAGENT_TOKEN="garbage"))
    assert result.code == 4
    assert_one_line_error(result, "invalid_token", "HTTP 401")


async def test_user_token_on_a_management_route_is_forbidden(daemon):
    result = await run_cli("info", env=cli_env(daemon, kind="user"))
    assert result.code == 4
    assert_one_line_error(result, "forbidden", "HTTP 403")


async def test_missing_token_is_one_line_and_exit_2(daemon):
    result = await run_cli("info", env={"VMAGENT_URL": daemon.url})
    assert result.code == 2
    assert_one_line_error(result, "no token")


async def test_certificate_mismatch_is_one_line_and_exit_3(daemon):
    result = await run_cli("info", env=cli_env(daemon, VMAGENT_FINGERPRINT="cd" * 32))
    assert result.code == 3
    assert_one_line_error(result, "does not match the pinned fingerprint", format_fingerprint("cd" * 32))


async def test_untrusted_certificate_points_at_the_fix(daemon):
    env = cli_env(daemon)
    del env["VMAGENT_FINGERPRINT"]
    result = await run_cli("health", env=env)
    assert result.code == 3
    assert_one_line_error(result, "not trusted", "--fingerprint")


async def test_insecure_flag_warns_on_stderr(daemon):
    env = cli_env(daemon)
    del env["VMAGENT_FINGERPRINT"]
    result = await run_cli("health", "--insecure", env=env)
    assert result.code == 0
    assert "WARNING: TLS verification is disabled" in result.err


async def test_ca_file_flag_trusts_the_daemon(daemon):
    env = cli_env(daemon)
    del env["VMAGENT_FINGERPRINT"]
    result = await run_cli("health", "--ca-file", str(daemon.cert_path), env=env)
    assert result.code == 0 and result.err == ""


async def test_token_file_is_read(daemon, tmp_path):
    env = cli_env(daemon)
    path = tmp_path / "token"
    path.write_text(env["VMAGENT_TOKEN"] + "\n")
    env["VMAGENT_TOKEN"] = "stale-token-in-the-environment"  # an explicit flag wins over it
    result = await run_cli("info", "--token-file", str(path), env=env)
    assert result.code == 0, result.err
    missing = await run_cli("info", "--token-file", str(tmp_path / "nope"), env=env)
    assert missing.code == 2 and missing.err.startswith("vmagent: cannot read token file")


async def test_workspaces_list_bad_id_and_missing_id(daemon):
    env = cli_env(daemon)
    env["VMAGENT_TOKEN"] = daemon.token("management", None)  # node-wide: workspace lifecycle
    listed = await run_cli("workspaces", env=env)
    assert (listed.code, listed.out) == (0, "no workspaces\n")
    assert json.loads((await run_cli("workspaces", "list", "--json", env=env)).out) == {"workspaces": []}
    bad = await run_cli("workspaces", "create", "bad id!", env=env)
    assert bad.code == 1
    assert_one_line_error(bad, "invalid_workspace_id", "HTTP 400")
    missing = await run_cli("workspaces", "stop", env=env)
    assert missing.code == 2 and "needs a workspace id" in missing.err
