"""Node lifecycle controller: notices nodes that stopped reporting, and says so on the node and its pods.

Owns the kubelet-owned node conditions when the kubelet (edged, through cloudcore) is silent, the
`node.kubernetes.io/unreachable` taints, and the Ready condition of pods on such nodes. A node's
last sign of life is the newest of its kube-node-lease Lease renewTime, its Ready condition's
lastHeartbeatTime and the moment this controller first saw the node (so a control plane restart
does not condemn every node at once). When that is older than the grace period (40 s by default):
Ready, MemoryPressure, DiskPressure and PIDPressure become Unknown with reason NodeStatusUnknown and
"Kubelet stopped posting node status." (a node that never reported gets Ready Unknown,
NodeStatusNeverUpdated). While Ready is Unknown the node carries unreachable:NoSchedule and
unreachable:NoExecute; they go as soon as the node reports Ready again. Pods on an unreachable node
get Ready=False (kube's MarkPodsNotReady) so Services stop sending them traffic.

What it must never do: evict or delete pods. KubeEdge's edge autonomy keeps pods running on a
disconnected edge node, and they must still be there when it reconnects, so there is no
tolerationSeconds-based eviction (the NoExecute taint is informational here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Final

from cloudcore.controlplane.api.objects import ObjectAPI
from cloudcore.controlplane.controllers import kit
from cloudcore.controlplane.controllers.kit import Controller, Informers, Snapshot
from cloudcore.controlplane.controllers.scheduler import NO_EXECUTE, NO_SCHEDULE, TAINT_UNREACHABLE
from cloudcore.controlplane.store.types import Key

LEASE_GR: Final = "leases.coordination.k8s.io"
LEASE_NAMESPACE: Final = "kube-node-lease"
DEFAULT_GRACE: Final = 40.0
KUBELET_CONDITIONS: Final = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
STOPPED: Final = "Kubelet stopped posting node status."
NEVER: Final = "Kubelet never posted node status."


def last_heartbeat(node: dict[str, Any], lease: dict[str, Any] | None) -> float | None:
    """The newest of the lease's renewTime and the Ready condition's lastHeartbeatTime."""
    times = []
    if lease is not None:
        times.append(kit.parse_time((lease.get("spec") or {}).get("renewTime")))
    ready = kit.condition(node, "Ready")
    if ready is not None:
        times.append(kit.parse_time(ready.get("lastHeartbeatTime")))
    known = [t for t in times if t is not None]
    return max(known) if known else None


def mark_unknown(node: dict[str, Any], stamp: str) -> bool:
    """Set the kubelet's conditions to Unknown as kube does for a silent node; True if anything changed."""
    conditions: list[dict[str, Any]] = node.setdefault("status", {}).setdefault("conditions", [])
    changed = False
    present = {c.get("type") for c in conditions}
    if "Ready" not in present:
        conditions.append({"type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                           "message": NEVER, "lastHeartbeatTime": node["metadata"].get("creationTimestamp"),
                           "lastTransitionTime": stamp})
        changed = True
    for cond in conditions:
        if cond.get("type") in KUBELET_CONDITIONS and cond.get("status") != "Unknown":
            cond.update(status="Unknown", reason="NodeStatusUnknown", message=STOPPED, lastTransitionTime=stamp)
            changed = True
    return changed


def set_unreachable_taints(node: dict[str, Any], unreachable: bool, stamp: str) -> bool:
    """Add (or remove) the unreachable NoSchedule and NoExecute taints; True if anything changed."""
    spec = node.setdefault("spec", {})
    taints: list[dict[str, Any]] = list(spec.get("taints") or [])
    kept = [t for t in taints if t.get("key") != TAINT_UNREACHABLE]
    if unreachable:
        wanted = [{"key": TAINT_UNREACHABLE, "effect": NO_SCHEDULE},
                  {"key": TAINT_UNREACHABLE, "effect": NO_EXECUTE, "timeAdded": stamp}]
        have = {t.get("effect") for t in taints if t.get("key") == TAINT_UNREACHABLE}
        if have == {NO_SCHEDULE, NO_EXECUTE}:
            return False
        spec["taints"] = [*kept, *wanted]
        return True
    if len(kept) == len(taints):
        return False
    if kept:
        spec["taints"] = kept
    else:
        spec.pop("taints", None)
    return True


def _pod_node_index(snapshot: Snapshot) -> Iterable[str]:
    node = snapshot.stored.fields.get("spec.nodeName")
    if node is None:
        node = (snapshot.obj.get("spec") or {}).get("nodeName")
    return (str(node),) if node else ()


class NodeLifecycleController(Controller):
    name = "node-lifecycle-controller"
    workers = 1

    def __init__(self, objects: ObjectAPI, informers: Informers, *, grace_period: float = DEFAULT_GRACE,
                 **kwargs: Any) -> None:
        super().__init__(objects, informers, **kwargs)
        self.grace_period = grace_period
        self.node_info = self.info("", "v1", "nodes")
        self.pod_info = self.info("", "v1", "pods")
        self.nodes = self.watch("nodes", kit.same_key)
        # Lease renewals only postpone the next check, which reads the lease then: no event needed.
        self.leases = self.watch(LEASE_GR, lambda old, new: ())
        self.pods = self.watch("pods", self._pod_changed)
        self.pods.add_index("node", _pod_node_index)
        self.summaries = kit.pod_summaries(self.pods)
        self._first_seen: dict[str, float] = {}
        self._unreachable: set[str] = set()

    def _pod_changed(self, old: Snapshot | None, new: Snapshot | None) -> Iterable[Key]:
        if new is None:
            return ()
        node = next(iter(_pod_node_index(new)), None)
        if node is None or node not in self._unreachable or not self.summaries.of(new).ready:
            return ()
        return (Key("nodes", "", node),)

    async def reconcile(self, key: Key) -> float | None:
        name = key.name
        stored = self.nodes.get(key)
        if stored is None:
            self._first_seen.pop(name, None)
            self._unreachable.discard(name)
            return None
        now = self.wall()
        stamp = kit.rfc3339(now)
        first_seen = self._first_seen.setdefault(name, now)
        node = stored.decode()
        lease_stored = self.leases.get(Key(LEASE_GR, LEASE_NAMESPACE, name))
        heartbeat = last_heartbeat(node, lease_stored.decode() if lease_stored is not None else None)
        alive_at = max(first_seen, heartbeat or 0.0)
        left = alive_at + self.grace_period - now
        if left <= 0:
            updated = await self.mutate(self.node_info, key, lambda obj: mark_unknown(obj, stamp), "status")
            if updated is not None and updated.rv != stored.rv:
                self.log.info("node stopped posting status; marked Unknown", node=name,
                              silent_for=round(now - alive_at, 1))
                node = updated.decode()
        ready = kit.condition(node, "Ready")
        unreachable = ready is not None and ready.get("status") == "Unknown"
        await self.mutate(self.node_info, key, lambda obj: set_unreachable_taints(obj, unreachable, stamp))
        if unreachable:
            self._unreachable.add(name)
            await self._mark_pods_not_ready(name, stamp)
        else:
            self._unreachable.discard(name)
        return left + 0.1 if left > 0 else None

    async def _mark_pods_not_ready(self, node: str, stamp: str) -> None:
        def change(pod: dict[str, Any]) -> bool:
            if (pod.get("spec") or {}).get("nodeName") != node:
                return False
            for cond in (pod.get("status") or {}).get("conditions") or ():
                if cond.get("type") == "Ready" and cond.get("status") != "False":
                    cond.update(status="False", lastTransitionTime=stamp)
                    return True
            return False

        found = (self.summaries.get(k) for k in self.pods.index_keys("node", node))
        ready = [p.key for p in found if p is not None and p.ready]
        if ready:
            self.log.info("marking pods on an unreachable node not ready", node=node, pods=len(ready))
        results = await asyncio.gather(*(self.mutate(self.pod_info, k, change, "status") for k in ready),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
