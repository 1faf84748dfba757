"""The MetaManager module (group `meta`): stores what the cloud sends, then ACKs; answers edge queries.

Cloud to edge: insert/update/delete of resources arrive from EdgeHub in batches; each batch is one
SQLite transaction (`MetaStore.apply`), and only after it commits does every message get its ACK (a
`response` "OK" with the message's id as parent, sent back through EdgeHub), so an ACKed object is on
disk. A re-sent or older object (resourceVersion not newer than the stored one) is ACKed unwritten.

Edge to cloud: messages from other edge modules go on to EdgeHub unchanged (same msg_id, so the
cloud's reply reaches the sender directly through the bus). A pod status edged reports is also written
into the stored pod (same resourceVersion), so MetaServer serves the status the edge sees: the cloud does
not send a pod back down when only its status changed (cloudcore/edgecontroller/planner.py).

Queries (`query`) are answered here: from the cloud while connected (the answer is stored too), from
SQLite when not or when the cloud fails to answer in `remoteQueryTimeout`.

Every committed change is published on `events` (an `EventHub`) right after the commit, for MetaServer's
watches; `cloud_connected` tells MetaServer whether a write can reach the cloud, and `on_cloud_connected`
callbacks tell it when a connection is made (it renews its watch subscriptions then). MetaServer stores the
objects of kinds the node does not sync, which it reads from the cloud itself, through `apply` and `reconcile`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import orjson

from common.config.edgecore import MetaManager as MetaManagerConfig
from common.constants import (
    CLOUD_CONNECTED,
    CLOUD_MODULES,
    NAMESPACE_CLUSTER_SCOPED,
    NAMESPACE_NODE_DELETE,
    RESOURCE_CLOUD_CONNECTION,
    EdgeModule,
    Group,
    Op,
    ResourceType,
)
from common.errors import BusError, ResourceError
from common.log import get_logger
from common.message import Message
from common.modules import ModuleContext
from common.resource import build_edge_resource, parse_edge_resource
from edgecore.metamanager.events import EventHub
from edgecore.metamanager.store import Applied, MetaChange, MetaStore, parse_rv

log = get_logger("metamanager")

BATCH_LIMIT: Final = 256  # messages per transaction: enough to amortise the commit, small enough to ACK soon
_QUERY_CONCURRENCY: Final = 64
_WRITE_OPS: Final = frozenset({Op.INSERT, Op.UPDATE, Op.DELETE})


class MetaManagerModule:
    name = EdgeModule.METAMANAGER
    group = Group.META

    def __init__(self, config: MetaManagerConfig, store: MetaStore, events: EventHub | None = None) -> None:
        self.config = config
        self.store = store
        self.events = events if events is not None else EventHub()
        self.cloud_connected = False  # as EdgeHub last announced it
        self._queries = asyncio.Semaphore(_QUERY_CONCURRENCY)
        self._applying = asyncio.Lock()
        self._connect_listeners: list[Callable[[], None]] = []

    def on_cloud_connected(self, listener: Callable[[], None]) -> None:
        """Call `listener` (it must not block) each time EdgeHub announces a connection to the cloud."""
        self._connect_listeners.append(listener)

    async def apply(self, changes: Sequence[MetaChange]) -> Applied:
        """Store changes and publish their events. Serialized: MetaStore numbers a batch's events before it
        writes them, so two batches must not overlap, and events must reach watchers in log order."""
        return await self.reconcile(lambda _: _ready(changes))

    async def reconcile(self, plan: Callable[[MetaStore], Awaitable[Sequence[MetaChange]]]) -> Applied:
        """Apply the changes `plan` derives from the store's current state, no other batch in between."""
        async with self._applying:
            applied = await self.store.apply(await plan(self.store))
            self.events.publish(applied.events)
        return applied

    async def run(self, ctx: ModuleContext) -> None:
        async with asyncio.TaskGroup() as tasks:
            while True:
                batch = [await ctx.mailbox.get(), *ctx.mailbox.take_ready(BATCH_LIMIT - 1)]
                stores: list[Message] = []
                for message in batch:
                    if _is_cloud_write(message):
                        stores.append(message)
                    elif message.operation == Op.QUERY and message.source not in CLOUD_MODULES:
                        await self._queries.acquire()
                        tasks.create_task(self._answer_query(ctx, message))
                    else:
                        await self._other(ctx, message)
                if stores:
                    await self._store_and_ack(ctx, stores)

    # -- cloud to edge -------------------------------------------------------------------------------
    async def _store_and_ack(self, ctx: ModuleContext, messages: list[Message]) -> None:
        changes: list[MetaChange] = []
        accepted: list[Message] = []
        for message in messages:
            change = _change_of(message)
            if change is None:
                await self._to_cloud(ctx, message.response("OK"))  # resending a malformed message cannot help
                continue
            changes.append(change)
            accepted.append(message)
        applied = await self.apply(changes)
        for message, fresh in zip(accepted, applied.written, strict=True):
            log.v(4).info("stored" if fresh else "already stored", msg_id=message.msg_id,
                          resource=message.resource, operation=message.operation, rv=message.header.resource_version)
            await self._to_cloud(ctx, message.response("OK"))
            if fresh and _is_pod(message):
                await self._to_edged(ctx, message)

    async def _to_edged(self, ctx: ModuleContext, message: Message) -> None:
        """Hand a stored pod change to Edged, which runs the pods (it reloads them from the store at start)."""
        try:
            await ctx.bus.send_to_group(Group.EDGED, message)
        except BusError as exc:  # no edged on this bus (disabled), or its mailbox stayed full
            log.v(3).info("pod change not handed to edged", msg_id=message.msg_id, resource=message.resource,
                          err=exc)

    # -- edge modules to cloud -----------------------------------------------------------------------
    async def _other(self, ctx: ModuleContext, message: Message) -> None:
        if message.resource == RESOURCE_CLOUD_CONNECTION:
            self.cloud_connected = message.content == CLOUD_CONNECTED
            log.v(2).info("cloud connection", state=message.content)
            if self.cloud_connected:
                for listener in self._connect_listeners:
                    listener()
        elif message.source in CLOUD_MODULES:
            log.v(2).info("cloud message not for the store ignored", msg_id=message.msg_id,
                          operation=message.operation, resource=message.resource)
        else:
            await self._to_cloud(ctx, message)
            if message.operation == Op.UPDATE and _is_type(message, ResourceType.PODSTATUS):
                await self._keep_pod_status(message)

    async def _keep_pod_status(self, report: Message) -> None:
        """Write the reported status into the stored pod of the same UID (none stored: nothing to do)."""
        content = report.content if isinstance(report.content, dict) else {}
        status = content.get("Status")
        try:
            resource = parse_edge_resource(report.resource)
        except ResourceError:
            return
        key = build_edge_resource(resource.namespace, ResourceType.POD, resource.name)

        async def plan(store: MetaStore) -> Sequence[MetaChange]:
            stored = await store.get(key)
            try:
                pod = orjson.loads(stored) if stored else None
            except orjson.JSONDecodeError:
                return []  # not ours to repair; the cloud's next version of the pod replaces it
            if not isinstance(pod, dict) or not isinstance(status, dict) or pod.get("status") == status:
                return []
            if (pod.get("metadata") or {}).get("uid") != content.get("UID"):
                return []  # a newer pod of that name, or the report of one already gone
            return [MetaChange(key, ResourceType.POD, orjson.dumps({**pod, "status": status}).decode(),
                               store.resource_version(key), local=True)]

        await self.reconcile(plan)
        log.v(4).info("pod status kept", msg_id=report.msg_id, resource=key)

    async def _to_cloud(self, ctx: ModuleContext, message: Message) -> None:
        try:
            await ctx.bus.send(self.config.context_send_module, message)
        except BusError as exc:
            log.warning("message for the cloud not handed to edgehub", msg_id=message.msg_id,
                        resource=message.resource, err=exc)
            if ctx.bus.is_waiting(message.msg_id):
                ctx.bus.respond(message.error_response(f"cannot reach edgehub: {exc}"))

    async def _answer_query(self, ctx: ModuleContext, query: Message) -> None:
        try:
            answer = await self._query_cloud(ctx, query) if self.cloud_connected else None
            if answer is None:
                answer = await self._query_local(query)
            if not ctx.bus.respond(answer):
                log.v(2).info("query answered after its sender stopped waiting", msg_id=query.msg_id)
        finally:
            self._queries.release()

    async def _query_cloud(self, ctx: ModuleContext, query: Message) -> Message | None:
        # A fresh id: the reply must come back here (to be stored), not straight to the sender.
        remote = Message.new(source=query.source, group=query.group, operation=Op.QUERY, resource=query.resource,
                             content=query.content)
        try:
            reply = await ctx.bus.request(self.config.context_send_module, remote,
                                          float(self.config.remote_query_timeout))
        except (TimeoutError, BusError) as exc:
            log.warning("cloud did not answer a query; answering from the edge store", msg_id=query.msg_id,
                        resource=query.resource, err=exc)
            return None
        if reply.operation == Op.ERROR:
            return query.error_response(str(reply.content))
        change = _object_change(query.resource, reply.content)
        if change is not None:
            await self.apply([change])
        return query.response(reply.content)

    async def _query_local(self, query: Message) -> Message:
        value = await self.store.get(query.resource)
        if value is None:
            return query.error_response(f"{query.resource} not found in the edge store")
        return query.response(orjson.loads(value))


async def _ready(changes: Sequence[MetaChange]) -> Sequence[MetaChange]:
    return changes


def _is_pod(message: Message) -> bool:
    return _is_type(message, ResourceType.POD)


def _is_type(message: Message, resource_type: str) -> bool:
    try:
        return parse_edge_resource(message.resource).type == resource_type
    except ResourceError:
        return False


def _is_cloud_write(message: Message) -> bool:
    return message.source in CLOUD_MODULES and message.operation in _WRITE_OPS


def _change_of(message: Message) -> MetaChange | None:
    if message.operation == Op.DELETE:
        try:
            resource = parse_edge_resource(message.resource)
        except ResourceError as exc:
            log.warning("delete with a bad resource ACKed unstored", msg_id=message.msg_id, err=exc)
            return None
        metadata = message.content.get("metadata") if isinstance(message.content, dict) else None
        rv = parse_rv(message.header.resource_version) or (
            parse_rv(metadata.get("resourceVersion")) if isinstance(metadata, dict) else None)
        key = message.resource
        if resource.type == ResourceType.NODE and resource.namespace == NAMESPACE_NODE_DELETE:
            # Upstream deletes a Node as `namespace/node/<n>`; it was stored under its insert's `null/node/<n>`.
            key = build_edge_resource(NAMESPACE_CLUSTER_SCOPED, ResourceType.NODE, resource.name)
        return MetaChange(key, resource.type, None, rv)
    change = _object_change(message.resource, message.content, message.header.resource_version)
    if change is None:
        log.warning("object without a valid resource or content ACKed unstored", msg_id=message.msg_id,
                    resource=message.resource)
    return change


def _object_change(resource_string: str, content: object, rv_text: str = "") -> MetaChange | None:
    try:
        resource = parse_edge_resource(resource_string)
    except ResourceError:
        return None
    if not isinstance(content, dict) or not resource.name:
        return None
    metadata = content.get("metadata")
    rv = parse_rv(rv_text) or (parse_rv(metadata.get("resourceVersion")) if isinstance(metadata, dict) else None)
    return MetaChange(resource_string, resource.type, orjson.dumps(content).decode(), rv)
