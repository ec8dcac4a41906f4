"""/logs from journald. systemd-journald cannot run in this sandbox, so a stand-in `journalctl`
on PATH replays records in journalctl's real `--output=json` format (with --reverse, --lines,
--cursor, --since and --follow handled as journalctl does). It also fails as systemd 252's
journalctl does: `--since` beside `--cursor` is refused before anything else ("Please specify
only one of --since=, --cursor=, and --after-cursor=.", exit 1), and so is a cursor it cannot
seek to."""

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
    import json, sys, time
    args = sys.argv[1:]
    def value(flag, default=None):
        return args[args.index(flag) + 1] if flag in args else default
    def fail(message):
        sys.stderr.write(message + "\\n")
        sys.exit(1)
    if "--since" in args and "--cursor" in args:
        fail("Please specify only one of --since=, --cursor=, and --after-cursor=.")
    try:
        records = [json.loads(line) for line in open({data!r})]
    except OSError as exc:
        fail("Failed to open journal: " + exc.strerror)
    if value("--cursor"):
        index = [i for i, r in enumerate(records) if r["__CURSOR"] == value("--cursor")]
        if not index:
            fail("Failed to seek to cursor: Invalid argument")
        index = index[0]
        records = records[: index + 1] if "--reverse" in args else records[index:]
    if value("--since"):
        since = time.mktime(time.strptime(value("--since"), "%Y-%m-%d %H:%M:%S"))
        records = [r for r in records if int(r["__REALTIME_TIMESTAMP"]) >= since * 1e6]
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
    return data


async def answer(daemon, **params) -> tuple[int, dict]:
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/logs", params=params, headers=daemon.auth_headers()) as r:
            return r.status, await r.json()


async def get(daemon, **params):
    status, body = await answer(daemon, **params)
    assert status == 200, body
    return body


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


async def test_since_pages_reach_back_to_since_and_stop_there(journalctl, make_daemon):
    """journalctl refuses --since with --cursor, and the refusal was read as "no entries": page 2
    of a `since` query came back empty with nextCursor null, so records 2-4 were unreachable."""
    daemon = await make_daemon(LOG_SOURCE="journald")
    since = "1700000002"  # record_2 onwards
    pages, cursor = [], None
    while True:
        body = await get(daemon, limit="2", since=since, **({"cursor": cursor} if cursor else {}))
        pages.append([e["message"] for e in body["entries"]])
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert pages == [["record_6", "plain text failure"], ["record_4", "record_5"], ["record_2", "record_3"]]


async def test_unknown_cursor_is_a_400_not_an_empty_page(journalctl, make_daemon):
    daemon = await make_daemon(LOG_SOURCE="journald")
    for cursor in ("s=abc;i=99", "not-a-cursor"):
        status, body = await answer(daemon, cursor=cursor)
        assert (status, body["error"]) == (400, "invalid_parameter"), cursor


async def test_journalctl_failing_is_a_503_not_an_empty_page(journalctl, make_daemon):
    daemon = await make_daemon(LOG_SOURCE="journald")
    journalctl.unlink()  # the stand-in now fails to open its journal, as journalctl can
    status, body = await answer(daemon, limit="3")
    assert (status, body["error"]) == (503, "log_source_unavailable")


async def test_since_out_of_range_is_a_400(journalctl, make_daemon):
    """`since=1e20` reached time.localtime() and answered 500."""
    daemon = await make_daemon(LOG_SOURCE="journald")
    for since in ("1e20", "nan", "inf", "-1"):
        status, body = await answer(daemon, since=since)
        assert (status, body["error"]) == (400, "invalid_parameter"), since
