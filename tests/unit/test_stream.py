"""The stream tunnel's framing, CRI log reading (format, tail, since, limit, follow) and the control
plane's choice of CloudStream's endpoint for edge nodes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloudcore.controlplane.api import kubelet
from common.streamframes import (
    DATA,
    ENDPOINT_ANNOTATION,
    LOGS_CONNECT,
    Frame,
    FrameError,
    Status,
    decode_uvarint,
    encode_uvarint,
    parse_status,
    status_frame,
)
from edgecore.edgestream.crilog import LogLine, LogOptions, LogOptionsError, read_log, tail_offset

LOG = (b"2024-05-01T10:00:00.000000001Z stdout F one\n"
       b"2024-05-01T10:00:01.5Z stderr P par\n"
       b"2024-05-01T10:00:01.6Z stderr F tial\n"
       b"not a cri line\n"
       b"2024-05-01T10:00:02Z stdout F\n"
       b"2024-05-01T10:00:03.123456789Z stdout F three words here\n")


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32, 2**64 - 1])
def test_uvarint_round_trips_as_go(value: int) -> None:
    encoded = encode_uvarint(value)
    assert decode_uvarint(encoded) == (value, len(encoded))


def test_uvarint_known_bytes_and_errors() -> None:
    assert encode_uvarint(300) == b"\xac\x02"
    with pytest.raises(FrameError):
        decode_uvarint(b"\x80")
    with pytest.raises(FrameError):
        decode_uvarint(b"\xff" * 11)
    with pytest.raises(ValueError):
        encode_uvarint(-1)


def test_frames_round_trip_and_reject_unknown_types() -> None:
    frame = Frame(130, LOGS_CONNECT, b"/containerLogs/ns/p/c?tailLines=1")
    assert frame.encode()[:3] == b"\x82\x01\x00"
    assert Frame.decode(frame.encode()) == frame
    with pytest.raises(FrameError):
        Frame.decode(b"\x01\x09")
    assert parse_status(status_frame(1, 404, "gone").data) == Status(404, "gone")
    assert parse_status(status_frame(2, 200, protocol="v4.channel.k8s.io").data).protocol == "v4.channel.k8s.io"
    assert status_frame(1, 200).kind == DATA
    with pytest.raises(FrameError):
        parse_status(b"hello")


def test_cri_lines_parse_to_kubelet_text() -> None:
    line = LogLine.parse(b"2024-05-01T10:00:00.000000001Z stdout F hello world")
    assert line is not None and line.render(False) == b"hello world\n"
    assert line.render(True) == b"2024-05-01T10:00:00.000000001Z hello world\n"
    partial = LogLine.parse(b"2024-05-01T10:00:00Z stderr P part")
    assert partial is not None and partial.partial and partial.render(False) == b"part"
    empty = LogLine.parse(b"2024-05-01T10:00:00Z stdout F")
    assert empty is not None and empty.render(False) == b"\n"
    assert LogLine.parse(b"garbage") is None
    assert LogLine.parse(b"t other F x") is None


def test_options_from_kubelet_query() -> None:
    now = datetime(2024, 5, 1, 10, 0, 10, tzinfo=UTC)
    options = LogOptions.parse({"follow": "true", "tailLines": "2", "sinceSeconds": "8", "limitBytes": "5"}, now)
    assert options.follow and options.tail_lines == 2 and options.limit_bytes == 5
    assert options.since == datetime(2024, 5, 1, 10, 0, 2, tzinfo=UTC)
    for bad in ({"tailLines": "x"}, {"tailLines": "-1"}, {"limitBytes": "0"}, {"sinceTime": "yesterday"}):
        with pytest.raises(LogOptionsError):
            LogOptions.parse(bad)


def _read(path: Path, options: LogOptions) -> bytes:
    out: list[bytes] = []

    async def write(data: bytes) -> None:
        out.append(data)

    asyncio.run(read_log(path, options, write))
    return b"".join(out)


def test_read_log_whole_tail_since_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(LOG)
    assert _read(path, LogOptions()) == b"one\npartial\n\nthree words here\n"
    assert _read(path, LogOptions(tail_lines=1)) == b"three words here\n"
    assert _read(path, LogOptions(tail_lines=2)) == b"\nthree words here\n"
    assert _read(path, LogOptions(tail_lines=0)) == b""
    assert _read(path, LogOptions(tail_lines=100)) == _read(path, LogOptions())
    since = LogOptions.parse({"sinceTime": "2024-05-01T10:00:02Z"})
    assert _read(path, since) == b"\nthree words here\n"
    assert _read(path, LogOptions(limit_bytes=6)) == b"one\npa"
    stamped = _read(path, LogOptions(tail_lines=1, timestamps=True))
    assert stamped == b"2024-05-01T10:00:03.123456789Z three words here\n"


def test_tail_offset_without_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"a\nb\nc")
    assert tail_offset(path, 1) == 4
    assert tail_offset(path, 2) == 2
    assert tail_offset(path, 5) == 0


def test_follow_sees_appended_lines_and_ends_when_the_container_stops(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"2024-05-01T10:00:00Z stdout F before\n")
    out: list[bytes] = []
    state = {"running": True}

    async def write(data: bytes) -> None:
        out.append(data)

    async def running() -> bool:
        return state["running"]

    async def scenario() -> None:
        follow = asyncio.create_task(read_log(path, LogOptions(follow=True), write, running))
        await asyncio.sleep(0.3)
        with path.open("ab") as file:
            file.write(b"2024-05-01T10:00:01Z stdout F after\n")
        await asyncio.sleep(0.5)
        assert b"".join(out) == b"before\nafter\n"
        with path.open("ab") as file:
            file.write(b"2024-05-01T10:00:02Z stdout F last\n")
        state["running"] = False
        await asyncio.wait_for(follow, 5)

    asyncio.run(scenario())
    assert b"".join(out) == b"before\nafter\nlast\n"


def _node(labels: dict[str, str], annotations: dict[str, str]) -> dict[str, object]:
    return {"metadata": {"labels": labels, "annotations": annotations},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}}}}


def test_control_plane_reaches_edge_nodes_through_cloudstream() -> None:
    assert kubelet.STREAM_ENDPOINT_ANNOTATION == ENDPOINT_ANNOTATION
    edge = {kubelet.EDGE_ROLE_LABEL: ""}
    assert kubelet.node_endpoint(_node(edge, {ENDPOINT_ANNOTATION: "192.168.1.10:10003"})) == ("192.168.1.10", 10003)
    assert kubelet.node_endpoint(_node(edge, {ENDPOINT_ANNOTATION: "[fd00::1]:10003"})) == ("fd00::1", 10003)
    # not an edge node, or no usable annotation: the node's own kubelet, as before
    assert kubelet.node_endpoint(_node({}, {ENDPOINT_ANNOTATION: "192.168.1.10:10003"})) == ("10.0.0.7", 10350)
    for bad in ("", "nohost", "h:0", "h:99999", "a:b:1"):
        assert kubelet.node_endpoint(_node(edge, {ENDPOINT_ANNOTATION: bad})) == ("10.0.0.7", 10350)
