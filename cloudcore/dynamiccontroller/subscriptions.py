"""Watch subscriptions of edge MetaServers: kinds the node does not sync by itself, streamed to it as they change.

An edge app watching, say, a custom resource through its MetaServer makes the MetaServer send a `watch`
Application. The first subscription of a kind starts one cluster-wide informer for it (shared by all
nodes); every subscribed node then gets the current objects and each later change as ordinary resource
messages (`node/<node>/<ns|null>/<lowercase kind>/<name>`, insert/update/delete, the object's RV), so
its CloudHub queue dedups, ACKs and resends them like everything else, and MetaManager stores them for
the MetaServer to serve, offline too. A subscription is for a namespace or for all; it lasts while
cloudcore runs (the edge renews its watches on every reconnect, as upstream's SyncWatchAppOnConnected).

EndpointSlices and Endpoints go out as each node's view (topology.py: the node-group filter, then the
`default/kubernetes` rewrite of filters.py); their feed starts only once the filter's index is ready,
and `refilter` re-sends the views a membership or annotation change altered. Events out of order
(cloudcore/edgecontroller/topology.py) have the Service's floor raised to a fresh cluster revision and
its views re-sent (`_heal`, one task per Service, bounded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final

from cloudcore.dynamiccontroller.topology import Change, EndpointTopology, is_endpoint_kind, is_endpoint_resource
from cloudcore.edgecontroller.endpointfilter import (
    objects_of,
    refilter_after_move,
    service_of,
    settled_above,
    unsettled,
)
from cloudcore.edgecontroller.filters import for_edge
from cloudcore.edgecontroller.informer import Event, EventType, Informer
from cloudcore.edgecontroller.kinds import Kind, Object, namespace_of, rv_of, with_type_meta
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from cloudcore.edgecontroller.topology import GroupMove, ServiceKey, is_late, parse_rv
from common.constants import NAMESPACE_CLUSTER_SCOPED, CloudModule, Group, Op
from common.log import get_logger
from common.message import Message
from common.resource import build_resource

log = get_logger("dynamiccontroller")

_OPERATIONS: Final = {EventType.ADDED: Op.INSERT, EventType.MODIFIED: Op.UPDATE, EventType.DELETED: Op.DELETE}
READY_TIMEOUT: Final = 10.0  # a subscription to endpoints waits this long for the filter's index
MAX_HEALS: Final = 256
HEAL_ATTEMPTS: Final = 120
HEAL_POLL: Final = 1.0

Push = Callable[[Message], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str


@dataclass
class _Feed:
    informer: Informer
    namespaces_by_node: dict[str, set[str]] = field(default_factory=dict)  # "" = every namespace


async def discover(client: KubeJSON, resource: Resource) -> Kind:
    """The Kind of a resource from API discovery (its kind name and whether it is namespaced)."""
    base = f"/apis/{resource.group}/{resource.version}" if resource.group else f"/api/{resource.version}"
    listing = await client.get(base)
    for entry in listing.get("resources") or []:
        if entry.get("name") == resource.plural:
            kind = str(entry.get("kind") or "")
            return Kind(kind.lower(), kind, resource.group, resource.version, resource.plural,
                        namespaced=bool(entry.get("namespaced")))
    raise KubeError(404, "NotFound", f"the server has no resource {resource.plural} in {base}")


class Subscriptions:
    """One informer per subscribed kind, fanned out to the nodes that asked; tasks owned by `tasks`."""

    def __init__(self, client: KubeJSON, push: Push, tasks: asyncio.TaskGroup, topology: EndpointTopology) -> None:
        self.client = client
        self._push = push
        self._tasks = tasks
        self._topology = topology
        self._heals: set[ServiceKey] = set()
        self._feeds: dict[Resource, _Feed] = {}
        self._starting: dict[Resource, asyncio.Lock] = {}

    async def subscribe(self, node: str, resource: Resource, namespace: str) -> None:
        """Start sending `node` the objects of `resource` (in `namespace`, or all when empty)."""
        if is_endpoint_resource(resource.group, resource.plural) and \
                not await self._topology.wait_ready(READY_TIMEOUT):
            raise KubeError(503, "ServiceUnavailable", "the node-group endpoint filter is not synced yet")
        feed = await self._feed(resource)
        wanted = feed.namespaces_by_node.setdefault(node, set())
        if namespace in wanted or "" in wanted:
            return
        wanted.add(namespace)
        log.info("subscribed", node=node, resource=f"{resource.plural}.{resource.group}", namespace=namespace or "*")
        if feed.informer.synced.is_set():  # else the initial list reaches it through the handler
            for obj in list(feed.informer.cache.values()):
                if not namespace or namespace_of(obj) == namespace:
                    await self._push(self._message(node, feed.informer.kind, Op.INSERT, obj))

    async def _feed(self, resource: Resource) -> _Feed:
        feed = self._feeds.get(resource)
        if feed is not None:
            return feed
        async with self._starting.setdefault(resource, asyncio.Lock()):
            feed = self._feeds.get(resource)
            if feed is None:
                kind = await discover(self.client, resource)
                feed = self._feeds[resource] = _Feed(Informer(self.client, kind, partial(self._fan_out, resource)))
                informer = feed.informer
                self._tasks.create_task(informer.run(), name=f"dynamiccontroller:{kind.plural}")
                log.info("watching a kind for edge nodes", kind=kind.kind, group=kind.group)
        return feed

    async def _fan_out(self, resource: Resource, event: Event) -> None:
        operation = _OPERATIONS.get(event.type)
        if operation is None:
            return
        feed = self._feeds[resource]
        if event.type is EventType.MODIFIED and is_endpoint_kind(feed.informer.kind):
            service = service_of(feed.informer.kind.type, event.obj)
            if is_late(self._topology.index, service, event.obj):
                assert service is not None
                self._start_heal(service)
        namespace = namespace_of(event.obj)
        for node, wanted in list(feed.namespaces_by_node.items()):
            if "" in wanted or namespace in wanted:
                await self._push(self._message(node, feed.informer.kind, operation, event.obj))

    async def refilter(self, change: Change) -> None:
        """Re-send the endpoint views that `change` (a node's group move, or a Service's annotation
        toggled, or a heal's raised floor) altered, to the subscribed nodes concerned."""
        index = self._topology.index
        for resource, feed in list(self._feeds.items()):
            kind = feed.informer.kind
            if not is_endpoint_kind(kind):
                continue
            objects = [(kind.type, obj) for obj in feed.informer.cache.values()]
            nodes = sorted(feed.namespaces_by_node)
            if isinstance(change, GroupMove):
                targets = refilter_after_move(index, change, objects, nodes)
            else:
                targets = [(node, kind_type, obj) for kind_type, obj in objects_of(change, objects) for node in nodes]
            sent = 0
            for node, _, obj in targets:
                wanted = feed.namespaces_by_node.get(node, set())
                if "" in wanted or namespace_of(obj) in wanted:
                    await self._push(self._message(node, kind, Op.UPDATE, obj))
                    sent += 1
            log.v(2).info("endpoint views re-sent", resource=resource.plural, messages=sent)
            for service in unsettled(index, objects, None if isinstance(change, GroupMove) else [change]):
                self._start_heal(service)

    def _endpoint_objects(self) -> list[tuple[str, Object]]:
        return [(feed.informer.kind.type, obj) for feed in self._feeds.values() if is_endpoint_kind(feed.informer.kind)
                for obj in feed.informer.cache.values()]

    def _start_heal(self, service: ServiceKey) -> None:
        if service in self._heals or len(self._heals) >= MAX_HEALS:
            return
        self._heals.add(service)
        self._tasks.create_task(self._heal(service), name=f"dynamiccontroller:heal:{service[0]}/{service[1]}")

    async def _heal(self, service: ServiceKey) -> None:
        """Wait for a cluster revision above the Service's floor, raise it there, re-send its views."""
        try:
            for _ in range(HEAL_ATTEMPTS):
                try:
                    listed = await self.client.get("/api/v1/namespaces", {"limit": "1"})
                except KubeError as exc:
                    log.v(2).info("cluster revision not read, retrying", err=exc)
                else:
                    revision = parse_rv(str((listed.get("metadata") or {}).get("resourceVersion") or ""))
                    index = self._topology.index
                    if revision > settled_above(index, service, self._endpoint_objects()) and \
                            index.raise_floor(service, revision):
                        await self.refilter(service)
                        return
                await asyncio.sleep(HEAL_POLL)
            log.warning("endpoint views not re-sent: the cluster revision did not move",
                        service=f"{service[0]}/{service[1]}")
        finally:
            self._heals.discard(service)

    def _message(self, node: str, kind: Kind, operation: str, obj: Object) -> Message:
        namespace = namespace_of(obj) if kind.namespaced else NAMESPACE_CLUSTER_SCOPED
        name = str((obj.get("metadata") or {}).get("name") or "")
        view = for_edge(kind, self._topology.view(kind, obj, node))
        return Message.new(source=CloudModule.DYNAMICCONTROLLER, group=Group.RESOURCE, operation=operation,
                           resource=build_resource(node, namespace, kind.type, name),
                           content=with_type_meta(kind, view), resource_version=rv_of(view))
