"""The CloudHub module: edge connections in, per-node reliable queues out, the certificate service beside.

Owns, for the life of cloudcore: the CA/server certificate/token from the kubeedge Secrets, the HTTPS
:10002 certificate service, the WebSocket :10000 and QUIC :10001 listeners (sessions are the same over
both), one `NodeQueue` per node (kept across
disconnects, so nothing queued for a node is lost when its link flaps) and one session per connected
node. A session is one task group: reader (keepalive, ACKs, upstream dispatch), writer (queue pump)
and watchdog (a node silent past keepaliveInterval is disconnected). A newer connection of a node
replaces the older one, as upstream.

With `nodeLease.enable` (several cloudcores on one control plane, docs/ha.md) a session starts only once
this instance holds the node's Lease (ownership.py); a node held by another live instance is refused
with a close reason that sends the edge to its next server. A node another instance served meanwhile has
its acked versions read again from ObjectSync first, so only what the edge has not acked is sent. When
the session ends, its ACKs are flushed to ObjectSync and the Lease released; a lost Lease ends the session.

Downstream: messages from other cloud modules addressed `node/<node>/...` are queued for that node
with the node prefix trimmed. Upstream: the edge's `<ns>/<type>/<name>` gets the connection's node
prefix and goes to the edgecontroller group (devicecontroller for twin, dynamiccontroller for
metaserver), unless it names another node's Node or lease, which is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final, TypeAlias

import aiohttp
import websockets
from kubernetes_asyncio.client import ApiClient, CoordinationV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from cloudcore.cloudhub.certserver import CertServer
from cloudcore.cloudhub.metrics import CloudHubMetrics
from cloudcore.cloudhub.objectsync import ObjectSyncStore
from cloudcore.cloudhub.ownership import TRY_ANOTHER, NodeOwnership, OwnershipError, instance_identity
from cloudcore.cloudhub.secrets import TokenRefresher, prepare_cloud_pki
from common.config.cloudcore import CloudHub as CloudHubConfig
from common.constants import CLOUD_MODULES, HEADER_EDGE_HAS_IT, CloudModule, Group, Op, ResourceType
from common.errors import BusError, MessageDecodeError, ResourceError
from common.log import get_logger
from common.message import Message
from common.metrics import new_registry
from common.modules import ModuleContext
from common.quic import serve_nodes_quic
from common.reliable import Advanced, Keepalive, NodeQueue, Resolved
from common.resource import add_node_prefix, node_of, parse_edge_resource, trim_node_prefix
from common.transport import NodeConnection, serve_nodes, server_tls_for

log = get_logger("cloudhub")

_NO_ACK_RESOURCES: Final = ("podlist", "membership", "twin/cloud_updated", "serviceaccounttoken", "k8s/ca.crt")
_NODE_SCOPED_TYPES: Final = frozenset({ResourceType.NODE, ResourceType.NODESTATUS, ResourceType.NODEPATCH,
                                       ResourceType.LEASE})


def needs_ack(message: Message) -> bool:
    """Replies (`response`, `error`) and some resources are fire-and-forget (ref/protocol.md 4.2).

    Upstream ACKs replies that carry an object too, but a reply is consumed by the edge module waiting
    for it and nothing at the edge ACKs it (upstream's edge neither): it would be re-sent for nothing.
    A lost reply costs the asker one timeout, after which it asks again or answers from its store.
    """
    if message.operation in (Op.RESPONSE, Op.ERROR) or message.group == Group.USER:
        return False
    return not any(marker in message.resource for marker in _NO_ACK_RESOURCES)


# `node/<node>/<ns>/<type>/<name>` -> that object's current message (the edgecontroller's caches).
Lookup: TypeAlias = Callable[[str], Message | None]

_METASERVER: Final = "metaserver"  # source of edge MetaServer Applications
_FLUSH_TIMEOUT: Final = 2.0  # seconds to persist a leaving node's ACKs before its lease is released
_SENT_MEMORY: Final = 1024  # per node: written messages kept until ACKed, to record their ObjectSync


@dataclass
class _Session:
    connection: NodeConnection
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    sent_by_msg_id: OrderedDict[str, Message] = field(default_factory=OrderedDict)


class CloudHubModule:
    name = CloudModule.CLOUDHUB
    group = CloudModule.CLOUDHUB

    def __init__(self, config: CloudHubConfig, kube: ApiClient, lookup: Lookup | None = None,
                 metrics: CloudHubMetrics | None = None) -> None:
        self.config = config
        # Always present (a registry of its own unless cloudcore's is given), so the hot path never checks.
        self.metrics = metrics or CloudHubMetrics(new_registry())
        self.listening = False  # every enabled listener is up (cloudcore's /readyz)
        self.kube = kube
        self.lookup = lookup
        self.queues: dict[str, NodeQueue] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self.sessions: dict[str, _Session] = {}
        self.syncs = ObjectSyncStore(kube)
        # Several cloudcores on one control plane (cloudHub.nodeLease, docs/ha.md): a node is served only
        # by the instance holding its Lease. None (the default) is the single-instance hub, unchanged.
        self.ownership: NodeOwnership | None = None
        lease = config.node_lease
        if lease.enable:
            self.ownership = NodeOwnership(CoordinationV1Api(kube), lease.namespace,
                                           lease.identity or instance_identity(), float(lease.lease_duration_seconds),
                                           float(lease.renew_interval_seconds), self._lease_lost)
        self._ctx: ModuleContext | None = None

    # -- lifetime -----------------------------------------------------------------------------------
    async def run(self, ctx: ModuleContext) -> None:
        self._ctx = ctx
        hub = self.config
        pki = await prepare_cloud_pki(self.kube, hub)
        refresher = TokenRefresher(self.kube, pki.ca, hub.token_refresh_duration)
        await refresher.start()
        certs = CertServer.from_config(hub, pki.ca, pki.server, self.kube)
        server = quic_server = None
        # The ObjectSync writers outlive the listeners: sessions ending at shutdown still get their ACKs
        # written (and, with node leases, flushed before the lease is released).
        writers = asyncio.create_task(self.syncs.run(), name="objectsync-writers")
        try:
            if hub.https.enable:
                await certs.start()
            if hub.websocket.enable:
                server = await serve_nodes(self._session, hub.websocket.address, hub.websocket.port,
                                           server_tls_for(pki.ca.cert, pki.server))
                log.info("websocket server listening", address=f"{hub.websocket.address}:{hub.websocket.port}")
            if hub.quic.enable:
                quic_server = await serve_nodes_quic(self._session, hub.quic.address, hub.quic.port, pki.ca.cert,
                                                     pki.server, max_incoming_streams=hub.quic.max_incoming_streams)
                log.info("quic server listening", address=f"{hub.quic.address}:{hub.quic.port}")
            self.listening = True
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_watch(writers))
                tasks.create_task(self._route_downstream(ctx))
                if self.ownership is not None:
                    log.info("node leases on: serving only nodes whose lease this instance holds",
                             identity=self.ownership.identity, namespace=self.ownership.namespace)
                    tasks.create_task(self.ownership.run())
        finally:
            self.listening = False
            for listener in (server, quic_server):
                if listener is not None:
                    listener.close()
                    await listener.wait_closed()
            writers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writers
            await certs.stop()
            await refresher.stop()

    async def _route_downstream(self, ctx: ModuleContext) -> None:
        while True:
            message = await ctx.mailbox.get()
            try:
                node = node_of(message.resource)
            except ResourceError as exc:
                log.warning("message without a node resource dropped", msg_id=message.msg_id, err=exc)
                continue
            await self.load_queue(node)
            self.enqueue(node, message)

    async def load_queue(self, node: str) -> NodeQueue:
        """The node's queue; made on first use with the RVs the node acked before (ObjectSync)."""
        queue = self.queues.get(node)
        if queue is not None:
            return queue
        # One loader per node: a second caller (the node's session racing a downstream message) must not
        # make an empty queue and enqueue into it before the acked versions are in.
        lock = self._loading.setdefault(node, asyncio.Lock())
        async with lock:
            queue = self.queues.get(node)
            if queue is None:
                acked = await self.syncs.load(node)
                queue = self.queues[node] = NodeQueue(resolve=partial(self._current, node),
                                                      on_ack_rtt=self.metrics.ack_latency.observe)
                queue.load_acked(acked)
                log.v(2).info("node queue ready", node=node, acked_objects=len(acked))
        self._loading.pop(node, None)
        return queue

    def _current(self, node: str, key: str) -> Resolved | None:
        """The queue dropped `key`'s content under memory pressure and its turn has come: the object's
        current state from the edgecontroller's informer cache, or None (nothing to send any more)."""
        message = None if self.lookup is None else self.lookup(add_node_prefix(node, key))
        if message is None:
            log.v(2).info("dropped queue content not in the cache; nothing to send", node=node, key=key)
            return None
        rv = message.header.resource_version
        return message.with_resource(key), int(rv) if rv.isdigit() else None, message.operation == Op.DELETE

    def queue_of(self, node: str) -> NodeQueue:
        """The node's queue, made by `load_queue` (so it always starts from the node's acked RVs)."""
        return self.queues[node]

    def enqueue(self, node: str, message: Message) -> None:
        """Queue a cloud-internal message (`node/<node>/...`) for its node, after `load_queue`; wakes the
        node's writer. An update the edge already has in substance (HEADER_EDGE_HAS_IT) is recorded as
        acknowledged, ObjectSync included, when the queue allows it, and sent as usual otherwise."""
        wire = message.with_resource(trim_node_prefix(message.resource))
        rv = message.header.resource_version
        queue = self.queue_of(node)
        if message.header.type == HEADER_EDGE_HAS_IT:
            wire = wire._replace(header=wire.header._replace(type=""))
            advanced = queue.advance(wire.resource, int(rv)) if rv.isdigit() else Advanced.NO
            if advanced is Advanced.NOW:
                self.syncs.record(node, wire, int(rv), deleted=False)
            if advanced is not Advanced.NO:  # ON_ACK: recorded with the ACK of the message in flight
                log.v(4).info("edge has it; not sent", node=node, msg_id=message.msg_id, resource=wire.resource,
                              rv=rv, acked=advanced.value)
                return
        result = queue.enqueue(wire.resource, wire, rv=int(rv) if rv.isdigit() else None,
                               delete=message.operation == Op.DELETE, needs_ack=needs_ack(message))
        log.v(4).info("queued", node=node, msg_id=message.msg_id, resource=wire.resource, result=result.value)
        session = self.sessions.get(node)
        if session is not None:
            session.wakeup.set()

    # -- one connected node -------------------------------------------------------------------------
    async def _session(self, connection: NodeConnection) -> None:
        node = connection.node
        previous = self.sessions.get(node)
        if previous is not None:
            log.info("replacing the older connection of the node", node=node)
            await previous.connection.close("replaced by a newer connection")
        if len(self.sessions) >= self.config.node_limit and previous is None:
            log.warning("node limit reached, connection refused", node=node, limit=self.config.node_limit)
            await connection.close("cloudcore node limit reached")
            return
        queue = await self.load_queue(node)
        token = object()
        if self.ownership is not None and not await self._claim(node, connection, queue, token):
            return
        session = self.sessions[node] = _Session(connection)
        keepalive = Keepalive(self.config.keepalive_interval, self.config.keepalive_interval, now=time.monotonic())
        log.info("node connected", node=node)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._reader(session, keepalive))
                tasks.create_task(self._writer(session))
                tasks.create_task(self._watchdog(session, keepalive))
        except* (websockets.ConnectionClosed, _Disconnect, OSError) as closed:
            log.info("node disconnected", node=node, reason=_reason(closed))
        finally:
            if self.sessions.get(node) is session:
                del self.sessions[node]
            self.queue_of(node).disconnected()
            if self.ownership is not None:
                await self._unclaim(node, token)

    async def _claim(self, node: str, connection: NodeConnection, queue: NodeQueue, token: object) -> bool:
        """Take the node's lease before serving it; refuse the connection if another instance holds it.
        After another instance served the node, its acked versions are read again from ObjectSync."""
        assert self.ownership is not None
        try:
            claim = await self.ownership.acquire(node, token)
        except OwnershipError as exc:
            log.warning("node lease unavailable, connection refused", node=node, err=exc)
            await connection.close(f"{TRY_ANOTHER}: node lease unavailable")
            return False
        if not claim.granted:
            log.info("node served by another cloudcore, connection refused", node=node, holder=claim.holder,
                     expires_in_s=f"{claim.remaining:.1f}")
            await connection.close(f"{TRY_ANOTHER}: node served by {claim.holder}")
            return False
        if claim.taken_over:
            try:
                acked = await self.syncs.fresh(node)
            except (ApiException, OSError, TimeoutError, aiohttp.ClientError) as exc:
                log.warning("cannot read the node's acked versions; connection refused", node=node, err=exc)
                await self._unclaim(node, token)
                await connection.close(f"{TRY_ANOTHER}: acked versions unavailable")
                return False
            dropped = queue.take_over(acked)
            log.info("node taken over", node=node, acked_objects=len(acked), dropped_already_acked=dropped)
        log.info("node lease held", node=node, identity=self.ownership.identity)
        return True

    async def _unclaim(self, node: str, token: object) -> None:
        """The session ended: its ACKs are written, then its lease released for the next instance."""
        assert self.ownership is not None
        log.info("node session ended", node=node)  # nothing more is written to the node from here on
        if node not in self.sessions:
            await self.syncs.flush(node, _FLUSH_TIMEOUT)
        await self.ownership.release(node, token)

    async def _lease_lost(self, node: str, why: str) -> None:
        """Another instance may serve the node now: end our session at once."""
        session = self.sessions.get(node)
        if session is not None:
            with contextlib.suppress(TimeoutError, OSError, websockets.ConnectionClosed):
                async with asyncio.timeout(_FLUSH_TIMEOUT):
                    await session.connection.close(f"node lease lost: {why}")

    async def _reader(self, session: _Session, keepalive: Keepalive) -> None:
        node = session.connection.node
        received = self.metrics.received.count
        while True:
            try:
                message = await session.connection.recv()
            except MessageDecodeError as exc:
                log.warning("malformed message from the edge ignored", node=node, err=exc)
                continue
            keepalive.seen(time.monotonic())
            if message.operation == Op.KEEPALIVE:
                received(message.route.resource, Op.KEEPALIVE)
                continue
            acked = None
            if message.operation == Op.RESPONSE:
                acked = self.queue_of(node).ack(message.parent_msg_id, time.monotonic())
            if acked is not None:
                session.wakeup.set()  # a window slot is free
                sent = session.sent_by_msg_id.pop(message.parent_msg_id, None)
                if sent is not None:
                    self.syncs.record(node, sent, acked.rv, acked.delete)
                log.v(4).info("acked", node=node, msg_id=message.parent_msg_id)
                continue  # counted by the queues (kubeedge_cloudhub_acks_total), not per message here
            received(message.route.resource, message.route.operation)
            await self._upstream(node, message)

    async def _upstream(self, node: str, message: Message) -> None:
        if message.source in CLOUD_MODULES:
            log.warning("message claiming a cloud source dropped", node=node, msg_id=message.msg_id)
            return
        if message.source != _METASERVER and not self._own_resource(node, message):
            return
        routed = message.with_resource(add_node_prefix(node, message.resource))
        target = {"twin": CloudModule.DEVICECONTROLLER, _METASERVER: CloudModule.DYNAMICCONTROLLER}.get(
            message.source, CloudModule.EDGECONTROLLER)
        assert self._ctx is not None
        try:
            await self._ctx.bus.send_to_group(target, routed)
        except BusError as exc:
            log.v(2).info("upstream message not delivered", node=node, msg_id=message.msg_id, target=target, err=exc)

    @staticmethod
    def _own_resource(node: str, message: Message) -> bool:
        """A well-formed resource, and not another node's Node or Lease. (A MetaServer's Application has
        resource `null`; the dynamiccontroller checks what it asks for.)"""
        try:
            resource = parse_edge_resource(message.resource)
        except ResourceError as exc:
            log.warning("message with a bad resource refused", node=node, msg_id=message.msg_id, err=exc)
            return False
        if resource.type in _NODE_SCOPED_TYPES and resource.name and resource.name != node:
            log.warning("message for another node's resource refused", node=node, msg_id=message.msg_id,
                        resource=message.resource)
            return False
        return True

    async def _writer(self, session: _Session) -> None:
        connection, queue = session.connection, self.queue_of(session.connection.node)
        sent = self.metrics.sent.count
        while True:
            outgoing = queue.next_message(time.monotonic())
            if outgoing is None:
                session.wakeup.clear()
                deadline = queue.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(session.wakeup.wait(), timeout)
                continue
            async with asyncio.timeout(self.config.write_timeout):
                await connection.send(outgoing.message)
            sent(outgoing.message.route.resource, outgoing.message.route.operation)
            session.sent_by_msg_id[outgoing.message.msg_id] = outgoing.message
            if (not outgoing.is_resend and outgoing.message.operation != Op.DELETE
                    and queue.acked_rv(outgoing.key) is None):
                # As upstream: the edge may store this object even if its ACK is lost, so its ObjectSync
                # exists (at RV 0) from the first send; a restarted cloudcore can then still tell the edge
                # about the object's deletion.
                self.syncs.record(connection.node, outgoing.message, 0, deleted=False)
            while len(session.sent_by_msg_id) > _SENT_MEMORY:
                session.sent_by_msg_id.popitem(last=False)
            if outgoing.is_resend:
                log.v(2).info("resent", node=connection.node, msg_id=outgoing.message.msg_id,
                              attempt=outgoing.attempt)

    async def _watchdog(self, session: _Session, keepalive: Keepalive) -> None:
        while not keepalive.expired(time.monotonic()):  # noqa: ASYNC110 - the deadline moves with each keepalive
            await asyncio.sleep(max(0.05, keepalive.expires_at - time.monotonic()))
        await session.connection.close("keepalive timeout")
        raise _Disconnect(f"no keepalive for {keepalive.timeout:g}s")


async def _watch(task: asyncio.Task[None]) -> None:
    """Fail the caller's task group if `task` fails, without cancelling `task` when the group is."""
    await asyncio.shield(task)


class _Disconnect(Exception):
    """The session ends on our side (keepalive timeout)."""


def _reason(group: BaseExceptionGroup[BaseException]) -> str:
    return "; ".join(f"{type(e).__name__}: {e}" for e in group.exceptions)[:200]
