"""DMI end to end: MetaManager + DeviceTwin (DMI server) + EventBus on a real mosquitto and SQLite file, and the
sample thermometer mapper (examples/mappers/thermometer) as a separate process on its own unix socket.

The cloud is simulated on the module bus: Device/DeviceModel objects go to MetaManager as CloudHub would hand
them over, membership to DeviceTwin, and a stand-in EdgeHub records what would go up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from common.bus import ModuleBus
from common.config.edgecore import DeviceTwin as DeviceTwinConfig
from common.config.edgecore import EventBus as EventBusConfig
from common.config.edgecore import MetaManager as MetaManagerConfig
from common.constants import CLOUD_CONNECTED, RESOURCE_CLOUD_CONNECTION, Group, Op
from common.message import Message
from common.modules import run_modules
from edgecore.devicetwin.module import DeviceTwinModule
from edgecore.devicetwin.store import DeviceTwinStore
from edgecore.dmi.generate import DMIProto, load_protocol
from edgecore.dmi.server import socket_answers
from edgecore.eventbus.module import EventBusModule
from edgecore.metamanager.module import MetaManagerModule
from edgecore.metamanager.store import MetaStore
from tests.fixtures.bus_hub import RecordingHub
from tests.fixtures.mosquitto import Broker

WAIT = 15.0
REPO = Path(__file__).resolve().parents[2]
DEVICE = "thermometer-01"
MODEL = "thermometer-model"
PROTOCOL = "virtual-thermometer"


# -- helpers -----------------------------------------------------------------------------------------------
class MqttWatch:
    """Records every `$hw/events/#` message; `wait` finds the first one matching a predicate."""

    def __init__(self, broker: Broker) -> None:
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.seen: list[tuple[str, Any]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda _c, _u, msg: self.inbox.put((msg.topic, orjson.loads(msg.payload)))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("$hw/events/#", qos=1)
        self.client.loop_start()

    async def wait(self, topic: str, pred: Callable[[Any], bool] = lambda _: True, timeout: float = WAIT) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                seen_topic, payload = self.inbox.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.02)
                continue
            self.seen.append((seen_topic, payload))
            if seen_topic == topic and pred(payload):
                return payload
        raise AssertionError(f"no matching message on {topic} within {timeout}s; saw {[t for t, _ in self.seen[-20:]]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Edge:
    bus: ModuleBus
    twin: DeviceTwinModule
    hub: RecordingHub
    node: str
    ns: str
    socket: Path
    rv: int = 1

    async def cloud_object(self, operation: str, kind: str, name: str, obj: dict[str, Any] | None) -> None:
        """A Device/DeviceModel change as CloudHub hands it to MetaManager."""
        self.rv += 1
        content = obj if obj is not None else {"metadata": {"name": name, "namespace": self.ns}}
        content = {**content, "metadata": {**content["metadata"], "resourceVersion": str(self.rv)}}
        await self.bus.send_to_group(Group.META, Message.new(
            source="devicecontroller", group=Group.RESOURCE, operation=operation,
            resource=f"{self.ns}/{kind}/{name}", content=content, resource_version=str(self.rv)))

    async def member(self, name: str) -> None:
        await self.bus.send_to_group(Group.TWIN, Message.new(
            source="devicecontroller", group=Group.TWIN, operation=Op.UPDATE, resource="membership",
            content={"event_id": "m1", "timestamp": 1, "removed_devices": [],
                     "added_devices": [{"id": f"{self.ns}/{name}", "name": name}]}))


def model_object(ns: str) -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": MODEL, "namespace": ns},
            "spec": {"protocol": PROTOCOL, "properties": [
                {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly", "unit": "degC"},
                {"name": "threshold", "type": "FLOAT", "accessMode": "ReadWrite", "unit": "degC"}]}}


def device_object(ns: str, node: str, threshold: str, name: str = DEVICE) -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"deviceModelRef": {"name": MODEL}, "nodeName": node,
                     "protocol": {"protocolName": PROTOCOL, "configData": {"baseTemperature": 20, "noise": 0.1}},
                     "properties": [
                         {"name": "temperature", "reportCycle": 200, "reportToCloud": True},
                         {"name": "threshold", "desired": {"value": threshold}, "reportCycle": 200}]}}


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for unix sockets (sun_path holds 107 bytes; pytest's tmp paths can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="dmi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"edge-{tag}", f"ns{tag}"


async def wait_for(pred: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_edge(broker: Broker, db: Path, socket: Path, node: str, ns: str) -> AsyncIterator[Edge]:
    bus = ModuleBus()
    meta_store = await MetaStore.open(db)
    twin_store = await DeviceTwinStore.open(db)
    meta = MetaManagerModule(MetaManagerConfig(), meta_store)
    feed = meta.events.subscribe(["device", "devicemodel"])
    twin = DeviceTwinModule(DeviceTwinConfig(dmi_sock_path=str(socket)), node, twin_store, feed,
                            serve_dmi=True, list_objects=meta_store.list_type)
    eventbus = EventBusModule(EventBusConfig(mqtt_server_external=f"tcp://{broker.host}:{broker.port}"), node, db)
    hub = RecordingHub()
    stop = asyncio.Event()
    runner = asyncio.create_task(run_modules(bus, [meta, twin, eventbus, hub], stop))
    try:
        edge = Edge(bus, twin, hub, node, ns, socket)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not await socket_answers(str(socket)):
            assert loop.time() < deadline, "the DMI socket did not come up"
            await asyncio.sleep(0.05)
        await bus.send_to_group(Group.TWIN, Message.new(source="edgehub", group=Group.META, operation=Op.CONNECT,
                                                        resource=RESOURCE_CLOUD_CONNECTION, content=CLOUD_CONNECTED))
        yield edge
    finally:
        stop.set()
        await asyncio.wait_for(runner, 15)
        await twin_store.close()
        await meta_store.close()


class MapperProcess:
    """The sample mapper, run as `python -m examples.mappers.thermometer` from the repository root."""

    def __init__(self, socket: Path, edgecore: Path, log: Path, name: str = "thermometer") -> None:
        self.socket = socket
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "examples.mappers.thermometer", "--socket", str(socket),
             "--edgecore-socket", str(edgecore), "--name", name, "--seed", "7", "--state-period", "1", "-v", "4"],
            cwd=REPO, stdout=self._log_file, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_exit(self, timeout: float = WAIT) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.proc.poll() is None:
            assert loop.time() < deadline, f"mapper did not exit; log:\n{self.output()}"
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await self.wait_exit()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self._log_file.close()


class DMIClient:
    """A bare DMI client: calls edgecore's DeviceManagerService or a mapper's DeviceMapperService."""

    def __init__(self, socket: Path, proto: DMIProto) -> None:
        self.proto = proto
        self.channel = grpc.aio.insecure_channel(f"unix://{socket}")

    async def call(self, rpc: str, **fields: Any) -> Any:
        method = self.proto.methods[rpc]
        stub = self.channel.unary_unary(method.path, request_serializer=method.request.SerializeToString,
                                        response_deserializer=method.response.FromString)
        return await stub(method.request(**fields), timeout=5)

    async def register(self, name: str, address: Path, protocol: str = PROTOCOL, with_data: bool = True) -> Any:
        info = self.proto.message("MapperInfo")(name=name, protocol=protocol, address=str(address).encode(),
                                                version="test")
        return await self.call("MapperRegister", withData=with_data, mapper=info)

    async def close(self) -> None:
        await self.channel.close()


def table(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return list(conn.execute(sql))


def twin_values(document: dict[str, Any], prop: str) -> tuple[str | None, str | None]:
    current = document["twin"][prop]["current"] or {}
    return ((current.get("expected") or {}).get("value"), (current.get("actual") or {}).get("value"))


# -- tests -------------------------------------------------------------------------------------------------
async def test_mapper_registers_gets_the_desired_value_and_reports_twins(
        mosquitto: Broker, sqlite_path: Path, sock_dir: Path, tmp_path: Path, names: tuple[str, str]) -> None:
    node, ns = names
    device_id = f"{ns}/{DEVICE}"
    watch = MqttWatch(mosquitto)
    proto = load_protocol()
    async with running_edge(mosquitto, sqlite_path, sock_dir / "dmi.sock", node, ns) as edge:
        await edge.member(DEVICE)
        await edge.cloud_object(Op.INSERT, "devicemodel", MODEL, model_object(ns))
        await edge.cloud_object(Op.INSERT, "device", DEVICE, device_object(ns, node, "30"))
        mapper = MapperProcess(sock_dir / "thermo.sock", edge.socket, tmp_path / "mapper.log")
        mapper_client = DMIClient(mapper.socket, proto)
        try:
            # registered with data: the desired threshold reached the mapper inside the Device, and its
            # reports come back as twin updates (MQTT document, tables, cloud report)
            doc = await watch.wait(f"$hw/events/device/{device_id}/twin/update/document",
                                   lambda d: twin_values(d, "threshold") == ("30", "30")
                                   if "threshold" in d["twin"] else False)
            assert doc["twin"]["threshold"]["current"]["metadata"] == {"type": "string"}  # typed by the desired
            temperature = await watch.wait(f"$hw/events/device/{device_id}/twin/update/document",
                                           lambda d: "temperature" in d["twin"])
            value = twin_values(temperature, "temperature")[1]
            assert value is not None and 15.0 < float(value) < 25.0
            state = await watch.wait(f"$hw/events/device/{device_id}/state/update/result")
            assert state["device"]["state"] == "ok"
            report = await edge.hub.wait(lambda m: m.resource == f"device/{device_id}/twin/edge_updated", WAIT)
            assert set(report.content["twin"]) <= {"temperature", "threshold"}
            rows = dict(table(sqlite_path, f"SELECT name, attr_type FROM device_twin WHERE deviceid = '{device_id}'"))
            assert rows == {"temperature": "float", "threshold": "string"}
            assert table(sqlite_path, "SELECT name, protocol, address FROM devicetwin_mapper") == [
                ("thermometer", PROTOCOL, str(mapper.socket))]
            got = await mapper_client.call("GetDevice", deviceName=DEVICE, deviceNamespace=ns)
            assert got.device.spec.deviceModelReference == MODEL

            # the cloud changes the desired value: UpdateDevice reaches the mapper, which applies and reports it
            await edge.cloud_object(Op.UPDATE, "device", DEVICE, device_object(ns, node, "35"))
            await watch.wait(f"$hw/events/device/{device_id}/twin/update/document",
                             lambda d: "threshold" in d["twin"] and twin_values(d, "threshold") == ("35", "35"))
            got = await mapper_client.call("GetDevice", deviceName=DEVICE, deviceNamespace=ns)
            assert {t.propertyName: t.reported.value for t in got.device.status.twins}["threshold"] == "35"
            assert "threshold set" in mapper.output()

            # the Device is deleted: RemoveDevice; the mapper no longer has it
            await edge.cloud_object(Op.DELETE, "device", DEVICE, None)
            for _ in range(100):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await mapper_client.call("GetDevice", deviceName=DEVICE, deviceNamespace=ns)
                    await asyncio.sleep(0.05)
                    continue
                break
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await mapper_client.call("GetDevice", deviceName=DEVICE, deviceNamespace=ns)
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await mapper_client.close()
            code = await mapper.stop()
            watch.close()
        assert code == 0, mapper.output()
        assert not mapper.socket.exists()
    assert not (sock_dir / "dmi.sock").exists()  # edgecore removed its socket on stop


async def test_registering_twice_and_reports_edgecore_refuses(
        mosquitto: Broker, sqlite_path: Path, sock_dir: Path, tmp_path: Path, names: tuple[str, str]) -> None:
    node, ns = names
    proto = load_protocol()
    async with running_edge(mosquitto, sqlite_path, sock_dir / "dmi.sock", node, ns) as edge:
        await edge.member(DEVICE)
        await edge.cloud_object(Op.INSERT, "devicemodel", MODEL, model_object(ns))
        await edge.cloud_object(Op.INSERT, "device", DEVICE, device_object(ns, node, "30"))
        await wait_for(lambda: edge.twin.dmi is not None and len(edge.twin.dmi.catalog) == 2, "the catalog")
        first = MapperProcess(sock_dir / "a.sock", edge.socket, tmp_path / "a.log")
        client = DMIClient(edge.socket, proto)
        try:
            await wait_for(lambda: "registered with edgecore" in first.output(), "the first registration")
            # the same name and address again (a restart): accepted, with the same data
            again = await client.register("thermometer", first.socket)
            assert [d.name for d in again.deviceList] == [DEVICE]
            assert [m.name for m in again.modelList] == [MODEL]
            assert again.deviceList[0].spec.properties[1].desired.value == "30"
            # the same name at another address while the first still answers: refused, nothing changed
            second = MapperProcess(sock_dir / "b.sock", edge.socket, tmp_path / "b.log")
            assert await second.wait_exit() == 1
            await second.stop()
            assert "ALREADY_EXISTS" in second.output() and "still answers" in second.output()
            with pytest.raises(grpc.aio.AioRpcError) as taken:
                await client.register("other", sock_dir / "c.sock")  # another name, same protocol
            assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert table(sqlite_path, "SELECT name, address FROM devicetwin_mapper") == [
                ("thermometer", str(first.socket))]
            # reports edgecore refuses, with the status a mapper can act on
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await client.call("ReportDeviceStates", deviceName="ghost", deviceNamespace=ns, state="ok")
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND and "ghost" in (unknown.value.details() or "")
            status = proto.message("DeviceStatus")()
            status.twins.add(propertyName="temperature").reported.value = "20"
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await client.call("ReportDeviceStatus", deviceName="ghost", deviceNamespace=ns, reportedDevice=status)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as bad_state:
                await client.call("ReportDeviceStates", deviceName=DEVICE, deviceNamespace=ns, state="melting")
            assert bad_state.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            bad = proto.message("DeviceStatus")()
            twin = bad.twins.add(propertyName="temperature")
            twin.reported.value, twin.reported.metadata["type"] = "warm", "float"
            with pytest.raises(grpc.aio.AioRpcError) as bad_value:
                await client.call("ReportDeviceStatus", deviceName=DEVICE, deviceNamespace=ns, reportedDevice=bad)
            assert bad_value.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            await client.call("ReportDeviceStates", deviceName=DEVICE, deviceNamespace=ns, state="OnLine")
            # once the first mapper is gone, a registration at a new address replaces it
            assert await first.stop() == 0
            moved = await client.register("thermometer", sock_dir / "d.sock")
            assert [d.name for d in moved.deviceList] == [DEVICE]
            assert table(sqlite_path, "SELECT name, address FROM devicetwin_mapper") == [
                ("thermometer", str(sock_dir / "d.sock"))]
        finally:
            await client.close()
            await first.stop()


async def test_mapper_registers_again_after_an_edgecore_restart(
        mosquitto: Broker, sqlite_path: Path, sock_dir: Path, tmp_path: Path, names: tuple[str, str]) -> None:
    node, ns = names
    device_id = f"{ns}/{DEVICE}"
    watch = MqttWatch(mosquitto)
    async with running_edge(mosquitto, sqlite_path, sock_dir / "dmi.sock", node, ns) as edge:
        await edge.member(DEVICE)
        await edge.cloud_object(Op.INSERT, "devicemodel", MODEL, model_object(ns))
        await edge.cloud_object(Op.INSERT, "device", DEVICE, device_object(ns, node, "30"))
        mapper = MapperProcess(sock_dir / "thermo.sock", edge.socket, tmp_path / "mapper.log")
        try:
            await watch.wait(f"$hw/events/device/{device_id}/twin/update/document",
                             lambda d: "threshold" in d["twin"] and twin_values(d, "threshold") == ("30", "30"))
        except BaseException:
            await mapper.stop()
            raise
    try:
        # edgecore is down: the mapper notices on its next report and keeps trying to register, with back-off
        await wait_for(lambda: "cannot register with edgecore" in mapper.output(), "the mapper to notice")
        assert mapper.proc.poll() is None and "registering again" in mapper.output()
        async with running_edge(mosquitto, sqlite_path, sock_dir / "dmi.sock", node, ns) as edge:
            await wait_for(lambda: mapper.output().count("registered with edgecore") == 2, "the new registration",
                           timeout=30)
            edge.rv = 10
            await edge.cloud_object(Op.UPDATE, "device", DEVICE, device_object(ns, node, "41"))
            await watch.wait(f"$hw/events/device/{device_id}/twin/update/document",
                             lambda d: "threshold" in d["twin"] and twin_values(d, "threshold") == ("41", "41"),
                             timeout=30)
    finally:
        code = await mapper.stop()
        watch.close()
    assert code == 0, mapper.output()
