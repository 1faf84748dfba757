"""Beehive message model: upstream's exact JSON, round trips, and clear errors on bad input."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import MessageDecodeError
from common.message import Message, MessageHeader, MessageRoute, decode, encode

GOLDEN = Path(__file__).parent.parent / "golden" / "messages.jsonl"


def golden_lines() -> list[bytes]:
    return [line + b"\n" for line in GOLDEN.read_bytes().splitlines()]


@pytest.mark.parametrize("wire", golden_lines(), ids=lambda b: json.loads(b)["header"]["msg_id"][-2:])
def test_golden_wire_bytes_round_trip_exactly(wire: bytes) -> None:
    assert encode(decode(wire)) == wire


def test_pod_insert_fields_are_read_from_upstream_keys() -> None:
    message = decode(golden_lines()[0])
    assert message.header == MessageHeader(
        "6f1c2a7e-5b1d-4c3e-9f10-2b7a1c0d9e11", 1718000000123, "", "48213", False, "")
    assert message.route == MessageRoute("edgecontroller", "", "resource", "insert", "default/pod/nginx")
    assert message.content["metadata"]["resourceVersion"] == "48213"


def test_new_message_writes_route_not_router_and_omits_empty_fields() -> None:
    message = Message.new(source="edged", group="meta", operation="query", resource="default/pod/a")
    wire = json.loads(encode(message))
    assert list(wire) == ["header", "route", "content"]
    assert list(wire["header"]) == ["msg_id", "timestamp"]
    assert wire["route"] == {"source": "edged", "group": "meta", "operation": "query",
                             "resource": "default/pod/a"}
    assert wire["content"] is None
    assert encode(message).endswith(b"}\n") and b" " not in encode(message)


def test_timestamp_is_milliseconds() -> None:
    import time
    before = time.time() * 1000
    stamp = Message.new(source="a", group="b", operation="c", resource="d").header.timestamp
    assert before - 5 <= stamp <= time.time() * 1000 + 5


def test_response_follows_upstream_new_resp_by_message() -> None:
    request = decode(golden_lines()[0])
    reply = request.response("OK")
    assert reply.parent_msg_id == request.msg_id and reply.msg_id != request.msg_id
    assert (reply.source, reply.group, reply.resource, reply.operation) == (
        "edgecontroller", "resource", "default/pod/nginx", "response")
    assert reply.header.resource_version == ""  # upstream does not copy it
    assert request.error_response("boom").operation == "error"


def test_with_resource_keeps_msg_id() -> None:
    message = Message.new(source="s", group="resource", operation="insert", resource="node/n1/default/pod/x")
    trimmed = message.with_resource("default/pod/x")
    assert trimmed.msg_id == message.msg_id and trimmed.resource == "default/pod/x"
    assert message.resource == "node/n1/default/pod/x"


def test_content_bytes_string_as_is_object_reencoded_go_style() -> None:
    assert decode(golden_lines()[3]).content_bytes().startswith(b'{"event_id"')
    message = Message.new(source="s", group="g", operation="o", resource="r", content={"a": "<&>"})
    assert message.content_bytes() == b'{"a":"\\u003c\\u0026\\u003e"}'


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "must be a JSON object, got array"),
        (b'{"route":{}}', "header: expected an object, got null"),
        (b'{"header":{"timestamp":1}}', "header.msg_id: expected a non-empty string"),
        (b'{"header":{"msg_id":""}}', "header.msg_id: expected a non-empty string"),
        (b'{"header":{"msg_id":"m","timestamp":"1"}}', "header.timestamp: expected integer milliseconds"),
        (b'{"header":{"msg_id":"m","timestamp":1.5}}', "header.timestamp: expected integer milliseconds"),
        (b'{"header":{"msg_id":"m","sync":"yes"}}', "header.sync: expected a boolean"),
        (b'{"header":{"msg_id":"m","parent_msg_id":7}}', "header.parent_msg_id: expected a string"),
        (b'{"header":{"msg_id":"m"},"route":[]}', "route: expected an object, got array"),
        (b'{"header":{"msg_id":"m"},"route":{"resource":{"a":1}}}', "route.resource: expected a string"),
    ],
)
def test_malformed_input_is_refused_with_the_field_named(wire: bytes, expected: str) -> None:
    with pytest.raises(MessageDecodeError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        decode(wire)


def test_unknown_keys_are_ignored_like_go() -> None:
    message = decode(b'{"header":{"msg_id":"m","timestamp":3,"extra":1},"route":{"x":"y"},"content":1,"z":2}')
    assert message.msg_id == "m" and message.content == 1


def test_unencodable_content_raises_decode_error_naming_message() -> None:
    message = Message.new(source="s", group="g", operation="o", resource="r", content={"a": object()})
    with pytest.raises(MessageDecodeError, match=message.msg_id):
        encode(message)


# --- properties ----------------------------------------------------------------------------------

_text = st.text(max_size=40)
_json_leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_text, inner, max_size=4), max_leaves=20)
_messages = st.builds(
    Message,
    st.builds(MessageHeader, st.text(min_size=1, max_size=40), st.integers(0, 2**62), _text, _text,
              st.booleans(), _text),
    st.builds(MessageRoute, _text, _text, _text, _text, _text),
    _json,
)


@settings(max_examples=300)
@given(_messages)
def test_encode_decode_round_trip(message: Message) -> None:
    wire = encode(message)
    assert decode(wire) == message
    assert encode(decode(wire)) == wire  # byte-stable: a relay re-encodes exactly what it got


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_either_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except MessageDecodeError as exc:
        assert str(exc)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(["header", "route", "content", "x"]), _json, max_size=4))
def test_arbitrary_json_objects_never_escape_as_other_errors(obj: dict[str, object]) -> None:
    with contextlib.suppress(MessageDecodeError):
        decode(json.dumps(obj).encode())


def test_msg_ids_are_random_version_4_uuids() -> None:
    import uuid

    from common.message import new_msg_id

    ids = [new_msg_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
