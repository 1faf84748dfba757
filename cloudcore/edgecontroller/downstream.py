"""Cloud to edge: one informer per kind, the planner deciding who gets what, the pushes to CloudHub.

Owns the informers and their start order: edge Nodes and node-group members (Nodes labelled
`apps.kubeedge.io/belonging-to`, edge or not: the endpoint filter's index) first (every other kind is
routed by them), then Services (which of them ask for range-nodegroup filtering), then
Endpoints/EndpointSlices and pods, then ConfigMaps/Secrets once the pods' references are known (their
informers keep only referenced objects). So no EndpointSlice goes out before the filter knows its
Service and the groups. At start every kept object is pushed as an
insert; CloudHub's node queues skip what each node already acknowledged (ObjectSync), so a restart
costs messages only for objects that changed meanwhile. After that each event is pushed as it comes.

Also answers `lookup(resource)` from the caches: the current message for one node's object, for
CloudHub's queue to re-create content it dropped under memory pressure.

Endpoint events out of order (planner `heal`, topology.py): a task per Service (at most `MAX_HEALS` at
once, owned by `run`'s task group) reads the cluster's current revision until it is above the Service's
floor and newest object (once a second, at most `HEAL_ATTEMPTS` times; any write in the cluster, a node
lease renewal say, moves it), then the Service's views go out again at that revision.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Final

from cloudcore.edgecontroller.informer import Event, Informer
from cloudcore.edgecontroller.kinds import (
    BROADCAST_KINDS,
    BY_TYPE,
    CONFIGMAP,
    NODE,
    POD,
    SECRET,
    SERVICE,
    Kind,
    cache_key,
)
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from cloudcore.edgecontroller.messages import push_message
from cloudcore.edgecontroller.planner import Plan, Planner, Push, is_edge_node
from cloudcore.edgecontroller.refs import ObjectRef
from cloudcore.edgecontroller.resync import list_records, stale_copies
from cloudcore.edgecontroller.sender import Sender
from cloudcore.edgecontroller.topology import ServiceKey, has_group, parse_rv
from common.constants import Op
from common.errors import ResourceError
from common.log import get_logger
from common.message import Message
from common.resource import parse_resource

log = get_logger("edgecontroller")

SYNC_REPORT_EVERY: Final = 30.0
_FETCH_ATTEMPTS: Final = 3
MAX_HEALS: Final = 256
HEAL_ATTEMPTS: Final = 120
HEAL_POLL: Final = 1.0


class Downstream:
    def __init__(self, client: KubeJSON, sender: Sender) -> None:
        self.client = client
        self.sender = sender
        self.planner = Planner({})
        self.nodes = Informer(client, NODE, self._on_node, keep=is_edge_node)
        self.group_members = Informer(client, NODE, self._on_group_member, keep=has_group)
        self.pods = Informer(client, POD, self._on_pod, keep=self.planner.wants_pod)
        self.objects = {
            kind.type: Informer(
                client, kind, partial(self._on_object, kind), keep=partial(self.planner.wants_object, kind)
            )
            for kind in (CONFIGMAP, SECRET)
        }
        self.broadcast = {
            kind.type: Informer(client, kind, partial(self._on_broadcast, kind)) for kind in BROADCAST_KINDS
        }
        self.informers = {NODE.type: self.nodes, POD.type: self.pods, **self.objects, **self.broadcast}
        self.planner.caches = {kind_type: informer.cache for kind_type, informer in self.informers.items()}
        self._tasks: asyncio.TaskGroup | None = None
        self._heals: dict[ServiceKey, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Run every informer (owned by this task group) in dependency order, until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            tasks.create_task(self.nodes.run(), name="edgecontroller:nodes")
            tasks.create_task(self.group_members.run(), name="edgecontroller:nodegroup-members")
            await _wait_synced(self.nodes)
            await _wait_synced(self.group_members)
            services = self.broadcast[SERVICE.type]
            tasks.create_task(services.run(), name=f"edgecontroller:{SERVICE.type}")
            await _wait_synced(services)
            # Views sent by an earlier cloudcore carry floors below both lists' RVs (topology.py); a change
            # missed by the earlier list of the two comes as an event with a higher RV than the base.
            self.planner.topology.base_floor = min(parse_rv(self.group_members.rv), parse_rv(services.rv))
            for informer in (*(i for i in self.broadcast.values() if i is not services), self.pods):
                tasks.create_task(informer.run(), name=f"edgecontroller:{informer.kind.type}")
            await _wait_synced(self.pods)
            for informer in self.objects.values():
                tasks.create_task(informer.run(), name=f"edgecontroller:{informer.kind.type}")
            for informer in (*self.objects.values(), *self.broadcast.values()):
                await _wait_synced(informer)
            await self._resync()

    async def _resync(self) -> None:
        """Deletes for what nodes may still hold of objects deleted while cloudcore was down (resync.py)."""
        try:
            records = await list_records(self.client)
        except KubeError as exc:
            log.warning("object sync records not listed; deletions made while cloudcore was down are not "
                        "sent", err=exc)
            return
        pushes = stale_copies(records, self.lookup)
        for push in pushes:
            await self._push(push)
        log.info("start-up resync done", records=len(records), deletes=len(pushes))

    # -- informer handlers -------------------------------------------------------------------------
    async def _on_node(self, event: Event) -> None:
        log.v(2).info("edge node event", node=event.key, event=event.type.value)
        await self._execute(self.planner.node_event(event))

    async def _on_group_member(self, event: Event) -> None:
        await self._execute(self.planner.group_event(event))

    async def _on_pod(self, event: Event) -> None:
        await self._execute(self.planner.pod_event(event))

    async def _on_object(self, kind: Kind, event: Event) -> None:
        await self._execute(self.planner.object_event(kind, event))

    async def _on_broadcast(self, kind: Kind, event: Event) -> None:
        await self._execute(self.planner.broadcast_event(kind, event))

    async def _execute(self, plan: Plan) -> None:
        # Order matters for the edge: ConfigMaps/Secrets a pod needs are queued before the pod itself.
        for ref in plan.fetch:
            await self._fetch(ref)
        for push in plan.pushes:
            await self._push(push)
        for key in plan.forget_pods:
            self.pods.forget(key)
        for node in plan.backfill:
            await self._backfill_pods(node)
        for service in plan.heal:
            self._start_heal(service)

    def _start_heal(self, service: ServiceKey) -> None:
        if service in self._heals or self._tasks is None:
            return
        if len(self._heals) >= MAX_HEALS:
            log.warning("too many late endpoint updates pending; this one waits for the Service's next change",
                        service=f"{service[0]}/{service[1]}")
            return
        task = self._tasks.create_task(self._heal(service), name=f"edgecontroller:heal:{service[0]}/{service[1]}")
        self._heals[service] = task

    async def _heal(self, service: ServiceKey) -> None:
        try:
            for _ in range(HEAL_ATTEMPTS):
                try:
                    listed = await self.client.get("/api/v1/namespaces", {"limit": "1"})
                except KubeError as exc:
                    log.v(2).info("cluster revision not read, retrying", err=exc)
                else:
                    revision = parse_rv(str((listed.get("metadata") or {}).get("resourceVersion") or ""))
                    if revision > self.planner.heal_threshold(service):
                        log.v(2).info("endpoint events out of order: views sent again",
                                      service=f"{service[0]}/{service[1]}", rv=revision)
                        await self._execute(self.planner.heal(service, revision))
                        return
                await asyncio.sleep(HEAL_POLL)
            log.warning("endpoint views not re-sent: the cluster revision did not move",
                        service=f"{service[0]}/{service[1]}")
        finally:
            self._heals.pop(service, None)

    async def _push(self, push: Push) -> None:
        message = push_message(push)
        if await self.sender.send(message):
            log.v(3).info(
                "pushed",
                node=push.node,
                msg_id=message.msg_id,
                operation=push.operation,
                resource=message.resource,
                rv=message.header.resource_version,
            )

    async def _fetch(self, ref: ObjectRef) -> None:
        """A node started using an object the informer did not keep: read it once, then the watch has it."""
        informer = self.objects[ref.type]
        if not informer.synced.is_set() or cache_key(ref.namespace, ref.name) in informer.cache:
            return  # the initial list, or the event that cached it, reaches every node using it
        path = informer.kind.object_path(ref.namespace, ref.name)
        for attempt in range(1, _FETCH_ATTEMPTS + 1):
            try:
                obj = await self.client.get(path)
            except KubeError as exc:
                if exc.not_found:
                    return  # created later: its ADDED event is wanted then
                log.warning("referenced object not read", resource=path, err=exc, attempt=attempt)
                await asyncio.sleep(0.5 * attempt)
                continue
            await informer.offer(obj)
            return
        log.error("referenced object not read; its nodes get it with its next change or by querying it", resource=path)

    async def _backfill_pods(self, node: str) -> None:
        """A node just became an edge node: its pods were not kept until now."""
        if not self.pods.synced.is_set():
            return  # the initial list is still to come and will keep them
        query = {"fieldSelector": f"spec.nodeName={node}"}
        try:
            found = await self.client.get(POD.collection_path(), query)
        except KubeError as exc:
            log.warning("pods of a new edge node not listed; they follow with their next change", node=node, err=exc)
            return
        for pod in found.get("items") or []:
            await self.pods.offer(pod)

    # -- cache lookups -----------------------------------------------------------------------------
    def lookup(self, resource: str) -> Message | None:
        """The current message (op update) of one node's object, `node/<node>/<ns>/<type>/<name>`; None
        when the cache does not hold it or the node may not have it."""
        try:
            parsed = parse_resource(resource)
        except ResourceError:
            return None
        kind = BY_TYPE.get(parsed.type)
        informer = self.informers.get(parsed.type)
        if kind is None or informer is None:
            return None
        namespace = parsed.namespace if kind.namespaced else ""
        obj = informer.cache.get(cache_key(namespace, parsed.name))
        if obj is None or not self.planner.authorized(parsed.node, kind, namespace, parsed.name, obj):
            return None
        return push_message(Push(parsed.node, Op.UPDATE, kind, self.planner.view(parsed.node, kind, obj)))


async def _wait_synced(informer: Informer) -> None:
    while True:
        try:
            async with asyncio.timeout(SYNC_REPORT_EVERY):
                await informer.synced.wait()
            return
        except TimeoutError:
            log.warning("informer not synced yet, waiting", kind=informer.kind.kind)
