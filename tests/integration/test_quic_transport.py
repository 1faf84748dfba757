"""QUIC cloud-edge connections over real UDP sockets and real TLS: upstream's control stream and `msg` data
stream, node identity from verified client certificates, refusals that disturb nobody else, closes seen by the
other side, and backpressure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aioquic.quic.configuration import QuicConfiguration

from common import quic
from common.constants import DEFAULT_PROJECT_ID
from common.errors import MessageDecodeError
from common.framing import PacketType, encode_packet
from common.message import Message
from common.pki import KeyPair, issue_server_cert, load_key_pair
from common.quic import (
    CloseCode,
    QuicConnection,
    QuicConnectionClosed,
    QuicConnectionRefused,
    QuicNodeServer,
    dial_quic,
    serve_nodes_quic,
)
from common.transport import NodeConnection
from tests.integration.test_transport import certs, write_pair

__all__ = ["certs"]  # the WebSocket tests' certificate fixture, reused

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 5.0
MAX_SIZE = 64 * 1024
Certs = dict[str, tuple[Path, Path]]


@dataclass
class Hub:
    server: QuicNodeServer
    port: int
    received: list[tuple[str, Message]] = field(default_factory=list)
    bad_messages: list[str] = field(default_factory=list)
    ended: list[tuple[str, BaseException]] = field(default_factory=list)
    sessions: list[QuicConnection] = field(default_factory=list)
    session_ended: asyncio.Event = field(default_factory=asyncio.Event)


Behaviour = Callable[[QuicConnection, Message], Awaitable[bool]]


async def echo(connection: QuicConnection, message: Message) -> bool:
    await connection.send(message.response("OK"))
    return True


async def start_hub(certs: Certs, ca: KeyPair, behaviour: Behaviour = echo) -> Hub:
    state: list[Hub] = []

    async def handler(connection: QuicConnection) -> None:
        hub = state[0]
        hub.sessions.append(connection)
        try:
            while True:
                try:
                    message = await connection.recv()
                except MessageDecodeError as exc:
                    hub.bad_messages.append(str(exc))
                    continue
                hub.received.append((connection.node, message))
                if not await behaviour(connection, message):
                    return
        except ConnectionError as exc:
            hub.ended.append((connection.node, exc))
        finally:
            hub.session_ended.set()

    server = await serve_nodes_quic(
        handler, "127.0.0.1", 0, ca.cert, load_key_pair(*certs["server"]), max_size=MAX_SIZE, open_timeout=TIMEOUT
    )
    state.append(Hub(server, server.address[1]))
    return state[0]


@pytest.fixture
async def hub(certs: Certs, ca: KeyPair) -> AsyncIterator[Hub]:
    hub = await start_hub(certs, ca)
    yield hub
    hub.server.close()
    await asyncio.wait_for(hub.server.wait_closed(), TIMEOUT)


async def dial(
    port: int,
    certs: Certs,
    identity: str = "edge-1",
    node: str = "edge-1",
    *,
    ca_file: Path | None = None,
    idle_timeout: float = 60.0,
) -> QuicConnection:
    return await dial_quic(
        f"127.0.0.1:{port}",
        node,
        DEFAULT_PROJECT_ID,
        ca_file or certs["ca"][0],
        *certs[identity],
        max_size=MAX_SIZE,
        open_timeout=TIMEOUT,
        idle_timeout=idle_timeout,
    )


def refusals(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    """The structured fields of common.quic's `connection refused` log lines."""
    return [
        getattr(record, "kfields", {})
        for record in caplog.records
        if record.name == "kubeedge.quic" and record.getMessage() == "connection refused"
    ]


def keepalive(content: str = "ping") -> Message:
    return Message.new(source="websocket", group="resource", operation="keepalive", resource="node", content=content)


async def test_messages_round_trip_in_order_both_ways_and_identity_comes_from_the_certificate(
    certs: Certs, ca: KeyPair
) -> None:
    count = 500

    async def burst_back(connection: QuicConnection, message: Message) -> bool:
        if message.content == "burst":  # the cloud sends `count` messages of its own, in order
            for i in range(count):
                await connection.send(keepalive(f"down-{i}"))
            return True
        await connection.send(message.response("OK"))
        return True

    hub = await start_hub(certs, ca, burst_back)
    try:
        edge: NodeConnection = await dial(hub.port, certs)
        sent = [keepalive(f"up-{i}" + "x" * 900) for i in range(count)]
        for message in sent:
            await edge.send(message)
        replies = [await asyncio.wait_for(edge.recv(), TIMEOUT) for _ in range(count)]
        assert [reply.parent_msg_id for reply in replies] == [message.msg_id for message in sent]
        assert hub.received == [("edge-1", message) for message in sent]
        assert {session.node for session in hub.sessions} == {"edge-1"}

        await edge.send(keepalive("burst"))
        downs = [await asyncio.wait_for(edge.recv(), TIMEOUT) for _ in range(count)]
        assert [message.content for message in downs] == [f"down-{i}" for i in range(count)]
        await edge.close()
    finally:
        hub.server.close()
        await asyncio.wait_for(hub.server.wait_closed(), TIMEOUT)


async def test_resourceversion_and_every_header_field_survive_unlike_upstreams_protobuf(hub: Hub, certs: Certs) -> None:
    edge = await dial(hub.port, certs)
    sent = Message.new(
        source="edged",
        group="resource",
        operation="update",
        resource="default/pod/p",
        content={"kind": "Pod", "metadata": {"resourceVersion": "42"}},
        resource_version="42",
    )
    await edge.send(sent)
    await asyncio.wait_for(edge.recv(), TIMEOUT)
    await edge.close()
    assert hub.received == [("edge-1", sent)]


async def test_a_node_id_header_naming_another_node_gets_a_nack_and_the_connection_is_closed(
    hub: Hub, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(QuicConnectionRefused) as refused:
        await dial(hub.port, certs, node="edge-2")
    assert "'nack'" in str(refused.value)
    assert "node_id header 'edge-2' does not match the certificate's node 'edge-1'" in str(refused.value)
    [logged] = refusals(caplog)
    assert logged["node"] == "edge-1" and "'edge-2'" in logged["reason"]
    assert hub.sessions == []


@pytest.mark.parametrize(
    ("identity", "why"),
    [
        ("admin", "not a node certificate"),
        ("stranger", "was not issued by CA"),
    ],
)
async def test_a_foreign_or_non_node_certificate_is_refused_and_logged(
    hub: Hub, certs: Certs, identity: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(QuicConnectionRefused) as refused:
        await dial(hub.port, certs, identity)
    assert refused.value.code == CloseCode.REFUSED and why in refused.value.reason
    [logged] = refusals(caplog)
    assert why in logged["reason"]
    assert hub.sessions == []
    await assert_still_serving(hub, certs)


async def test_no_client_certificate_is_refused(
    hub: Hub, certs: Certs, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(QuicConfiguration, "load_cert_chain", lambda *args, **kwargs: None)  # present nothing
        with caplog.at_level(logging.WARNING), pytest.raises(QuicConnectionRefused) as refused:
            await dial(hub.port, certs)
    assert refused.value.reason == "no client certificate"
    assert [logged["reason"] for logged in refusals(caplog)] == ["no client certificate"]
    await assert_still_serving(hub, certs)


async def test_the_edge_refuses_a_cloud_certificate_of_another_ca_or_address(
    hub: Hub, certs: Certs, other_ca: KeyPair, ca: KeyPair, tmp_path: Path
) -> None:
    other_ca_file = tmp_path / "other-ca.crt"
    other_ca.write(other_ca_file, tmp_path / "other-ca.key")
    with pytest.raises(QuicConnectionClosed, match=r"(?i)certificate"):
        await dial(hub.port, certs, ca_file=other_ca_file)

    # Right CA, wrong address: the server certificate names 10.0.0.1 only.
    certs = dict(certs, server=write_pair(issue_server_cert(ca, ip_addresses=["10.0.0.1"]), tmp_path, "elsewhere"))
    elsewhere = await start_hub(certs, ca)
    try:
        with pytest.raises(QuicConnectionClosed, match=r"127\.0\.0\.1"):
            await dial(elsewhere.port, certs)
    finally:
        elsewhere.server.close()
        await asyncio.wait_for(elsewhere.server.wait_closed(), TIMEOUT)


async def test_a_malformed_payload_raises_message_decode_error_and_the_connection_lives_on(
    hub: Hub, certs: Certs
) -> None:
    edge = await dial(hub.port, certs)
    edge._protocol.send_packet(encode_packet(b'{"header":{"timestamp":"soon"}}'))
    edge._protocol.send_packet(encode_packet(b"not json"))
    edge._protocol.send_packet(encode_packet(b"{}", PacketType.USER))
    await edge.send(keepalive())
    assert (await asyncio.wait_for(edge.recv(), TIMEOUT)).content == "OK"
    assert len(hub.bad_messages) == 3 and "header.msg_id" in hub.bad_messages[0]

    # The edge's side too: a bad payload from the cloud.
    hub.sessions[0]._protocol.send_packet(encode_packet(b"[1, 2]"))
    with pytest.raises(MessageDecodeError):
        await asyncio.wait_for(edge.recv(), TIMEOUT)
    await edge.send(keepalive())
    assert (await asyncio.wait_for(edge.recv(), TIMEOUT)).content == "OK"
    await edge.close()


async def test_an_oversize_packet_closes_only_that_connection(hub: Hub, certs: Certs) -> None:
    other = await dial(hub.port, certs)
    big = await dial(hub.port, certs)
    big._protocol.send_packet(encode_packet(b"x" * (MAX_SIZE + 1)))
    with pytest.raises(QuicConnectionClosed) as closed:
        await asyncio.wait_for(big.recv(), TIMEOUT)
    assert closed.value.code == CloseCode.PROTOCOL_ERROR and "exceeds the limit" in closed.value.reason
    with pytest.raises(ConnectionError):
        await big.send(keepalive())
    await other.send(keepalive())
    assert (await asyncio.wait_for(other.recv(), TIMEOUT)).content == "OK"
    await other.close()
    await big.close()


async def test_a_close_by_the_edge_ends_the_clouds_recv(hub: Hub, certs: Certs) -> None:
    edge = await dial(hub.port, certs)
    await edge.send(keepalive())
    await asyncio.wait_for(edge.recv(), TIMEOUT)
    await asyncio.wait_for(edge.close("edgecore stopping"), TIMEOUT)
    await asyncio.wait_for(hub.session_ended.wait(), 2.0)
    [(node, error)] = hub.ended
    assert node == "edge-1" and isinstance(error, ConnectionError) and "edgecore stopping" in str(error)
    with pytest.raises(ConnectionError):
        await edge.recv()
    with pytest.raises(ConnectionError):
        await edge.send(keepalive())


async def test_a_close_by_the_cloud_ends_the_edges_recv(certs: Certs, ca: KeyPair) -> None:
    async def hang_up(connection: QuicConnection, message: Message) -> bool:
        await connection.close("node deleted")
        return False

    hub = await start_hub(certs, ca, hang_up)
    try:
        edge = await dial(hub.port, certs)
        await edge.send(keepalive())
        with pytest.raises(ConnectionError, match="node deleted"):
            await asyncio.wait_for(edge.recv(), 2.0)
        await edge.close()
    finally:
        hub.server.close()
        await asyncio.wait_for(hub.server.wait_closed(), TIMEOUT)


async def test_a_cut_link_ends_both_sides_within_the_idle_timeout(
    hub: Hub, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No close ever arrives: QUIC's idle timeout (the smaller of both sides') is what notices, as the edge's
    WebSocket pings do. The edge's keepalive keeps a healthy connection from idling out."""
    edge = await dial(hub.port, certs, idle_timeout=1.0)
    for _ in range(3):  # 1.5 s of traffic: longer than the idle timeout
        await edge.send(keepalive())
        assert (await asyncio.wait_for(edge.recv(), TIMEOUT)).content == "OK"
        await asyncio.sleep(0.5)
    monkeypatch.setattr(hub.sessions[0]._protocol, "datagram_received", lambda data, addr: None)  # blackhole
    await edge.send(keepalive())
    with pytest.raises(QuicConnectionClosed, match="Idle timeout"):
        await asyncio.wait_for(edge.recv(), TIMEOUT)
    await asyncio.wait_for(hub.session_ended.wait(), TIMEOUT)
    assert [node for node, error in hub.ended] == ["edge-1"]
    await edge.close()


async def test_closing_the_server_ends_every_session_on_both_sides(hub: Hub, certs: Certs) -> None:
    edges = [await dial(hub.port, certs) for _ in range(3)]
    for edge in edges:
        await edge.send(keepalive())
        await asyncio.wait_for(edge.recv(), TIMEOUT)
    hub.server.close()
    await asyncio.wait_for(hub.server.wait_closed(), 2.0)
    assert len(hub.ended) == 3
    for edge in edges:
        with pytest.raises(QuicConnectionClosed) as closed:
            await asyncio.wait_for(edge.recv(), 2.0)
        assert closed.value.code == CloseCode.GOING_AWAY
        await edge.close()


async def test_a_reader_that_stops_reading_stops_the_sender(certs: Certs, ca: KeyPair) -> None:
    """Backpressure end to end: the cloud's session stops reading, so the edge's send() must block after
    about the receive window plus the send buffer, then resume when the cloud reads again."""
    reading = asyncio.Event()

    async def slow(connection: QuicConnection, message: Message) -> bool:
        await reading.wait()
        return True

    hub = await start_hub(certs, ca, slow)
    try:
        edge = await dial(hub.port, certs)
        payload = "x" * (16 * 1024)
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while sent < 400:  # 6.4 MiB: far more than the window plus the send buffer
                await edge.send(keepalive(payload))
                sent += 1

        flooding = asyncio.create_task(flood())
        await asyncio.sleep(1.5)
        assert not flooding.done()
        stalled_at = sent
        assert 64 <= stalled_at <= 200  # (1 MiB window + 1 MiB buffer) / 16 KiB ~ 128, give or take a packet
        reading.set()
        await asyncio.wait_for(flooding, 30)
        for _ in range(50):
            if len(hub.received) == 400:
                break
            await asyncio.sleep(0.1)
        assert len(hub.received) == 400
        await edge.close()
    finally:
        hub.server.close()
        await asyncio.wait_for(hub.server.wait_closed(), TIMEOUT)


async def test_a_bad_session_header_is_a_protocol_error(
    hub: Hub, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        quic,
        "header_message",
        lambda node, project: Message.new(source="", group="", operation="noop", resource="nothing"),
    )
    with pytest.raises(QuicConnectionClosed) as closed:
        await dial(hub.port, certs)
    assert closed.value.code == CloseCode.PROTOCOL_ERROR and "resource and operation 'header'" in closed.value.reason
    assert hub.sessions == []


async def test_a_session_that_never_sends_its_header_is_closed_after_the_open_timeout(
    certs: Certs, ca: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await serve_nodes_quic(
        lambda connection: asyncio.sleep(0), "127.0.0.1", 0, ca.cert, load_key_pair(*certs["server"]), open_timeout=0.5
    )
    monkeypatch.setattr(quic._ClientProtocol, "send_control", lambda self, message: None)
    try:
        with pytest.raises(QuicConnectionClosed, match="session setup timed out"):
            await dial(server.address[1], certs)
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), TIMEOUT)


async def assert_still_serving(hub: Hub, certs: Certs) -> None:
    good = await dial(hub.port, certs)
    await good.send(keepalive())
    assert (await asyncio.wait_for(good.recv(), TIMEOUT)).content == "OK"
    await good.close()
