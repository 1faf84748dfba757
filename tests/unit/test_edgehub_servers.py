"""EdgeHub's dial order over several cloudcores (edgecore/edgehub/servers.py), on a fake clock."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from websockets.frames import Close

from common.bus import ModuleBus
from common.config.edgecore import EdgeHub
from common.message import Message
from common.modules import ModuleContext
from common.reliable import ReconnectBackoff, ReconnectPolicy
from edgecore.edgehub.hub import EdgeHubModule
from edgecore.edgehub.servers import ServerRotation, is_refusal, parse_servers

HALF = lambda: 0.5  # noqa: E731 - the jitter draw


def rotation(servers: str) -> ServerRotation:
    return ServerRotation(servers, ReconnectBackoff(ReconnectPolicy(base=1.0, cap=8.0, stable_after=30.0)))


def test_a_comma_separated_server_list_is_parsed_in_order() -> None:
    assert parse_servers("10.0.0.1:10000, 10.0.0.2:10000,,10.0.0.3:10000 ") == (
        "10.0.0.1:10000", "10.0.0.2:10000", "10.0.0.3:10000")
    assert parse_servers("cloud:10000") == ("cloud:10000",)


def test_one_server_backs_off_and_redials_it_exactly_as_before() -> None:
    servers = rotation("cloud:10000")
    delays = [servers.failed(float(t), HALF) for t in range(4)]
    assert delays == [0.5, 1.0, 2.0, 4.0]  # 0.5 x doubling ceiling
    assert servers.current == "cloud:10000"
    servers.connected(10.0)
    assert servers.dropped(11.0, HALF) == 4.0  # not stable yet: the count goes on
    servers.connected(20.0)
    assert servers.dropped(60.0, HALF) == 0.5  # stayed up 40 s: reset


def test_failures_walk_the_list_at_once_and_back_off_after_a_full_round() -> None:
    servers = rotation("a:1,b:2,c:3")
    order, delays = [servers.current], []
    for t in range(6):
        delays.append(servers.failed(float(t), HALF))
        order.append(servers.current)
    assert order == ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3", "a:1"]
    assert delays == [0.0, 0.0, 0.5, 0.0, 0.0, 1.0]


def test_a_dropped_connection_redials_the_same_server_first_then_moves_on() -> None:
    servers = rotation("a:1,b:2,c:3")
    servers.failed(0.0, HALF)  # a down
    servers.connected(1.0)  # b serves
    assert servers.dropped(2.0, HALF) > 0 and servers.current == "b:2"
    assert servers.failed(3.0, HALF) == 0.0 and servers.current == "c:3"
    assert servers.failed(3.1, HALF) == 0.0 and servers.current == "a:1"
    assert servers.failed(3.2, HALF) > 0 and servers.current == "b:2"  # the round began at b


def test_a_refused_node_is_recognised_by_the_cloud_close_reason() -> None:
    assert is_refusal("received 1000 (OK) try another cloudcore: node served by host_1_ab; then sent 1000 (OK)")
    assert not is_refusal("received 1000 (OK) keepalive timeout")


# -- EdgeHub's wiring, with the dial replaced (no sockets) ------------------------------------------------


class _Outbox:
    def disconnected(self) -> None: ...

    def next_batch(self, now: float, limit: int) -> list[object]:
        return []

    def next_deadline(self) -> float | None:
        return None

    async def ack(self, msg_id: str) -> None:
        return None


class _Refusing:
    """A connection the cloud closes at once with a refusal, as CloudHub does for another instance's node."""

    node = "n1"

    async def recv(self) -> Message:
        raise websockets.ConnectionClosed(Close(1000, "try another cloudcore: node served by c-2"), None)

    async def send(self, message: Message) -> None: ...

    async def close(self, reason: str = "") -> None: ...


async def test_edgehub_dials_the_list_in_order_and_a_refusal_moves_to_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    config = EdgeHub.model_validate({"websocket": {"server": "a:1,b:2,c:3"}})
    hub = EdgeHubModule(config, "n1", _Outbox())  # type: ignore[arg-type]
    monkeypatch.setattr("edgecore.edgehub.hub.random.random", lambda: 0.0)  # no back-off wait
    dialed: list[str] = []

    async def fake_dial(server: str) -> _Refusing:
        dialed.append(server)
        if len(dialed) >= 7:
            raise asyncio.CancelledError
        if server == "b:2":
            return _Refusing()
        raise OSError("connection refused")

    monkeypatch.setattr(hub, "_dial", fake_dial)
    bus = ModuleBus()
    ctx = ModuleContext(bus, bus.register(hub.name, hub.group))
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await hub._stay_connected(ctx)
    assert dialed == ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3", "a:1"]
    assert hub.servers.backoff.attempt == 2  # backed off after each full round only
