"""The QUIC session's sans-I/O pieces: the header exchange, the client certificate check, the data stream's
use type, the receive credit; and a canary for the aioquic internals common.quic relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection as AioQuicConnection
from aioquic.quic.stream import QuicStreamSender
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from hypothesis import given
from hypothesis import strategies as st

from common.constants import Op
from common.errors import MessageDecodeError
from common.framing import FramingError, PacketType, encode_packet
from common.message import Message, decode, encode
from common.pki import KeyPair, issue_client_cert, issue_server_cert, issue_user_cert
from common.quic import (
    ACK,
    NACK,
    CloseCode,
    DataStreamDecoder,
    QuicConnection,
    QuicConnectionClosed,
    QuicConnectionRefused,
    ReceiveCredit,
    _Quic,
    answer_header,
    header_map,
    header_message,
    node_of_certificate,
)
from common.transport import Connection, NodeConnection


def test_the_header_message_is_upstreams_and_survives_the_wire() -> None:
    message = decode(encode(header_message("edge-1", "proj")))
    assert (message.resource, message.operation) == ("header", Op.HEADER)
    assert message.content == {"Node_id": ["edge-1"], "Project_id": ["proj"]}
    assert header_map(message) == {"node_id": ["edge-1"], "project_id": ["proj"]}


def test_the_cloud_acks_its_own_node_or_no_claim_and_nacks_another_node() -> None:
    ok, why = answer_header(header_message("edge-1", "proj"), "edge-1")
    assert (ok.operation, ok.content, why) == (Op.RESPONSE, ACK, None)
    no_claim = Message.new(source="", group="", operation=Op.HEADER, resource="header", content={"Project_id": ["p"]})
    assert answer_header(no_claim, "edge-1")[1] is None
    request = header_message("edge-2", "proj")
    nack, why = answer_header(request, "edge-1")
    assert (nack.operation, nack.content, nack.parent_msg_id) == (Op.RESPONSE, NACK, request.msg_id)
    assert why == "node_id header 'edge-2' does not match the certificate's node 'edge-1'"


def test_header_names_are_case_insensitive_and_the_map_may_come_as_json_text() -> None:
    """Upstream's protobuf carries the map as JSON bytes, and Go may write any case."""
    message = Message.new(
        source="",
        group="",
        operation=Op.HEADER,
        resource="header",
        content='{"NODE_ID": "edge-2", "project_id": ["p"]}',
    )
    assert header_map(message) == {"node_id": ["edge-2"], "project_id": ["p"]}
    assert answer_header(message, "edge-1")[0].content == NACK


@pytest.mark.parametrize(
    ("resource", "operation", "content", "error"),
    [
        ("node", Op.HEADER, {}, "resource and operation 'header'"),
        ("header", Op.KEEPALIVE, {}, "resource and operation 'header'"),
        ("header", Op.HEADER, "{not json", "not JSON"),
        ("header", Op.HEADER, ["Node_id"], "must be a map"),
        ("header", Op.HEADER, {"Node_id": [1]}, "'Node_id': expected a string or a list of strings"),
    ],
)
def test_a_malformed_header_message_is_a_decode_error(
    resource: str, operation: str, content: object, error: str
) -> None:
    message = Message.new(source="", group="", operation=operation, resource=resource, content=content)
    with pytest.raises(MessageDecodeError, match=error):
        answer_header(message, "edge-1")


def test_a_node_certificate_of_the_ca_names_its_node(ca: KeyPair) -> None:
    assert node_of_certificate(issue_client_cert(ca, "edge-1").cert, ca.cert) == ("edge-1", "")


def test_certificates_that_prove_no_node_are_refused_with_the_reason(ca: KeyPair, other_ca: KeyPair) -> None:
    assert node_of_certificate(None, ca.cert) == (None, "no client certificate")
    node, why = node_of_certificate(issue_client_cert(other_ca, "edge-1").cert, ca.cert)
    assert node is None and "was not issued by CA" in why
    node, why = node_of_certificate(issue_user_cert(ca, "admin", ("system:masters",)).cert, ca.cert)
    assert node is None and "not a node certificate" in why
    node, why = node_of_certificate(expired_node_cert(ca), ca.cert)
    assert node is None and "expired" in why


def expired_node_cert(ca: KeyPair) -> x509.Certificate:
    fresh = issue_client_cert(ca, "edge-1")
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(fresh.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(fresh.cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=10))
        .not_valid_after(now - timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )


def test_the_data_stream_starts_with_the_use_type_split_anywhere() -> None:
    stream = b"msg" + encode_packet(b"one") + encode_packet(b"two", PacketType.USER)
    for cut in range(len(stream) + 1):
        decoder = DataStreamDecoder(1024)
        packets = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert packets == [(PacketType.MESSAGE, b"one"), (PacketType.USER, b"two")]
        assert decoder.use_type == b"msg"


def test_the_opener_reads_no_use_type_back() -> None:
    decoder = DataStreamDecoder(1024, opened_here=True)
    assert decoder.feed(encode_packet(b"reply")) == [(PacketType.MESSAGE, b"reply")]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"str" + encode_packet(b"x"), "use type b'str' is not supported"),
        (b"msg" + encode_packet(b"x" * 11), "exceeds the limit of 10"),
    ],
)
def test_a_bad_data_stream_is_a_framing_error(data: bytes, error: str) -> None:
    with pytest.raises(FramingError, match=error):
        DataStreamDecoder(10).feed(data)


def test_receive_credit_follows_what_the_application_took() -> None:
    credit = ReceiveCredit(1000)
    credit.arrived(1000)  # the whole window arrives as four completed packets; nobody reads
    for _ in range(4):
        credit.queued(250)
    assert credit.limit == 1000  # nothing freed: the peer stays blocked at the window
    assert credit.taken(100) is False  # under a quarter window freed: no frame yet
    assert credit.taken(150) is True and credit.limit == 1250
    assert [credit.taken(250) for _ in range(3)] == [True, True, True] and credit.limit == 2000


def test_receive_credit_counts_a_packet_in_assembly_as_taken() -> None:
    """A packet bigger than the window must still get through: its partial bytes free credit."""
    credit = ReceiveCredit(1000)
    credit.arrived(1000)  # part of a 5,000-byte packet: nothing completed, nothing unread
    assert credit.taken(0) is True and credit.limit == 2000


@given(st.lists(st.integers(1, 400), min_size=1, max_size=50))
def test_unread_bytes_never_exceed_the_window_plus_one_packet(sizes: list[int]) -> None:
    credit = ReceiveCredit(1000)
    for size in sizes:  # the peer sends packets as long as credit allows, nobody reads
        if credit.received + size > credit.limit:
            break
        credit.arrived(size)
        credit.queued(size)
    assert credit.unread <= credit.window
    for size in sizes[: len(sizes) // 2]:  # reading frees credit again
        if credit.unread >= size:
            credit.taken(size)
    assert credit.limit - credit.received <= credit.window


def test_closed_errors_are_connection_errors_and_refusals_connection_refused_errors() -> None:
    closed = QuicConnectionClosed("bye", CloseCode.GOING_AWAY)
    assert isinstance(closed, ConnectionError) and isinstance(closed, OSError)
    assert (closed.reason, closed.code) == ("bye", CloseCode.GOING_AWAY) and "bye" in str(closed)
    refused = QuicConnectionRefused("no client certificate", CloseCode.REFUSED)
    assert isinstance(refused, ConnectionRefusedError) and isinstance(refused, QuicConnectionClosed)


def as_node_connections(websocket: Connection, quic: QuicConnection) -> list[NodeConnection]:
    """Never called: mypy checks here that both connections satisfy transport.NodeConnection."""
    return [websocket, quic]


def test_both_connections_have_the_node_connection_surface() -> None:
    def surface(cls: type) -> set[str]:
        return {name for name in ("send", "recv", "close") if callable(getattr(cls, name, None))}

    assert surface(QuicConnection) == surface(Connection) == {"send", "recv", "close"}
    assert set(NodeConnection.__annotations__) == {"node"}


def test_the_aioquic_internals_we_rely_on_still_exist(ca: KeyPair) -> None:
    """common.quic reaches into aioquic (pinned <2) in `_Quic` and `_Protocol`: fail here, not in production."""
    server = issue_server_cert(ca, ip_addresses=["127.0.0.1"])
    configuration = QuicConfiguration(is_client=False, certificate=server.cert, private_key=server.key)
    quic = AioQuicConnection(configuration=configuration, original_destination_connection_id=b"12345678")
    assert hasattr(quic, "_initialize") and hasattr(quic, "_write_stream_limits")
    assert hasattr(quic, "_on_max_stream_data_delivery") and hasattr(quic, "_close_event")
    assert hasattr(quic, "_streams") and hasattr(quic, "_network_paths")
    assert quic._local_max_streams_bidi.value == quic._local_max_streams_bidi.sent
    context = tls.Context(is_client=False)
    assert context._request_client_certificate is False and context._peer_certificate is None
    sender = QuicStreamSender(stream_id=0, writable=True)
    sender.write(b"abc")
    assert sender._buffer_stop - sender._buffer_start == 3
    adopted = _Quic.adopt(quic, 7)
    assert adopted is quic and adopted.paced == {} and adopted._local_max_streams_bidi.value == 7
