"""The EdgeHub module (upstream name `websocket`): the edge end of the cloud-edge channel.

Owns the certificate (bootstrap with the join token on first start), the connection to CloudHub with
jittered exponential reconnects, the heartbeat (`keepalive` every `heartbeat` seconds), and the routing
of messages: downstream by group (resource/func -> meta, twin -> twin, user -> bus; a reply with a
parent id goes back to the module waiting for it), upstream from the bus to the cloud. Connect and
disconnect are announced inside the edge (`node/connection`, `cloud_connected`/`cloud_disconnected`)
as upstream does. One task group per connection, so nothing leaks across reconnects.

Upstream, status reports (`OUTBOX_TYPES`) go through the persistent outbox: latest per key, kept
across disconnects and restarts, re-sent until the cloud's reply (parent id = the report's msg_id)
ACKs them. Everything else (ACKs, queries, registration) is sent once while connected; while not, it
is refused at once (a waiting sender gets an error reply) rather than held: the caller knows better
whether it is still worth sending later.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Final

import websockets

from common.config import ConfigError
from common.config.edgecore import EdgeHub as EdgeHubConfig
from common.constants import (
    CLOUD_CONNECTED,
    CLOUD_DISCONNECTED,
    RESOURCE_CLOUD_CONNECTION,
    EdgeModule,
    Group,
    Op,
)
from common.errors import BusError, MessageDecodeError, ResourceError
from common.log import get_logger
from common.message import Message
from common.metrics import new_registry
from common.modules import ModuleContext
from common.pki import KeyPair, PKIError
from common.reliable import Keepalive, ReconnectBackoff
from common.resource import parse_edge_resource
from common.transport import NodeConnection, client_tls, dial
from edgecore.edgehub.certificate import clear_config_token, ensure_edge_certificate, run_rotation
from edgecore.edgehub.metrics import EdgeHubMetrics
from edgecore.edgehub.outbox_store import PersistentOutbox
from edgecore.edgehub.servers import ServerRotation, is_refusal

log = get_logger("edgehub")

_DOWNSTREAM_GROUPS: Final = {Group.RESOURCE: Group.META, Group.FUNC: Group.META, Group.TWIN: Group.TWIN,
                             Group.USER: Group.BUS}
_CONNECT_ATTEMPT_TIMEOUT: Final = 30.0
OUTBOX_TYPES: Final = frozenset({"nodestatus", "nodepatch", "podstatus", "podpatch"})
_OUTBOX_OPS: Final = frozenset({Op.INSERT, Op.UPDATE, Op.PATCH})
_DIRECT_QUEUE: Final = 1024
_WRITE_BATCH: Final = 64


def outbox_key(message: Message) -> str | None:
    """The outbox key of a status report (its resource), None for messages sent once."""
    if message.operation not in _OUTBOX_OPS:
        return None
    try:
        resource = parse_edge_resource(message.resource)
    except ResourceError:
        return None
    return message.resource if resource.type in OUTBOX_TYPES else None


class EdgeHubModule:
    name = EdgeModule.EDGEHUB
    group = Group.HUB

    def __init__(self, config: EdgeHubConfig, node_name: str, outbox: PersistentOutbox,
                 config_path: Path | None = None, metrics: EdgeHubMetrics | None = None) -> None:
        self.config = config
        # Always present (a registry of its own unless edgecore's is given), so the hot path never checks.
        self.metrics = metrics or EdgeHubMetrics(new_registry())
        self.config_path = config_path
        self.node = node_name
        self.outbox = outbox
        self.backoff = ReconnectBackoff()
        # The configured cloudcore(s), comma-separated (servers.py); one server dials as upstream does.
        self.servers = ServerRotation(config.quic.server if config.quic.enable else config.websocket.server,
                                      ReconnectBackoff())
        self.connected = asyncio.Event()
        self._connection: NodeConnection | None = None
        self._direct: asyncio.Queue[Message] | None = None  # while connected: messages sent once
        self._wakeup = asyncio.Event()

    async def run(self, ctx: ModuleContext) -> None:
        while True:
            try:
                await ensure_edge_certificate(self.config, self.node)
                break
            except (PKIError, OSError) as exc:
                delay = self.backoff.next_delay(time.monotonic(), random.random)
                log.error("cannot get the edge certificate; retrying", node=self.node, err=exc,
                          retry_in_s=f"{delay:.1f}")
                await asyncio.sleep(delay)
        self.backoff.reset()
        self._forget_token()
        async with asyncio.TaskGroup() as tasks:
            if self.config.rotate_certificates:
                tasks.create_task(run_rotation(self.config, self.node, on_rotated=self._rotated))
            tasks.create_task(self._stay_connected(ctx))
            tasks.create_task(self._intake(ctx))

    def _forget_token(self) -> None:
        """With a certificate in hand the join token is no longer needed: remove it from edgecore.yaml, as
        upstream does, so it does not stay readable on the host."""
        if not self.config.token or self.config_path is None:
            return
        try:
            clear_config_token(self.config_path)
        except (OSError, ConfigError) as exc:
            log.warning("cannot clear the join token from the config file", node=self.node,
                        path=str(self.config_path), err=exc)

    async def _stay_connected(self, ctx: ModuleContext) -> None:
        servers = self.servers
        while True:
            served = await self._connect_once(ctx)
            now = time.monotonic()
            delay = servers.dropped(now, random.random) if served else servers.failed(now, random.random)
            log.info("reconnecting", node=self.node, server=servers.current, in_s=f"{delay:.1f}",
                     attempt=servers.backoff.attempt)
            await asyncio.sleep(delay)

    async def _rotated(self, _pair: KeyPair) -> None:
        """A new certificate is on disk: reconnect so that the cloud sees it."""
        if self._connection is not None:
            log.info("reconnecting with the rotated certificate", node=self.node)
            await self._connection.close("certificate rotated")

    async def _dial(self, server: str) -> NodeConnection:
        hub = self.config
        files = Path(hub.tls_ca_file), Path(hub.tls_cert_file), Path(hub.tls_private_key_file)
        heartbeat = float(hub.heartbeat) or None
        if hub.quic.enable:
            # imported here: aioquic and common.quic cost ~6 MB of RSS that a WebSocket edge does not need
            from common.quic import dial_quic

            # QUIC's idle timeout notices a cut link as the WebSocket pings do: two heartbeats.
            return await dial_quic(server, self.node, hub.project_id, *files,
                                   open_timeout=float(hub.quic.handshake_timeout) or _CONNECT_ATTEMPT_TIMEOUT,
                                   idle_timeout=2 * (heartbeat or 15.0))
        return await dial(server, self.node, hub.project_id, client_tls(*files),
                          open_timeout=float(hub.websocket.handshake_timeout) or _CONNECT_ATTEMPT_TIMEOUT,
                          ping_interval=heartbeat)

    def _write_deadline(self) -> float:
        hub = self.config
        return float(hub.quic.write_deadline if hub.quic.enable else hub.websocket.write_deadline) or 15.0

    async def _connect_once(self, ctx: ModuleContext) -> bool:
        """One connection, until it ends. False when it never served: the dial failed or the cloud
        refused the node (another cloudcore serves it): the next server is dialed then."""
        hub = self.config
        server = self.servers.current
        try:
            connection = await self._dial(server)
        except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
            self.metrics.connect_failures += 1
            log.warning("cannot connect to cloudcore", node=self.node, server=server, err=exc)
            return False
        self.metrics.connects += 1
        self.servers.connected(time.monotonic())
        self._connection = connection
        self._direct = asyncio.Queue(_DIRECT_QUEUE)
        self.connected.set()
        log.info("connected to cloudcore", node=self.node, server=server)
        await self._announce(ctx, CLOUD_CONNECTED)
        keepalive = Keepalive(float(hub.heartbeat), float(hub.heartbeat) * 2, now=time.monotonic())
        refused = False
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._downstream(ctx, connection))
                tasks.create_task(self._writer(connection))
                tasks.create_task(self._heartbeat(connection, keepalive))
        except* (websockets.ConnectionClosed, OSError, TimeoutError) as closed:
            reason = "; ".join(str(e) for e in closed.exceptions)[:200]
            refused = is_refusal(reason)
            if refused:
                log.warning("cloudcore refused the node; trying the next server", node=self.node, server=server,
                            reason=reason)
            else:
                log.warning("disconnected from cloudcore", node=self.node, reason=reason)
        finally:
            self._connection = None
            self.connected.clear()
            self.outbox.disconnected()
            direct, self._direct = self._direct, None
            while direct is not None and not direct.empty():
                self._refuse(ctx, direct.get_nowait(), "the connection to the cloud was lost")
            await self._announce(ctx, CLOUD_DISCONNECTED)
        return not refused

    async def _announce(self, ctx: ModuleContext, state: str) -> None:
        event = Message.new(source="edgehub", group=Group.META, operation=Op.CONNECT,
                            resource=RESOURCE_CLOUD_CONNECTION, content=state)
        for group in (Group.META, Group.TWIN, Group.EDGED, Group.BUS):
            with contextlib.suppress(BusError):  # that group has no module in this edgecore
                await ctx.bus.send_to_group(group, event)

    async def _downstream(self, ctx: ModuleContext, connection: NodeConnection) -> None:
        received = self.metrics.received.count
        while True:
            try:
                message = await connection.recv()
            except MessageDecodeError as exc:
                log.warning("malformed message from cloudcore ignored", node=self.node, err=exc)
                continue
            received(message.route.resource, message.route.operation)
            if message.parent_msg_id and await self.outbox.ack(message.parent_msg_id) is not None:
                log.v(4).info("report acked", node=self.node, msg_id=message.parent_msg_id)
                continue
            if message.parent_msg_id and message.group != Group.TWIN and ctx.bus.respond(message):
                continue
            group = _DOWNSTREAM_GROUPS.get(message.group)
            if group is None:
                log.warning("message for an unknown group dropped", node=self.node, msg_id=message.msg_id,
                            group=message.group)
                continue
            try:
                await ctx.bus.send_to_group(group, message)
            except BusError as exc:
                # Not acknowledged, so the cloud sends it again once the module is there or has room.
                log.warning("message not delivered inside the edge", node=self.node, msg_id=message.msg_id,
                            group=group, err=exc)

    async def _intake(self, ctx: ModuleContext) -> None:
        """Messages for the cloud, for the module's whole life: reports into the outbox, the rest queued
        for the connection or refused when there is none."""
        while True:
            message = await ctx.mailbox.get()
            key = None if ctx.bus.is_waiting(message.msg_id) else outbox_key(message)
            if key is not None or message.route.operation == Op.DELETE:
                self.metrics.pods.observe(message)  # status reports and deletes only: pods by phase
            if key is not None:
                await self.outbox.put(key, message)
            elif self._direct is None:
                self._refuse(ctx, message, "not connected to the cloud")
                continue
            else:
                try:
                    self._direct.put_nowait(message)
                except asyncio.QueueFull:
                    self._refuse(ctx, message, "too many messages waiting for the connection")
                    continue
            self._wakeup.set()

    def _refuse(self, ctx: ModuleContext, message: Message, reason: str) -> None:
        log.v(2).info("message for the cloud not sent", node=self.node, msg_id=message.msg_id,
                      resource=message.resource, reason=reason)
        if ctx.bus.is_waiting(message.msg_id):
            ctx.bus.respond(message.error_response(reason))

    async def _writer(self, connection: NodeConnection) -> None:
        direct = self._direct
        assert direct is not None
        sent = self.metrics.sent.count
        while True:
            batch = [direct.get_nowait() for _ in range(min(_WRITE_BATCH, direct.qsize()))]
            batch += [out.message for out in self.outbox.next_batch(time.monotonic(), _WRITE_BATCH - len(batch))]
            if not batch:
                self._wakeup.clear()
                deadline = self.outbox.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                continue
            for message in batch:
                async with asyncio.timeout(self._write_deadline()):
                    await connection.send(message)
                sent(message.route.resource, message.route.operation)

    async def _heartbeat(self, connection: NodeConnection, keepalive: Keepalive) -> None:
        while True:
            await asyncio.sleep(max(0.0, keepalive.next_ping(time.monotonic()) - time.monotonic()))
            ping = Message.new(source=EdgeModule.EDGEHUB, group=Group.RESOURCE, operation=Op.KEEPALIVE,
                               resource="node", content="ping")
            async with asyncio.timeout(self._write_deadline()):
                await connection.send(ping)
            self.metrics.sent.count(ping.route.resource, ping.route.operation)
            keepalive.pinged(time.monotonic())

