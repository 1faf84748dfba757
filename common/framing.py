"""Stream framing for the QUIC transport: upstream viaduct's 10-byte packet header, sans-I/O.

Header (big-endian): version 4 bytes (0x01010100), type 1 byte (0x01 message, 0x02 stream, 0x04 user),
flags 1 byte (0x80 compressed: never set), payload length 4 bytes. Upstream carries a protobuf
`message.Message` in the payload, which drops `resourceversion`, `destination` and `type`; we carry the
beehive JSON of common.message instead, so nothing is lost (and QUIC speaks RFC 9000 here, not
quic-go's gQUIC: see docs). WebSocket needs no framing of ours: one JSON text frame per message.

`PacketDecoder` takes bytes as they arrive and returns complete payloads; it refuses a bad header or
an oversize length before buffering the payload, so a peer cannot make us hold more than `max_payload`.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

HEADER: Final = struct.Struct(">IBBI")
VERSION: Final = 0x01010100
FLAG_COMPRESSED: Final = 0x80
DEFAULT_MAX_PAYLOAD: Final = 16 * 1024 * 1024


class PacketType(enum.IntEnum):
    MESSAGE = 0x01
    STREAM = 0x02
    USER = 0x04


class FramingError(ValueError):
    """The peer broke the framing; the connection must be closed (nothing after this can be trusted)."""


def encode_packet(payload: bytes, packet_type: PacketType = PacketType.MESSAGE) -> bytes:
    return HEADER.pack(VERSION, packet_type, 0, len(payload)) + payload


class PacketDecoder:
    """Incremental decoder: `feed(data)` returns the (type, payload) of every packet completed by `data`."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._header: tuple[PacketType, int] | None = None

    def feed(self, data: bytes) -> list[tuple[PacketType, bytes]]:
        self._buffer += data
        packets: list[tuple[PacketType, bytes]] = []
        while True:
            if self._header is None:
                if len(self._buffer) < HEADER.size:
                    return packets
                self._header = self._parse_header(bytes(self._buffer[:HEADER.size]))
                del self._buffer[:HEADER.size]
            packet_type, length = self._header
            if len(self._buffer) < length:
                return packets
            packets.append((packet_type, bytes(self._buffer[:length])))
            del self._buffer[:length]
            self._header = None

    def _parse_header(self, header: bytes) -> tuple[PacketType, int]:
        version, raw_type, flags, length = HEADER.unpack(header)
        if version != VERSION:
            raise FramingError(f"unsupported packet version 0x{version:08x} (expected 0x{VERSION:08x})")
        try:
            packet_type = PacketType(raw_type)
        except ValueError:
            raise FramingError(f"unknown packet type 0x{raw_type:02x}") from None
        if flags & FLAG_COMPRESSED:
            raise FramingError("compressed packets are not supported (upstream never sends them)")
        if length > self.max_payload:
            raise FramingError(f"packet of {length} bytes exceeds the limit of {self.max_payload}")
        return packet_type, length

    @property
    def buffered(self) -> int:
        return len(self._buffer)
