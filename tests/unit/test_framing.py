"""QUIC stream framing: upstream's 10-byte header, incremental decoding, refusals before buffering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.framing import HEADER, VERSION, FramingError, PacketDecoder, PacketType, encode_packet


def test_header_layout_is_upstreams() -> None:
    packet = encode_packet(b"abc")
    assert packet[:4] == bytes.fromhex("01010100") and packet[4] == 0x01 and packet[5] == 0
    assert packet[6:10] == (3).to_bytes(4, "big") and packet[10:] == b"abc"
    assert HEADER.size == 10


def test_decoder_handles_split_and_joined_packets() -> None:
    stream = encode_packet(b"one") + encode_packet(b"", PacketType.STREAM) + encode_packet(b"three" * 100)
    decoder = PacketDecoder()
    out = []
    for i in range(0, len(stream), 7):
        out += decoder.feed(stream[i:i + 7])
    assert out == [(PacketType.MESSAGE, b"one"), (PacketType.STREAM, b""), (PacketType.MESSAGE, b"three" * 100)]
    assert decoder.buffered == 0


@pytest.mark.parametrize(("header", "error"), [
    (HEADER.pack(0x02000000, 1, 0, 1), "unsupported packet version"),
    (HEADER.pack(VERSION, 0x09, 0, 1), "unknown packet type"),
    (HEADER.pack(VERSION, 1, 0x80, 1), "compressed packets are not supported"),
    (HEADER.pack(VERSION, 1, 0, 2048), "exceeds the limit of 1024"),
])
def test_bad_headers_are_refused_before_the_payload_is_buffered(header: bytes, error: str) -> None:
    with pytest.raises(FramingError, match=error):
        PacketDecoder(max_payload=1024).feed(header)


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(1, 50))
def test_any_chunking_gives_back_the_payloads(payloads: list[bytes], chunk: int) -> None:
    stream = b"".join(encode_packet(p) for p in payloads)
    decoder = PacketDecoder()
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        got += [payload for _, payload in decoder.feed(stream[i:i + chunk])]
    assert got == payloads
