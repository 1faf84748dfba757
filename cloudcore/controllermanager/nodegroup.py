"""NodeGroup controller: labels member nodes `apps.kubeedge.io/belonging-to=<group>`, releases leavers
(label removed, the group's pods on them deleted), keeps `status.nodeStatuses`, and owns the finalizer.

Informers: NodeGroups and Nodes. A Node event queues every group it concerns (membership.groups_for_node);
one worker syncs groups one at a time, and every label write carries the Node's resourceVersion, so two
groups (or two cloudcores) never both take a node: the loser gets a conflict and syncs again. What it must
never do: relabel a node another group holds, or delete a pod that is not the group's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cloudcore.controllermanager import keys
from cloudcore.controllermanager.membership import belongs_to, groups_for_node, labels_of, plan_group, plan_release
from cloudcore.controllermanager.workers import run_workers
from cloudcore.controllermanager.workqueue import KeyQueue
from cloudcore.edgecontroller.informer import Event, EventType, Informer
from cloudcore.edgecontroller.kinds import NODE, POD, Object, meta, name_of, namespace_of, rv_of
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from common.log import get_logger

log = get_logger("controllermanager")


class NodeGroupController:
    def __init__(self, client: KubeJSON, workers: int = 1) -> None:
        self.client = client
        self.queue = KeyQueue()
        self.workers = workers
        self.groups = Informer(client, keys.NODEGROUP, self._on_group)
        self.nodes = Informer(client, NODE, self._on_node)
        self.synced = asyncio.Event()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.nodes.run(), name="nodegroup:nodes")
            await self.nodes.synced.wait()
            tasks.create_task(self.groups.run(), name="nodegroup:groups")
            await self.groups.synced.wait()
            self.synced.set()
            tasks.create_task(run_workers(self.queue, self.sync, count=self.workers, name="nodegroup"))

    # -- events -------------------------------------------------------------------------------------
    async def _on_group(self, event: Event) -> None:
        await self.queue.add(event.key)

    async def _on_node(self, event: Event) -> None:
        before = labels_of(event.old) if event.old is not None else {}
        now = {} if event.type in (EventType.DELETED, EventType.DROPPED) else labels_of(event.obj)
        ready_changed = event.old is None or _ready(event.old) != _ready(event.obj)
        if before == now and not ready_changed:
            return
        for group in groups_for_node(event.key, now, before, self.groups.cache.items()):
            await self.queue.add(group)

    # -- sync ---------------------------------------------------------------------------------------
    async def sync(self, name: str) -> None:
        group = self.groups.cache.get(name)
        if group is None:
            return  # gone: its finalizer ran first (or it never had one; nothing of ours is left to keep)
        if meta(group).get("deletionTimestamp"):
            await self._release_all(name, group)
            return
        if keys.FINALIZER not in (meta(group).get("finalizers") or []):
            group = await self._patch_group(name, {"metadata": {
                "finalizers": [*(meta(group).get("finalizers") or []), keys.FINALIZER],
                "resourceVersion": rv_of(group)}})
        plan = plan_group(name, group, self.nodes.cache)
        for node in plan.unlabel:
            await self._release(name, node)
        for node in plan.label:
            await self._set_label(node, name)
        if (group.get("status") or {}).get("nodeStatuses") != plan.node_statuses:
            await self._patch_group(name, {"status": {"nodeStatuses": plan.node_statuses}}, subresource="status")
        log.v(3).info("nodegroup synced", group=name, labelled=len(plan.label), released=len(plan.unlabel))

    async def _release_all(self, name: str, group: Object) -> None:
        for node in plan_release(name, self.nodes.cache):
            await self._release(name, node)
        finalizers = [f for f in meta(group).get("finalizers") or [] if f != keys.FINALIZER]
        if len(finalizers) != len(meta(group).get("finalizers") or []):
            await self._patch_group(name, {"metadata": {"finalizers": finalizers, "resourceVersion": rv_of(group)}})
        log.info("nodegroup released its nodes", group=name)

    async def _release(self, group: str, node_name: str) -> None:
        """Take the label off (if it is still this group's) and delete the group's pods on the node."""
        node = self.nodes.cache.get(node_name)
        if node is not None and belongs_to(node) == group:
            await self._set_label(node_name, None)
        await self.evict(group, node_name)

    async def evict(self, group: str, node_name: str) -> int:
        pods = await self.client.get(POD.collection_path(), {"fieldSelector": f"spec.nodeName={node_name}"})
        evicted = 0
        for pod in pods.get("items") or []:
            selector = (pod.get("spec") or {}).get("nodeSelector") or {}
            if selector.get(keys.BELONGING_TO) != group or meta(pod).get("deletionTimestamp"):
                continue
            try:
                await self.client.delete(POD.object_path(namespace_of(pod), name_of(pod)))
                evicted += 1
            except KubeError as exc:
                if not exc.not_found:
                    raise
        if evicted:
            log.info("evicted the group's pods from a node that left it", group=group, node=node_name, pods=evicted)
        return evicted

    async def _set_label(self, node_name: str, group: str | None) -> None:
        node = self.nodes.cache.get(node_name)
        if node is None:
            return
        patch = {"metadata": {"resourceVersion": rv_of(node), "labels": {keys.BELONGING_TO: group}}}
        updated = await self.client.patch(NODE.object_path("", node_name), patch)
        await self.nodes.offer(updated)

    async def _patch_group(self, name: str, patch: Object, subresource: str = "") -> Object:
        updated = await self.client.patch(keys.NODEGROUP.object_path("", name, subresource), patch)
        await self.groups.offer(updated)
        return updated


def _ready(node: Any) -> str:
    for condition in ((node or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status"))
    return ""
