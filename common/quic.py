"""Cloud-edge connections over QUIC, RFC 9000 via aioquic: thin asyncio shells with transport.Connection's surface.

Session layout as upstream viaduct's QUIC (ref/protocol.md 3.5), on standard QUIC with ALPN `kubeedge`:

- the edge opens the first bidirectional stream as the control stream and sends a `header` message
  (resource and operation `header`, content the header map `{"Node_id": [...], "Project_id": [...]}`);
  the cloud answers op `response` content `ack`, or `nack` and closes when `Node_id` names another node
  than the verified client certificate;
- the edge then opens one data stream that starts with the 3-byte use type `msg`; messages flow both ways
  on it (one stream keeps per-key order);
- every message on either stream is one common.framing packet (upstream's 10-byte header) whose payload is
  the beehive JSON of common.message instead of upstream's protobuf, so `resourceversion` survives.

Not interoperable with upstream edgecore: its quic-go v0.10 speaks only pre-standard gQUIC (an upstream edge
uses WebSocket). Keepalive is the hubs' application message, as on WebSocket; a dead peer or a cut link is
noticed by QUIC's idle timeout (the smaller of both sides' `idle_timeout`: the edge's keepalive and the
cloud's ACKs of it keep a healthy connection alive), as the edge's WebSocket pings do.

Client certificates: aioquic's server neither asks for nor verifies them. We set the TLS context's
CertificateRequest flag (aioquic keeps it for its own tests; aioquic still checks the CertificateVerify
signature, i.e. that the client holds the key) and check the certificate ourselves when the handshake
completes, before any stream data is read: issued directly by the CA, within its dates, ClientAuth
(common.pki.verify_chain), subject `O=system:nodes, CN=system:node:<node>`. Anything else is closed with
CloseCode.REFUSED and the reason, and logged.

Flow control: aioquic buffers whatever it is given and grants receive credit as data arrives, whether or
not the application read it. Here send() waits while more than SEND_BUFFER bytes of the data stream are
unacknowledged, and the data stream's receive credit covers only what recv() took plus RECEIVE_WINDOW, so a
slow reader slows the sender down end to end, as TCP does for WebSocket. UDP socket buffers are raised to
UDP_BUFFER so that bursts are not dropped (each drop halves the congestion window).

aioquic internals are touched only by `_Quic` (TLS flag, peer certificate, stream credit and send buffer,
close event) and QuicNodeServer (its socket); aioquic is pinned <2 and tests/unit/test_quic_session.py
checks that they still exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import orjson
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, NetworkAddress
from aioquic.quic.connection import QuicConnection as AioQuicConnection
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream
from cryptography import x509

from common.constants import Op
from common.errors import MessageDecodeError
from common.framing import HEADER, FramingError, PacketDecoder, PacketType, encode_packet
from common.log import get_logger
from common.message import Message, decode, encode
from common.pki import CertificateError, KeyPair, node_name_from_cert, verify_chain
from common.transport import DEFAULT_MAX_FRAME

log = get_logger("quic")

ALPN: Final = "kubeedge"
USE_MESSAGES: Final = b"msg"  # upstream's use types: msg, str (raw stream), shr (unused); we speak msg only
USE_TYPE_SIZE: Final = 3
HEADER_RESOURCE: Final = "header"
HEADER_NODE: Final = "Node_id"  # Go's canonical form of the WebSocket dial's `node_id` header
HEADER_PROJECT: Final = "Project_id"
ACK: Final = "ack"
NACK: Final = "nack"
CONTROL_STREAM: Final = 0  # the client's first bidirectional stream (RFC 9000 2.1)
DEFAULT_IDLE_TIMEOUT: Final = 60.0  # > 2 keepalive intervals: the hubs' keepalive detects dead peers first
DEFAULT_OPEN_TIMEOUT: Final = 30.0
SEND_BUFFER: Final = 1024 * 1024  # unacknowledged data-stream bytes before send() waits
RECEIVE_WINDOW: Final = 1024 * 1024  # received but unread data-stream bytes a peer may send ahead
CONTROL_MAX_PAYLOAD: Final = 64 * 1024  # control messages are a few hundred bytes
CLOSE_TIMEOUT: Final = 5.0
UDP_BUFFER: Final = 4 * 1024 * 1024  # socket buffer asked for, as quic-go does (it wants >= 2.5 MiB)
_MAX_REASON_BYTES: Final = 400  # a CONNECTION_CLOSE must fit in one datagram


class CloseCode(enum.IntEnum):
    """Application error codes of our CONNECTION_CLOSE frames."""

    NO_ERROR = 0x0
    REFUSED = 0x1  # certificate or node identity refused
    PROTOCOL_ERROR = 0x2  # broken framing (an oversize packet included) or session setup
    GOING_AWAY = 0x3  # the server shuts down


class QuicConnectionClosed(ConnectionError):
    """The connection is closed or lost; `code` and `reason` are those of the QUIC close."""

    def __init__(self, reason: str, code: int = CloseCode.NO_ERROR) -> None:
        super().__init__(f"QUIC connection closed: {reason or 'no reason given'} (code {code:#x})")
        self.reason = reason
        self.code = code


class QuicConnectionRefused(QuicConnectionClosed, ConnectionRefusedError):
    """The cloud refused the node: certificate, node identity or a `nack` to the session header."""


def _closed_error(code: int, reason: str) -> QuicConnectionClosed:
    return (QuicConnectionRefused if code == CloseCode.REFUSED else QuicConnectionClosed)(reason, code)


# --- session protocol, sans-I/O ----------------------------------------------------------------------


def header_message(node: str, project_id: str) -> Message:
    """The edge's first control-stream message: upstream's `header` message carrying the dial headers."""
    return Message.new(
        source="",
        group="",
        operation=Op.HEADER,
        resource=HEADER_RESOURCE,
        content={HEADER_NODE: [node], HEADER_PROJECT: [project_id]},
    )


def header_map(message: Message) -> dict[str, list[str]]:
    """The header map of a `header` message, keys lower-cased (HTTP header names are case-insensitive).

    Content may be the map itself or its JSON in a string (upstream's protobuf carries JSON bytes)."""
    if message.resource != HEADER_RESOURCE or message.operation != Op.HEADER:
        raise MessageDecodeError(
            f"first control message must be resource and operation 'header', got "
            f"resource {message.resource!r} operation {message.operation!r}"
        )
    content = message.content
    if isinstance(content, str):
        try:
            content = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise MessageDecodeError("header message content is not JSON") from None
    if not isinstance(content, dict):
        raise MessageDecodeError("header message content must be a map of header names to values")
    headers: dict[str, list[str]] = {}
    for name, value in content.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(item, str) for item in values):
            raise MessageDecodeError(f"header {name!r}: expected a string or a list of strings")
        headers.setdefault(name.lower(), []).extend(values)
    return headers


def answer_header(message: Message, node: str) -> tuple[Message, str | None]:
    """The cloud's answer to the edge's `header` message from `node` (its certificate's node), and why it is
    a `nack` (then the connection is closed), or None for an `ack`. Raises MessageDecodeError on a message
    that is not a well-formed header message."""
    claimed = (header_map(message).get(HEADER_NODE.lower()) or [""])[0]
    if claimed and claimed != node:
        return message.response(NACK), f"node_id header {claimed!r} does not match the certificate's node {node!r}"
    return message.response(ACK), None


def node_of_certificate(cert: x509.Certificate | None, ca: x509.Certificate) -> tuple[str | None, str]:
    """The node a client certificate proves (issued by `ca`, valid now, node subject), or None and why not."""
    if cert is None:
        return None, "no client certificate"
    try:
        verify_chain(cert, ca, "client")
    except CertificateError as exc:
        return None, str(exc)
    node = node_name_from_cert(cert)
    if node is None:
        return None, "client certificate is not a node certificate (O=system:nodes, CN=system:node:<name>)"
    return node, ""


class DataStreamDecoder:
    """A data stream's incoming bytes: the 3-byte use type (only `msg` is accepted: FramingError), then packets.

    The use type is written by the side that opens the stream only: the opener passes `opened_here=True`."""

    def __init__(self, max_payload: int, *, opened_here: bool = False) -> None:
        self.use_type: bytes | None = USE_MESSAGES if opened_here else None
        self._prefix = b""
        self._packets = PacketDecoder(max_payload)

    def feed(self, data: bytes) -> list[tuple[PacketType, bytes]]:
        if self.use_type is None:
            need = USE_TYPE_SIZE - len(self._prefix)
            self._prefix += data[:need]
            data = data[need:]
            if len(self._prefix) < USE_TYPE_SIZE:
                return []
            self.use_type = self._prefix
            if self.use_type != USE_MESSAGES:
                raise FramingError(f"stream use type {self.use_type!r} is not supported (only {USE_MESSAGES!r})")
        return self._packets.feed(data) if data else []


class ReceiveCredit:
    """Receive credit of one stream, granted for what the application took rather than for what arrived.

    Bytes of a packet still being assembled count as taken (the decoder bounds them by the payload limit,
    and holding them back would deadlock a packet larger than the window); completed packets count as
    unread until recv() takes them. The limit moves in steps of a quarter window, to spare a frame per read.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.received = 0
        self.unread = 0
        self.limit = window  # what the peer may send up to (the initial MAX_STREAM_DATA)

    def arrived(self, size: int) -> None:
        self.received += size

    def queued(self, size: int) -> None:
        self.unread += size

    def taken(self, size: int) -> bool:
        """Record that the application took `size` bytes; True when the limit moved (a frame is due)."""
        self.unread -= size
        wanted = self.received - self.unread + self.window
        if wanted - self.limit >= self.window // 4:
            self.limit = wanted
            return True
        return False


# --- aioquic adapter ------------------------------------------------------------------------------------


class _Quic(AioQuicConnection):
    """aioquic's connection with two changes: a server asks for the client certificate, and streams listed in
    `paced` get receive credit from their ReceiveCredit instead of aioquic's doubling window."""

    request_client_certificate = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.paced: dict[int, ReceiveCredit] = {}

    @classmethod
    def adopt(cls, quic: AioQuicConnection, max_incoming_streams: int) -> _Quic:
        """Turn the connection aioquic's server just built into ours (the server builds the class itself).
        Called before the first datagram, so the settings below reach the transport parameters."""
        quic.__class__ = cls
        assert isinstance(quic, _Quic)
        quic.paced = {}
        quic.request_client_certificate = True
        streams = quic._local_max_streams_bidi
        streams.value = streams.sent = max_incoming_streams
        return quic

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self.request_client_certificate:
            self.tls._request_client_certificate = True

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream) -> None:
        stream_id = stream.stream_id
        credit = self.paced.get(stream_id) if stream_id is not None else None
        if credit is None or stream_id is None:
            super()._write_stream_limits(builder, space, stream)
            return
        stream.max_stream_data_local = max(stream.max_stream_data_local, credit.limit)
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def peer_certificate(self) -> x509.Certificate | None:
        return self.tls._peer_certificate

    def peer_address(self) -> str:
        paths = self._network_paths
        return str(paths[0].addr) if paths else "?"

    def unacked(self, stream_id: int) -> int:
        """Bytes written to a stream and not yet acknowledged by the peer."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.sender._buffer_stop - stream.sender._buffer_start

    def close_event(self) -> events.ConnectionTerminated | None:
        """Set as soon as a close is sent or received; aioquic reports it only after the draining period."""
        return self._close_event


def _configuration(is_client: bool, idle_timeout: float) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout,
        max_stream_data=RECEIVE_WINDOW,
        max_data=4 * RECEIVE_WINDOW,
    )


def _enlarge_buffers(transport: asyncio.BaseTransport) -> None:
    """Bigger UDP socket buffers: with the default ~200 KiB a busy event loop lets a burst overflow the receive
    buffer, and every drop halves the congestion window (the kernel caps the size at net.core.[rw]mem_max)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)


def _reason_phrase(reason: str) -> str:
    return reason.encode()[:_MAX_REASON_BYTES].decode(errors="ignore")


class _Protocol(QuicConnectionProtocol):
    """One QUIC connection: the control stream's setup (in the role subclasses) and the `msg` data stream."""

    _quic: _Quic

    def __init__(self, quic: _Quic, *, max_size: int) -> None:
        super().__init__(quic)
        self.node = ""
        self.closed: tuple[int, str] | None = None  # code and reason, once closed or lost
        self.closed_event = asyncio.Event()  # set with `closed`
        self.terminated = asyncio.Event()  # aioquic is done: closing or draining period over
        self._control = PacketDecoder(CONTROL_MAX_PAYLOAD)
        self._data_stream: int | None = None
        self._data = DataStreamDecoder(max_size, opened_here=quic.configuration.is_client)
        self._credit = ReceiveCredit(RECEIVE_WINDOW)
        self._inbox: deque[tuple[PacketType, bytes]] = deque()
        self._inbox_ready = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._transmit_pending = False

    @property
    def peer(self) -> str:
        return self._quic.peer_address()

    # events

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        super().datagram_received(data, addr)
        close = self._quic.close_event()
        if close is not None and self.closed is None:
            self._mark_closed(close.error_code, close.reason_phrase)
        if (
            not self._writable.is_set()
            and self._data_stream is not None
            and self._quic.unacked(self._data_stream) <= SEND_BUFFER
        ):
            self._writable.set()

    def quic_event_received(self, event: events.QuicEvent) -> None:
        # Not aioquic's StreamReader plumbing: its readers neither bound memory nor let us pace credit.
        if isinstance(event, events.ConnectionTerminated):
            self._mark_closed(event.error_code, event.reason_phrase)
            self.terminated.set()
            self.terminated_hook()
        elif self.closed is not None:
            return
        elif isinstance(event, events.HandshakeCompleted):
            self.handshake_completed()
        elif isinstance(event, events.StreamDataReceived):
            if event.stream_id == CONTROL_STREAM:
                self._control_data(event.data)
            elif event.stream_id == self._data_stream:
                self._data_received(event.data)
            else:
                self.other_stream(event.stream_id, event.data)
            if event.end_stream and event.stream_id in (CONTROL_STREAM, self._data_stream):
                self.close_session(CloseCode.PROTOCOL_ERROR, "the peer ended a session stream")
        elif isinstance(event, events.StreamReset) and event.stream_id in (CONTROL_STREAM, self._data_stream):
            self.close_session(CloseCode.PROTOCOL_ERROR, "the peer reset a session stream")

    def handshake_completed(self) -> None:
        """TLS is done (role hook)."""

    def control_message(self, message: Message) -> None:
        """A message on the control stream (role hook)."""

    def other_stream(self, stream_id: int, data: bytes) -> None:
        """Data on a stream that is neither the control nor the data stream: refused (the server overrides)."""
        self._refuse_stream(stream_id)

    def _control_data(self, data: bytes) -> None:
        try:
            for packet_type, payload in self._control.feed(data):
                if packet_type != PacketType.MESSAGE:
                    raise MessageDecodeError(f"control packet of type {packet_type.name}, not a message")
                self.control_message(decode(payload))
                if self.closed is not None:
                    return
        except (FramingError, MessageDecodeError) as exc:
            self.close_session(CloseCode.PROTOCOL_ERROR, f"control stream: {exc}")

    def _data_received(self, data: bytes) -> None:
        self._credit.arrived(len(data))
        try:
            packets = self._data.feed(data)
        except FramingError as exc:
            self.close_session(CloseCode.PROTOCOL_ERROR, str(exc))
            return
        for packet in packets:
            self._inbox.append(packet)
            self._credit.queued(HEADER.size + len(packet[1]))
        if packets:
            self._inbox_ready.set()

    def _refuse_stream(self, stream_id: int) -> None:
        with contextlib.suppress(ValueError):  # a stream aioquic already forgot
            self._quic.stop_stream(stream_id, CloseCode.PROTOCOL_ERROR)
            if stream_id % 4 < 2:  # bidirectional: our sending half too
                self._quic.reset_stream(stream_id, CloseCode.PROTOCOL_ERROR)
        self._transmit_soon()

    def use_data_stream(self, stream_id: int) -> None:
        self._data_stream = stream_id
        self._quic.paced[stream_id] = self._credit

    # the application side (QuicConnection)

    def send_control(self, message: Message) -> None:
        self._quic.send_stream_data(CONTROL_STREAM, encode_packet(encode(message)))
        self._transmit_soon()

    def send_packet(self, packet: bytes) -> None:
        if self.closed is not None:
            raise _closed_error(*self.closed)
        assert self._data_stream is not None
        self._quic.send_stream_data(self._data_stream, packet)
        if self._quic.unacked(self._data_stream) > SEND_BUFFER:
            self._writable.clear()
        self._transmit_soon()

    async def drain(self) -> None:
        """Wait while the data stream holds more than SEND_BUFFER unacknowledged bytes."""
        while not self._writable.is_set():
            await self._writable.wait()
        if self.closed is not None:
            raise _closed_error(*self.closed)

    async def next_packet(self) -> tuple[PacketType, bytes]:
        """Next received packet; after the close, the packets that came before it, then the close's error."""
        while not self._inbox:
            if self.closed is not None:
                raise _closed_error(*self.closed)
            self._inbox_ready.clear()
            await self._inbox_ready.wait()
        packet = self._inbox.popleft()
        if self.closed is None and self._credit.taken(HEADER.size + len(packet[1])):
            self._transmit_soon()
        return packet

    def close_session(self, code: CloseCode, reason: str) -> None:
        """Close the QUIC connection now: CONNECTION_CLOSE goes out, every waiter wakes with the error."""
        if self.closed is not None:
            return
        if code == CloseCode.PROTOCOL_ERROR:  # refusals log their own line
            log.warning("closing QUIC connection", node=self.node or "?", peer=self.peer, code=code.name, reason=reason)
        self._mark_closed(code, reason)
        self.close(error_code=code, reason_phrase=_reason_phrase(reason))

    def _mark_closed(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)
        self.closed_event.set()
        self._inbox_ready.set()
        self._writable.set()
        self.closed_hook()

    def closed_hook(self) -> None:
        """The connection is closed or lost (role hook)."""

    def terminated_hook(self) -> None:
        """aioquic is done with the connection (role hook)."""

    async def wait_closing(self) -> None:
        """After close_session: release what the connection holds (the server's socket is shared: nothing)."""

    def _transmit_soon(self) -> None:
        # Coalesce the writes of one loop iteration into as few datagrams as the congestion window allows.
        if not self._transmit_pending:
            self._transmit_pending = True
            self._loop.call_soon(self._transmit_now)

    def _transmit_now(self) -> None:
        self._transmit_pending = False
        if not self.terminated.is_set():
            self.transmit()


class QuicConnection:
    """One open cloud-edge QUIC connection, from either end; the surface of transport.Connection."""

    def __init__(self, node: str, protocol: _Protocol) -> None:
        self.node = node
        self._protocol = protocol

    @property
    def remote_address(self) -> str:
        return self._protocol.peer

    async def send(self, message: Message) -> None:
        """Queue one message; waits while the data stream's send buffer is full (backpressure)."""
        self._protocol.send_packet(encode_packet(encode(message)))
        await self._protocol.drain()

    async def recv(self) -> Message:
        """Next message; a payload that is not a beehive message raises MessageDecodeError (the caller
        logs it and goes on). A broken framing or a packet over max_size closes the connection."""
        packet_type, payload = await self._protocol.next_packet()
        if packet_type != PacketType.MESSAGE:
            raise MessageDecodeError(f"packet of type {packet_type.name} on the message stream")
        return decode(payload)

    async def close(self, reason: str = "") -> None:
        self._protocol.close_session(CloseCode.NO_ERROR, reason)
        await self._protocol.wait_closing()


# --- the cloud --------------------------------------------------------------------------------------------

QuicHandler = Callable[[QuicConnection], Awaitable[None]]


class _ServerProtocol(_Protocol):
    def __init__(
        self,
        quic: _Quic,
        *,
        ca: x509.Certificate,
        max_size: int,
        open_timeout: float,
        on_session: Callable[[QuicConnection], None],
        sessions: set[_ServerProtocol],
    ) -> None:
        super().__init__(quic, max_size=max_size)
        self._ca = ca
        self._on_session = on_session
        self._sessions = sessions
        sessions.add(self)
        self._header_answered = False
        self._setup_timer = self._loop.call_later(open_timeout, self._setup_expired)

    def handshake_completed(self) -> None:
        node, why = node_of_certificate(self._quic.peer_certificate(), self._ca)
        if node is None:
            log.warning("connection refused", peer=self.peer, reason=why)
            self.close_session(CloseCode.REFUSED, why)
            return
        self.node = node

    def control_message(self, message: Message) -> None:
        if not self.node:
            raise MessageDecodeError("control message before the handshake completed")
        if self._header_answered:  # upstream acknowledges every later control message
            if self._quic.unacked(CONTROL_STREAM) <= CONTROL_MAX_PAYLOAD:
                self.send_control(message.response(ACK))
            return
        answer, refusal = answer_header(message, self.node)
        self.send_control(answer)
        if refusal is not None:
            log.warning("connection refused", peer=self.peer, node=self.node, reason=refusal)
            self.transmit()  # the nack leaves before the close
            self.close_session(CloseCode.REFUSED, refusal)
            return
        self._header_answered = True

    def other_stream(self, stream_id: int, data: bytes) -> None:
        if self._data_stream is not None or stream_id % 4 != 0:  # only one client-opened bidirectional stream
            self._refuse_stream(stream_id)
            return
        if not self._header_answered:
            self.close_session(CloseCode.PROTOCOL_ERROR, "data stream opened before the session header was acked")
            return
        self.use_data_stream(stream_id)
        self._data_received(data)

    def _data_received(self, data: bytes) -> None:
        started = self._data.use_type is not None
        super()._data_received(data)
        if not started and self._data.use_type is not None and self.closed is None:
            # The use type is in: the session starts (packets that came with it wait in the inbox).
            self._setup_timer.cancel()
            self._on_session(QuicConnection(self.node, self))

    def _setup_expired(self) -> None:
        if self._data.use_type is None:
            self.close_session(CloseCode.PROTOCOL_ERROR, "session setup timed out")

    def closed_hook(self) -> None:
        self._setup_timer.cancel()
        self._sessions.discard(self)


class QuicNodeServer:
    """CloudHub's QUIC listener: `close()` then `await wait_closed()`, as websockets' Server."""

    def __init__(
        self,
        handler: QuicHandler,
        ca: x509.Certificate,
        *,
        max_size: int,
        max_incoming_streams: int,
        open_timeout: float,
    ) -> None:
        self._handler = handler
        self._ca = ca
        self._max_size = max_size
        self._max_incoming_streams = max_incoming_streams
        self._open_timeout = open_timeout
        self._server: QuicServer | None = None
        self._sessions: set[_ServerProtocol] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound UDP address (port 0 picks a free one)."""
        assert self._server is not None and self._server._transport is not None
        host, port = self._server._transport.get_extra_info("sockname")[:2]
        return host, port

    def close(self) -> None:
        for protocol in list(self._sessions):
            protocol.close_session(CloseCode.GOING_AWAY, "cloudcore is shutting down")
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        """Wait for the handlers to return (they see ConnectionError on their next recv or send)."""
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _start(self, host: str, port: int, configuration: QuicConfiguration) -> None:
        self._server = await serve(host, port, configuration=configuration, create_protocol=self._create_protocol)
        assert self._server._transport is not None
        _enlarge_buffers(self._server._transport)

    def _create_protocol(self, quic: AioQuicConnection, stream_handler: Any = None) -> _ServerProtocol:
        return _ServerProtocol(
            _Quic.adopt(quic, self._max_incoming_streams),
            ca=self._ca,
            max_size=self._max_size,
            open_timeout=self._open_timeout,
            on_session=self._on_session,
            sessions=self._sessions,
        )

    def _on_session(self, connection: QuicConnection) -> None:
        task = asyncio.get_running_loop().create_task(self._run(connection))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _run(self, connection: QuicConnection) -> None:
        try:
            await self._handler(connection)
        except Exception as exc:
            log.error("QUIC session handler failed", node=connection.node, error=repr(exc))
        finally:
            await connection.close()


async def serve_nodes_quic(
    handler: QuicHandler,
    host: str,
    port: int,
    ca: x509.Certificate,
    server: KeyPair,
    *,
    max_size: int = DEFAULT_MAX_FRAME,
    max_incoming_streams: int = 10000,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    open_timeout: float = DEFAULT_OPEN_TIMEOUT,
) -> QuicNodeServer:
    """CloudHub's QUIC listener: calls `handler(QuicConnection)` for every node that passes the checks, and
    closes the connection when the handler returns. `open_timeout` bounds handshake plus session setup.

    `max_incoming_streams` is upstream's setting (QUIC MAX_STREAMS); a session uses two streams and any
    further stream is reset."""
    configuration = _configuration(False, idle_timeout)
    configuration.certificate = server.cert
    configuration.private_key = server.key
    listener = QuicNodeServer(
        handler, ca, max_size=max_size, max_incoming_streams=max_incoming_streams, open_timeout=open_timeout
    )
    await listener._start(host, port, configuration)
    return listener


# --- the edge ---------------------------------------------------------------------------------------------


class _ClientProtocol(_Protocol):
    def __init__(self, quic: _Quic, *, max_size: int) -> None:
        super().__init__(quic, max_size=max_size)
        self.answer: asyncio.Future[Message] = self._loop.create_future()
        self.handshake: asyncio.Future[None] = self._loop.create_future()

    def handshake_completed(self) -> None:
        if not self.handshake.done():
            self.handshake.set_result(None)

    def control_message(self, message: Message) -> None:
        if not self.answer.done():
            self.answer.set_result(message)

    def closed_hook(self) -> None:
        assert self.closed is not None
        for waiter in (self.handshake, self.answer):
            if not waiter.done():
                waiter.set_exception(_closed_error(*self.closed))
                waiter.exception()  # retrieved: nobody may be waiting any more

    async def wait_closing(self) -> None:
        """Stay for the closing period (answering late packets with the close), then release the socket."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.terminated.wait(), CLOSE_TIMEOUT)
        self.release()

    def terminated_hook(self) -> None:
        # Also when the cloud closed or the link died and nobody calls close(): the socket is ours alone.
        self._loop.call_soon(self.release)

    def release(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _split_server(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"QUIC server {server!r} is not host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


async def dial_quic(
    server: str,
    node: str,
    project_id: str,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    *,
    max_size: int = DEFAULT_MAX_FRAME,
    open_timeout: float = DEFAULT_OPEN_TIMEOUT,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
) -> QuicConnection:
    """EdgeHub's QUIC dial: verifies the cloud against the CA and the address dialled (the server certificate
    carries the IP SANs), presents the node certificate, sends the session header, opens the `msg` stream.

    Raises QuicConnectionRefused when the cloud refuses the node, QuicConnectionClosed when the handshake
    fails, TimeoutError after `open_timeout`."""
    host, port = _split_server(server)
    configuration = _configuration(True, idle_timeout)
    configuration.server_name = host
    configuration.load_verify_locations(cafile=str(ca_file))
    configuration.load_cert_chain(cert_file, key_file)
    quic = _Quic(configuration=configuration)
    loop = asyncio.get_running_loop()
    protocol: _ClientProtocol | None = None
    try:
        async with asyncio.timeout(open_timeout):
            family, _, _, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
            local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _ClientProtocol(quic, max_size=max_size), local_addr=local, family=family
            )
            _enlarge_buffers(transport)
            protocol.connect(address)
            await protocol.handshake
            protocol.send_control(header_message(node, project_id))
            answer = await protocol.answer
            if answer.operation != Op.RESPONSE or answer.content != ACK:
                # The cloud closes right after a nack: wait briefly for its reason.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(protocol.closed_event.wait(), 1.0)
                why = protocol.closed[1] if protocol.closed else ""
                raise QuicConnectionRefused(
                    f"the cloud answered the session header with {answer.content!r}: {why or 'no reason given'}",
                    CloseCode.REFUSED,
                )
            data_stream = quic.get_next_available_stream_id()
            protocol.use_data_stream(data_stream)
            quic.send_stream_data(data_stream, USE_MESSAGES)
            protocol.transmit()
            protocol.node = node
            return QuicConnection(node, protocol)
    except BaseException as exc:
        if protocol is not None:  # the close goes out now; no closing period for a failed dial (or a cancel)
            reason = "dial timed out" if isinstance(exc, TimeoutError) else f"dial failed: {exc}"
            protocol.close_session(CloseCode.NO_ERROR, reason)
            protocol.release()
        raise
