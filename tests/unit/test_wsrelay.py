"""common.wsrelay without sockets: messages through the tunnel encoding, the v5-as-v4 filter, and the relay's
ending; plus the API server's reading of a pods/exec request (cloudcore.controlplane.api.kubelet.ExecOptions)."""

from __future__ import annotations

import asyncio

import pytest
from multidict import MultiDict

from cloudcore.controlplane.api.errors import APIError
from cloudcore.controlplane.api.kubelet import ExecOptions
from common.streamframes import CLOSE_CONNECT, DATA, Frame, FrameError
from common.wsrelay import CLOSE_SIGNAL, Message, TunnelPipe, WithoutCloseSignals, relay


class ListPipe:
    """An end that gives its `incoming` messages, then ends (or, with `hold`, waits until cancelled)."""

    def __init__(self, incoming: list[Message], hold: bool = False) -> None:
        self.incoming, self.hold = list(incoming), hold
        self.sent: list[Message] = []
        self.closed = False

    async def receive(self) -> Message | None:
        if self.incoming:
            return self.incoming.pop(0)
        if self.hold:
            await asyncio.Event().wait()
        return None

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def close(self) -> None:
        self.closed = True


def test_message_round_trips_through_a_tunnel_payload() -> None:
    for message in (Message(False, b"\x01out"), Message(True, b"AQ=="), Message(False, b"")):
        assert Message.decode(message.encode()) == message
    with pytest.raises(FrameError):
        Message.decode(b"")
    with pytest.raises(FrameError):
        Message.decode(b"\x07junk")


async def test_tunnel_pipe_reads_data_frames_until_the_request_ends() -> None:
    inbox: asyncio.Queue[Frame] = asyncio.Queue()
    sent: list[Frame] = []

    async def send_frame(frame: Frame) -> None:
        sent.append(frame)

    pipe = TunnelPipe(7, inbox, send_frame)
    inbox.put_nowait(Frame(7, DATA, Message(False, b"\x00in").encode()))
    inbox.put_nowait(Frame(7, CLOSE_CONNECT))
    assert await pipe.receive() == Message(False, b"\x00in")
    assert await pipe.receive() is None
    await pipe.send(Message(True, b"hi"))
    assert sent == [Frame(7, DATA, b"\x01hi")]


async def test_v5_close_signals_are_dropped_for_a_v4_runtime() -> None:
    close_stdin = Message(False, bytes([CLOSE_SIGNAL, 0]))
    client = WithoutCloseSignals(ListPipe([Message(False, b"\x00abc"), close_stdin, Message(False, b"\x04{}")]))
    assert [await client.receive() for _ in range(3)] == [Message(False, b"\x00abc"), Message(False, b"\x04{}"), None]


async def test_relay_ends_when_one_side_finishes_and_closes_both() -> None:
    client = ListPipe([Message(False, b"\x00stdin")], hold=True)
    runtime = ListPipe([Message(False, b"\x01out"), Message(False, b'\x03{"status":"Success"}')])
    await asyncio.wait_for(relay(client, runtime), 5)
    assert client.sent == [Message(False, b"\x01out"), Message(False, b'\x03{"status":"Success"}')]
    assert client.closed and runtime.closed


def test_exec_options_read_as_the_api_server_does() -> None:
    query = MultiDict([("command", "sh"), ("command", "-c"), ("command", "echo ok"), ("container", "c"),
                       ("stdout", "true"), ("stderr", "1"), ("tty", "false")])
    options = ExecOptions.parse(query)
    assert options == ExecOptions(("sh", "-c", "echo ok"), "c", stdin=False, stdout=True, stderr=True, tty=False)
    assert options.kubelet_query() == "command=sh&command=-c&command=echo+ok&error=1&output=1"
    with pytest.raises(APIError, match="at least one command"):
        ExecOptions.parse(MultiDict([("stdout", "true")]))
    with pytest.raises(APIError, match="at least 1 of stdin, stdout, stderr"):
        ExecOptions.parse(MultiDict([("command", "ls")]))
