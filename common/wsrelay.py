"""WebSocket messages relayed hop by hop, for `kubectl exec`: kubectl -> API server -> CloudStream -> tunnel ->
EdgeStream -> the runtime's streaming server.

Each hop ends the WebSocket and opens a new one, so messages are relayed whole: Kubernetes' channel
protocols (`v4.channel.k8s.io`, `channel.k8s.io`, their base64 variants) put the stream number in every
message's first byte, so a message must arrive as it was sent, never split or merged. The subprotocol is
whatever the last hop (the runtime) picked from the client's offer, handed back hop by hop before each
hop accepts its client.

A `Pipe` is one end: `receive()` gives the next message or None once that end is finished, `send()` writes
one, `close()` ends it. `relay` pumps both ways until either end finishes, then closes the other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

import aiohttp
from aiohttp import web
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from common.streamframes import DATA, Frame, FrameError

V4: Final = "v4.channel.k8s.io"
V5: Final = "v5.channel.k8s.io"  # v4 plus CLOSE_SIGNAL messages: a client closing one of its streams
CLOSE_SIGNAL: Final = 255  # a v5 message's first byte (in place of a stream number) for "close stream <next byte>"
MAX_MESSAGE: Final = 512 * 1024  # one message, well within a tunnel frame (common.streamframes users: 1 MiB)
_TEXT: Final = b"\x01"
_BINARY: Final = b"\x00"


@dataclass(frozen=True, slots=True)
class Message:
    text: bool
    data: bytes

    def encode(self) -> bytes:
        """As a tunnel DATA frame's payload: one type byte (0 binary, 1 text), then the message."""
        return (_TEXT if self.text else _BINARY) + self.data

    @classmethod
    def decode(cls, payload: bytes) -> Message:
        if not payload or payload[:1] not in (_TEXT, _BINARY):
            raise FrameError("not a relayed WebSocket message")
        return cls(payload[:1] == _TEXT, payload[1:])


class Pipe(Protocol):
    async def receive(self) -> Message | None: ...

    async def send(self, message: Message) -> None: ...

    async def close(self) -> None: ...


class AiohttpPipe:
    """The server end aiohttp accepted (the API server's and CloudStream's clients)."""

    def __init__(self, websocket: web.WebSocketResponse) -> None:
        self.websocket = websocket

    async def receive(self) -> Message | None:
        while True:
            message = await self.websocket.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                return Message(False, message.data)
            if message.type == aiohttp.WSMsgType.TEXT:
                return Message(True, message.data.encode())
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.ERROR):
                return None

    async def send(self, message: Message) -> None:
        if message.text:
            await self.websocket.send_str(message.data.decode(errors="replace"))
        else:
            await self.websocket.send_bytes(message.data)

    async def close(self) -> None:
        await self.websocket.close()


class WebsocketsPipe:
    """A client end opened with `websockets` (to CloudStream, to the runtime's streaming server)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def receive(self) -> Message | None:
        try:
            data = await self.connection.recv()
        except ConnectionClosed:
            return None
        return Message(True, data.encode()) if isinstance(data, str) else Message(False, data)

    async def send(self, message: Message) -> None:
        await self.connection.send(message.data.decode(errors="replace") if message.text else message.data)

    async def close(self) -> None:
        await self.connection.close()


class TunnelPipe:
    """One request's end of the stream tunnel: DATA frames in from `inbox` (anything else ends it), out
    through `send_frame`. The tunnel request itself is ended by its owner (REMOVE_CONNECT/CLOSE_CONNECT)."""

    def __init__(self, connect_id: int, inbox: asyncio.Queue[Frame],
                 send_frame: Callable[[Frame], Awaitable[None]]) -> None:
        self.connect_id, self.inbox, self.send_frame = connect_id, inbox, send_frame

    async def receive(self) -> Message | None:
        frame = await self.inbox.get()
        if frame.kind != DATA:
            return None
        return Message.decode(frame.data)

    async def send(self, message: Message) -> None:
        await self.send_frame(Frame(self.connect_id, DATA, message.encode()))

    async def close(self) -> None:
        pass


class WithoutCloseSignals:
    """A v5 client's end seen as v4: its CLOSE_SIGNAL messages are dropped (v4 cannot say it; the stream
    stays open until the exec ends), everything else passes as is (the two protocols share it)."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    async def receive(self) -> Message | None:
        while (message := await self.pipe.receive()) is not None:
            if message.text or message.data[:1] != bytes([CLOSE_SIGNAL]):
                return message
        return None

    async def send(self, message: Message) -> None:
        await self.pipe.send(message)

    async def close(self) -> None:
        await self.pipe.close()


async def relay(first: Pipe, second: Pipe) -> None:
    """Pump messages both ways until either end finishes or fails; then close both."""
    async def pump(source: Pipe, sink: Pipe) -> None:
        while (message := await source.receive()) is not None:
            await sink.send(message)

    pumps = [asyncio.create_task(pump(first, second), name="ws-relay-out"),
             asyncio.create_task(pump(second, first), name="ws-relay-back")]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in pumps:
            task.cancel()
        for task in pumps:  # a failed pump (a broken end, a bad frame) ends the relay like a finished one
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, ConnectionClosed, FrameError,
                                     aiohttp.ClientError):
                await task
        for end in (first, second):
            with contextlib.suppress(ConnectionError, ConnectionClosed, aiohttp.ClientError):
                await asyncio.wait_for(end.close(), 5.0)
