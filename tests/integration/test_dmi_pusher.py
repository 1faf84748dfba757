"""edgecore.dmi.pusher against a real gRPC DeviceMapperService on a unix socket (a recording test mapper):
order, retries with back-off on transport failures, refusals, giving up, and re-attaching."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from common.reliable.policy import ReconnectPolicy
from edgecore.dmi.catalog import DEVICE, MODEL, Catalog
from edgecore.dmi.generate import MAPPER_SERVICE, PACKAGE, DMIProto, load_protocol
from edgecore.dmi.pusher import Pusher
from edgecore.dmi.registry import MapperRecord

P = "virtual-thermometer"
WAIT = 10.0


class RecordingMapper:
    """A DeviceMapperService that records each call; `fail[rpc]` holds status codes to answer first."""

    def __init__(self, proto: DMIProto) -> None:
        self.proto = proto
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, list[grpc.StatusCode]] = {}
        self.server = grpc.aio.server()
        handlers = {m.name: grpc.unary_unary_rpc_method_handler(
            self._handler(m.name), request_deserializer=m.request.FromString,
            response_serializer=m.response.SerializeToString) for m in proto.service_methods(MAPPER_SERVICE)}
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(f"{PACKAGE}.{MAPPER_SERVICE}", handlers),))

    def _handler(self, rpc: str) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            pending = self.fail.get(rpc)
            if pending:
                await context.abort(pending.pop(0), f"{rpc} failed on purpose")
            self.calls.append((rpc, request))
            return self.proto.methods[rpc].response()
        return handle

    def names(self) -> list[tuple[str, str]]:
        out = []
        for rpc, request in self.calls:
            if rpc in ("RegisterDevice", "UpdateDevice"):
                out.append((rpc, request.device.name))
            elif rpc in ("CreateDeviceModel", "UpdateDeviceModel"):
                out.append((rpc, request.model.name))
            else:
                out.append((rpc, getattr(request, "deviceName", "") or getattr(request, "modelName", "")))
        return out


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dmi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def mapper(sock_dir: Path) -> AsyncIterator[RecordingMapper]:
    recording = RecordingMapper(load_protocol())
    recording.server.add_insecure_port(f"unix://{sock_dir / 'm.sock'}")
    await recording.server.start()
    yield recording
    await recording.server.stop(None)


def device(name: str, desired: str = "30", model: str = "m") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"deviceModelRef": {"name": model}, "protocol": {"protocolName": P},
                     "properties": [{"name": "threshold", "desired": {"value": desired}}]}}


def model(name: str = "m") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"}, "spec": {"properties": [{"name": "threshold"}]}}


async def until(pred: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not pred():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def fast_pusher(catalog: Catalog, max_attempts: int = 4) -> Pusher:
    # zero back-off (rand = 0): the retry path runs without the test sleeping
    return Pusher(load_protocol(), catalog, rpc_timeout=2.0, max_attempts=max_attempts,
                  policy=ReconnectPolicy(base=0.01, cap=0.01, stable_after=0.0), rand=lambda: 0.0)


async def test_changes_reach_the_mapper_in_order_and_coalesced(mapper: RecordingMapper, sock_dir: Path) -> None:
    catalog = Catalog()
    pusher = fast_pusher(catalog)
    record = MapperRecord("thermo", P, str(sock_dir / "m.sock"))
    try:
        pusher.attach(record, {})
        catalog.put((DEVICE, "default/d1"), device("d1"))
        catalog.put((MODEL, "default/m"), model())
        pusher.mark([(DEVICE, "default/d1"), (MODEL, "default/m")])
        await until(lambda: len(mapper.calls) == 2, "the model and the device")
        assert mapper.names() == [("CreateDeviceModel", "m"), ("RegisterDevice", "d1")]
        register = mapper.calls[1][1]
        assert register.device.spec.properties[0].desired.value == "30"
        for desired in ("31", "32"):
            catalog.put((DEVICE, "default/d1"), device("d1", desired))
            pusher.mark([(DEVICE, "default/d1")])
        await until(lambda: mapper.calls[-1][0] == "UpdateDevice"
                    and mapper.calls[-1][1].device.spec.properties[0].desired.value == "32", "the update")
        assert [rpc for rpc, _ in mapper.calls].count("UpdateDevice") <= 2
        catalog.remove((DEVICE, "default/d1"))
        pusher.mark([(DEVICE, "default/d1"), (MODEL, "default/m")])
        await until(lambda: mapper.names()[-2:] == [("RemoveDevice", "d1"), ("RemoveDeviceModel", "m")], "removal")
    finally:
        await pusher.close()


async def test_transport_failures_are_retried_and_refusals_are_not(mapper: RecordingMapper, sock_dir: Path) -> None:
    catalog = Catalog()
    pusher = fast_pusher(catalog)
    try:
        link = pusher.attach(MapperRecord("thermo", P, str(sock_dir / "m.sock")), {})
        mapper.fail["RegisterDevice"] = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                         grpc.StatusCode.INVALID_ARGUMENT]
        catalog.put((DEVICE, "default/d1"), device("d1", model="none"))
        pusher.mark([(DEVICE, "default/d1")])
        # two transport failures retried, then a refusal: dropped, and nothing recorded as delivered
        await until(lambda: not mapper.fail["RegisterDevice"] and link.sync.idle, "the refusal")
        assert mapper.calls == [] and link.sync.sent == {}
        # the next change of that device is tried again
        catalog.put((DEVICE, "default/d1"), device("d1", "31", model="none"))
        pusher.mark([(DEVICE, "default/d1")])
        await until(lambda: mapper.names() == [("RegisterDevice", "d1")], "the new attempt")
    finally:
        await pusher.close()


async def test_an_unreachable_mapper_is_given_up_and_a_new_registration_starts_over(sock_dir: Path) -> None:
    catalog = Catalog()
    pusher = fast_pusher(catalog, max_attempts=3)
    try:
        link = pusher.attach(MapperRecord("thermo", P, str(sock_dir / "absent.sock")), {})
        for i in range(3):
            catalog.put((DEVICE, f"default/d{i}"), device(f"d{i}", model="none"))
            pusher.mark([(DEVICE, f"default/d{i}")])
        await until(lambda: link.sync.idle, "giving up")
        assert link.delivered == 0 and link.sync.sent == {}
        # the mapper registers again (elsewhere) holding everything: the link is replaced, nothing is re-sent
        recording = RecordingMapper(load_protocol())
        recording.server.add_insecure_port(f"unix://{sock_dir / 'new.sock'}")
        await recording.server.start()
        try:
            moved = pusher.attach(MapperRecord("thermo", P, str(sock_dir / "new.sock")), catalog.view(P))
            assert moved is not link and list(pusher.links) == ["thermo"]
            catalog.put((DEVICE, "default/d0"), device("d0", "40", model="none"))
            pusher.mark([(DEVICE, "default/d0")])
            await until(lambda: recording.names() == [("UpdateDevice", "d0")], "the update on the new link")
        finally:
            await recording.server.stop(None)
    finally:
        await pusher.close()
    assert pusher.links == {}
