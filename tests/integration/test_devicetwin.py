"""DeviceTwin + EventBus on a real mosquitto and a real SQLite file: a mapper-like paho client on one side,
the cloud simulated on the module bus (a stand-in EdgeHub records what would go up) on the other."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from common.bus import ModuleBus
from common.config.edgecore import DeviceTwin as DeviceTwinConfig
from common.config.edgecore import EventBus as EventBusConfig
from common.constants import CLOUD_CONNECTED, CLOUD_DISCONNECTED, RESOURCE_CLOUD_CONNECTION, Group, Op
from common.message import Message
from common.modules import run_modules
from edgecore.devicetwin.module import DeviceTwinModule
from edgecore.devicetwin.store import DeviceTwinStore
from edgecore.eventbus.module import EventBusModule
from tests.fixtures.bus_hub import RecordingHub
from tests.fixtures.mosquitto import Broker

WAIT = 10.0


class Mapper:
    """A mapper-like paho client: publishes, and records every `$hw/events/#` message it sees."""

    def __init__(self, broker: Broker, pattern: str = "$hw/events/#") -> None:
        self.seen: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.log: list[tuple[str, Any]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"mapper-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda _c, _u, msg: self.seen.put((msg.topic, _payload(msg.payload)))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(pattern, qos=1)
        self.client.loop_start()

    def publish(self, topic: str, body: Any) -> None:
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    async def expect(self, topic: str, timeout: float = WAIT) -> Any:
        """The payload of the next message on `topic` (earlier unmatched ones stay in `log`)."""
        for i, (seen_topic, payload) in enumerate(self.log):
            if seen_topic == topic:
                del self.log[i]
                return payload
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                seen_topic, payload = self.seen.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.02)
                continue
            if seen_topic == topic:
                return payload
            self.log.append((seen_topic, payload))
        raise AssertionError(f"nothing on {topic} within {timeout}s; saw {[t for t, _ in self.log]}")

    def drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.log.append(self.seen.get_nowait())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _payload(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


@dataclass
class Edge:
    bus: ModuleBus
    twin: DeviceTwinModule
    hub: RecordingHub
    mapper: Mapper
    node: str
    ns: str
    db: Path

    async def cloud(self, message: Message) -> None:
        await self.bus.send_to_group(Group.TWIN, message)

    async def connection(self, state: str) -> None:
        await self.cloud(Message.new(source="edgehub", group=Group.META, operation=Op.CONNECT,
                                     resource=RESOURCE_CLOUD_CONNECTION, content=state))

    async def add_device(self, name: str) -> str:
        device_id = f"{self.ns}/{name}"
        await self.cloud(membership(added=[{"id": device_id, "name": name, "description": "a thermometer"}]))
        body = await self.mapper.expect(f"$hw/events/node/{self.node}/membership/updated")
        assert body["added_devices"] == [{"id": device_id, "name": name, "description": "a thermometer"}]
        return device_id


def membership(added: list[dict[str, str]] | None = None, removed: list[dict[str, str]] | None = None) -> Message:
    return Message.new(source="devicecontroller", group=Group.TWIN, operation=Op.UPDATE, resource="membership",
                       content={"event_id": "m1", "timestamp": 1, "added_devices": added or [],
                                "removed_devices": removed or []})


@contextlib.asynccontextmanager
async def running_edge(broker: Broker, db: Path, node: str, ns: str) -> AsyncIterator[Edge]:
    bus = ModuleBus()
    store = await DeviceTwinStore.open(db)
    twin = DeviceTwinModule(DeviceTwinConfig(), node, store)
    eventbus = EventBusModule(EventBusConfig(mqtt_server_external=f"tcp://{broker.host}:{broker.port}"), node, db)
    hub = RecordingHub()
    mapper = Mapper(broker)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_modules(bus, [twin, eventbus, hub], stop))
    try:
        edge = Edge(bus, twin, hub, mapper, node, ns, db)
        # EventBus is ready once its subscriptions answer: ask for the membership until it comes back.
        for _ in range(100):
            mapper.publish(f"$hw/events/node/{node}/membership/get", {"event_id": "probe"})
            with contextlib.suppress(AssertionError):
                await mapper.expect(f"$hw/events/node/{node}/membership/get/result", timeout=0.2)
                break
        else:
            raise AssertionError("eventbus did not come up")
        mapper.drain()
        mapper.log.clear()
        yield edge
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)
        mapper.close()
        await store.close()


@pytest.fixture
def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"edge-{tag}", f"ns{tag}"


def table(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return list(conn.execute(sql))


async def test_membership_added_removed_and_get(mosquitto: Broker, sqlite_path: Path, names: tuple[str, str]) -> None:
    node, ns = names
    async with running_edge(mosquitto, sqlite_path, node, ns) as edge:
        device_id = await edge.add_device("thermo")
        assert table(sqlite_path, 'SELECT id, name, description, state, last_online FROM "device"') == [
            (device_id, "thermo", "a thermometer", "", "")]
        edge.mapper.publish(f"$hw/events/node/{node}/membership/get", {"event_id": "g1"})
        got = await edge.mapper.expect(f"$hw/events/node/{node}/membership/get/result")
        assert set(got) == {"event_id", "timestamp", "devices"} and got["event_id"] == "g1"
        assert got["devices"] == [{"id": device_id, "name": "thermo", "description": "a thermometer"}]
        await edge.cloud(membership(removed=[{"id": device_id, "name": "thermo"}]))
        removed = await edge.mapper.expect(f"$hw/events/node/{node}/membership/updated")
        assert removed["added_devices"] is None
        assert removed["removed_devices"] == [{"id": device_id, "name": "thermo"}]
        assert table(sqlite_path, 'SELECT id FROM "device"') == []


async def test_mapper_report_updates_tables_answers_and_goes_to_the_cloud(
        mosquitto: Broker, sqlite_path: Path, names: tuple[str, str]) -> None:
    node, ns = names
    async with running_edge(mosquitto, sqlite_path, node, ns) as edge:
        await edge.connection(CLOUD_CONNECTED)
        device_id = await edge.add_device("thermo")
        edge.mapper.publish(f"$hw/events/device/{device_id}/twin/update", {
            "event_id": "r1", "timestamp": 1,
            "twin": {"temperature": {"actual": {"value": "21.5"}, "metadata": {"type": "float"}}}})
        result = await edge.mapper.expect(f"$hw/events/device/{device_id}/twin/update/result")
        ts = result["timestamp"]
        assert result == {"event_id": "r1", "timestamp": ts, "twin": {"temperature": {
            "actual": {"value": "21.5", "metadata": {"timestamp": ts}}, "optional": True,
            "metadata": {"type": "float"}}}}
        document = await edge.mapper.expect(f"$hw/events/device/{device_id}/twin/update/document")
        assert document == {"event_id": "r1", "timestamp": ts, "twin": {"temperature": {
            "last": None, "current": result["twin"]["temperature"]}}}
        report = await edge.hub.wait(lambda m: m.resource == f"device/{device_id}/twin/edge_updated")
        assert (report.source, report.group, report.operation) == ("twin", "resource", "update")
        assert set(report.content) == {"event_id", "timestamp", "twin"}
        assert report.content["twin"] == {"temperature": {
            "actual": {"value": "21.5", "metadata": {"timestamp": ts}}, "optional": True,
            "metadata": {"type": "float"}, "actual_version": {"cloud": 0, "edge": 1}}}
        rows = table(sqlite_path, 'SELECT deviceid, name, expected, actual, actual_meta, actual_version, optional, '
                                  'attr_type, metadata FROM "device_twin"')
        assert rows == [(device_id, "temperature", None, "21.5", f'{{"timestamp":{ts}}}', '{"cloud":0,"edge":1}',
                         1, "float", "{}")]
        # the cloud's answer (node/<node>/twin trimmed to `twin`, parent = the report) clears it
        await edge.cloud(Message.new(source="devicecontroller", group=Group.TWIN, operation=Op.RESPONSE,
                                     resource="twin", content="OK", parent_msg_id=report.msg_id))
        for _ in range(100):
            if not edge.twin.pending.keys():
                break
            await asyncio.sleep(0.02)
        assert edge.twin.pending.keys() == []
        assert table(sqlite_path, "SELECT key FROM devicetwin_pending") == []
        # a bad value is refused with upstream's error result
        edge.mapper.publish(f"$hw/events/device/{device_id}/twin/update", {
            "event_id": "r2", "twin": {"temperature": {"actual": {"value": "warm"}}}})
        bad = await edge.mapper.expect(f"$hw/events/device/{device_id}/twin/update/result")
        assert bad["event_id"] == "r2" and bad["code"] == 400 and "float" in bad["reason"]
        edge.mapper.publish(f"$hw/events/device/{ns}/ghost/twin/update", {"event_id": "r3", "twin": {}})
        missing = await edge.mapper.expect(f"$hw/events/device/{ns}/ghost/twin/update/result")
        assert missing["code"] == 404


async def test_desired_from_the_cloud_gives_the_delta(mosquitto: Broker, sqlite_path: Path,
                                                      names: tuple[str, str]) -> None:
    node, ns = names
    async with running_edge(mosquitto, sqlite_path, node, ns) as edge:
        device_id = await edge.add_device("thermo")
        edge.mapper.publish(f"$hw/events/device/{device_id}/twin/update", {
            "event_id": "r1", "twin": {"setpoint": {"actual": {"value": "40"}, "metadata": {"type": "int"}}}})
        await edge.mapper.expect(f"$hw/events/device/{device_id}/twin/update/result")
        # the Device object with spec.properties[].desired, as the cloud pushes it
        device = {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                  "metadata": {"name": "thermo", "namespace": ns, "resourceVersion": "7"},
                  "spec": {"nodeName": node, "properties": [{"name": "setpoint", "desired": {"value": "42"}}]}}
        await edge.cloud(Message.new(source="devicecontroller", group=Group.RESOURCE, operation=Op.UPDATE,
                                     resource=f"{ns}/device/thermo", content=device))
        delta = await edge.mapper.expect(f"$hw/events/device/{device_id}/twin/update/delta")
        ts = delta["timestamp"]
        setpoint = delta["twin"]["setpoint"]
        assert delta == {"event_id": delta["event_id"], "timestamp": ts, "twin": {"setpoint": {
            "expected": {"value": "42", "metadata": {"timestamp": setpoint["expected"]["metadata"]["timestamp"]}},
            "actual": {"value": "40", "metadata": {"timestamp": setpoint["actual"]["metadata"]["timestamp"]}},
            "optional": True, "metadata": {"type": "int"}}}, "delta": {"setpoint": "42"}}
        # upstream's twin/cloud_updated path: versioned expected value
        await edge.cloud(Message.new(source="devicecontroller", group=Group.TWIN, operation=Op.UPDATE,
                                     resource=f"device/{device_id}/twin/cloud_updated",
                                     content={"event_id": "c1", "timestamp": 2, "twin": {"setpoint": {
                                         "expected": {"value": "45"}, "metadata": {"type": "int"},
                                         "expected_version": {"cloud": 5, "edge": 0}}}}))
        for _ in range(3):
            doc = await edge.mapper.expect(f"$hw/events/device/{device_id}/twin/update/document")
            if doc["event_id"] == "c1":
                break
        assert doc["event_id"] == "c1"
        assert doc["twin"]["setpoint"]["last"]["expected"]["value"] == "42"
        assert doc["twin"]["setpoint"]["current"]["expected"]["value"] == "45"
        delta2 = None
        for _ in range(3):
            delta2 = await edge.mapper.expect(f"$hw/events/device/{device_id}/twin/update/delta")
            if delta2["delta"] == {"setpoint": "45"}:
                break
        assert delta2 is not None and delta2["delta"] == {"setpoint": "45"}
        # the mapper reports the new value: no delta any more; twin get shows it
        edge.mapper.publish(f"$hw/events/device/{device_id}/twin/update", {
            "event_id": "r2", "twin": {"setpoint": {"actual": {"value": "45"}}}})
        await edge.mapper.expect(f"$hw/events/device/{device_id}/twin/update/result")
        edge.mapper.publish(f"$hw/events/device/{device_id}/twin/get", {"event_id": "g1"})
        got = await edge.mapper.expect(f"$hw/events/device/{device_id}/twin/get/result")
        assert got["event_id"] == "g1"
        assert {k: v["value"] for k, v in got["twin"]["setpoint"].items() if k in ("expected", "actual")} == {
            "expected": "45", "actual": "45"}
        assert "expected_version" not in got["twin"]["setpoint"]
        edge.mapper.drain()
        assert not any(t.endswith("/twin/update/delta") and p["delta"].get("setpoint") == "45"
                       for t, p in edge.mapper.log[1:])


async def test_state_update_answers_and_reports(mosquitto: Broker, sqlite_path: Path,
                                                names: tuple[str, str]) -> None:
    node, ns = names
    async with running_edge(mosquitto, sqlite_path, node, ns) as edge:
        await edge.connection(CLOUD_CONNECTED)
        device_id = await edge.add_device("thermo")
        edge.mapper.publish(f"$hw/events/device/{device_id}/state/update", {"event_id": "s1", "State": "online"})
        result = await edge.mapper.expect(f"$hw/events/device/{device_id}/state/update/result")
        assert set(result) == {"event_id", "timestamp", "device"}
        assert result["device"]["name"] == "thermo" and result["device"]["state"] == "online"
        assert result["device"]["lastOnlineTime"].endswith("Z")
        report = await edge.hub.wait(lambda m: m.resource == f"device/{device_id}/state/update")
        assert report.content["device"] == result["device"] and report.content["state"] == "online"
        assert table(sqlite_path, 'SELECT state FROM "device"') == [("online",)]


async def test_reports_wait_offline_and_go_when_the_link_returns(mosquitto: Broker, sqlite_path: Path,
                                                                 names: tuple[str, str]) -> None:
    node, ns = names
    async with running_edge(mosquitto, sqlite_path, node, ns) as edge:
        device_id = await edge.add_device("thermo")
        await edge.connection(CLOUD_DISCONNECTED)
        for value in ("1", "2"):
            edge.mapper.publish(f"$hw/events/device/{device_id}/twin/update", {
                "event_id": f"r{value}", "twin": {"temperature": {"actual": {"value": value}}}})
            # the local MQTT flow keeps working offline
            assert (await edge.mapper.expect(f"$hw/events/device/{device_id}/twin/update/result"))["event_id"] == \
                f"r{value}"
        await asyncio.sleep(0.3)
        assert not [m for m in edge.hub.received if "edge_updated" in m.resource]
        assert [k for (k,) in table(sqlite_path, "SELECT key FROM devicetwin_pending")] == [f"{device_id}/twin"]
    # edgecore restarts while offline: the report is still there, and goes up once connected
    async with running_edge(mosquitto, sqlite_path, node, ns) as edge:
        assert edge.twin.pending.keys() == [f"{device_id}/twin"]
        await edge.connection(CLOUD_CONNECTED)
        report = await edge.hub.wait(lambda m: m.resource == f"device/{device_id}/twin/edge_updated")
        assert report.content["twin"]["temperature"]["actual"]["value"] == "2"
        assert report.content["twin"]["temperature"]["actual_version"] == {"cloud": 0, "edge": 2}
