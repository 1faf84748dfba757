"""The EventBus module (upstream name `eventbus`, group `bus`): edgecore's MQTT clients.

mqttMode (ref/devices-groups.md 3): 2 (external, the default) connects to `mqttServerExternal`; 0 (internal)
connects to `mqttServerInternal`; 1 (both) connects to `mqttServerExternal`. Upstream embeds a broker on
`mqttServerInternal` in modes 0 and 1; we do not: run mosquitto there (docs/devices.md). Two clients as
upstream (`hub-client-sub-<ts>` subscribes, `hub-client-pub-<ts>` publishes), ids from mqttSubClientID /
mqttPubClientID when set.

MQTT in: device/node topics to DeviceTwin, everything else to the cloud (see `topics`). Bus in (mailbox):
`publish` (resource = topic, content = payload) from DeviceTwin and the cloud, `subscribe`/`unsubscribe` from the
cloud (kept in upstream's `sub_topics` table), `message` (content `{topic, ...}` published whole).
QoS and retain of publishes are mqttQOS / mqttRetain.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Final

import aiosqlite

from common.config.edgecore import MQTT_MODE_INTERNAL
from common.config.edgecore import EventBus as EventBusConfig
from common.constants import RESOURCE_CLOUD_CONNECTION, EdgeModule, Group, Op
from common.errors import BusError
from common.log import get_logger
from common.message import Message
from common.modules import ModuleContext
from edgecore.eventbus.mqtt import MqttLink
from edgecore.eventbus.topics import SUBSCRIPTIONS, Route, broker_address, encode_topic, route_of

log = get_logger("eventbus")

SOURCE: Final = "bus"
INBOUND_CAPACITY: Final = 1024
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


class EventBusModule:
    name = EdgeModule.EVENTBUS
    group = Group.BUS

    def __init__(self, config: EventBusConfig, node: str, db_path: Path | None = None) -> None:
        self.config = config
        self.node = node
        self.db_path = db_path
        self.inbound: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(INBOUND_CAPACITY)
        self.dropped = 0
        self.sub: MqttLink | None = None
        self.pub: MqttLink | None = None

    def server(self) -> str:
        mode = self.config.mqtt_mode
        return self.config.mqtt_server_internal if mode == MQTT_MODE_INTERNAL else self.config.mqtt_server_external

    async def run(self, ctx: ModuleContext) -> None:
        config = self.config
        host, port, use_tls = broker_address(self.server())
        if config.mqtt_mode != 2:
            log.info("mqttMode without an embedded broker: a broker must listen on mqttServerInternal",
                     mode=config.mqtt_mode, internal=config.mqtt_server_internal, using=f"{host}:{port}")
        sub_topics = await SubTopics.open(self.db_path) if self.db_path is not None else None
        stamp = time.time_ns() // 1_000_000
        try:
            self.sub = MqttLink("sub", host, port, use_tls, config, config.mqtt_sub_client_id or
                                f"hub-client-sub-{stamp}", self._offer,
                                [*SUBSCRIPTIONS, *(sub_topics.topics if sub_topics else [])])
            self.pub = MqttLink("pub", host, port, use_tls, config, config.mqtt_pub_client_id or
                                f"hub-client-pub-{stamp}")
            self.sub.start()
            self.pub.start()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._inbound(ctx), name="eventbus:inbound")
                tasks.create_task(self._outbound(ctx, sub_topics), name="eventbus:outbound")
        finally:
            for link in (self.sub, self.pub):
                if link is not None:
                    await link.stop()
            if sub_topics is not None:
                await sub_topics.close()

    def _offer(self, topic: str, payload: bytes) -> None:
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

    async def _outbound(self, ctx: ModuleContext, sub_topics: SubTopics | None) -> None:
        while True:
            message = await ctx.mailbox.get()
            try:
                await self._command(message, sub_topics)
            except aiosqlite.Error as exc:
                log.error("sub_topics not updated", topic=message.resource, err=exc)

    async def _command(self, message: Message, sub_topics: SubTopics | None) -> None:
        assert self.pub is not None and self.sub is not None
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
            self.sub.subscribe(message.resource)
            if sub_topics is not None:
                await sub_topics.add(message.resource)
            log.info("subscribed for the cloud", topic=message.resource)
        elif op == Op.UNSUBSCRIBE and message.resource:
            self.sub.unsubscribe(message.resource)
            if sub_topics is not None:
                await sub_topics.remove(message.resource)
            log.info("unsubscribed for the cloud", topic=message.resource)
        else:
            log.v(2).info("bus message ignored", msg_id=message.msg_id, operation=op, resource=message.resource)

    def _publish(self, topic: str, payload: bytes, msg_id: str) -> None:
        assert self.pub is not None
        if self.pub.publish(topic, payload, int(self.config.mqtt_qos), self.config.mqtt_retain):
            log.v(3).info("published", topic=topic, msg_id=msg_id, bytes=len(payload))
