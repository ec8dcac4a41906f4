#!/usr/bin/env python3
"""A scriptable ACP agent for the cases real agents cannot produce on demand.

Speaks ACP v1 (JSON-RPC 2.0, one JSON object per line on stdin/stdout). What a prompt does is
chosen by its text (first word, then arguments):

  echo <text>          one agent_message_chunk "<text>", end_turn (also the default)
  chunks <n>           n chunks "c0 ".."c<n-1> " as fast as possible, end_turn
  sleep <seconds>      one chunk "sleeping", then wait; session/cancel ends it "cancelled"
  stubborn <seconds>   one chunk "stubborn", then wait, ignoring session/cancel
  transient <k>        the first k attempts of this exact prompt fail with a 529 overloaded error
  fail                 a non-retryable JSON-RPC error
  crash                one chunk "about to crash", then exit(3) with a secret on stderr
  malformed            garbage lines, a JSON array, absurdly deep nesting, a response to nobody,
                       then "after garbage"
  permission           session/request_permission (allow/reject options), then a chunk naming
                       the outcome, end_turn
  bigline <bytes>      one chunk of that many "x"
  unknown              an unknown update kind and a `_vendor/notice` notification, end_turn
  badid                a response whose id is a JSON array (answers nothing), then "after badid"
  badcode              a chunk "before badcode", then an error answer whose code is a string
  closeout             a chunk "closing stdout", then close stdout and keep running (hung)
  surrogate            a chunk ending in half an emoji (a lone surrogate escape), then "after"

Environment: FAKE_ACP_STATE (a directory: sessions persist there so session/load works across
restarts), FAKE_ACP_STEERING=1 (advertise `_session/steering`), FAKE_ACP_NO_LOAD=1,
FAKE_ACP_STDERR (text written to stderr at start), FAKE_ACP_INIT_DELAY (seconds),
FAKE_ACP_PIDFILE (a file each agent appends its pid to at start, so tests can check that no
agent process outlives its session).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

STATE = os.environ.get("FAKE_ACP_STATE")
STEERING = os.environ.get("FAKE_ACP_STEERING") == "1"
LOAD = os.environ.get("FAKE_ACP_NO_LOAD") != "1"

out = sys.stdout.buffer


def send(message: dict[str, Any]) -> None:
    out.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    out.flush()


def update(session_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": session_id, "update": body}}


def chunk(session_id: str, text: str) -> dict[str, Any]:
    return update(session_id, {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}})


class Agent:
    def __init__(self) -> None:
        self.sessions: dict[str, list[str]] = {}
        self.attempts: dict[str, int] = {}
        self.cancel_event = asyncio.Event()
        self.steer_event = asyncio.Event()
        self.steer_text = ""
        self.running = False
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 1000

    def history_path(self, session_id: str) -> str | None:
        return os.path.join(STATE, f"{session_id}.json") if STATE else None

    def remember(self, session_id: str, text: str) -> None:
        self.sessions.setdefault(session_id, []).append(text)
        path = self.history_path(session_id)
        if path:
            # Whole or not at all, as a real agent's store: tests SIGKILL the agent at any moment,
            # and a torn file made the next session/load fail without an answer (a hang).
            with open(f"{path}.tmp", "w") as fh:
                json.dump(self.sessions[session_id], fh)
            os.replace(f"{path}.tmp", path)

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return await future

    async def handle(self, message: dict[str, Any]) -> None:
        method, params, mid = message.get("method"), message.get("params") or {}, message.get("id")
        if method is None:
            future = self.pending.pop(mid, None)
            if future is not None and not future.done():
                future.set_result(message.get("result", message.get("error")))
            return
        try:
            result = await self.dispatch(method, params)
        except RpcFailure as exc:
            if mid is not None:
                send({"jsonrpc": "2.0", "id": mid, "error": exc.error})
            return
        if mid is not None:
            send({"jsonrpc": "2.0", "id": mid, "result": result})

    async def dispatch(self, method: str, params: dict[str, Any]) -> Any:
        if method == "initialize":
            await asyncio.sleep(float(os.environ.get("FAKE_ACP_INIT_DELAY", "0")))
            reply: dict[str, Any] = {"protocolVersion": 1, "agentCapabilities": {"loadSession": LOAD},
                                     "authMethods": []}
            if STEERING:
                reply["_meta"] = {"steering": {"supported": True}}
            return reply
        if method == "session/new":
            session_id = "fake-" + uuid.uuid4().hex[:12]
            self.sessions[session_id] = []
            return {"sessionId": session_id}
        if method == "session/load":
            session_id = params.get("sessionId", "")
            history = load_history(self.history_path(session_id))
            if history is None:
                raise RpcFailure(-32002, f"session {session_id} not found")
            self.sessions[session_id] = history
            for text in self.sessions[session_id]:  # the replay a client must not show again
                send(update(session_id, {"sessionUpdate": "user_message_chunk",
                                         "content": {"type": "text", "text": text}}))
            return {}
        if method == "session/cancel":
            self.cancel_event.set()
            return None
        if method == "session/set_mode":
            return {}
        if method == "_session/steering":
            if not self.running:
                return {"outcome": "promptRequired", "reason": "noRunningTurn"}
            self.steer_text = " ".join(b.get("text", "") for b in params.get("prompt", []))
            self.steer_event.set()
            return {"outcome": "injected"}
        if method == "session/prompt":
            return await self.prompt(params.get("sessionId", ""), params.get("prompt", []))
        raise RpcFailure(-32601, f"method not found: {method}")

    async def prompt(self, session_id: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
        text = " ".join(b.get("text", "") for b in blocks if isinstance(b, dict)).strip()
        word, _, arg = text.partition(" ")
        self.cancel_event.clear()
        self.steer_event.clear()
        self.running = True
        try:
            self.remember(session_id, text)
            return await self.run(session_id, word, arg, text)
        finally:
            self.running = False

    async def run(self, sid: str, word: str, arg: str, text: str) -> dict[str, Any]:
        if word == "chunks":
            # a template rather than json.dumps per line: the benchmark needs the agent to be
            # much faster than the gateway it measures
            text = json.dumps(chunk(sid, "c%d "), separators=(",", ":")).replace("%", "%%")
            line = text.replace("c%%d ", "c%d ").encode() + b"\n"
            total = int(arg)
            for start in range(0, total, 1024):
                out.write(b"".join(line % i for i in range(start, min(start + 1024, total))))
            out.flush()
        elif word == "sleep":
            send(chunk(sid, "sleeping"))
            cancel = asyncio.ensure_future(self.cancel_event.wait())
            steer = asyncio.ensure_future(self.steer_event.wait())
            await asyncio.wait([cancel, steer], timeout=float(arg or 30), return_when=asyncio.FIRST_COMPLETED)
            cancel.cancel()
            steer.cancel()
            if self.cancel_event.is_set():
                return {"stopReason": "cancelled"}
            if self.steer_event.is_set():
                send(chunk(sid, f"steered: {self.steer_text}"))
        elif word == "stubborn":
            send(chunk(sid, "stubborn"))
            await asyncio.sleep(float(arg or 30))
        elif word == "transient":
            count = self.attempts[text] = self.attempts.get(text, 0) + 1
            if count <= int(arg):
                send(chunk(sid, f"attempt {count}"))
                raise RpcFailure(-32603, "Overloaded", {"status": 529, "type": "overloaded_error"})
            send(chunk(sid, f"succeeded after {count - 1} failures"))
        elif word == "fail":
            raise RpcFailure(-32603, "invalid model configuration")
        elif word == "crash":
            send(chunk(sid, "about to crash"))
            sys.stderr.write("fatal: provider rejected ANTHROPIC_API_KEY=sk-ant-secret123456 (Bearer abcdef123456)\n")
            sys.stderr.flush()
            os._exit(3)
        elif word == "malformed":
            out.write(b"this is not json\n{\"truncated\": \n[1,2,3]\n\n")
            out.write(b"[" * 100_000 + b"\n")  # nesting too deep for any parser's recursion
            out.write(b'{"jsonrpc":"2.0","id":987654,"result":{}}\n')
            out.flush()
            send(chunk(sid, "after garbage"))
        elif word == "permission":
            answer = await self.request("session/request_permission", {
                "sessionId": sid,
                "toolCall": {"toolCallId": "call-1", "title": "Write file", "kind": "edit"},
                "options": [{"optionId": "allow", "name": "Allow", "kind": "allow_once"},
                            {"optionId": "reject", "name": "Reject", "kind": "reject_once"}],
            })
            outcome = (answer or {}).get("outcome", {})
            send(chunk(sid, f"permission: {outcome.get('optionId') or outcome.get('outcome')}"))
        elif word == "bigline":
            send(chunk(sid, "x" * int(arg)))
        elif word == "badid":
            out.write(b'{"jsonrpc":"2.0","id":[1],"result":{}}\n')
            out.flush()
            send(chunk(sid, "after badid"))
        elif word == "badcode":
            send(chunk(sid, "before badcode"))
            raise RpcFailure("oops", "the code is not a number")  # type: ignore[arg-type]  # on purpose
        elif word == "closeout":
            send(chunk(sid, "closing stdout"))
            os.close(1)
            await asyncio.sleep(3600)
        elif word == "surrogate":
            send(chunk(sid, "half an emoji \ud83d"))  # json.dumps writes it as the escape \ud83d
            send(chunk(sid, "after"))
        elif word == "unknown":
            send(update(sid, {"sessionUpdate": "brand_new_kind", "payload": {"a": 1}}))
            send({"jsonrpc": "2.0", "method": "_vendor/notice", "params": {"sessionId": sid, "note": "hi"}})
            send({"jsonrpc": "2.0", "method": "_vendor/numbered", "seq": 12345, "params": {"sessionId": sid}})
        else:
            send(chunk(sid, arg if word == "echo" else text))
        if self.cancel_event.is_set():
            return {"stopReason": "cancelled"}
        return {"stopReason": "end_turn"}


def load_history(path: str | None) -> list[str] | None:
    if not path or not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


class RpcFailure(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message, **({"data": data} if data is not None else {})}


def record_pid() -> None:
    if os.environ.get("FAKE_ACP_PIDFILE"):
        with open(os.environ["FAKE_ACP_PIDFILE"], "a") as fh:
            fh.write(f"{os.getpid()}\n")


async def main() -> None:
    if os.environ.get("FAKE_ACP_STDERR"):
        sys.stderr.write(os.environ["FAKE_ACP_STDERR"] + "\n")
        sys.stderr.flush()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    agent = Agent()
    tasks: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        task = asyncio.create_task(agent.handle(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    record_pid()
    asyncio.run(main())
