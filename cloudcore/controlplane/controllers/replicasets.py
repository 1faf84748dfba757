"""ReplicaSet controller: keeps spec.replicas pods of a ReplicaSet's template, and its status.

Owns pods a ReplicaSet controls (ownerReference controller=true to it): creates them from the
template (generateName `<rs>-`, template labels and annotations, the ownerReference) in slow-start
batches, deletes the extra ones preferring unscheduled, then pending, then not-ready, then the most
recently ready and the newest pods (kube's ranking), adopts orphan pods its selector matches and
releases owned pods it no longer matches. Status: replicas, fullyLabeledReplicas, readyReplicas
(Ready condition True), availableReplicas (ready for minReadySeconds), observedGeneration, and the
ReplicaFailure condition when pods cannot be created. It works from the pods informer's shared pod
summaries and wakes only for pod changes that matter to it (labels, owner, readiness, deletion),
coalesced over 0.2 s, so thousands of pods turning ready cost a handful of syncs.

What it must never do: touch pods another controller owns, create or delete pods for a
ReplicaSet being deleted (the garbage collector removes those), or count terminating or finished
pods as replicas.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable, Mapping
from typing import Any, Final

from cloudcore.controlplane.api.errors import APIError
from cloudcore.controlplane.api.objects import ObjectAPI
from cloudcore.controlplane.api.selectors import LabelSelector
from cloudcore.controlplane.controllers import kit
from cloudcore.controlplane.controllers.kit import Controller, Informers, PodSummary, SelectorCache, Snapshot
from cloudcore.controlplane.store.types import Key, StoredObject

RS_GR: Final = "replicasets.apps"
# At most this many pods created or deleted per sync (kube's burstReplicas).
BURST: Final = 500
# Pod events are gathered this long before a sync: pods turning ready one by one make one sync.
COALESCE: Final = 0.2
_PHASE_RANK: Final = {"Pending": 0, "Unknown": 1, "Running": 2}


def pod_from_template(owner: dict[str, Any], template: dict[str, Any], generate_name: str) -> dict[str, Any]:
    """A new pod of `template` controlled by `owner` (a ReplicaSet or DaemonSet)."""
    meta = template.get("metadata") or {}
    pod_meta: dict[str, Any] = {"generateName": generate_name, "namespace": owner["metadata"]["namespace"],
                                "labels": dict(meta.get("labels") or {}),
                                "ownerReferences": [kit.owner_reference(owner)]}
    if meta.get("annotations"):
        pod_meta["annotations"] = dict(meta["annotations"])
    if meta.get("finalizers"):
        pod_meta["finalizers"] = list(meta["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": copy.deepcopy(template.get("spec") or {})}


def deletion_rank(pod: PodSummary) -> tuple[Any, ...]:
    """Sort key: the pods to delete first sort first (kube's ActivePodsWithRanks, without co-location)."""
    return (bool(pod.node), _PHASE_RANK.get(pod.phase, 1), pod.ready, pod.deletion_cost, -(pod.ready_since or 0.0),
            -pod.restarts, -pod.created, pod.key.name)


def _rs_view(pod: PodSummary) -> tuple[Any, ...]:
    """What of a pod a ReplicaSet's sync depends on: other changes (binding, IPs) do not wake it."""
    return pod.labels, pod.controller_uid, pod.active, pod.ready, pod.ready_since


def labels_cover(template_labels: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in template_labels.items())


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    workers = 2

    def __init__(self, objects: ObjectAPI, informers: Informers, **kwargs: Any) -> None:
        super().__init__(objects, informers, **kwargs)
        self.rs_info = self.info("apps", "v1", "replicasets")
        self.pod_info = self.info("", "v1", "pods")
        self.replicasets = self.watch(RS_GR, kit.same_key)
        self.replicasets.add_index("namespace", kit.namespace_index)
        self.pods = self.watch("pods", self._pod_changed, coalesce=COALESCE)
        self.pods.add_index("controller", kit.controller_uid_index)
        self.pods.add_index("orphans", kit.orphan_namespace_index)
        self.summaries = kit.pod_summaries(self.pods)
        self._selectors = SelectorCache()

    # -- events --
    def _pod_changed(self, old: Snapshot | None, new: Snapshot | None) -> Iterable[Key]:
        before = self.summaries.of(old) if old is not None else None
        after = self.summaries.of(new) if new is not None else None
        if before is not None and after is not None and _rs_view(before) == _rs_view(after):
            return ()
        keys: set[Key] = set()
        for pod in (before, after):
            if pod is None:
                continue
            if pod.controller_uid:
                if pod.controller_kind == "ReplicaSet":
                    keys.add(Key(RS_GR, pod.key.namespace, pod.controller_name))
            elif pod is after and not pod.deleting:
                keys.update(self._matching(pod.key.namespace, pod.labels))
        return keys

    def _matching(self, namespace: str, labels: Mapping[str, str]) -> list[Key]:
        """ReplicaSets in `namespace` whose selector matches `labels` (candidates to adopt an orphan)."""
        found = []
        for stored in self.replicasets.by_index("namespace", namespace):
            selector = self._selector(stored)
            if selector is not None and not selector.empty and selector.matches(labels):
                found.append(stored.key)
        return found

    def _selector(self, stored: StoredObject) -> LabelSelector | None:
        return self._selectors.get(stored)

    # -- reconcile --
    async def reconcile(self, key: Key) -> float | None:
        stored = self.replicasets.get(key)
        if stored is None:
            self._selectors.forget(key)
            return None
        selector = self._selector(stored)
        if selector is None:
            self.log.info("replicaset has an invalid selector; not managing it", rs=f"{key.namespace}/{key.name}")
            return None
        rs = stored.decode()
        failure: tuple[str, APIError] | None = None
        if not rs["metadata"].get("deletionTimestamp"):
            pods = await self._claim(rs, selector)
            failure = await self._manage(rs, [p for p in pods if p.active])
        again = await self._sync_status(key, rs, failure)
        if failure is not None:
            raise failure[1]
        return again

    def _owned(self, uid: str) -> list[PodSummary]:
        found = (self.summaries.get(k) for k in self.pods.index_keys("controller", uid))
        return [p for p in found if p is not None and p.controller_uid == uid]

    async def _claim(self, rs: dict[str, Any], selector: LabelSelector) -> list[PodSummary]:
        """The pods this ReplicaSet controls after adopting matching orphans and releasing the others."""
        meta = rs["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        claimed: list[PodSummary] = []
        for pod in self._owned(uid):
            if selector.matches(pod.labels) or pod.deleting:
                claimed.append(pod)
            else:
                await self._release(pod.key, uid)
        orphans = [s for s in self.pods.by_index("orphans", namespace) if selector.matches(s.labels)]
        if orphans and not selector.empty:
            fresh = self.objects.store.get(Key(RS_GR, namespace, meta["name"]))
            if fresh is None or fresh.uid != uid:
                return claimed
            for orphan in orphans:
                adopted = await self._adopt(orphan.key, rs)
                if adopted is not None:
                    claimed.append(adopted)
        return claimed

    async def _adopt(self, key: Key, rs: dict[str, Any]) -> PodSummary | None:
        def change(pod: dict[str, Any]) -> bool:
            if pod["metadata"].get("deletionTimestamp") or kit.controller_of(pod) is not None:
                return False
            pod["metadata"].setdefault("ownerReferences", []).append(kit.owner_reference(rs))
            return True

        await self.mutate(self.pod_info, key, change)
        pod = self.summaries.get(key)
        if pod is None or pod.controller_uid != rs["metadata"]["uid"]:
            return None
        self.log.v(2).info("adopted pod", pod=f"{key.namespace}/{key.name}", rs=rs["metadata"]["name"])
        return pod

    async def _release(self, key: Key, uid: str) -> None:
        def change(obj: dict[str, Any]) -> bool:
            refs = obj["metadata"].get("ownerReferences") or []
            kept = [r for r in refs if r.get("uid") != uid]
            if len(kept) == len(refs):
                return False
            obj["metadata"]["ownerReferences"] = kept
            return True

        await self.mutate(self.pod_info, key, change)

    async def _manage(self, rs: dict[str, Any], active: list[PodSummary]) -> tuple[str, APIError] | None:
        """Create or delete pods towards spec.replicas; the API error that stopped it, with its reason."""
        replicas = int((rs.get("spec") or {}).get("replicas", 1))
        diff = len(active) - replicas
        name = rs["metadata"]["name"]
        if diff < 0:
            try:
                await self._create_pods(rs, min(-diff, BURST))
            except APIError as exc:
                return "FailedCreate", exc
        elif diff > 0:
            victims = sorted(active, key=deletion_rank)[:min(diff, BURST)]
            self.log.v(2).info("deleting pods", rs=name, count=len(victims))
            results = await asyncio.gather(
                *(self.delete(self.pod_info, p.key.namespace, p.key.name, uid=p.uid) for p in victims),
                return_exceptions=True)
            try:
                _raise_first(results)
            except APIError as exc:
                return "FailedDelete", exc
        return None

    async def _create_pods(self, rs: dict[str, Any], count: int) -> None:
        """Slow start: batches of 1, 2, 4, ... so a template that cannot be created fails fast."""
        template = (rs.get("spec") or {}).get("template") or {}
        name = rs["metadata"]["name"]
        self.log.v(2).info("creating pods", rs=name, count=count)
        batch, created = 1, 0
        while created < count:
            size = min(batch, count - created)
            results = await asyncio.gather(
                *(self.create(self.pod_info, rs["metadata"]["namespace"], pod_from_template(rs, template, f"{name}-"))
                  for _ in range(size)), return_exceptions=True)
            _raise_first(results)
            created += size
            batch *= 2

    async def _sync_status(self, key: Key, rs: dict[str, Any], failure: tuple[str, APIError] | None) -> float | None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        now = self.wall()
        active = [p for p in self._owned(rs["metadata"]["uid"]) if p.active]
        ready = available = labelled = 0
        again: float | None = None
        for pod in active:
            labelled += labels_cover(template_labels, pod.labels)
            ready += pod.ready
            is_available, left = pod.available(min_ready, now)
            available += is_available
            if left is not None:
                again = left if again is None else min(again, left)
        figures: dict[str, Any] = {"replicas": len(active), "fullyLabeledReplicas": labelled, "readyReplicas": ready,
                                   "availableReplicas": available,
                                   "observedGeneration": rs["metadata"].get("generation", 1)}
        stamp = kit.rfc3339(now)

        def change(obj: dict[str, Any]) -> bool:
            if obj["metadata"].get("uid") != rs["metadata"]["uid"]:
                return False
            status = obj.setdefault("status", {})
            before = copy.deepcopy(status)
            for field, value in figures.items():
                if value or field in ("replicas", "observedGeneration"):
                    status[field] = value
                else:
                    status.pop(field, None)
            conditions = [c for c in status.get("conditions") or () if c.get("type") != "ReplicaFailure"]
            if failure is not None and failure[1].reason not in ("Conflict", "NotFound", "AlreadyExists"):
                old = kit.condition(obj, "ReplicaFailure")
                conditions.append({"type": "ReplicaFailure", "status": "True", "reason": failure[0],
                                   "message": failure[1].message,
                                   "lastTransitionTime": old.get("lastTransitionTime", stamp) if old else stamp})
            if conditions:
                status["conditions"] = conditions
            else:
                status.pop("conditions", None)
            return bool(status != before)

        await self.mutate(self.rs_info, key, change, "status")
        return again


def _raise_first(results: list[Any]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result
