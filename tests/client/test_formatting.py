"""What `vmagent watch` shows for a turn: streamed text stays on one line, everything else gets its own."""

from __future__ import annotations

import io

from vm_agent.client.events import Event
from vm_agent.client.formatting import EventPrinter


def update(seq: int, body: dict) -> Event:
    return Event(
        seq, {"seq": seq, "jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "s", "update": body}}
    )


def chunk(seq: int, text: str, kind: str = "agent_message_chunk") -> Event:
    return update(seq, {"sessionUpdate": kind, "content": {"type": "text", "text": text}})


TURN = [
    Event(None, {"type": "session_state", "status": "ready"}),
    Event(1, {"seq": 1, "type": "session_prompting", "kind": "prompt", "prompt": [{"type": "text", "text": "fix it"}]}),
    chunk(2, "Let me ", "agent_thought_chunk"),
    chunk(3, "look.", "agent_thought_chunk"),
    chunk(4, "I will "),
    chunk(5, "run the tests"),
    update(6, {"sessionUpdate": "tool_call", "toolCallId": "t1", "title": "pytest -q", "status": "pending"}),
    update(7, {"sessionUpdate": "tool_call_update", "toolCallId": "t1", "status": "in_progress"}),
    update(8, {"sessionUpdate": "tool_call_update", "toolCallId": "t1", "status": "completed"}),
    chunk(9, "All green."),
    update(10, {"sessionUpdate": "usage_update", "used": 10}),
    Event(11, {"seq": 11, "jsonrpc": "2.0", "id": 1, "result": {"stopReason": "end_turn"}}),
    Event(12, {"seq": 12, "type": "session_prompt_done", "stopReason": "end_turn"}),
    Event(13, {"seq": 13, "type": "session_gap", "from": 14, "to": 20}),
    # the daemon's agent_crash_report, as vm_agent/agents/_runner.py sends it
    Event(
        21,
        {
            "seq": 21,
            "type": "agent_crash_report",
            "agentType": "pi",
            "promptId": "p2",
            "exitCode": 3,
            "error": "agent exited (code 3)",
            "stderr": "starting\nfatal: provider rejected [REDACTED]\n\n",
        },
    ),
    Event(22, {"seq": 22, "type": "session_prompt_done", "promptId": "p2", "stopReason": "recovered"}),
]


def test_a_turn_reads_like_a_conversation():
    out = io.StringIO()
    printer = EventPrinter(out)
    for event in TURN:
        printer.print(event)
    printer.finish()
    assert out.getvalue().splitlines() == [
        "> fix it",
        "Let me look.",
        "I will run the tests",
        "[tool] pytest -q (pending)",
        "[tool completed] t1",
        "All green.",
        "[done: end_turn]",
        "[missed events 14..20: no longer retained]",
        "[agent crashed: agent exited (code 3); stderr: fatal: provider rejected [REDACTED]]",
        "[done: recovered]",
    ]


def test_json_lines_are_the_events_unchanged():
    out = io.StringIO()
    printer = EventPrinter(out, json_lines=True)
    for event in TURN[1:3]:
        printer.print(event)
    assert out.getvalue().count("\n") == 2 and '"seq":1' in out.getvalue()
