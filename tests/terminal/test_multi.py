"""`/terminal/ws/multi` as a browser uses it: real daemon, real PTYs, real shells."""

from __future__ import annotations

import itertools
import json
import re

from tests.terminal.conftest import TermClient, marker, pid_alive, raw_client, shell_pid, until, ws_frame
from vm_agent import appkeys


async def test_typed_command_output_comes_back(term_daemon, connect) -> None:
    client: TermClient = await connect(term_daemon)
    created = await client.create("main-1", name="build")
    assert created["sessionId"] == "main-1"
    assert created["data"]["shell"] == "/bin/bash"
    assert created["data"]["workingDirectory"].endswith("/home")
    await client.type("main-1", "echo $((6*7))x\r")
    await client.until_output("main-1", "42x")
    # offsets are contiguous byte positions from 0
    outputs = [m["data"] for m in client.messages if m["type"] == "output"]
    assert outputs[0]["offset"] == 0
    for before, after in itertools.pairwise(outputs):
        assert after["offset"] == before["next"]


async def test_resize_is_seen_by_the_program_and_clamped(term_daemon, connect) -> None:
    client = await connect(term_daemon)
    await client.create("r", rows=0, cols=100000)  # clamped to 1..500
    await client.type("r", "stty size | sed 's/ /x/'\r")
    await client.until_output("r", "1x500")
    await client.send("resize", {"rows": 33, "cols": 111}, "r")
    await client.type("r", "stty size | sed 's/ /x/'\r")
    await client.until_output("r", "33x111")


async def test_a_keystroke_never_overtakes_a_paste_sent_right_before_it(term_daemon, connect) -> None:
    """A paste is too big to be written to the PTY from the read callback and goes through the
    WebSocket library's queue; the keystroke behind it, in the same write, must wait for it."""
    owner = await connect(term_daemon)
    await owner.create("p")
    await owner.type(
        "p",
        "stty raw -echo; printf 'RE''ADY'; head -c 5001 > got.txt; stty sane; "
        "printf '<%s>%s\\n' \"$(tail -c 1 got.txt)\" 'E''ND'\r",
    )
    await owner.until_output("p", "READY")
    _, writer = await raw_client(term_daemon)
    paste = json.dumps({"type": "input", "sessionId": "p", "data": {"data": "A" * 5000}})
    key = json.dumps({"type": "input", "sessionId": "p", "data": {"data": "B"}})
    writer.write(ws_frame(paste) + ws_frame(key))
    await writer.drain()
    text = await owner.until_output("p", "END")
    assert re.search(r"<(.)>END", text).group(1) == "B"
    writer.close()


async def test_multibyte_characters_split_across_reads_arrive_intact(term_daemon, connect) -> None:
    client = await connect(term_daemon)
    await client.create("u")
    # A euro sign written in two halves with a pause between, then 150 KB of 2- and 3-byte
    # characters so frame boundaries fall inside characters many times.
    await client.type(
        "u",
        "printf 'A\\xe2\\x82'; sleep 0.3; printf '\\xac'B'\\n'; "
        "for i in $(seq 40000); do printf 'é€'; done; printf '%s\\n' '|E''ND'\r",
    )
    text = await client.until_output("u", "|END", timeout=60)
    assert "A€B" in text
    assert "\ufffd" not in text
    body = text.split("A€B", 1)[1]
    assert body.count("é€") == 40000


async def test_two_sockets_on_one_session_see_the_same_output(term_daemon, connect) -> None:
    first = await connect(term_daemon)
    second = await connect(term_daemon)
    await first.create("shared")
    await second.send("reattach_session", {"sessionId": "shared", "rows": 24, "cols": 80})
    await second.expect("session_reattached", sessionId="shared")
    cmd, want = marker("from-second")
    await second.type("shared", cmd)  # the second socket may type too
    await first.until_output("shared", want)
    await second.until_output("shared", want)
    end = min(first.output["shared"].index(want), second.output["shared"].index(want)) + len(want)
    assert first.output["shared"][:end] == second.output["shared"][:end]


async def test_trickles_and_floods_arrive_once_in_order_on_every_socket(term_daemon, connect) -> None:
    """Small writes are sent straight from the PTY reader, floods by each socket's sender:
    whichever sends, every socket gets every byte once, in order, at contiguous offsets."""
    first = await connect(term_daemon)
    second = await connect(term_daemon)
    await first.create("mix")
    await second.send("reattach_session", {"sessionId": "mix", "rows": 24, "cols": 80})
    await second.expect("session_reattached", sessionId="mix")
    await first.type(
        "mix",
        "for i in $(seq 30); do printf 'k%d.' $i; sleep 0.005; "
        "head -c 30000 /dev/zero | tr '\\0' $((i % 10)); done; printf '%s\\n' '|E''ND'\r",
    )
    expected = "".join(f"k{i}." + str(i % 10) * 30000 for i in range(1, 31)) + "|END"
    for client in (first, second):
        text = await client.until_output("mix", "|END", timeout=60)
        assert expected in text
        outputs = [m["data"] for m in client.messages if m["type"] in ("output", "scrollback")]
        for before, after in itertools.pairwise(outputs):
            assert after["offset"] == before["next"]
        between = text[text.index("k1.") : text.index("|END") + 4]
        assert between == expected  # nothing extra in between either (no byte sent twice)


async def test_exit_reports_the_exit_code(term_daemon, connect) -> None:
    client = await connect(term_daemon)
    await client.create("e")
    await client.type("e", "exit 3\r")
    closed = await client.expect("session_closed")
    assert closed["data"] == {"sessionId": "e", "reason": "process_exit", "exitCode": 3}
    await client.send("list_sessions")
    listed = await client.expect("session_list")
    assert listed["data"]["sessions"] == []


async def test_close_rename_list_and_tabs(term_daemon, connect) -> None:
    client = await connect(term_daemon)
    await client.create("t1", name="first")
    await client.create("t2")
    pid = await shell_pid(client, "t1")
    await client.send("rename_session", {"sessionId": "t2", "name": "logs"})
    renamed = await client.expect("session_renamed")
    assert renamed["data"] == {"sessionId": "t2", "name": "logs"}

    other_user = await connect(term_daemon, token=term_daemon.token(user="user-2"))
    await other_user.send("list_sessions")
    assert (await other_user.expect("session_list"))["data"]["sessions"] == []

    await client.send("list_sessions")
    sessions = (await client.expect("session_list"))["data"]["sessions"]
    assert [(s["sessionId"], s["name"], s["status"]) for s in sessions] == [
        ("t1", "first", "running"),
        ("t2", "logs", "running"),
    ]
    manager = term_daemon.app[appkeys.TERMINALS]
    await manager.tabs_synced()
    tabs = await term_daemon.app[appkeys.TABS].list("host")
    assert [(t.id, t.type, t.label) for t in tabs] == [("t1", "terminal", "first"), ("t2", "terminal", "logs")]

    await client.send("close_session", {"sessionId": "t1"})
    closed = await client.expect("session_closed")
    assert closed["data"] == {"sessionId": "t1", "reason": "user_requested"}
    assert not pid_alive(pid)
    await manager.tabs_synced()
    assert [t.id for t in await term_daemon.app[appkeys.TABS].list("host")] == ["t2"]
    assert manager.session_count() == 1


async def test_reattach_after_disconnect_with_offset_gets_exactly_the_missing_bytes(
    term_daemon, connect, tmp_path
) -> None:
    done = tmp_path / "printed"
    first = await connect(term_daemon)
    await first.create("job")
    # The program waits for a line of input, then prints ~590 KB while nobody watches.
    await first.type("job", f"read x; seq 1 80000; touch {done}\r")
    await first.until_output("job", "touch")
    saved = first.positions["job"]
    seen = first.output["job"]
    await first.close()

    second = await connect(term_daemon)
    await second.type("job", "\r")  # input needs no attachment
    await until(done.exists)
    await second.send("reattach_session", {"sessionId": "job", "rows": 24, "cols": 80, "offset": saved})
    reattached = await second.expect("session_reattached", sessionId="job")
    assert reattached["data"]["offset"] == saved
    scrollback = await second.expect("scrollback")
    assert scrollback["data"]["offset"] == saved
    assert "gap" not in scrollback["data"]
    assert scrollback["data"]["next"] - saved > 500_000
    transcript = seen + scrollback["data"]["data"]
    numbers = [int(n) for n in re.findall(r"(?<=[\r\n])(\d+)\r\n", transcript)]
    assert numbers == list(range(1, 80001))  # every line once: nothing missed, nothing twice


async def test_the_same_user_on_another_workspace_is_refused(term_daemon, connect) -> None:
    async with term_daemon.client() as http:
        no_token = await http.get(term_daemon.url + "/terminal/ws/multi")
        assert no_token.status == 401
        params = {"token": term_daemon.token(workspace="host"), "workspace": "other"}
        wrong = await http.get(term_daemon.url + "/terminal/ws/multi", params=params)
        assert wrong.status == 403
        params = {"token": term_daemon.token(kind="management", workspace=None), "workspace": "nope"}
        missing = await http.get(term_daemon.url + "/terminal/ws/multi", params=params)
        assert missing.status == 404
        assert (await missing.json())["error"] == "workspace_not_found"


async def test_a_large_paste_arrives_complete_and_in_order(term_daemon, connect, tmp_path) -> None:
    target = tmp_path / "pasted.txt"
    client = await connect(term_daemon)
    await client.create("paste")
    await client.type("paste", f"cat > {target}\r")
    await client.until_output("paste", "cat >")
    lines = [f"{i:06d} " + "abcdefghij" * 5 + "\n" for i in range(5000)]  # ~290 KB, far over tty buffers
    text = "".join(lines)
    for start in range(0, len(text), 30000):
        await client.type("paste", text[start : start + 30000])
    await client.type("paste", "\x04")
    await until(lambda: target.exists() and target.stat().st_size == len(text), timeout=30)
    assert target.read_text() == text


async def test_pipelined_creates_and_immediate_input(term_daemon, connect) -> None:
    client = await connect(term_daemon)
    for i in range(20):
        await client.send("create_session", {"sessionId": f"p{i}", "rows": 24, "cols": 80})
    cmd, want = marker("typed-right-away")
    await client.type("p7", cmd)  # sent before p7 is known to exist: waits for its create
    await client.send("create_session", {"sessionId": "p3", "rows": 24, "cols": 80})  # duplicate
    await client.until_output("p7", want)
    await client.send("list_sessions")
    listed = await client.expect("session_list")
    assert sorted(s["sessionId"] for s in listed["data"]["sessions"]) == sorted(f"p{i}" for i in range(20))
    created = {m["sessionId"] for m in client.messages if m["type"] == "session_created"}
    assert created == {f"p{i}" for i in range(20)}
    errors = [m for m in client.messages if m["type"] == "error"]
    assert [(e["sessionId"], e["data"]["error"]) for e in errors] == [("p3", "session_exists")]


async def test_a_duplicate_create_does_not_lose_the_input_that_follows(term_daemon, connect) -> None:
    client = await connect(term_daemon)
    for _ in range(2):
        await client.send("create_session", {"sessionId": "dup", "rows": 24, "cols": 80})
    cmd, want = marker("typed-after-a-duplicate")
    await client.type("dup", cmd)  # must wait for the first create, still spawning
    await client.until_output("dup", want)
    errors = [(m["sessionId"], m["data"]["error"]) for m in client.messages if m["type"] == "error"]
    assert errors == [("dup", "session_exists")]


async def test_a_relative_work_dir_is_inside_the_workspace(term_daemon, connect, tmp_path) -> None:
    (tmp_path / "home" / "src").mkdir()
    client = await connect(term_daemon)
    created = await client.create("rel", workDir="src/../src")
    assert created["data"]["workingDirectory"] == str(tmp_path / "home" / "src")
    await client.type("rel", "echo PWD=:$(pwd):\r")
    await client.until_output("rel", f"PWD=:{tmp_path / 'home' / 'src'}:")

    await client.send("create_session", {"sessionId": "nowhere", "rows": 24, "cols": 80, "workDir": "missing"})
    refused = await client.expect("error")
    assert refused["sessionId"] == "nowhere"
    assert refused["data"]["message"] == f"working directory {str(tmp_path / 'home' / 'missing')!r} does not exist"


async def test_a_terminal_never_touches_an_agent_chat_tab_with_the_same_id(term_daemon, connect) -> None:
    """Terminals and agent sessions pick ids independently; a user's terminal must not rename
    or delete the chat tab of an agent session that happens to share its id."""
    async with term_daemon.client() as http:
        created = await http.post(
            term_daemon.url + "/workspaces/host/agent-sessions",
            json={"sessionId": "shared", "label": "agent chat"},
            headers=term_daemon.auth_headers("management", workspace="host"),
        )
        assert created.status == 201
    client = await connect(term_daemon)
    await client.create("shared", name="my shell")
    await client.send("rename_session", {"sessionId": "shared", "name": "renamed"})
    await client.expect("session_renamed")
    await client.send("close_session", {"sessionId": "shared"})
    await client.expect("session_closed")
    await term_daemon.app[appkeys.TERMINALS].tabs_synced()
    tabs = await term_daemon.app[appkeys.TABS].list("host")
    assert [(t.id, t.type, t.label) for t in tabs] == [("shared", "chat", "agent chat")]


async def test_shell_owns_its_terminal_with_default_signals(term_daemon, connect) -> None:
    """Job control works (the PTY is the shell's controlling terminal, Ctrl-C reaches the
    foreground program) and programs start with no signal ignored or blocked: a daemon that
    ignores SIGPIPE must not pass that on, or `yes | head` would report broken pipes."""
    client = await connect(term_daemon)
    await client.create("sig")
    await client.type("sig", "grep -E '^Sig(Ign|Blk)' /proc/self/status | tr -d '\\t' | tr '\\n' ' '; echo ok''1\r")
    text = await client.until_output("sig", "ok1")
    assert "SigBlk:0000000000000000 SigIgn:0000000000000000" in text
    await client.type("sig", "yes | head -n 2 >/dev/null; echo piped''$?\r")
    text = await client.until_output("sig", "piped0")
    assert "Broken pipe" not in text
    shell = await shell_pid(client, "sig")
    await client.type("sig", "sleep 30\r")
    await until(lambda: _foreground_group(shell) not in (shell, None))  # sleep owns the terminal
    await client.type("sig", "\x03")
    await client.type("sig", "echo after$((1+1))\r")
    await client.until_output("sig", "after2", timeout=5)


def _foreground_group(pid: int) -> int | None:
    """The foreground process group of `pid`'s controlling terminal (its tpgid)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[5])
    except FileNotFoundError:
        return None
