"""The servers the terminal benchmark compares, and a client for each: vm-agent, terminado and
the asyncio floor, each spoken to in its own protocol by the same client code."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable

import aiohttp

from bench._lean_ws import LeanSocket, client_frame, upgrade_request


# ---------------------------------------------------------------------- clients
class Term:
    """One terminal as seen by a client; subclasses speak each server's protocol."""

    ws: aiohttp.ClientWebSocketResponse

    async def send(self, text: str) -> None:
        raise NotImplementedError

    def texts(self, raw: str) -> list[str]:
        raise NotImplementedError

    async def read_until(self, needle: str, timeout: float = 600) -> int:
        """Read output until `needle` appears; returns the number of characters read."""
        count = 0
        tail = ""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"socket ended: {msg.type}")
                for text in self.texts(msg.data):
                    count += len(text)
                    window = tail + text
                    if needle in window:
                        return count
                    tail = window[-64:]


class VmAgentTerm(Term):
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id

    def encode_input(self, text: str) -> str:
        return json.dumps({"type": "input", "sessionId": self.session_id, "data": {"data": text}})

    async def send(self, text: str) -> None:
        await self.ws.send_str(self.encode_input(text))

    def texts(self, raw: str) -> list[str]:
        message = json.loads(raw)
        if message["type"] in ("output", "scrollback"):
            return [message["data"]["data"]]
        return []


class TerminadoTerm(Term):
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @staticmethod
    def encode_input(text: str) -> str:
        return json.dumps(["stdin", text])

    async def send(self, text: str) -> None:
        await self.ws.send_str(self.encode_input(text))

    def texts(self, raw: str) -> list[str]:
        message = json.loads(raw)
        return [message[1]] if message[0] == "stdout" else []


class LeanTerm:
    """A terminal read through the lean client (bench/_lean_ws.py), in a worker thread."""

    def __init__(self, sock: LeanSocket, encode: Callable[[str], str], texts: Callable[[str], list[str]]) -> None:
        self.sock = sock
        self._encode = encode
        self._texts = texts

    def send(self, text: str) -> None:
        self.sock.send_text(self._encode(text))

    def read_text_until(self, needle: str, timeout: float = 600) -> None:
        """Decode frames as the peer's JSON until `needle` shows in the output text."""
        deadline = time.monotonic() + timeout
        tail = ""
        while True:
            for text in self._texts(self.sock.receive().decode()):
                window = tail + text
                if needle in window:
                    return
                tail = window[-64:]
            if time.monotonic() > deadline:
                raise TimeoutError(needle)

    def ready(self) -> None:
        self.send("printf '%s%s\\n' RE ADY\r")
        self.read_text_until("READY")


class Peer:
    name = ""
    pid = 0
    measures = frozenset({"throughput", "echo", "open", "stall", "replay"})

    def __init__(self, http: aiohttp.ClientSession, port: int) -> None:
        self.http = http
        self.port = port
        self._count = 0

    async def open(self) -> Term:
        raise NotImplementedError

    def open_lean(self) -> LeanTerm:
        """A terminal through the lean client (blocking: call it in a worker thread)."""
        raise NotImplementedError

    async def open_many(self, count: int) -> Callable[[], Awaitable[None]]:
        """Open `count` sessions; returns a coroutine function that closes them."""
        raise NotImplementedError

    async def reattach_elapsed(
        self, name: str, prepare: Callable[[Term], Awaitable[None]]
    ) -> tuple[float, int, float | None]:
        """(connect + replay seconds, bytes replayed, replay seconds on an open socket or None)."""
        raise NotImplementedError

    async def stalled(self, command: str) -> asyncio.StreamWriter:
        raise NotImplementedError


class VmAgent(Peer):
    name = "vm-agent"

    def __init__(self, http: aiohttp.ClientSession, port: int, token: str) -> None:
        super().__init__(http, port)
        self.token = token
        self.url = f"wss://127.0.0.1:{port}/terminal/ws/multi?token={token}"

    async def _socket(self) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(self.url, max_msg_size=0)

    async def open(self, session_id: str | None = None) -> VmAgentTerm:
        self._count += 1
        session_id = session_id or f"bench-{self._count}"
        ws = await self._socket()
        create = {"sessionId": session_id, "rows": 24, "cols": 80}
        await ws.send_str(json.dumps({"type": "create_session", "data": create}))
        return VmAgentTerm(ws, session_id)

    def open_lean(self) -> LeanTerm:
        self._count += 1
        return _lean_multi(self.port, f"/terminal/ws/multi?token={self.token}", f"lean-{self._count}")

    async def open_many(self, count: int) -> Callable[[], Awaitable[None]]:
        ws = await self._socket()
        base = self._count = self._count + 1
        for i in range(count):
            create = {"sessionId": f"many-{base}-{i}", "rows": 24, "cols": 80}
            await ws.send_str(json.dumps({"type": "create_session", "data": create}))
        await _count_messages(ws, "session_created", count)

        async def close() -> None:
            for i in range(count):
                await ws.send_str(json.dumps({"type": "close_session", "data": {"sessionId": f"many-{base}-{i}"}}))
            await _count_messages(ws, "session_closed", count)
            await ws.close()

        return close

    async def reattach_elapsed(
        self, name: str, prepare: Callable[[Term], Awaitable[None]]
    ) -> tuple[float, int, float | None]:
        first = await self.open(name)
        await prepare(first)
        await first.ws.close()
        return await asyncio.to_thread(self._timed_reattach, name)

    def _timed_reattach(self, name: str) -> tuple[float, int, float]:
        """Connect, reattach and receive the whole scrollback frame through the lean client
        (the frame is not parsed as JSON: a 1 MiB json.loads would be the client's time)."""
        started = time.perf_counter()
        sock = LeanSocket(self.port, f"/terminal/ws/multi?token={self.token}")
        connected = time.perf_counter()
        sock.send_json({"type": "reattach_session", "data": {"sessionId": name, "rows": 24, "cols": 80}})
        while True:
            payload = sock.receive()
            if payload.startswith(b'{"type":"scrollback"'):
                done = time.perf_counter()
                sock.close()
                return done - started, len(payload), done - connected

    async def stalled(self, command: str) -> asyncio.StreamWriter:
        create = {"type": "create_session", "data": {"sessionId": "stalled", "rows": 24, "cols": 80}}
        typed = {"type": "input", "sessionId": "stalled", "data": {"data": command + "\r"}}
        return await raw_stalled_client(self.port, f"/terminal/ws/multi?token={self.token}", [create, typed])


class Terminado(Peer):
    name = "terminado"

    async def open(self) -> TerminadoTerm:
        ws = await self.http.ws_connect(f"wss://127.0.0.1:{self.port}/websocket", max_msg_size=0)
        return TerminadoTerm(ws)

    def open_lean(self) -> LeanTerm:
        term = TerminadoTerm(None)  # type: ignore[arg-type]
        return LeanTerm(LeanSocket(self.port, "/websocket"), term.encode_input, term.texts)

    async def open_many(self, count: int) -> Callable[[], Awaitable[None]]:
        gate = asyncio.Semaphore(64)  # tornado's accept backlog is 128

        async def one() -> aiohttp.ClientWebSocketResponse:
            async with gate:
                ws = await self.http.ws_connect(f"wss://127.0.0.1:{self.port}/websocket", max_msg_size=0)
                while json.loads((await ws.receive()).data)[0] != "setup":
                    pass
                return ws

        sockets = await asyncio.gather(*(one() for _ in range(count)))

        async def close() -> None:
            await asyncio.gather(*(ws.close() for ws in sockets))

        return close

    async def reattach_elapsed(
        self, name: str, prepare: Callable[[Term], Awaitable[None]]
    ) -> tuple[float, int, float | None]:
        url = f"wss://127.0.0.1:{self.port}/named/{name}"
        first = TerminadoTerm(await self.http.ws_connect(url, max_msg_size=0))
        await prepare(first)
        await first.ws.close()
        return await asyncio.to_thread(self._timed_reattach, name)

    def _timed_reattach(self, name: str) -> tuple[float, int, None]:
        started = time.perf_counter()
        sock = LeanSocket(self.port, f"/named/{name}")
        while True:
            payload = sock.receive()
            if payload.startswith(b'["stdout"'):
                elapsed = time.perf_counter() - started
                sock.close()
                return elapsed, len(payload), None  # terminado replays during the handshake

    async def stalled(self, command: str) -> asyncio.StreamWriter:
        return await raw_stalled_client(self.port, "/websocket", [["stdin", command + "\r"]])


class FloorRelay(Peer):
    """bench/_floor_relay.py: the least a Python asyncio relay does (echo and throughput only)."""

    name = "asyncio floor"
    measures = frozenset({"throughput", "echo"})

    def open_lean(self) -> LeanTerm:
        self._count += 1
        return _lean_multi(self.port, "/", f"floor-{self._count}")


def _lean_multi(port: int, path: str, session_id: str) -> LeanTerm:
    """A new session over the lean client, in vm-agent's multi-session protocol (which the
    asyncio floor speaks too)."""
    sock = LeanSocket(port, path)
    sock.send_json({"type": "create_session", "data": {"sessionId": session_id, "rows": 24, "cols": 80}})
    term = VmAgentTerm(None, session_id)  # type: ignore[arg-type]
    return LeanTerm(sock, term.encode_input, term.texts)


async def _count_messages(ws: aiohttp.ClientWebSocketResponse, kind: str, count: int) -> None:
    seen = 0
    while seen < count:
        message = json.loads((await ws.receive()).data)
        if message["type"] == kind:
            seen += 1
        elif message["type"] == "error":
            raise RuntimeError(message)


async def raw_stalled_client(port: int, path: str, messages: list) -> asyncio.StreamWriter:
    """A WebSocket client that sends `messages` and then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(sock=sock, ssl=context, server_hostname="127.0.0.1", limit=4096)
    writer.write(upgrade_request(path))
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(0.5)  # let the session come up before typing
    for message in messages:
        writer.write(client_frame(json.dumps(message).encode()))
    await writer.drain()
    return writer


# ---------------------------------------------------------------------- servers
TERMINADO_SERVER = textwrap.dedent(
    """
    import sys, ssl, tornado.ioloop, tornado.web, terminado
    port, cert, key, shell = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    unique = terminado.UniqueTermManager(shell_command=[shell, "-l"])
    named = terminado.NamedTermManager(shell_command=[shell, "-l"])
    app = tornado.web.Application([
        (r"/websocket", terminado.TermSocket, {"term_manager": unique}),
        (r"/named/(\\w+)", terminado.TermSocket, {"term_manager": named}),
    ])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app.listen(port, "127.0.0.1", ssl_options=context)
    print("ready", flush=True)
    tornado.ioloop.IOLoop.current().start()
    """
)


async def start_server(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """A peer server (`python *args`), once it has printed its ready line."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert server.stdout is not None
    await server.stdout.readline()
    return server


async def wait_ready(http: aiohttp.ClientSession, url: str) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                async with http.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
