"""EventBus on a real mosquitto: MQTT in to DeviceTwin's group and to the cloud, bus publishes out, cloud
subscriptions kept in `sub_topics`, TLS, and a broker that comes back after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from common.bus import ModuleBus
from common.config.edgecore import EventBus as EventBusConfig
from common.config.edgecore import EventBusTLS
from common.constants import EdgeModule, Group, Op
from common.hostsvc import mosquitto as mq
from common.hostsvc.mosquitto import MosquittoLayout
from common.message import Message
from common.modules import ModuleContext, run_modules
from edgecore.devicetwin.messages import decode_topic
from edgecore.eventbus.module import EventBusModule
from tests.fixtures.mosquitto import Broker, TlsBroker, free_port
from tests.fixtures.paths import require_binary
from tests.integration.test_devicetwin import Mapper


@dataclass
class Recorder:
    name: str
    group: str
    received: list[Message] = field(default_factory=list)

    async def run(self, ctx: ModuleContext) -> None:
        while True:
            self.received.append(await ctx.mailbox.get())

    async def wait(self, count: int = 1, timeout: float = 10.0) -> list[Message]:
        for _ in range(int(timeout / 0.02)):
            if len(self.received) >= count:
                return self.received
            await asyncio.sleep(0.02)
        raise AssertionError(f"{self.name} got {len(self.received)} of {count} messages")


@contextlib.asynccontextmanager
async def running(config: EventBusConfig, db: Path | None) -> AsyncIterator[tuple[ModuleBus, EventBusModule,
                                                                                  Recorder, Recorder]]:
    bus = ModuleBus()
    eventbus = EventBusModule(config, "edge-1", db)
    twin = Recorder(EdgeModule.TWIN, Group.TWIN)
    hub = Recorder(EdgeModule.EDGEHUB, Group.HUB)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_modules(bus, [eventbus, twin, hub], stop))
    try:
        for _ in range(500):
            if eventbus.sub is not None and eventbus.pub is not None:
                break
            await asyncio.sleep(0.02)
        assert eventbus.sub is not None and eventbus.pub is not None
        await asyncio.wait_for(eventbus.sub.connected.wait(), 10)
        await asyncio.wait_for(eventbus.pub.connected.wait(), 10)
        await asyncio.sleep(0.3)  # the SUBACK
        yield bus, eventbus, twin, hub
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)


def cfg(broker: Broker, **kw: object) -> EventBusConfig:
    return EventBusConfig.model_validate({"mqttServerExternal": f"tcp://{broker.host}:{broker.port}", **kw})


async def test_topics_go_to_devicetwin_or_the_cloud(mosquitto: Broker, sqlite_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    mapper = Mapper(mosquitto, pattern=f"out/{tag}/#")
    try:
        async with running(cfg(mosquitto), sqlite_path) as (bus, _eventbus, twin, hub):
            mapper.publish(f"$hw/events/device/ns{tag}/thermo/twin/update", {"event_id": "a"})
            mapper.publish(f"$hw/events/upload/{tag}", b"raw-bytes")
            mapper.publish(f"app{tag}/user/data", {"x": 1})
            mapper.publish(f"$hw/events/device/ns{tag}/thermo/twin/update/result", {"event_id": "not-subscribed"})
            [to_twin] = await twin.wait(1)
            assert (to_twin.source, to_twin.group, to_twin.operation) == ("bus", Group.TWIN, Op.RESPONSE)
            assert decode_topic(to_twin.resource) == f"$hw/events/device/ns{tag}/thermo/twin/update"
            assert to_twin.content == '{"event_id":"a"}'
            uploads = await hub.wait(2)
            assert {(m.group, m.operation, m.resource, m.content) for m in uploads} == {
                (Group.USER, Op.UPLOAD, f"$hw/events/upload/{tag}", "raw-bytes"),
                (Group.USER, Op.UPLOAD, f"app{tag}/user/data", '{"x":1}')}
            # bus -> MQTT (a dict content is published as compact JSON)
            await bus.send_to_group(Group.BUS, Message.new(source="twin", group=Group.BUS, operation=Op.PUBLISH,
                                                           resource=f"out/{tag}/a", content={"k": "v"}))
            assert await mapper.expect(f"out/{tag}/a") == {"k": "v"}
            # the cloud subscribes a topic: stored, and its messages go up
            await bus.send_to_group(Group.BUS, Message.new(source="edgecontroller", group=Group.USER,
                                                           operation=Op.SUBSCRIBE, resource=f"extra/{tag}"))
            await asyncio.sleep(0.3)
            mapper.publish(f"extra/{tag}", b"hello")
            await hub.wait(3)
            assert hub.received[2].resource == f"extra/{tag}"
        with contextlib.closing(sqlite3.connect(sqlite_path)) as db:
            assert list(db.execute("SELECT topic FROM sub_topics")) == [(f"extra/{tag}",)]
        assert len(twin.received) == 1  # the /result topic was not subscribed
    finally:
        mapper.close()


async def test_tls_and_credentials(mosquitto_tls: TlsBroker) -> None:
    config = EventBusConfig.model_validate({
        "mqttServerExternal": f"ssl://localhost:{mosquitto_tls.tls_port}", "mqttUsername": "edge",
        "mqttPassword": "s3cret-pw", "mqttQOS": 1,
    })
    config.event_bus_tls = EventBusTLS(enable=True, tls_mqtt_ca_file=str(mosquitto_tls.ca),
                                       tls_mqtt_cert_file=str(mosquitto_tls.client_cert),
                                       tls_mqtt_private_key_file=str(mosquitto_tls.client_key))
    mapper = Mapper(mosquitto_tls, pattern="tls-out/#")
    try:
        async with running(config, None) as (bus, _eventbus, _twin, _hub):
            await bus.send_to_group(Group.BUS, Message.new(source="twin", group=Group.BUS, operation=Op.PUBLISH,
                                                           resource="tls-out/x", content="plain text"))
            assert await mapper.expect("tls-out/x") == b"plain text"
    finally:
        mapper.close()


async def test_reconnects_to_a_broker_that_was_not_there(tmp_path: Path) -> None:
    require_binary("mosquitto")
    port = free_port()
    config = EventBusConfig.model_validate({"mqttServerExternal": f"tcp://127.0.0.1:{port}"})
    bus = ModuleBus()
    eventbus = EventBusModule(config, "edge-1", None)
    twin = Recorder(EdgeModule.TWIN, Group.TWIN)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_modules(bus, [eventbus, twin], stop))
    daemon = None
    try:
        await asyncio.sleep(1.5)  # a few refused attempts
        assert eventbus.sub is not None and not eventbus.sub.connected.is_set()
        layout = MosquittoLayout(dir=tmp_path / "late-broker", port=port)
        daemon = mq.start(layout)
        await asyncio.wait_for(eventbus.sub.connected.wait(), 40)  # reconnect back-off is at most 30 s
        await asyncio.sleep(0.3)
        mapper = Mapper(Broker("127.0.0.1", port, layout.logfile, daemon.pid), pattern="none/#")
        try:
            mapper.publish("$hw/events/node/edge-1/membership/get", {"event_id": "x"})
            await twin.wait(1)
        finally:
            mapper.close()
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)
        if daemon is not None:
            daemon.stop()
