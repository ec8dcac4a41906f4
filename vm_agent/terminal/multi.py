"""`/terminal/ws/multi` and `/terminal/ws`: what each client message does.

Handlers validate the message, call the manager or session, and answer; the connection base
class owns limits, liveness and the per-session senders.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from vm_agent.errors import ApiError, Conflict
from vm_agent.terminal import protocol
from vm_agent.terminal.connection import ConnectionGone, TerminalConnection, session_closed
from vm_agent.terminal.manager import validate_session_id
from vm_agent.terminal.protocol import ClientMessage, ProtocolError
from vm_agent.terminal.session import TerminalSession


class MultiConnection(TerminalConnection):
    """Many sessions over one socket, routed by `sessionId`."""

    allowed = protocol.MULTI_TYPES

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        # Creates run concurrently (spawning waits on fork/exec, and a client opening many
        # terminals pipelines them); a later message about a session waits for its create.
        self._creating: dict[str, asyncio.Task[None]] = {}

    async def handle(self, message: ClientMessage) -> None:
        kind = message.type
        if kind == "create_session":
            self._start_create(message)
            return
        if kind == "list_sessions":
            await asyncio.gather(*self._creating.values(), return_exceptions=True)
        elif kind != "ping":
            pending = self._creating.get(message.target)
            if pending is not None:
                await asyncio.gather(pending, return_exceptions=True)
        if kind == "input":
            session = self._session(message.target)
            session.write(message.field("data", str))
        elif kind == "resize":
            self._session(message.target).resize(*message.dims())
        elif kind == "ping":
            await self.send(protocol.encode("pong", None, message.session_id))
        elif kind == "reattach_session":
            await self._reattach(message)
        elif kind == "list_sessions":
            sessions = [s.describe() for s in self.manager.list(self.workspace_id, self.principal.user_id)]
            await self.send(protocol.encode("session_list", {"sessions": sessions}))
        elif kind == "close_session":
            await self._close_session(message.target)
        elif kind == "rename_session":
            session = self._session(message.target)
            self.manager.rename(session, message.field("name", str))
            await self.send(
                protocol.encode("session_renamed", {"sessionId": session.id, "name": session.name}, session.id)
            )

    def input_target(self, session_id: object) -> TerminalSession | None:
        if type(session_id) is not str or not session_id or session_id in self._creating:
            return None  # unnamed, or its create has not finished: the normal way waits for it
        try:
            return self._session(session_id)
        except ApiError:
            return None

    def _start_create(self, message: ClientMessage) -> None:
        session_id = validate_session_id(message.target)
        if session_id in self._creating:
            # Refused here, before a second task: replacing the pending one would let a message
            # about this session stop waiting for the create that is still spawning it.
            raise Conflict(f"terminal session {session_id!r} already exists", code="session_exists")
        task = asyncio.get_running_loop().create_task(self._create(message))
        self._creating[session_id] = task

        def done(_task: asyncio.Task[None]) -> None:
            if self._creating.get(session_id) is task:
                del self._creating[session_id]

        task.add_done_callback(done)

    async def settle(self) -> None:
        await asyncio.gather(*self._creating.values(), return_exceptions=True)

    def _session(self, session_id: str) -> TerminalSession:
        return self.manager.get(self.workspace_id, session_id, self.principal.user_id)

    async def _create(self, message: ClientMessage) -> None:
        session_id = message.target
        try:
            rows, cols = message.dims()
            session = await self.manager.create(
                self.workspace_id,
                self.principal.user_id,
                session_id,
                rows=rows,
                cols=cols,
                name=message.data.get("name"),
                work_dir=message.field("workDir", str, required=False),
            )
        except (ApiError, ProtocolError) as exc:
            with contextlib.suppress(ConnectionGone):
                await self.send(protocol.error(exc.code, exc.message, session_id))
            return
        viewer = self.manager.attach(session)
        viewer.start_live(0)
        try:
            await self.send(protocol.encode("session_created", _describe(session), session.id))
        except ConnectionGone:
            pass
        finally:
            self.follow(session, viewer)

    async def _reattach(self, message: ClientMessage) -> None:
        session = self._session(message.target)
        offset = message.offset()
        await self.unfollow(session.id)
        if "rows" in message.data or "cols" in message.data:
            session.resize(*message.dims())
        viewer = self.manager.attach(session)
        try:
            replay = viewer.replay(offset)
            await self.send(
                protocol.encode("session_reattached", {**_describe(session), "offset": replay.offset}, session.id)
            )
            await self.send(protocol.output(session.id, replay, kind="scrollback"))
        finally:
            self.follow(session, viewer)

    async def _close_session(self, session_id: str) -> None:
        session = self._session(session_id)
        await self.manager.close(session, "user_requested")
        pump = self._pumps.get(session.id)
        if pump is not None:
            await pump  # it sends the rest of the output, then `session_closed`
        else:
            await self.send(session_closed(session))


class SingleConnection(TerminalConnection):
    """One session created with the socket and closed with it (`/terminal/ws`)."""

    allowed = protocol.SINGLE_TYPES

    def __init__(self, *args, rows: int, cols: int, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._dims = (rows, cols)
        self.session: TerminalSession | None = None

    async def opened(self) -> None:
        try:
            self.session = await self.manager.create(
                self.workspace_id,
                self.principal.user_id,
                "term-" + secrets.token_hex(8),
                rows=self._dims[0],
                cols=self._dims[1],
                ephemeral=True,
            )
        except ApiError as exc:
            await self.send(protocol.error(exc.code, exc.message))
            await self.end(1011, exc.code)
            return
        viewer = self.manager.attach(self.session)
        viewer.start_live(0)
        try:
            await self.send(protocol.encode("session", {"sessionId": self.session.id}, self.session.id))
        finally:
            self.follow(self.session, viewer)

    def input_target(self, session_id: object) -> TerminalSession | None:
        return self.session

    async def handle(self, message: ClientMessage) -> None:
        session = self.session
        if session is None:
            raise ProtocolError("no_session", "the terminal could not be started")
        if message.type == "input":
            session.write(message.field("data", str))
        elif message.type == "resize":
            session.resize(*message.dims())
        else:
            await self.send(protocol.encode("pong", None, message.session_id))

    async def session_ended(self, session: TerminalSession) -> None:
        # The program is gone: nothing more will happen on this socket.
        await self.end(1000, "session ended")

    async def closed(self) -> None:
        if self.session is not None:
            await self.manager.close(self.session, "connection_closed")


def _describe(session: TerminalSession) -> dict[str, str]:
    return {"sessionId": session.id, "workingDirectory": session.working_directory, "shell": session.shell}
