"""/logs from journald. systemd-journald cannot run in this sandbox, so a stand-in `journalctl`
on PATH replays records in journalctl's real `--output=json` format (with --reverse, --lines,
--cursor and --follow handled as journalctl does)."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap

import pytest

RECORDS = [
    {"__CURSOR": f"s=abc;i={n}", "__REALTIME_TIMESTAMP": str(1_700_000_000_000_000 + n * 1_000_000),
     "PRIORITY": "6", "_SYSTEMD_UNIT": "vm-agent.service",
     "MESSAGE": json.dumps({"event": f"record_{n}", "level": "info", "n": n})}
    for n in range(7)
] + [{"__CURSOR": "s=abc;i=7", "__REALTIME_TIMESTAMP": "1700000007000000", "PRIORITY": "3",
      "MESSAGE": "plain text failure"}]

STAND_IN = textwrap.dedent("""\
    #!{python}
    import json, sys
    args = sys.argv[1:]
    records = [json.loads(line) for line in open({data!r})]
    def value(flag, default=None):
        return args[args.index(flag) + 1] if flag in args else default
    if value("--cursor"):
        index = next(i for i, r in enumerate(records) if r["__CURSOR"] == value("--cursor"))
        records = records[: index + 1] if "--reverse" in args else records[index:]
    if "--priority" in args:
        records = [r for r in records if int(r["PRIORITY"]) <= int(value("--priority"))]
    if "--reverse" in args:
        records = records[::-1]
    lines = int(value("--lines", len(records)))
    records = records[:lines] if "--reverse" in args else records[-lines:]
    for r in records:
        print(json.dumps(r), flush=True)
    if "--follow" in args:
        sys.stdin.read()
""")


@pytest.fixture
def journalctl(tmp_path, monkeypatch):
    data = tmp_path / "journal.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    script = tmp_path / "bin" / "journalctl"
    script.parent.mkdir()
    script.write_text(STAND_IN.format(python=sys.executable, data=str(data)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")


async def get(daemon, **params):
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/logs", params=params, headers=daemon.auth_headers()) as r:
            assert r.status == 200
            return await r.json()


async def test_journald_entries_are_parsed_and_paged(journalctl, make_daemon):
    daemon = await make_daemon(LOG_SOURCE="journald")
    first = await get(daemon, limit="3")
    assert first["source"] == "journald"
    assert [e["message"] for e in first["entries"]] == ["record_5", "record_6", "plain text failure"]
    assert first["entries"][0]["fields"] == {"n": 5}
    assert first["entries"][-1]["level"] == "error"
    assert first["entries"][0]["timestamp"].startswith("2023-11-14T22:13:")
    second = await get(daemon, limit="3", cursor=first["nextCursor"])
    assert [e["message"] for e in second["entries"]] == ["record_2", "record_3", "record_4"]
    third = await get(daemon, limit="3", cursor=second["nextCursor"])
    assert [e["message"] for e in third["entries"]] == ["record_0", "record_1"]
    assert third["nextCursor"] is None


async def test_journald_stream_sends_the_backlog(journalctl, make_daemon):
    daemon = await make_daemon(LOG_SOURCE="journald", LOG_STREAM_BUFFER_SIZE="2")
    async with daemon.client() as http:
        async with http.ws_connect(f"{daemon.ws_url}/logs/stream", headers=daemon.auth_headers()) as ws:
            messages = [(await ws.receive_json(timeout=5))["message"] for _ in range(2)]
    assert messages == ["record_6", "plain text failure"]
