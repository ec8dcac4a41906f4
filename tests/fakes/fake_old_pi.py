#!/usr/bin/env python3
"""A stand-in for pi releases before `agent_settled` (e.g. 0.73), for the completion barrier.

Such a pi ends a run with `agent_end` only, and when the provider failed it announces its
automatic retry AFTER that `agent_end` (`auto_retry_start`), then runs again. During the retry
delay `get_state` says nothing is streaming. The current pi cannot be made to behave like this
on demand, so this script speaks just enough of pi's RPC (get_state, prompt, abort) to replay it:

  prompt "retry"   a failed run (529), agent_end, auto_retry_start, a pause during which
                   get_state answers isStreaming=false, then a good run "recovered", agent_end
  prompt "settle-with-queue"   (the one case that mimics a current pi) a chunk "working", a
                   pause, then a run that ends with `agent_settled` although a steer/follow_up
                   arrived during the pause: the race where pi decided to settle just before
                   the message landed in its queue, which then waits for the next prompt
  prompt <other>   one good run replying "ok", agent_end
Until that prompt no `agent_settled` is sent; after it every run ends with one. steer/follow_up
queue their message; clear_queue returns and empties the queue; a prompt takes the queue along
(as pi does).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

SESSION_ID = str(uuid.uuid4())


def send(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def assistant(stop: str, text: str = "", error: str | None = None) -> dict:
    message = {"role": "assistant", "content": [{"type": "text", "text": text}] if text else [],
               "stopReason": stop}
    if error:
        message["errorMessage"] = error
    return message


async def run(message: str, state: dict) -> None:
    state["streaming"] = True
    send({"type": "agent_start"})
    send({"type": "message_start", "message": {"role": "user", "content": [{"type": "text", "text": message}]}})
    for queued in state["queue"]:
        send({"type": "message_start", "message": {"role": "user", "content": [{"type": "text", "text": queued}]}})
    state["queue"].clear()
    if message == "settle-with-queue":
        state["settles"] = True  # from now on behave like a current pi
        send({"type": "message_update", "assistantMessageEvent": {"type": "text_delta", "delta": "working"}})
        await asyncio.sleep(0.3)
        send({"type": "message_end", "message": assistant("stop", "working")})
        state["streaming"] = False
        send({"type": "agent_end", "messages": []})
        send({"type": "agent_settled"})
        return
    if message == "retry":
        send({"type": "message_end", "message": assistant("error", error="529 overloaded")})
        send({"type": "agent_end", "messages": []})
        send({"type": "auto_retry_start", "attempt": 1, "maxAttempts": 3, "delayMs": 300,
              "errorMessage": "529 overloaded"})
        state["streaming"] = False  # what old pi reports during the retry delay
        await asyncio.sleep(0.3)
        state["streaming"] = True
        send({"type": "agent_start"})
        text = "recovered"
    else:
        text = "ok"
    send({"type": "message_update", "assistantMessageEvent": {"type": "text_delta", "contentIndex": 0,
                                                              "delta": text}})
    send({"type": "message_end", "message": assistant("stop", text)})
    if message == "retry":
        send({"type": "auto_retry_end", "success": True, "attempt": 1})
    state["streaming"] = False
    send({"type": "agent_end", "messages": []})
    if state.get("settles"):
        send({"type": "agent_settled"})


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    state: dict = {"streaming": False, "queue": []}
    runs: set[asyncio.Task] = set()
    while line := await reader.readline():
        command = json.loads(line)
        kind, command_id = command.get("type"), command.get("id")
        if kind == "get_state":
            send({"id": command_id, "type": "response", "command": kind, "success": True,
                  "data": {"sessionId": SESSION_ID, "isStreaming": state["streaming"],
                           "pendingMessageCount": len(state["queue"])}})
        elif kind == "prompt":
            send({"id": command_id, "type": "response", "command": kind, "success": True})
            task = asyncio.create_task(run(command.get("message", ""), state))
            runs.add(task)
            task.add_done_callback(runs.discard)
        elif kind in ("steer", "follow_up"):
            state["queue"].append(command.get("message", ""))
            send({"id": command_id, "type": "response", "command": kind, "success": True})
        elif kind == "clear_queue":
            send({"id": command_id, "type": "response", "command": kind, "success": True,
                  "data": {"steering": [], "followUp": state["queue"][:]}})
            state["queue"].clear()
        else:
            send({"id": command_id, "type": "response", "command": kind, "success": True})


if __name__ == "__main__":
    asyncio.run(main())
