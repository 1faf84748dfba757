"""Watch subscriptions of edge MetaServers: kinds the node does not sync by itself, streamed to it as they change.

An edge app watching, say, a custom resource through its MetaServer makes the MetaServer send a `watch`
Application. The first subscription of a kind starts one cluster-wide informer for it (shared by all
nodes); every subscribed node then gets the current objects and each later change as ordinary resource
messages (`node/<node>/<ns|null>/<lowercase kind>/<name>`, insert/update/delete, the object's RV), so
its CloudHub queue dedups, ACKs and resends them like everything else, and MetaManager stores them for
the MetaServer to serve, offline too. A subscription is for a namespace or for all; it lasts while
cloudcore runs (the edge renews its watches on every reconnect, as upstream's SyncWatchAppOnConnected).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final

from cloudcore.edgecontroller.informer import Event, EventType, Informer
from cloudcore.edgecontroller.kinds import Kind, Object, namespace_of, rv_of, with_type_meta
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from common.constants import NAMESPACE_CLUSTER_SCOPED, CloudModule, Group, Op
from common.log import get_logger
from common.message import Message
from common.resource import build_resource

log = get_logger("dynamiccontroller")

_OPERATIONS: Final = {EventType.ADDED: Op.INSERT, EventType.MODIFIED: Op.UPDATE, EventType.DELETED: Op.DELETE}

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

    def __init__(self, client: KubeJSON, push: Push, tasks: asyncio.TaskGroup) -> None:
        self.client = client
        self._push = push
        self._tasks = tasks
        self._feeds: dict[Resource, _Feed] = {}
        self._starting: dict[Resource, asyncio.Lock] = {}

    async def subscribe(self, node: str, resource: Resource, namespace: str) -> None:
        """Start sending `node` the objects of `resource` (in `namespace`, or all when empty)."""
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
        namespace = namespace_of(event.obj)
        for node, wanted in list(feed.namespaces_by_node.items()):
            if "" in wanted or namespace in wanted:
                await self._push(self._message(node, feed.informer.kind, operation, event.obj))

    @staticmethod
    def _message(node: str, kind: Kind, operation: str, obj: Object) -> Message:
        namespace = namespace_of(obj) if kind.namespaced else NAMESPACE_CLUSTER_SCOPED
        name = str((obj.get("metadata") or {}).get("name") or "")
        return Message.new(source=CloudModule.DYNAMICCONTROLLER, group=Group.RESOURCE, operation=operation,
                           resource=build_resource(node, namespace, kind.type, name),
                           content=with_type_meta(kind, obj), resource_version=rv_of(obj))
