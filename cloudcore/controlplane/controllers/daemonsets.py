"""DaemonSet controller: one pod of the template on every eligible node, rolled when the template changes.

Owns the pods a DaemonSet controls. A node is eligible with the scheduler's own filters
(nodeSelector, required node affinity, NoSchedule/NoExecute taints), where the pod tolerates, on
top of its template's tolerations, what kube gives every daemon pod: node.kubernetes.io/not-ready
and /unreachable with any effect, the disk/memory/pid-pressure and unschedulable NoSchedule taints
(and network-unavailable for host-network pods). A NoSchedule taint it does not tolerate stops new
pods there but keeps a running one; a NoExecute one, or a selector that stopped matching, removes
it. Daemon pods are bound directly (spec.nodeName set at creation, as kube did before 1.12): the
scheduler never sees them, so the node's resources are not checked.

Each pod carries `controller-revision-hash` (the template hash, the same function as Deployments)
and `pod-template-generation`. RollingUpdate replaces pods of an older hash node by node while at
most maxUnavailable (percent of the desired nodes, rounded up; at least 1) nodes lack an available
pod; pods that are not available are replaced first. OnDelete leaves old pods alone. A new pod
waits for a terminating one on its node to be gone. Failed pods are deleted and replaced; pods on
nodes that no longer exist are deleted.

Status: desiredNumberScheduled, currentNumberScheduled, numberMisscheduled, numberReady,
numberAvailable, numberUnavailable, updatedNumberScheduled, observedGeneration.

What it must never do: adopt or delete pods it does not control, or place more than one pod of a
DaemonSet on a node.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from cloudcore.controlplane.api.objects import ObjectAPI
from cloudcore.controlplane.controllers import kit
from cloudcore.controlplane.controllers.deployments import scaled_value, template_hash
from cloudcore.controlplane.controllers.kit import Controller, Informers, PodSummary, Snapshot
from cloudcore.controlplane.controllers.replicasets import COALESCE, pod_from_template
from cloudcore.controlplane.controllers.scheduler import (
    NO_EXECUTE,
    NO_SCHEDULE,
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    NodeView,
    match_node_selector,
    scheduling_fields,
    untolerated_taint,
)
from cloudcore.controlplane.store.types import Key

DS_GR: Final = "daemonsets.apps"
HASH_LABEL: Final = "controller-revision-hash"
GENERATION_LABEL: Final = "pod-template-generation"
_DAEMON_TOLERATIONS: Final = (
    {"key": TAINT_NOT_READY, "operator": "Exists"},
    {"key": TAINT_UNREACHABLE, "operator": "Exists"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": NO_SCHEDULE},
)
_NETWORK_UNAVAILABLE: Final = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
                               "effect": NO_SCHEDULE}


def daemon_pod_spec(template_spec: dict[str, Any]) -> dict[str, Any]:
    """The template's pod spec with the tolerations every daemon pod gets."""
    spec = copy.deepcopy(template_spec)
    tolerations = spec.setdefault("tolerations", [])
    wanted = [*_DAEMON_TOLERATIONS, *((_NETWORK_UNAVAILABLE,) if spec.get("hostNetwork") else ())]
    for toleration in wanted:
        if not any(t.get("key") == toleration["key"] and t.get("effect") == toleration.get("effect")
                   for t in tolerations):
            tolerations.append(dict(toleration))
    return spec


def should_run(spec: dict[str, Any], node: NodeView) -> tuple[bool, bool]:
    """(a new daemon pod may go to the node, a running one may stay there)."""
    if not match_node_selector(spec, node):
        return False, False
    tolerations = spec.get("tolerations") or ()
    if untolerated_taint(node.taints, tolerations) is None:
        return True, True
    return False, untolerated_taint(node.taints, tolerations, (NO_EXECUTE,)) is None


@dataclass(slots=True)
class _NodePods:
    active: list[PodSummary] = field(default_factory=list)
    terminating: int = 0
    failed: list[PodSummary] = field(default_factory=list)


class DaemonSetController(Controller):
    name = "daemonset-controller"
    workers = 2

    def __init__(self, objects: ObjectAPI, informers: Informers, **kwargs: Any) -> None:
        super().__init__(objects, informers, **kwargs)
        self.ds_info = self.info("apps", "v1", "daemonsets")
        self.pod_info = self.info("", "v1", "pods")
        self.daemonsets = self.watch(DS_GR, kit.same_key)
        self.pods = self.watch("pods", self._pod_changed, coalesce=COALESCE)
        self.pods.add_index("controller", kit.controller_uid_index)
        self.summaries = kit.pod_summaries(self.pods)
        self.nodes = self.watch("nodes", self._node_changed)
        self._views: dict[str, NodeView] = {}

    def _pod_changed(self, old: Snapshot | None, new: Snapshot | None) -> Iterable[Key]:
        keys = set()
        for snapshot in (old, new):
            if snapshot is None or b'"ownerReferences"' not in snapshot.stored.raw:
                continue
            pod = self.summaries.of(snapshot)
            if pod.controller_kind == "DaemonSet":
                keys.add(Key(DS_GR, snapshot.key.namespace, pod.controller_name))
        return keys

    def _node_changed(self, old: Snapshot | None, new: Snapshot | None) -> Iterable[Key]:
        if new is None:
            if old is not None:
                self._views.pop(old.key.name, None)
            return self.daemonsets.keys()
        self._views[new.key.name] = NodeView.of(new.obj)
        if old is not None and scheduling_fields(old.obj) == scheduling_fields(new.obj):
            return ()
        return self.daemonsets.keys()

    async def reconcile(self, key: Key) -> float | None:
        stored = self.daemonsets.get(key)
        if stored is None:
            return None
        ds = stored.decode()
        if ds["metadata"].get("deletionTimestamp"):
            return None
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        pod_spec = daemon_pod_spec(template.get("spec") or {})
        current_hash = template_hash(template)
        placement = {name: should_run(pod_spec, view) for name, view in self._views.items()}
        by_node = self._pods_by_node(ds)
        doomed: list[PodSummary] = []
        wanted: list[str] = []
        for node, pods in by_node.items():
            doomed.extend(pods.failed)
            _, stay = placement.get(node, (False, False))
            if not stay:
                doomed.extend(pods.active)
            elif len(pods.active) > 1:
                doomed.extend(sorted(pods.active, key=lambda p: (p.created, p.key.name))[1:])
        for node, (run, _) in placement.items():
            existing = by_node.get(node)
            if run and (existing is None or (not existing.active and not existing.terminating)):
                wanted.append(node)
        if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
            doomed.extend(self._rolling(ds, by_node, placement, current_hash, doomed))
        await self._apply(ds, pod_spec, current_hash, wanted, doomed)
        return await self._sync_status(key, ds, current_hash)

    def _pods_by_node(self, ds: dict[str, Any]) -> dict[str, _NodePods]:
        by_node: dict[str, _NodePods] = {}
        uid = ds["metadata"]["uid"]
        for key in self.pods.index_keys("controller", uid):
            pod = self.summaries.get(key)
            if pod is None or pod.controller_uid != uid:
                continue
            slot = by_node.setdefault(pod.node, _NodePods())
            if pod.deleting:
                slot.terminating += 1
            elif pod.phase == "Failed":
                slot.failed.append(pod)
            elif not pod.terminal:
                slot.active.append(pod)
        return by_node

    def _rolling(self, ds: dict[str, Any], by_node: dict[str, _NodePods], placement: dict[str, tuple[bool, bool]],
                 current_hash: str, doomed: list[PodSummary]) -> list[PodSummary]:
        """Old-template pods to delete now without exceeding maxUnavailable."""
        spec = ds.get("spec") or {}
        rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        desired = sum(1 for run, _ in placement.values() if run)
        budget = max(1, scaled_value(rolling.get("maxUnavailable", 1), desired, True))
        now = self.wall()
        doomed_uids = {p.uid for p in doomed}
        unavailable = 0
        old_available: list[PodSummary] = []
        out: list[PodSummary] = []
        for node, (run, _) in sorted(placement.items()):
            if not run:
                continue
            pods = [p for p in (by_node.get(node) or _NodePods()).active if p.uid not in doomed_uids]
            if not pods:
                unavailable += 1
                continue
            pod = pods[0]
            available = pod.available(min_ready, now)[0]
            old = pod.labels.get(HASH_LABEL) != current_hash
            if not available:
                unavailable += 1
                if old:
                    out.append(pod)  # not serving anyway: replace it at once
            elif old:
                old_available.append(pod)
        room = budget - unavailable
        out.extend(old_available[:max(0, room)])
        return out

    async def _apply(self, ds: dict[str, Any], pod_spec: dict[str, Any], current_hash: str, wanted: list[str],
                     doomed: list[PodSummary]) -> None:
        meta = ds["metadata"]
        template = copy.deepcopy((ds.get("spec") or {}).get("template") or {})
        template["spec"] = pod_spec
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels[HASH_LABEL] = current_hash
        labels[GENERATION_LABEL] = str(meta.get("generation", 1))
        creations = []
        for node in wanted:
            pod = pod_from_template(ds, template, f"{meta['name']}-")
            pod["spec"]["nodeName"] = node
            creations.append(self.create(self.pod_info, meta["namespace"], pod))
        deletions = [self.delete(self.pod_info, p.key.namespace, p.key.name, uid=p.uid)
                     for p in {p.uid: p for p in doomed}.values()]
        if creations or deletions:
            self.log.v(2).info("syncing daemon pods", ds=f"{meta['namespace']}/{meta['name']}",
                               create=len(creations), delete=len(deletions))
        results = await asyncio.gather(*creations, *deletions, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _sync_status(self, key: Key, ds: dict[str, Any], current_hash: str) -> float | None:
        spec = ds.get("spec") or {}
        pod_spec = daemon_pod_spec((spec.get("template") or {}).get("spec") or {})
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = self.wall()
        by_node = self._pods_by_node(ds)
        desired = current = misscheduled = ready = available = updated = 0
        again: float | None = None
        for name, view in self._views.items():
            run, _ = should_run(pod_spec, view)
            pods = by_node.get(name)
            active = pods.active if pods is not None else []
            desired += run
            if not active:
                continue
            if not run:
                misscheduled += 1
                continue
            current += 1
            pod = active[0]
            ready += pod.ready
            is_available, left = pod.available(min_ready, now)
            available += is_available
            if left is not None:
                again = left if again is None else min(again, left)
            updated += pod.labels.get(HASH_LABEL) == current_hash
        figures = {"desiredNumberScheduled": desired, "currentNumberScheduled": current,
                   "numberMisscheduled": misscheduled, "numberReady": ready,
                   "observedGeneration": ds["metadata"].get("generation", 1)}
        optional = {"numberAvailable": available, "numberUnavailable": desired - available,
                    "updatedNumberScheduled": updated}

        def change(obj: dict[str, Any]) -> bool:
            if obj["metadata"].get("uid") != ds["metadata"]["uid"]:
                return False
            status = obj.setdefault("status", {})
            before = dict(status)
            status.update(figures)
            for name, value in optional.items():
                if value > 0:
                    status[name] = value
                else:
                    status.pop(name, None)
            return bool(status != before)

        await self.mutate(self.ds_info, key, change, "status")
        return again

