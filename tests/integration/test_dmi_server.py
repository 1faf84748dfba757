"""edgecore.dmi.server on a real unix socket: the socket file's life, and statuses as a mapper sees them."""

from __future__ import annotations

import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgecore.dmi.generate import DMIProto, load_protocol
from edgecore.dmi.registry import MapperRecord
from edgecore.dmi.server import DMIError, DMIServer, Registered, socket_answers


class Backend:
    """A ManagerBackend that records calls and answers with one device."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def register_mapper(self, mapper: MapperRecord, with_data: bool) -> Registered:
        self.calls.append(("register", mapper))
        if mapper.name == "boom":
            raise RuntimeError("a bug")
        return Registered(devices=[{"metadata": {"name": "d1", "namespace": "ns"}}, {"metadata": {}}],
                          models=[{"metadata": {"name": "m1"}}])

    async def report_status(self, device_id: str, twins: list[Any]) -> None:
        self.calls.append(("status", (device_id, [t.propertyName for t in twins])))

    async def report_state(self, device_id: str, state: str) -> None:
        self.calls.append(("state", (device_id, state)))
        raise DMIError(grpc.StatusCode.NOT_FOUND, f"device {device_id} is not a member")


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dmi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def call(proto: DMIProto, path: Path, rpc: str, **fields: Any) -> Any:
    method = proto.methods[rpc]
    async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
        stub = channel.unary_unary(method.path, request_serializer=method.request.SerializeToString,
                                   response_deserializer=method.response.FromString)
        return await stub(method.request(**fields), timeout=5)


async def test_serves_on_a_private_socket_and_removes_it_on_stop(sock_dir: Path) -> None:
    proto, backend = load_protocol(), Backend()
    path = sock_dir / "sub" / "dmi.sock"
    server = DMIServer(path, backend, proto)
    await server.start()
    try:
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
        info = proto.message("MapperInfo")(name="thermo", protocol="p", address=b"unix:///run/t.sock", version="1")
        answer = await call(proto, path, "MapperRegister", withData=True, mapper=info)
        assert backend.calls[0] == ("register", MapperRecord("thermo", "p", "/run/t.sock", version="1"))
        # an object that cannot be converted is left out of the answer, not the whole answer
        assert [(d.namespace, d.name) for d in answer.deviceList] == [("ns", "d1")]
        assert [(m.namespace, m.name) for m in answer.modelList] == [("default", "m1")]
        status = proto.message("DeviceStatus")()
        status.twins.add(propertyName="temperature").reported.value = "1"
        await call(proto, path, "ReportDeviceStatus", deviceName="d1", reportedDevice=status)
        assert backend.calls[-1] == ("status", ("default/d1", ["temperature"]))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call(proto, path, "ReportDeviceStates", deviceName="d9", deviceNamespace="ns", state="ok")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing.value.details() == "device ns/d9 is not a member"
        with pytest.raises(grpc.aio.AioRpcError) as nameless:
            await call(proto, path, "ReportDeviceStates", state="ok")
        assert nameless.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as bug:
            await call(proto, path, "MapperRegister", mapper=proto.message("MapperInfo")(name="boom"))
        assert bug.value.code() == grpc.StatusCode.INTERNAL and "RuntimeError" in (bug.value.details() or "")
        # a second server on the same path is refused while the first one answers
        with pytest.raises(DMIError, match="in use"):
            await DMIServer(path, backend, proto).start()
    finally:
        await server.stop()
    assert not path.exists()


async def test_a_stale_socket_is_replaced_and_a_file_is_not(sock_dir: Path) -> None:
    proto = load_protocol()
    path = sock_dir / "dmi.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening: what a killed edgecore leaves behind
    assert path.exists() and not await socket_answers(str(path))
    server = DMIServer(path, Backend(), proto)
    await server.start()
    try:
        assert await socket_answers(str(path))
    finally:
        await server.stop()
    path.write_text("not a socket")
    with pytest.raises(DMIError, match="not a socket"):
        await DMIServer(path, Backend(), proto).start()
    assert path.read_text() == "not a socket"
