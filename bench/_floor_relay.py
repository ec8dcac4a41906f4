"""The floor for a Python terminal server: the least an asyncio relay can do, as a benchmark peer.

    python bench/_floor_relay.py PORT CERT KEY SHELL     (prints "ready" once listening)

It accepts a TLS WebSocket, speaks just enough of vm-agent's `/terminal/ws/multi` messages for
the benchmark's lean client (`create_session`, `input`, `output`), and relays bytes between
the socket and one PTY in callbacks: no log, no replay, no limits, no viewers, no liveness,
no coalescing, no authentication. Whatever vm-agent costs beyond this on the same machine and
in the same run is the price of its features and of aiohttp; what this costs is the price of
Python, asyncio's TLS and the machine. It is a measuring stick, not a server.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import hashlib
import os
import re
import ssl
import struct
import sys

import orjson
import ptyprocess

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", 0x80 | opcode, size) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


class Relay(asyncio.Protocol):
    def __init__(self, shell: str) -> None:
        self.shell = shell
        self.buffer = bytearray()
        self.upgraded = False
        self.process: ptyprocess.PtyProcess | None = None
        self.session_id = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded and not self._upgrade():
            return
        while self._one_frame():
            pass

    def _upgrade(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        key = re.search(r"(?im)^sec-websocket-key:\s*(\S+)", head)
        if key is None:
            self.transport.close()
            return False
        accept = base64.b64encode(hashlib.sha1((key.group(1) + _GUID).encode()).digest()).decode()
        self.transport.write(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        self.upgraded = True
        return True

    def _one_frame(self) -> bool:
        buf = self.buffer
        if len(buf) < 2:
            return False
        opcode, size, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if size == 126:
            if len(buf) < 4:
                return False
            size, at = struct.unpack_from("!H", buf, 2)[0], 4
        elif size == 127:
            if len(buf) < 10:
                return False
            size, at = struct.unpack_from("!Q", buf, 2)[0], 10
        if len(buf) < at + 4 + size:
            return False
        key = bytes(buf[at : at + 4]) * (size // 4 + 1)
        body = bytes(buf[at + 4 : at + 4 + size])
        del buf[: at + 4 + size]
        payload = (int.from_bytes(body, "big") ^ int.from_bytes(key[:size], "big")).to_bytes(size, "big")
        if opcode == 0x1:
            self._message(orjson.loads(payload))
        elif opcode == 0x9:
            self.transport.write(_frame(payload, 0xA))
        elif opcode == 0x8:
            self.transport.close()
        return True

    def _message(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "input" and self.process is not None:
            os.write(self.process.fd, message["data"]["data"].encode())
        elif kind == "create_session" and self.process is None:
            self.session_id = message["data"]["sessionId"]
            self.process = ptyprocess.PtyProcess.spawn([self.shell], dimensions=(24, 80))
            os.set_blocking(self.process.fd, False)
            self.loop.add_reader(self.process.fd, self._readable)

    def _readable(self) -> None:
        assert self.process is not None
        try:
            data = os.read(self.process.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.process.fd)
            return
        text = self.decoder.decode(data)
        message = {"type": "output", "sessionId": self.session_id, "data": {"data": text}}
        self.transport.write(_frame(orjson.dumps(message)))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.process is not None:
            self.loop.remove_reader(self.process.fd)
            self.process.terminate(force=True)


async def main(port: int, cert: str, key: str, shell: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = await asyncio.get_running_loop().create_server(
        lambda: Relay(shell), "127.0.0.1", port, ssl=context
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]))
