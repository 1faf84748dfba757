"""The EventBus module (upstream name `eventbus`, group `bus`): edgecore's MQTT clients, and in mqttMode 0/1 the
internal broker.

mqttMode (ref/devices-groups.md 3, upstream eventbus.go):
- 2 (external, the default): clients to `mqttServerExternal` only;
- 0 (internal): edgecore starts its own mosquitto on `mqttServerInternal` (`broker.InternalBroker`: started,
  restarted with back-off when it dies, stopped on shutdown) and its clients use that broker only;
- 1 (both): that internal broker, and clients to both brokers: what arrives on either goes the same way,
  and every publish goes to both (upstream publishes to the external broker through its hub client and
  into its embedded broker, which has the same subscriptions).
Per broker two clients as upstream (`hub-client-sub-<ts>` subscribes, `hub-client-pub-<ts>` publishes), ids
from mqttSubClientID / mqttPubClientID when set.

MQTT in: device/node topics to DeviceTwin, everything else to the cloud (see `topics`). A payload over
`topics.MAX_PAYLOAD` goes nowhere: a request DeviceTwin would answer gets upstream's error result (code 400) on
its `/result` topic from here, anything else is dropped with a warning. Bus in (mailbox):
`publish` (resource = topic, content = payload) from DeviceTwin and the cloud, `subscribe`/`unsubscribe` from the
cloud (kept in upstream's `sub_topics` table), `message` (content `{topic, ...}` published whole).
QoS and retain of publishes are mqttQOS / mqttRetain.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiosqlite
import orjson

from common.config.edgecore import MQTT_MODE_BOTH, MQTT_MODE_EXTERNAL, MQTT_MODE_INTERNAL
from common.config.edgecore import EventBus as EventBusConfig
from common.constants import RESOURCE_CLOUD_CONNECTION, EdgeModule, Group, Op
from common.errors import BusError
from common.log import get_logger
from common.message import Message
from common.modules import ModuleContext
from edgecore.eventbus.broker import BrokerSpec, InternalBroker
from edgecore.eventbus.mqtt import MqttLink
from edgecore.eventbus.topics import (
    MAX_PAYLOAD,
    SUBSCRIPTIONS,
    Route,
    broker_address,
    encode_topic,
    result_topic,
    route_of,
)

log = get_logger("eventbus")

SOURCE: Final = "bus"
INBOUND_CAPACITY: Final = 1024
DRAIN_TIMEOUT: Final = 2.0  # s a backlogged broker socket may take before publishes to it are refused
_DROP_LOG_EVERY: Final = 100


class SubTopics:
    """Upstream's `sub_topics(topic PK)`: topics the cloud asked EventBus to subscribe to."""

    def __init__(self, db: aiosqlite.Connection, topics: list[str]) -> None:
        self._db = db
        self.topics = topics

    @classmethod
    async def open(cls, path: Path) -> SubTopics:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA busy_timeout=10000")
            await db.execute('CREATE TABLE IF NOT EXISTS "sub_topics" ("topic" varchar(255) NOT NULL PRIMARY KEY)')
            await db.commit()
            rows = await db.execute_fetchall('SELECT topic FROM "sub_topics" ORDER BY topic')
        except BaseException:
            await db.close()
            raise
        return cls(db, [topic for (topic,) in rows])

    async def add(self, topic: str) -> None:
        await self._db.execute('INSERT OR IGNORE INTO "sub_topics" (topic) VALUES (?)', (topic,))
        await self._db.commit()

    async def remove(self, topic: str) -> None:
        await self._db.execute('DELETE FROM "sub_topics" WHERE topic = ?', (topic,))
        await self._db.commit()

    async def close(self) -> None:
        await self._db.close()


@dataclass(frozen=True, slots=True)
class BrokerClients:
    """The two clients edgecore keeps on one broker."""

    broker: str  # "internal" or "external"
    sub: MqttLink
    pub: MqttLink


class EventBusModule:
    name = EdgeModule.EVENTBUS
    group = Group.BUS

    def __init__(self, config: EventBusConfig, node: str, db_path: Path | None = None) -> None:
        self.config = config
        self.node = node
        self.db_path = db_path
        self.inbound: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(INBOUND_CAPACITY)
        self.dropped = 0
        self.clients: list[BrokerClients] = []
        self.broker: InternalBroker | None = None

    @property
    def sub(self) -> MqttLink | None:
        """The subscribing client of the first broker (the external one, except in mqttMode 0)."""
        return self.clients[0].sub if self.clients else None

    @property
    def pub(self) -> MqttLink | None:
        return self.clients[0].pub if self.clients else None

    def servers(self) -> list[tuple[str, str]]:
        """(broker, URL) of each broker the clients use, for this mqttMode."""
        mode, config = self.config.mqtt_mode, self.config
        out = []
        if mode in (MQTT_MODE_BOTH, MQTT_MODE_EXTERNAL):
            out.append(("external", config.mqtt_server_external))
        if mode in (MQTT_MODE_INTERNAL, MQTT_MODE_BOTH):
            out.append(("internal", config.mqtt_server_internal))
        return out

    async def run(self, ctx: ModuleContext) -> None:
        config = self.config
        if config.mqtt_mode in (MQTT_MODE_INTERNAL, MQTT_MODE_BOTH):
            self.broker = InternalBroker(BrokerSpec.from_config(config, self.db_path))
            await self.broker.start()
        sub_topics: SubTopics | None = None
        try:
            sub_topics = await SubTopics.open(self.db_path) if self.db_path is not None else None
            stamp = time.time_ns() // 1_000_000
            subscriptions = [*SUBSCRIPTIONS, *(sub_topics.topics if sub_topics else [])]
            for broker, url in self.servers():
                host, port, use_tls = broker_address(url)
                self.clients.append(BrokerClients(
                    broker,
                    MqttLink(f"sub-{broker}", host, port, use_tls, config,
                             config.mqtt_sub_client_id or f"hub-client-sub-{stamp}", self._offer, subscriptions),
                    MqttLink(f"pub-{broker}", host, port, use_tls, config,
                             config.mqtt_pub_client_id or f"hub-client-pub-{stamp}")))
            async with asyncio.TaskGroup() as tasks:
                for clients in self.clients:
                    tasks.create_task(clients.sub.run(), name=f"eventbus:{clients.sub.role}")
                    tasks.create_task(clients.pub.run(), name=f"eventbus:{clients.pub.role}")
                tasks.create_task(self._inbound(ctx), name="eventbus:inbound")
                tasks.create_task(self._outbound(ctx, sub_topics), name="eventbus:outbound")
                if self.broker is not None:
                    tasks.create_task(self.broker.supervise(), name="eventbus:broker")
        finally:
            if sub_topics is not None:
                await sub_topics.close()
            if self.broker is not None:
                await self.broker.stop()

    def _offer(self, topic: str, payload: bytes) -> None:
        if len(payload) > MAX_PAYLOAD:
            self._oversize(topic, len(payload))  # answered here, so the payload is not kept
            return
        try:
            self.inbound.put_nowait((topic, payload))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % _DROP_LOG_EVERY == 1:
                log.warning("mqtt message dropped: edge modules are behind", topic=topic, dropped=self.dropped,
                            capacity=INBOUND_CAPACITY)

    async def _inbound(self, ctx: ModuleContext) -> None:
        while True:
            topic, payload = await self.inbound.get()
            text = payload.decode("utf-8", errors="replace")
            try:
                if route_of(topic) is Route.TWIN:
                    message = Message.new(source=SOURCE, group=Group.TWIN, operation=Op.RESPONSE,
                                          resource=encode_topic(topic), content=text)
                    await ctx.bus.send_to_group(Group.TWIN, message)
                else:
                    message = Message.new(source=SOURCE, group=Group.USER, operation=Op.UPLOAD, resource=topic,
                                          content=text)
                    await ctx.bus.send(EdgeModule.EDGEHUB, message)
                log.v(4).info("mqtt message handed over", topic=topic, msg_id=message.msg_id)
            except BusError as exc:
                log.v(2).info("mqtt message not handed over", topic=topic, err=exc)

    def _oversize(self, topic: str, size: int) -> None:
        reason = f"the payload of {size} bytes is over the {MAX_PAYLOAD} bytes edgecore accepts"
        answer = result_topic(topic)
        log.warning("oversize mqtt message refused", topic=topic, bytes=size, limit=MAX_PAYLOAD,
                    answered=answer is not None)
        if answer is not None:
            body = {"event_id": "", "timestamp": time.time_ns() // 1_000_000, "code": 400, "reason": reason}
            self._publish(answer, orjson.dumps(body), "")

    async def _outbound(self, ctx: ModuleContext, sub_topics: SubTopics | None) -> None:
        while True:
            message = await ctx.mailbox.get()
            try:
                await self._command(message, sub_topics)
            except aiosqlite.Error as exc:
                log.error("sub_topics not updated", topic=message.resource, err=exc)
            for clients in self.clients:  # the broker is slower than we publish: wait, the mailbox holds the rest
                if clients.pub.backlogged:
                    await clients.pub.wait_drained(DRAIN_TIMEOUT)

    async def _command(self, message: Message, sub_topics: SubTopics | None) -> None:
        op = message.operation
        if message.resource == RESOURCE_CLOUD_CONNECTION:
            return
        if op == Op.PUBLISH:
            self._publish(message.resource, message.content_bytes(), message.msg_id)
        elif op == Op.MESSAGE:
            body: Any = message.content
            topic = body.get("topic") if isinstance(body, dict) else None
            if isinstance(topic, str) and topic:
                self._publish(topic, message.content_bytes(), message.msg_id)
            else:
                log.warning("bus message without a topic ignored", msg_id=message.msg_id)
        elif op == Op.SUBSCRIBE and message.resource:
            for clients in self.clients:
                clients.sub.subscribe(message.resource)
            if sub_topics is not None:
                await sub_topics.add(message.resource)
            log.info("subscribed for the cloud", topic=message.resource)
        elif op == Op.UNSUBSCRIBE and message.resource:
            for clients in self.clients:
                clients.sub.unsubscribe(message.resource)
            if sub_topics is not None:
                await sub_topics.remove(message.resource)
            log.info("unsubscribed for the cloud", topic=message.resource)
        else:
            log.v(2).info("bus message ignored", msg_id=message.msg_id, operation=op, resource=message.resource)

    def _publish(self, topic: str, payload: bytes, msg_id: str) -> None:
        qos, retain = int(self.config.mqtt_qos), self.config.mqtt_retain
        for clients in self.clients:
            if clients.pub.publish(topic, payload, qos, retain):
                log.v(3).info("published", topic=topic, broker=clients.broker, msg_id=msg_id, bytes=len(payload))
