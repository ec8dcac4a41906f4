"""Every HTTP route fuzzed from openapi.yaml (schemathesis + hypothesis): valid and invalid
parameters, bodies and headers, with and without a real token. No 500, no undocumented status,
and the daemon is still healthy afterwards.

Docker is made unreachable for this daemon on purpose: valid `POST /workspaces` bodies would
otherwise make it pull random image names and create containers on the shared machine. The
workspace routes then answer their documented 503 `docker_unavailable`, which is allowed here;
a 500 (an unhandled exception) never is.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.ops.openapi_doc import DOCUMENT
from tests.stress.conftest import PROFILE, health_ok, record

pytestmark = pytest.mark.stress

GENERIC = {400, 401, 403, 404, 405, 413, 414, 431}


def fuzz_operation(base_url: str, operation: Any, token: str, mode: GenerationMode, examples: int,
                   statuses: Counter[int], failures: list[str]) -> None:
    """Runs in a worker thread: requests is synchronous and the daemon lives on the test's loop."""
    http = requests.Session()
    http.verify = False
    documented = {int(code) for code in operation.definition.raw["responses"] if code.isdigit()}
    path, method = operation.path, operation.method.upper()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), authorised=st.booleans())
    def run(case: Any, authorised: bool) -> None:
        headers = {"Authorization": f"Bearer {token}"} if authorised else None
        try:
            response = case.call(base_url=base_url, session=http, headers=headers, timeout=10, verify=False)
        except requests.exceptions.ReadTimeout:
            if path.endswith("/events"):
                return  # a stream that really opened: endless by design
            failures.append(f"{method} {path}: no answer within 10 s")
            return
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, ValueError, UnicodeError):
            return  # the client library refused to send it; nothing reached the daemon
        statuses[response.status_code] += 1
        if response.status_code >= 500 and response.status_code not in documented:
            failures.append(f"{method} {path} -> {response.status_code}: {response.text[:200]}")
        elif response.status_code not in documented | GENERIC | {101}:
            failures.append(f"{method} {path} -> undocumented {response.status_code}: {response.text[:120]}")
        if response.status_code >= 400 and response.headers.get("Content-Type", "").startswith("application/json"):
            body = response.json()
            if not (isinstance(body, dict) and isinstance(body.get("error"), str) and "message" in body) \
                    and not path.endswith("/rpc"):
                failures.append(f"{method} {path} -> {response.status_code} without the error schema: {body}")

    try:
        run()
    except Unsatisfiable:
        pass  # nothing to make invalid (e.g. negative mode of a route without parameters)


async def test_every_http_route_survives_schema_fuzzing(make_daemon, tmp_path):
    urllib3.disable_warnings()
    daemon = await make_daemon(DOCKER_HOST="unix:///nonexistent/docker.sock",
                               HOST_WORKSPACE_DIR=str(tmp_path), AGENTS_CONFIG=str(_no_agents(tmp_path)))
    schema = schemathesis.openapi.from_dict(DOCUMENT)
    token = daemon.token("management", workspace=None)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            await asyncio.to_thread(fuzz_operation, daemon.url, operation, token, mode, PROFILE.fuzz_examples,
                                    statuses, failures)
    async with daemon.client() as http:
        health = await health_ok(daemon.url, http)
    total = sum(statuses.values())
    record("http fuzz: requests sent", total, "", f"{len(operations)} operations x 2 modes")
    record("http fuzz: 500 answers", statuses[500], "", "0")
    assert not failures, "\n".join(failures[:20])
    assert statuses[500] == 0
    assert health["checks"]["store"]["status"] == "ok"
    assert total > len(operations) * PROFILE.fuzz_examples


def _no_agents(tmp_path: Any) -> Any:
    """An agent registry whose only command does not exist: fuzzed prompts fail cleanly, fast."""
    path = tmp_path / "agents.json"
    path.write_text('{"agents": {"pi": {"command": ["/nonexistent/agent"]}}}')
    return path
