"""The tunnel's wire format, shared by CloudStream and EdgeStream.

The tunnel is a WebSocket at `wss://<cloud>:<tunnelPort>/v1/kubeedge/connect` (mutual TLS with the
KubeEdge CA; the node is the client certificate's). Each binary frame carries one `Frame`, laid out as
upstream's `pkg/stream` messages: uvarint connect ID, uvarint message type, then raw data.

The payloads are this project's (not upstream's): a LOGS_CONNECT carries the kubelet path with its
query (`/containerLogs/<ns>/<pod>/<container>?tailLines=1`, UTF-8); the edge answers with one DATA
frame holding a JSON `{"code": <HTTP status>, "message": <text>}`, then, when the code is 200, DATA
frames of log bytes, and ends with CLOSE_CONNECT. The cloud sends REMOVE_CONNECT when its client left.

An EXEC_CONNECT carries a JSON `{"target": "/exec/<ns>/<pod>/<container>?command=..&input=1..",
"protocols": [<WebSocket subprotocols the client offered>]}`; the edge answers with a status frame that,
on 200, adds `"protocol"`: the one the runtime picked. Then DATA frames both ways each carry one
WebSocket message (common.wsrelay.Message: a type byte, then the message) until either side ends it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

TUNNEL_PATH: Final = "/v1/kubeedge/connect"
HEADER_NODE: Final = "SessionHostNameOverride"
HEADER_IP: Final = "SessionInternalIP"
ENDPOINT_ANNOTATION: Final = "cloudstream.kubeedge.io/endpoint"
"""On an edge Node: `<host>:<port>` of the CloudStream stream server that serves its kubelet paths."""

LOGS_CONNECT: Final = 0
EXEC_CONNECT: Final = 1
METRIC_CONNECT: Final = 2
DATA: Final = 3
REMOVE_CONNECT: Final = 4
CLOSE_CONNECT: Final = 5
ATTACH_CONNECT: Final = 6
_KINDS: Final = frozenset(range(7))
_MAX_UVARINT: Final = 2**64 - 1


class FrameError(ValueError):
    """Bytes that are not a frame."""


def encode_uvarint(value: int) -> bytes:
    """Go's binary.PutUvarint."""
    if not 0 <= value <= _MAX_UVARINT:
        raise ValueError(f"uvarint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """(value, offset after it); FrameError when truncated or longer than 10 bytes."""
    value = shift = 0
    for index in range(offset, min(len(data), offset + 10)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value > _MAX_UVARINT:
                raise FrameError("uvarint overflows 64 bits")
            return value, index + 1
        shift += 7
    raise FrameError("truncated uvarint" if len(data) - offset < 10 else "uvarint longer than 10 bytes")


@dataclass(frozen=True, slots=True)
class Frame:
    connect_id: int
    kind: int
    data: bytes = b""

    def encode(self) -> bytes:
        return encode_uvarint(self.connect_id) + encode_uvarint(self.kind) + self.data

    @classmethod
    def decode(cls, raw: bytes) -> Frame:
        connect_id, offset = decode_uvarint(raw)
        kind, offset = decode_uvarint(raw, offset)
        if kind not in _KINDS:
            raise FrameError(f"unknown message type {kind}")
        return cls(connect_id, kind, bytes(raw[offset:]))


def status_frame(connect_id: int, code: int, message: str = "", protocol: str = "") -> Frame:
    """The edge's answer to a request; `protocol` is the WebSocket subprotocol an exec's runtime picked."""
    answer: dict[str, Any] = {"code": code, "message": message}
    if protocol:
        answer["protocol"] = protocol
    return Frame(connect_id, DATA, json.dumps(answer).encode())


@dataclass(frozen=True, slots=True)
class Status:
    code: int
    message: str = ""
    protocol: str = ""


def parse_status(data: bytes) -> Status:
    """The status frame's data; FrameError when it is not one."""
    try:
        parsed: Any = json.loads(data)
        code, message, protocol = parsed["code"], parsed.get("message", ""), parsed.get("protocol", "")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise FrameError(f"bad status: {exc}") from None
    if not isinstance(code, int) or not isinstance(message, str) or not isinstance(protocol, str):
        raise FrameError("bad status: code must be an int, message and protocol strings")
    return Status(code, message, protocol)
