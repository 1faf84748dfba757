"""Certificates from common.pki in a real mutual-TLS handshake (ssl module, asyncio streams on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.pki import KeyPair, cert_to_pem, create_ca, issue_client_cert, issue_server_cert

TIMEOUT = 5.0
NODE = "edge-tls-1"


@dataclass
class _Server:
    port: int
    peer_common_names: list[str] = field(default_factory=list)


def _write(tmp_path: Path, name: str, pair: KeyPair) -> tuple[Path, Path]:
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    pair.write(cert_path, key_path)
    return cert_path, key_path


def _common_name(peercert: object) -> str:
    assert isinstance(peercert, dict)
    for rdn in peercert["subject"]:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise AssertionError(f"no commonName in {peercert!r}")


@pytest.fixture
def ca() -> KeyPair:
    return create_ca()


@pytest.fixture
async def server(tmp_path: Path, ca: KeyPair) -> AsyncIterator[_Server]:
    cert_path, key_path = _write(tmp_path, "cloudcore", issue_server_cert(ca, ip_addresses=["127.0.0.1"]))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=cert_to_pem(ca.cert).decode())
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert_path, key_path)
    state = _Server(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        common_name = _common_name(writer.get_extra_info("peercert"))
        state.peer_common_names.append(common_name)
        await reader.readline()
        writer.write(f"hello {common_name}\n".encode())
        await writer.drain()
        writer.close()

    tcp_server = await asyncio.wait_for(asyncio.start_server(handle, "127.0.0.1", 0, ssl=context), TIMEOUT)
    state.port = tcp_server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        tcp_server.close()
        await asyncio.wait_for(tcp_server.wait_closed(), TIMEOUT)


def _client_context(tmp_path: Path, trusted_ca: KeyPair, identity: KeyPair) -> ssl.SSLContext:
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cadata=cert_to_pem(trusted_ca.cert).decode()
    )
    context.load_cert_chain(*_write(tmp_path, "edge", identity))
    return context


async def test_server_sees_the_node_identity(tmp_path: Path, ca: KeyPair, server: _Server) -> None:
    context = _client_context(tmp_path, ca, issue_client_cert(ca, NODE))
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", server.port, ssl=context, server_hostname="127.0.0.1"), TIMEOUT
    )
    try:
        assert _common_name(writer.get_extra_info("peercert")) == "KubeEdge"
        writer.write(b"ping\n")
        await asyncio.wait_for(writer.drain(), TIMEOUT)
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == f"hello system:node:{NODE}\n".encode()
    finally:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
    assert server.peer_common_names == [f"system:node:{NODE}"]


async def test_client_cert_from_another_ca_is_refused(tmp_path: Path, ca: KeyPair, server: _Server) -> None:
    stranger = issue_client_cert(create_ca(), NODE)
    context = _client_context(tmp_path, ca, stranger)

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=context, server_hostname="127.0.0.1"
        )
        try:
            # With TLS 1.3 the client finishes its side first; the server's alert arrives on the next read.
            writer.write(b"ping\n")
            await writer.drain()
            return await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()

    try:
        reply = await asyncio.wait_for(exchange(), TIMEOUT)
    except (ssl.SSLError, ConnectionError):
        reply = b""
    assert reply == b""
    assert server.peer_common_names == []


async def test_client_refuses_a_server_from_another_ca(tmp_path: Path, server: _Server) -> None:
    other = create_ca()
    context = _client_context(tmp_path, other, issue_client_cert(other, NODE))
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", server.port, ssl=context, server_hostname="127.0.0.1"),
            TIMEOUT,
        )
    assert server.peer_common_names == []
