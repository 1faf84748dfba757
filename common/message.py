"""The beehive message: one typed value, and its JSON exactly as upstream KubeEdge writes it.

Owns the in-memory shape (`Message`, `MessageHeader`, `MessageRoute`), construction of requests,
responses and errors, and the wire encoding. It does no I/O. Wire rules (ref/protocol.md section 1):

- keys `header{msg_id, parent_msg_id, timestamp, resourceversion, sync, type}`, `route{source,
  destination, group, operation, resource}`, `content`, in Go's struct order;
- `header.msg_id` and `header.timestamp` are always written; the other header fields, and every
  route field, are left out when empty; `route` itself and `content` (maybe `null`) are always there;
- compact JSON, UTF-8, `<` `>` `&` U+2028 U+2029 escaped as Go's encoder does, one trailing newline
  (gorilla's WriteJSON).

Known gap: a float outside [1e-6, 1e16) is formatted as Python does (`1e-05`) where Go writes
`0.00001`; both parse to the same number. Kubernetes objects carry quantities as strings.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final, NamedTuple

import orjson

from common.constants import Op
from common.errors import MessageDecodeError

# Characters Go's encoding/json escapes inside strings that orjson writes raw. None of them can
# appear outside a string in compact JSON, so replacing them in the whole text is safe. U+2028/9
# are only looked for when their lead byte 0xE2 is present: a multi-byte search costs 1 us a
# message, a single-byte one a tenth of that (profiled on 1 KiB messages).
_GO_ESCAPES_ASCII: Final = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"))
_GO_ESCAPES_LINESEP: Final = (("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))
_LINESEP_LEAD: Final = b"\xe2"


def now_ms() -> int:
    """Milliseconds since the Unix epoch, upstream's header timestamp."""
    return time.time_ns() // 1_000_000


_VARIANT: Final = "89ab"


def new_msg_id() -> str:
    """A random (version 4) UUID string, as upstream's msg ids; 3x faster than str(uuid.uuid4()), which
    was the cloud's largest single cost per message (profiled)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


# NamedTuples, not dataclasses: decode builds three per message, and a tuple is built 3x faster
# than a frozen dataclass (profiled); immutability matters because the bus may hand one message to
# several modules.
class MessageHeader(NamedTuple):
    msg_id: str
    timestamp: int
    parent_msg_id: str = ""
    resource_version: str = ""
    sync: bool = False
    type: str = ""


class MessageRoute(NamedTuple):
    source: str = ""
    destination: str = ""
    group: str = ""
    operation: str = ""
    resource: str = ""


class Message(NamedTuple):
    """One beehive message."""

    header: MessageHeader
    route: MessageRoute = MessageRoute()
    content: Any = None

    @classmethod
    def new(
        cls,
        *,
        source: str,
        group: str,
        operation: str,
        resource: str,
        content: Any = None,
        resource_version: str = "",
        parent_msg_id: str = "",
        sync: bool = False,
    ) -> Message:
        header = MessageHeader(new_msg_id(), now_ms(), parent_msg_id, resource_version, sync)
        return cls(header, MessageRoute(source, "", group, operation, resource), content)

    # Convenience views; the fields stay the single source of truth.
    @property
    def msg_id(self) -> str:
        return self.header.msg_id

    @property
    def parent_msg_id(self) -> str:
        return self.header.parent_msg_id

    @property
    def resource(self) -> str:
        return self.route.resource

    @property
    def operation(self) -> str:
        return self.route.operation

    @property
    def group(self) -> str:
        return self.route.group

    @property
    def source(self) -> str:
        return self.route.source

    def with_resource(self, resource: str) -> Message:
        """Same message (same msg_id) under another resource string, as CloudHub's trim does."""
        r = self.route
        return Message(self.header, MessageRoute(r.source, r.destination, r.group, r.operation, resource),
                       self.content)

    def response(self, content: Any) -> Message:
        """Reply to this message: new id, parent = this id, same source/group/resource, op response.

        The header type is copied and the resourceversion is not (upstream NewRespByMessage).
        """
        return self._reply(Op.RESPONSE, content)

    def error_response(self, error: str) -> Message:
        """Error reply (op `error`) carrying the error text as content."""
        return self._reply(Op.ERROR, error)

    def _reply(self, operation: str, content: Any) -> Message:
        r = self.route
        header = MessageHeader(new_msg_id(), now_ms(), self.header.msg_id, "", False, self.header.type)
        return Message(header, MessageRoute(r.source, "", r.group, operation, r.resource), content)

    def content_bytes(self) -> bytes:
        """Content as raw bytes: a string as-is, anything else re-encoded (upstream GetContentData)."""
        if isinstance(self.content, str):
            return self.content.encode()
        return _go_json(self.content)


def _go_json(value: Any) -> bytes:
    data = orjson.dumps(value)
    for raw, escaped in _GO_ESCAPES_ASCII:
        if raw in data:
            data = data.replace(raw, escaped)
    if _LINESEP_LEAD in data:
        for raw, escaped in _GO_ESCAPES_LINESEP:
            data = data.replace(raw, escaped)
    return data


def to_wire_dict(message: Message) -> dict[str, Any]:
    """The JSON object of a message, keys in upstream's order, empty optional fields left out."""
    h = message.header
    header: dict[str, Any] = {"msg_id": h.msg_id}
    if h.parent_msg_id:
        header["parent_msg_id"] = h.parent_msg_id
    header["timestamp"] = h.timestamp
    if h.resource_version:
        header["resourceversion"] = h.resource_version
    if h.sync:
        header["sync"] = True
    if h.type:
        header["type"] = h.type
    r = message.route
    route: dict[str, str] = {}
    if r.source:
        route["source"] = r.source
    if r.destination:
        route["destination"] = r.destination
    if r.group:
        route["group"] = r.group
    if r.operation:
        route["operation"] = r.operation
    if r.resource:
        route["resource"] = r.resource
    return {"header": header, "route": route, "content": message.content}


def encode(message: Message) -> bytes:
    """Wire bytes of one message: Go-compatible compact JSON plus gorilla's trailing newline."""
    try:
        return _go_json(to_wire_dict(message)) + b"\n"
    except TypeError as exc:
        raise MessageDecodeError(f"message {message.msg_id}: content is not JSON-encodable: {exc}") from exc


def decode(data: bytes | str) -> Message:
    """Parse one wire message; raise MessageDecodeError naming the bad field.

    Unknown keys are ignored (as Go's decoder does). `header.msg_id` must be a non-empty string:
    a message nobody can acknowledge or answer is refused here rather than deep inside a module.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MessageDecodeError(f"message is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") \
            from None
    if not isinstance(obj, dict):
        raise MessageDecodeError(f"message must be a JSON object, got {_json_kind(obj)}")
    return from_wire_dict(obj)


def from_wire_dict(obj: dict[str, Any]) -> Message:
    header = obj.get("header")
    if not isinstance(header, dict):
        raise MessageDecodeError(f"header: expected an object, got {_json_kind(header)}")
    msg_id = header.get("msg_id")
    if not isinstance(msg_id, str) or not msg_id:
        raise MessageDecodeError(f"header.msg_id: expected a non-empty string, got {_json_kind(msg_id)}")
    timestamp = header.get("timestamp", 0)
    if type(timestamp) is not int:
        raise MessageDecodeError(
            f"header.timestamp: expected integer milliseconds, got {_json_kind(timestamp)} (msg {msg_id})")
    sync = header.get("sync", False)
    if type(sync) is not bool:
        raise MessageDecodeError(f"header.sync: expected a boolean, got {_json_kind(sync)} (msg {msg_id})")
    parsed_header = MessageHeader(
        msg_id, timestamp,
        _opt_str(header, "parent_msg_id", "header", msg_id),
        _opt_str(header, "resourceversion", "header", msg_id),
        sync,
        _opt_str(header, "type", "header", msg_id),
    )
    route = obj.get("route")
    if route is None:
        return Message(parsed_header, MessageRoute(), obj.get("content"))
    if not isinstance(route, dict):
        raise MessageDecodeError(f"route: expected an object, got {_json_kind(route)} (msg {msg_id})")
    parsed_route = MessageRoute(
        _opt_str(route, "source", "route", msg_id),
        _opt_str(route, "destination", "route", msg_id),
        _opt_str(route, "group", "route", msg_id),
        _opt_str(route, "operation", "route", msg_id),
        _opt_str(route, "resource", "route", msg_id),
    )
    return Message(parsed_header, parsed_route, obj.get("content"))


def _opt_str(obj: dict[str, Any], key: str, where: str, msg_id: str) -> str:
    value = obj.get(key, "")
    if type(value) is str:
        return value
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MessageDecodeError(f"{where}.{key}: expected a string, got {_json_kind(value)} (msg {msg_id})")
    return value


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    if isinstance(value, list):
        return "array"
    return "object"
