"""Cloud-edge connections over WebSocket, byte-compatible with upstream viaduct: thin asyncio shells.

A `Connection` sends and receives beehive messages, one JSON text frame each (common.message adds
gorilla's trailing newline); nothing else crosses it: no WebSocket compression, no subprotocol; liveness
is the application keepalive as upstream, plus WebSocket pings from the edge (see `dial`). The edge dials
`wss://<server>/<projectID>/<nodeName>/events` with headers `node_id`, `project_id` and
`ConnectionUse: msg`; the cloud takes the node's identity from its verified client certificate and
refuses a `node_id` header naming another node. Frames above `max_size` close the connection (1009).
Queueing, ACKs and retries are not here: they live in common.reliable.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography import x509
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from common.log import get_logger
from common.message import Message, decode, encode
from common.pki.certs import NODE_CN_PREFIX, NODES_ORGANIZATION, KeyPair, cert_to_pem

log = get_logger("transport")

DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
TLS_READ_BUFFER: Final = 64 * 1024  # upstream sets none; a bound keeps one node from exhausting memory
HEADER_NODE: Final = "node_id"
HEADER_PROJECT: Final = "project_id"
HEADER_USE: Final = "ConnectionUse"


def server_tls(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """Mutual TLS as CloudHub does it: client certificates required and verified against the CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_tls_for(ca: x509.Certificate, server: KeyPair, verify_mode: ssl.VerifyMode = ssl.CERT_REQUIRED
                   ) -> ssl.SSLContext:
    """`server_tls` from certificates held in memory (e.g. read from the kubeedge Secrets)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = verify_mode
    context.load_verify_locations(cadata=cert_to_pem(ca).decode("ascii"))
    # ssl loads a certificate chain from files only: a private directory that lives for this call.
    with tempfile.TemporaryDirectory(prefix="cloudhub-tls-") as directory:
        cert_file, key_file = Path(directory, "server.crt"), Path(directory, "server.key")
        server.write(cert_file, key_file)
        context.load_cert_chain(cert_file, key_file)
    return context


def client_tls(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The edge's side: verifies the cloud against the CA and its hostname, presents the node certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.load_cert_chain(cert_file, key_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def node_from_peercert(peercert: dict[str, Any] | None) -> str | None:
    """`<node>` of a verified certificate with O=system:nodes, CN=system:node:<node>."""
    if not peercert:
        return None
    names: dict[str, list[str]] = {}
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            names.setdefault(key, []).append(value)
    common_name = (names.get("commonName") or [""])[0]
    if NODES_ORGANIZATION in names.get("organizationName", []) and common_name.startswith(NODE_CN_PREFIX):
        return common_name.removeprefix(NODE_CN_PREFIX) or None
    return None


class NodeConnection(Protocol):
    """What CloudHub and EdgeHub use of a connection: `Connection` here, `common.quic.QuicConnection` over QUIC.

    recv() raises MessageDecodeError for a bad message (the connection lives on). Once the connection is closed
    or lost, send() and recv() raise websockets.ConnectionClosed (WebSocket) or a ConnectionError (QUIC).
    """

    node: str

    async def send(self, message: Message) -> None: ...

    async def recv(self) -> Message: ...

    async def close(self, reason: str = "") -> None: ...


@dataclass(slots=True)
class Connection:
    """One open cloud-edge connection, from either end."""

    node: str
    websocket: ServerConnection | ClientConnection

    async def send(self, message: Message) -> None:
        await self.websocket.send(encode(message).decode())

    async def recv(self) -> Message:
        """Next message; a frame that is not a beehive message raises MessageDecodeError (the caller
        logs it and goes on: one bad frame does not cost the node its connection)."""
        frame = await self.websocket.recv()
        return decode(frame)

    async def close(self, reason: str = "") -> None:
        await self.websocket.close(reason=reason[:120])


Handler = Callable[[Connection], Awaitable[None]]


def _refuse(connection: ServerConnection, status: HTTPStatus, text: str) -> Response:
    log.warning("connection refused", peer=str(connection.remote_address), reason=text)
    return connection.respond(status, text + "\n")


def _shrink_tls_read_buffers() -> None:
    """asyncio gives every TLS connection a 256 KiB read buffer (CPython 3.11+ `SSLProtocol.max_size`,
    not a public option): 256 MiB for 1,000 idle nodes. A TLS record holds at most 16 KiB, so 64 KiB
    costs no extra reads (bench/channel.py fan-out: 338 -> ~130 KiB per connection, same delivery
    times). Process-wide; only CloudHub, which holds thousands of connections, asks for it."""
    protocol = getattr(asyncio.sslproto, "SSLProtocol", None)
    if protocol is not None and getattr(protocol, "max_size", 0) > TLS_READ_BUFFER:
        protocol.max_size = TLS_READ_BUFFER


async def serve_nodes(handler: Handler, host: str, port: int, tls: ssl.SSLContext, *,
                      max_size: int = DEFAULT_MAX_FRAME) -> Server:
    """CloudHub's WebSocket listener: calls `handler(Connection)` for every node that passes the checks."""
    _shrink_tls_read_buffers()

    def check(connection: ServerConnection, request: Request) -> Response | None:
        node = node_from_peercert(connection.transport.get_extra_info("peercert"))
        if node is None:
            return _refuse(connection, HTTPStatus.FORBIDDEN, "client certificate is not a node certificate "
                                                             "(O=system:nodes, CN=system:node:<name>)")
        claimed = request.headers.get(HEADER_NODE)
        if claimed and claimed != node:
            return _refuse(connection, HTTPStatus.FORBIDDEN,
                           f"node_id header {claimed!r} does not match the certificate's node {node!r}")
        return None

    async def accept(websocket: ServerConnection) -> None:
        node = node_from_peercert(websocket.transport.get_extra_info("peercert"))
        assert node is not None  # check() refused anything else
        await handler(Connection(node, websocket))

    return await serve(accept, host, port, ssl=tls, process_request=check, max_size=max_size,
                       compression=None, ping_interval=None, open_timeout=30, close_timeout=5)


async def dial(server: str, node: str, project_id: str, tls: ssl.SSLContext, *, max_size: int = DEFAULT_MAX_FRAME,
               open_timeout: float = 30, ping_interval: float | None = None) -> Connection:
    """EdgeHub's WebSocket dial, with upstream's URL and headers.

    With `ping_interval`, the edge pings every that many seconds and drops the connection when no pong
    comes within two intervals: the cloud never writes on an idle connection, so without this a cut
    link would go unnoticed at the edge. Any RFC 6455 server answers pings (upstream's gorilla does).
    """
    headers = Headers({HEADER_NODE: node, HEADER_PROJECT: project_id, HEADER_USE: "msg"})
    websocket = await connect(f"wss://{server}/{project_id}/{node}/events", ssl=tls, additional_headers=headers,
                              max_size=max_size, compression=None, ping_interval=ping_interval,
                              ping_timeout=None if ping_interval is None else 2 * ping_interval,
                              open_timeout=open_timeout, close_timeout=5)
    return Connection(node, websocket)
