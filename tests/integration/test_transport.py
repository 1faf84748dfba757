"""WebSocket cloud-edge connections over real TLS sockets: upstream's URL, headers and frames, node identity
from certificates, and refusals that disturb nobody else."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.server import Server

from common.constants import DEFAULT_PROJECT_ID
from common.errors import MessageDecodeError
from common.message import Message
from common.pki import KeyPair, issue_client_cert, issue_server_cert, issue_user_cert
from common.transport import Connection, client_tls, dial, serve_nodes, server_tls


@dataclass
class Hub:
    server: Server
    port: int
    received: list[tuple[str, Message]] = field(default_factory=list)
    bad_frames: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


def write_pair(pair: KeyPair, directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    pair.write(cert, key)
    return cert, key


@pytest.fixture
def certs(tmp_path: Path, ca: KeyPair, other_ca: KeyPair) -> dict[str, tuple[Path, Path]]:
    ca_file = tmp_path / "ca.crt"
    ca.write(ca_file, tmp_path / "ca.key")
    return {
        "ca": (ca_file, tmp_path / "ca.key"),
        "server": write_pair(issue_server_cert(ca, ip_addresses=["127.0.0.1"]), tmp_path, "server"),
        "edge-1": write_pair(issue_client_cert(ca, "edge-1"), tmp_path, "edge-1"),
        "admin": write_pair(issue_user_cert(ca, "admin", ("system:masters",)), tmp_path, "admin"),
        "stranger": write_pair(issue_client_cert(other_ca, "edge-1"), tmp_path, "stranger"),
    }


@pytest.fixture
async def hub(certs: dict[str, tuple[Path, Path]]) -> AsyncIterator[Hub]:
    state: list[Hub] = []

    async def handler(connection: Connection) -> None:
        state[0].paths.append(connection.websocket.request.path if connection.websocket.request else "")
        while True:
            try:
                message = await connection.recv()
            except MessageDecodeError as exc:
                state[0].bad_frames.append(str(exc))
                continue
            except websockets.ConnectionClosed:
                return
            state[0].received.append((connection.node, message))
            await connection.send(message.response("OK"))

    tls = server_tls(certs["ca"][0], *certs["server"])
    server = await serve_nodes(handler, "127.0.0.1", 0, tls, max_size=64 * 1024)
    port = server.sockets[0].getsockname()[1]
    state.append(Hub(server, port))
    yield state[0]
    server.close()
    await server.wait_closed()


def edge_tls(certs: dict[str, tuple[Path, Path]], name: str) -> ssl.SSLContext:
    return client_tls(certs["ca"][0], *certs[name])


def keepalive() -> Message:
    return Message.new(source="websocket", group="resource", operation="keepalive", resource="node", content="ping")


async def test_edge_dials_upstream_url_and_identity_comes_from_its_certificate(
        hub: Hub, certs: dict[str, tuple[Path, Path]]) -> None:
    connection = await dial(f"127.0.0.1:{hub.port}", "edge-1", DEFAULT_PROJECT_ID, edge_tls(certs, "edge-1"))
    sent = keepalive()
    await connection.send(sent)
    reply = await asyncio.wait_for(connection.recv(), 5)
    await connection.close()
    assert reply.parent_msg_id == sent.msg_id and reply.content == "OK"
    assert hub.received == [("edge-1", sent)]
    assert hub.paths == [f"/{DEFAULT_PROJECT_ID}/edge-1/events"]


async def test_a_node_id_header_naming_another_node_is_refused(hub: Hub, certs: dict[str, tuple[Path, Path]]) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await dial(f"127.0.0.1:{hub.port}", "edge-2", DEFAULT_PROJECT_ID, edge_tls(certs, "edge-1"))
    assert refused.value.response.status_code == 403
    assert b"does not match the certificate's node 'edge-1'" in refused.value.response.body


async def test_a_certificate_that_is_not_a_node_certificate_is_refused(
        hub: Hub, certs: dict[str, tuple[Path, Path]]) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await dial(f"127.0.0.1:{hub.port}", "admin", DEFAULT_PROJECT_ID, edge_tls(certs, "admin"))
    assert refused.value.response.status_code == 403


async def test_no_certificate_or_another_cas_certificate_fails_the_tls_handshake(
        hub: Hub, certs: dict[str, tuple[Path, Path]]) -> None:
    no_cert = ssl.create_default_context(cafile=str(certs["ca"][0]))
    for context in (no_cert, edge_tls(certs, "stranger")):
        with pytest.raises((ssl.SSLError, ConnectionError, websockets.InvalidMessage, EOFError)):
            connection = await dial(f"127.0.0.1:{hub.port}", "edge-1", DEFAULT_PROJECT_ID, context, open_timeout=5)
            await connection.send(keepalive())
            await asyncio.wait_for(connection.recv(), 5)
    good = await dial(f"127.0.0.1:{hub.port}", "edge-1", DEFAULT_PROJECT_ID, edge_tls(certs, "edge-1"))
    await good.send(keepalive())
    assert (await asyncio.wait_for(good.recv(), 5)).content == "OK"  # the server kept serving
    await good.close()


async def test_a_malformed_frame_is_reported_and_the_connection_lives_on(
        hub: Hub, certs: dict[str, tuple[Path, Path]]) -> None:
    connection = await dial(f"127.0.0.1:{hub.port}", "edge-1", DEFAULT_PROJECT_ID, edge_tls(certs, "edge-1"))
    await connection.websocket.send('{"header":{"timestamp":"soon"}}')
    await connection.send(keepalive())
    assert (await asyncio.wait_for(connection.recv(), 5)).content == "OK"
    await connection.close()
    assert hub.bad_frames and "header.msg_id" in hub.bad_frames[0]


async def test_an_oversize_frame_closes_only_that_connection(hub: Hub, certs: dict[str, tuple[Path, Path]]) -> None:
    big = await dial(f"127.0.0.1:{hub.port}", "edge-1", DEFAULT_PROJECT_ID, edge_tls(certs, "edge-1"))
    await big.websocket.send("x" * (128 * 1024))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(big.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    other = await dial(f"127.0.0.1:{hub.port}", "edge-1", DEFAULT_PROJECT_ID, edge_tls(certs, "edge-1"))
    await other.send(keepalive())
    assert (await asyncio.wait_for(other.recv(), 5)).content == "OK"
    await other.close()


async def test_frames_are_upstreams_json_text_with_trailing_newline(
        hub: Hub, certs: dict[str, tuple[Path, Path]]) -> None:
    connection = await dial(f"127.0.0.1:{hub.port}", "edge-1", DEFAULT_PROJECT_ID, edge_tls(certs, "edge-1"))
    await connection.send(keepalive())
    frame = await asyncio.wait_for(connection.websocket.recv(), 5)
    await connection.close()
    assert isinstance(frame, str) and frame.endswith("}\n")
    assert '"route":{' in frame and '"operation":"response"' in frame
