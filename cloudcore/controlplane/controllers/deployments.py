"""Deployment controller: rolls a Deployment's pod template out through ReplicaSets, and its status.

Owns the ReplicaSets a Deployment controls. The ReplicaSet of the current template is
`<deployment>-<pod-template-hash>` (the hash: FNV-1a of the canonical template JSON and the
collision count, spelt in kube's safe alphabet), with the `pod-template-hash` label added to its
selector and template, an ownerReference (controller=true) and the
`deployment.kubernetes.io/revision` / `desired-replicas` / `max-replicas` annotations. A template
change makes a new ReplicaSet (or revives the old one with the same template: a rollback) with the
next revision number.

RollingUpdate: the new ReplicaSet grows while the sum over all ReplicaSets stays within
replicas + maxSurge (percentages round up); old ones shrink while replicas - maxUnavailable pods
stay available (percentages round down; both zero means maxUnavailable 1), unhealthy old
replicas first. A ReplicaSet counts as max(spec.replicas, status.replicas) pods and at most
spec.replicas available ones, so a pod not yet deleted or a stale status never lets it overshoot.
Recreate: old ReplicaSets go to zero and their pods must be gone before the new one scales up.
Scaling changes the new ReplicaSet (proportional scaling of a rollout in progress is not done:
the rollout itself converges to the new size). Paused deployments are only scaled.

Status: replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas,
observedGeneration, collisionCount and the Available / Progressing conditions with kube's
reasons (NewReplicaSetCreated, ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded,
DeploymentPaused), which is what `kubectl rollout status` waits on. Old ReplicaSets beyond
revisionHistoryLimit are deleted once scaled to zero and the rollout is complete.

What it must never do: touch pods (the ReplicaSet controller does), or adopt a ReplicaSet another
controller owns.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any, Final

import orjson

from cloudcore.controlplane.api.errors import APIError
from cloudcore.controlplane.api.objects import ObjectAPI
from cloudcore.controlplane.api.selectors import LabelSelector
from cloudcore.controlplane.controllers import kit
from cloudcore.controlplane.controllers.kit import Controller, Informers, SelectorCache, Snapshot
from cloudcore.controlplane.store.types import Key, StoredObject

DEPLOY_GR: Final = "deployments.apps"
RS_GR: Final = "replicasets.apps"
HASH_LABEL: Final = "pod-template-hash"
REVISION: Final = "deployment.kubernetes.io/revision"
DESIRED: Final = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS: Final = "deployment.kubernetes.io/max-replicas"
_NOT_COPIED: Final = frozenset({REVISION, DESIRED, MAX_REPLICAS, "deployment.kubernetes.io/revision-history",
                                "kubectl.kubernetes.io/last-applied-configuration"})
_SAFE_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
_FNV_OFFSET: Final = 0x811C9DC5
_FNV_PRIME: Final = 0x01000193


# ---- pure helpers ------------------------------------------------------------------------------


def template_hash(template: dict[str, Any], collision_count: int | None = None) -> str:
    """The pod-template-hash of a template: stable across processes and Python versions."""
    data = orjson.dumps(template, option=orjson.OPT_SORT_KEYS)
    if collision_count is not None:
        data += str(collision_count).encode()
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return "".join(_SAFE_ALPHABET[ord(ch) % len(_SAFE_ALPHABET)] for ch in str(value))


def without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """The template with the pod-template-hash label taken out, for comparing templates."""
    stripped = copy.deepcopy(template)
    labels = (stripped.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop(HASH_LABEL, None)
    return stripped


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """An IntOrString (3 or "25%") against `total`, rounding like intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = int(text[:-1])
        except ValueError:
            return 0
        scaled = total * percent / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    try:
        return int(text)
    except ValueError:
        return 0


def surge_and_unavailable(deployment: dict[str, Any]) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) in pods for a RollingUpdate deployment (surge up, unavailable down)."""
    spec = deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = scaled_value(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_unavailable(deployment: dict[str, Any]) -> int:
    spec = deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    if (spec.get("strategy") or {}).get("type", "RollingUpdate") != "RollingUpdate" or replicas == 0:
        return 0
    return min(surge_and_unavailable(deployment)[1], replicas)


def revision_of(rs: dict[str, Any]) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def spec_replicas(rs: dict[str, Any]) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0) or 0)


def status_field(obj: dict[str, Any], name: str) -> int:
    return int((obj.get("status") or {}).get(name, 0) or 0)


def pod_count(rs: dict[str, Any]) -> int:
    """Pods a ReplicaSet may have right now: its target, or more while extra pods are still there."""
    return max(spec_replicas(rs), status_field(rs, "replicas"))


def available_count(rs: dict[str, Any]) -> int:
    """Available pods a ReplicaSet is sure to keep: never more than its target."""
    return min(spec_replicas(rs), status_field(rs, "availableReplicas"))


def new_rs_replicas(deployment: dict[str, Any], all_rs: list[dict[str, Any]], new_rs: dict[str, Any]) -> int:
    """What the new ReplicaSet may scale up to now without exceeding replicas + maxSurge."""
    replicas = int((deployment.get("spec") or {}).get("replicas", 1))
    if (deployment["spec"].get("strategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
        return replicas
    surge, _ = surge_and_unavailable(deployment)
    current = sum(pod_count(rs) for rs in all_rs)
    if current >= replicas + surge:
        return spec_replicas(new_rs)
    scale_up = min(replicas + surge - current, max(0, replicas - spec_replicas(new_rs)))
    return spec_replicas(new_rs) + scale_up


def old_scale_down_plan(deployment: dict[str, Any], old: list[dict[str, Any]], new_rs: dict[str, Any]
                        ) -> list[tuple[dict[str, Any], int]]:
    """(old ReplicaSet, new replicas) for the old ones that may shrink now, keeping minimum availability.

    First the unhealthy replicas (target above what is available), then available ones while more
    than replicas - maxUnavailable stay available; oldest ReplicaSets first.
    """
    replicas = int(deployment["spec"].get("replicas", 1))
    _, unavailable = surge_and_unavailable(deployment)
    min_available = replicas - unavailable
    all_rs = [*old, new_rs]
    if sum(spec_replicas(rs) for rs in old) == 0:
        return []
    all_pods = sum(pod_count(rs) for rs in all_rs)
    new_unavailable = spec_replicas(new_rs) - available_count(new_rs)
    budget = all_pods - min_available - new_unavailable
    if budget <= 0:
        return []
    targets = {id(rs): spec_replicas(rs) for rs in old}
    ordered = sorted(old, key=_age)
    cleaned = 0
    for rs in ordered:
        if cleaned >= budget:
            break
        unhealthy = spec_replicas(rs) - available_count(rs)
        if spec_replicas(rs) == 0 or unhealthy <= 0:
            continue
        cut = min(budget - cleaned, unhealthy)
        targets[id(rs)] -= cut
        cleaned += cut
    available = sum(available_count(rs) for rs in all_rs)
    allowed = min(available - min_available, budget - cleaned)
    for rs in ordered:
        if allowed <= 0:
            break
        cut = min(targets[id(rs)], allowed)
        targets[id(rs)] -= cut
        allowed -= cut
    return [(rs, targets[id(rs)]) for rs in ordered if targets[id(rs)] != spec_replicas(rs)]


def _age(rs: dict[str, Any]) -> tuple[float, str]:
    meta = rs["metadata"]
    return kit.parse_time(meta.get("creationTimestamp")) or 0.0, meta.get("name", "")


def complete(deployment: dict[str, Any], status: dict[str, Any]) -> bool:
    replicas = int(deployment["spec"].get("replicas", 1))
    return bool(status.get("updatedReplicas", 0) == replicas and status.get("replicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas
            and status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1))


# ---- the controller ----------------------------------------------------------------------------


class DeploymentController(Controller):
    name = "deployment-controller"
    workers = 2

    def __init__(self, objects: ObjectAPI, informers: Informers, **kwargs: Any) -> None:
        super().__init__(objects, informers, **kwargs)
        self.deploy_info = self.info("apps", "v1", "deployments")
        self.rs_info = self.info("apps", "v1", "replicasets")
        self.deployments = self.watch(DEPLOY_GR, kit.same_key)
        self.deployments.add_index("namespace", kit.namespace_index)
        self.replicasets = self.watch(RS_GR, self._rs_changed)
        self.replicasets.add_index("controller", kit.controller_uid_index)
        self.replicasets.add_index("orphans", kit.orphan_namespace_index)
        self.pods = self.watch("pods", self._pod_changed)
        self.pods.add_index("controller", kit.controller_uid_index)
        self.summaries = kit.pod_summaries(self.pods)
        self._selectors = SelectorCache()

    # -- events --
    def _owner_key(self, snapshot: Snapshot) -> Key | None:
        if b'"ownerReferences"' not in snapshot.stored.raw:
            return None
        ref = kit.controller_of(snapshot.obj)
        if ref is None or ref.get("kind") != "Deployment":
            return None
        return Key(DEPLOY_GR, snapshot.key.namespace, str(ref.get("name", "")))

    def _rs_changed(self, old: Snapshot | None, new: Snapshot | None) -> Iterable[Key]:
        keys: set[Key] = set()
        for snapshot in (old, new):
            if snapshot is None:
                continue
            owner = self._owner_key(snapshot)
            if owner is not None:
                keys.add(owner)
            elif snapshot is new and not snapshot.obj["metadata"].get("deletionTimestamp"):
                for stored in self.deployments.by_index("namespace", snapshot.key.namespace):
                    selector = self._selector(stored)
                    if selector is not None and not selector.empty and selector.matches(snapshot.stored.labels):
                        keys.add(stored.key)
        return keys

    def _pod_changed(self, old: Snapshot | None, new: Snapshot | None) -> Iterable[Key]:
        """Recreate waits for the old pods to be gone: a pod that went away may unblock it."""
        if old is None or (new is not None and not self.summaries.of(new).terminal):
            return ()
        pod = self.summaries.of(old)
        if pod.controller_kind != "ReplicaSet":
            return ()
        rs = self.replicasets.get(Key(RS_GR, old.key.namespace, pod.controller_name))
        owner = self._owner_key(Snapshot(rs)) if rs is not None else None
        return (owner,) if owner is not None else ()

    def _selector(self, stored: StoredObject) -> LabelSelector | None:
        return self._selectors.get(stored)

    # -- reconcile --
    async def reconcile(self, key: Key) -> float | None:
        stored = self.deployments.get(key)
        if stored is None:
            self._selectors.forget(key)
            return None
        deployment = stored.decode()
        selector = self._selector(stored)
        if deployment["metadata"].get("deletionTimestamp") or selector is None or selector.empty:
            rs_list = [s.decode() for s in self.replicasets.by_index("controller", stored.uid)]
            return await self._sync_status(deployment, self._find_new(deployment, rs_list), False)
        rs_list = await self._claim(deployment, selector)
        spec = deployment.get("spec") or {}
        if spec.get("paused"):
            return await self._sync_paused(deployment, rs_list)
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            return await self._rollout_recreate(deployment, rs_list)
        return await self._rollout_rolling(deployment, rs_list)

    async def _claim(self, deployment: dict[str, Any], selector: LabelSelector) -> list[dict[str, Any]]:
        meta = deployment["metadata"]
        uid, namespace = meta["uid"], meta["namespace"]
        claimed = []
        for stored in self.replicasets.by_index("controller", uid):
            rs = stored.decode()
            if selector.matches(stored.labels) or rs["metadata"].get("deletionTimestamp"):
                claimed.append(rs)
            else:
                await self._set_owner(stored.key, deployment, adopt=False)
        orphans = [s for s in self.replicasets.by_index("orphans", namespace) if selector.matches(s.labels)]
        fresh = self.objects.store.get(Key(DEPLOY_GR, namespace, meta["name"])) if orphans else None
        if fresh is not None and fresh.uid == uid:
            for orphan in orphans:
                adopted = await self._set_owner(orphan.key, deployment, adopt=True)
                if adopted is not None:
                    claimed.append(adopted.decode())
        return claimed

    async def _set_owner(self, key: Key, deployment: dict[str, Any], *, adopt: bool) -> StoredObject | None:
        uid = deployment["metadata"]["uid"]

        def change(rs: dict[str, Any]) -> bool:
            meta = rs["metadata"]
            if adopt:
                if meta.get("deletionTimestamp") or kit.controller_of(rs) is not None:
                    return False
                meta.setdefault("ownerReferences", []).append(kit.owner_reference(deployment))
                return True
            refs = meta.get("ownerReferences") or []
            kept = [r for r in refs if r.get("uid") != uid]
            meta["ownerReferences"] = kept
            return len(kept) != len(refs)

        stored = await self.mutate(self.rs_info, key, change)
        if stored is None or not adopt:
            return None
        ref = kit.controller_of(stored.decode())
        return stored if ref is not None and ref.get("uid") == uid else None

    def _find_new(self, deployment: dict[str, Any], rs_list: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The oldest ReplicaSet whose template equals the deployment's (ignoring the hash label)."""
        template = (deployment.get("spec") or {}).get("template") or {}
        for rs in sorted(rs_list, key=_age):
            if without_hash((rs.get("spec") or {}).get("template") or {}) == without_hash(template):
                return rs
        return None

    async def _ensure_new(self, deployment: dict[str, Any], rs_list: list[dict[str, Any]],
                          create: bool) -> tuple[dict[str, Any] | None, bool]:
        """The new ReplicaSet with its revision up to date (made if `create`), and whether it was made now."""
        new_rs = self._find_new(deployment, rs_list)
        old = [rs for rs in rs_list if rs is not new_rs]
        revision = max((revision_of(rs) for rs in old), default=0) + 1
        if new_rs is not None:
            if revision_of(new_rs) < revision:  # an older template came back (a rollback): it is the newest now
                new_rs = await self._annotate(deployment, new_rs, revision)
            return new_rs, False
        if not create:
            return None, False
        return await self._create_new(deployment, rs_list, revision), True

    def _replica_annotations(self, deployment: dict[str, Any]) -> dict[str, str]:
        replicas = int(deployment["spec"].get("replicas", 1))
        surge = surge_and_unavailable(deployment)[0] if (deployment["spec"].get("strategy") or {}).get(
            "type", "RollingUpdate") == "RollingUpdate" else 0
        return {DESIRED: str(replicas), MAX_REPLICAS: str(replicas + surge)}

    async def _annotate(self, deployment: dict[str, Any], rs: dict[str, Any], revision: int) -> dict[str, Any]:
        wanted = {REVISION: str(revision), **self._replica_annotations(deployment)}

        def change(obj: dict[str, Any]) -> bool:
            annotations = obj["metadata"].setdefault("annotations", {})
            if all(annotations.get(k) == v for k, v in wanted.items()):
                return False
            annotations.update(wanted)
            return True

        stored = await self.mutate(self.rs_info, _key(rs), change)
        return stored.decode() if stored is not None else rs

    async def _create_new(self, deployment: dict[str, Any], rs_list: list[dict[str, Any]],
                          revision: int) -> dict[str, Any]:
        spec = deployment["spec"]
        meta = deployment["metadata"]
        collisions = (deployment.get("status") or {}).get("collisionCount")
        template = copy.deepcopy(spec.get("template") or {})
        pod_hash = template_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _NOT_COPIED}
        annotations.update({REVISION: str(revision), **self._replica_annotations(deployment)})
        name = f"{meta['name']}-{pod_hash}"
        rs: dict[str, Any] = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": dict(template["metadata"]["labels"]),
                         "annotations": annotations, "ownerReferences": [kit.owner_reference(deployment)]},
            "spec": {"replicas": 0, "minReadySeconds": int(spec.get("minReadySeconds") or 0), "selector": selector,
                     "template": template},
        }
        rs["spec"]["replicas"] = new_rs_replicas(deployment, rs_list, rs)
        try:
            stored = await self.create(self.rs_info, meta["namespace"], rs)
        except APIError as exc:
            if exc.reason != "AlreadyExists":
                raise
            existing = self.objects.store.get(Key(RS_GR, meta["namespace"], name))
            if existing is not None:
                found = existing.decode()
                ref = kit.controller_of(found)
                if ref is not None and ref.get("uid") == meta["uid"] and \
                        without_hash(found["spec"].get("template") or {}) == without_hash(template):
                    return found  # ours already
            await self._bump_collisions(deployment)
            raise
        self.log.info("created replicaset", deployment=f"{meta['namespace']}/{meta['name']}", rs=name,
                      replicas=rs["spec"]["replicas"])
        return stored.decode()

    async def _bump_collisions(self, deployment: dict[str, Any]) -> None:
        """A ReplicaSet of that name exists with another template: hash again with a new collision count."""
        def change(obj: dict[str, Any]) -> bool:
            status = obj.setdefault("status", {})
            status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
            return True

        await self.mutate(self.deploy_info, _key(deployment), change, "status")

    async def _scale(self, deployment: dict[str, Any], rs: dict[str, Any], replicas: int) -> dict[str, Any]:
        wanted = self._replica_annotations(deployment)

        def change(obj: dict[str, Any]) -> bool:
            annotations = obj["metadata"].setdefault("annotations", {})
            if spec_replicas(obj) == replicas and all(annotations.get(k) == v for k, v in wanted.items()):
                return False
            obj.setdefault("spec", {})["replicas"] = replicas
            annotations.update(wanted)
            return True

        self.log.v(2).info("scaling replicaset", rs=f"{rs['metadata']['namespace']}/{rs['metadata']['name']}",
                           replicas_from=spec_replicas(rs), replicas_to=replicas)
        stored = await self.mutate(self.rs_info, _key(rs), change)
        return stored.decode() if stored is not None else rs

    # -- strategies --
    async def _rollout_rolling(self, deployment: dict[str, Any], rs_list: list[dict[str, Any]]) -> float | None:
        new_rs, created = await self._ensure_new(deployment, rs_list, True)
        assert new_rs is not None
        old = [rs for rs in rs_list if rs["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        replicas = int(deployment["spec"].get("replicas", 1))
        target = replicas if spec_replicas(new_rs) > replicas else new_rs_replicas(deployment, [*old, new_rs], new_rs)
        if target != spec_replicas(new_rs):  # the new ReplicaSet moves first; old ones in a later sync
            new_rs = await self._scale(deployment, new_rs, target)
        else:
            for rs, smaller in old_scale_down_plan(deployment, old, new_rs):
                await self._scale(deployment, rs, smaller)
        return await self._finish(deployment, new_rs, rs_list, created)

    async def _rollout_recreate(self, deployment: dict[str, Any], rs_list: list[dict[str, Any]]) -> float | None:
        new_rs, _ = await self._ensure_new(deployment, rs_list, False)
        old = [rs for rs in rs_list if new_rs is None or rs["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        active_old = [rs for rs in old if spec_replicas(rs) > 0]
        for rs in active_old:
            await self._scale(deployment, rs, 0)
        if active_old or self._old_pods_running(old):
            return await self._sync_status(deployment, new_rs, False)
        created = False
        if new_rs is None:
            new_rs, created = await self._ensure_new(deployment, rs_list, True)
            assert new_rs is not None
        replicas = int(deployment["spec"].get("replicas", 1))
        if spec_replicas(new_rs) != replicas:
            new_rs = await self._scale(deployment, new_rs, replicas)
        return await self._finish(deployment, new_rs, rs_list, created)

    def _old_pods_running(self, old: list[dict[str, Any]]) -> bool:
        for rs in old:
            for key in self.pods.index_keys("controller", rs["metadata"]["uid"]):
                pod = self.summaries.get(key)
                if pod is not None and not pod.terminal:
                    return True
        return False

    async def _sync_paused(self, deployment: dict[str, Any], rs_list: list[dict[str, Any]]) -> float | None:
        """A paused deployment only scales: its one active ReplicaSet follows spec.replicas."""
        new_rs, _ = await self._ensure_new(deployment, rs_list, False)
        replicas = int(deployment["spec"].get("replicas", 1))
        active = [rs for rs in rs_list if spec_replicas(rs) > 0]
        target = new_rs if new_rs is not None else (active[0] if len(active) == 1 else None)
        if target is not None and all(rs["metadata"]["uid"] == target["metadata"]["uid"] for rs in active) \
                and spec_replicas(target) != replicas:
            await self._scale(deployment, target, replicas)
        return await self._sync_status(deployment, new_rs, False)

    async def _finish(self, deployment: dict[str, Any], new_rs: dict[str, Any], rs_list: list[dict[str, Any]],
                      created: bool) -> float | None:
        again = await self._sync_status(deployment, new_rs, created)
        await self._set_revision(deployment, revision_of(new_rs))
        fresh = self.deployments.get(_key(deployment))
        if fresh is not None and complete(deployment, (fresh.decode().get("status") or {})):
            new_uid = new_rs["metadata"]["uid"]
            await self._cleanup(deployment, [rs for rs in rs_list if rs["metadata"]["uid"] != new_uid])
        return again

    async def _set_revision(self, deployment: dict[str, Any], revision: int) -> None:
        if revision <= 0:
            return

        def change(obj: dict[str, Any]) -> bool:
            annotations = obj["metadata"].setdefault("annotations", {})
            if annotations.get(REVISION) == str(revision):
                return False
            annotations[REVISION] = str(revision)
            return True

        await self.mutate(self.deploy_info, _key(deployment), change)

    async def _cleanup(self, deployment: dict[str, Any], old: list[dict[str, Any]]) -> None:
        limit = (deployment.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None:
            return
        idle = [rs for rs in old if spec_replicas(rs) == 0 and status_field(rs, "replicas") == 0
                and not rs["metadata"].get("deletionTimestamp")
                and status_field(rs, "observedGeneration") >= int(rs["metadata"].get("generation", 1))]
        excess = len(idle) - int(limit)
        for rs in sorted(idle, key=lambda r: (revision_of(r), _age(r)))[:max(0, excess)]:
            self.log.v(2).info("deleting old replicaset", rs=f"{rs['metadata']['namespace']}/{rs['metadata']['name']}")
            await self.delete(self.rs_info, rs["metadata"]["namespace"], rs["metadata"]["name"],
                              uid=rs["metadata"]["uid"])

    # -- status --
    async def _sync_status(self, deployment: dict[str, Any], new_rs: dict[str, Any] | None,
                           created: bool) -> float | None:
        """Write the status from the ReplicaSets as the cache has them now; a delay to re-check the deadline."""
        current = [s.decode() for s in self.replicasets.by_index("controller", deployment["metadata"]["uid"])]
        new_uid = new_rs["metadata"]["uid"] if new_rs is not None else None
        new_now = next((rs for rs in current if rs["metadata"]["uid"] == new_uid), None)
        spec = deployment.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        available = sum(status_field(rs, "availableReplicas") for rs in current)
        figures = {
            "replicas": sum(status_field(rs, "replicas") for rs in current),
            "updatedReplicas": status_field(new_now, "replicas") if new_now is not None else 0,
            "readyReplicas": sum(status_field(rs, "readyReplicas") for rs in current),
            "availableReplicas": available,
            "unavailableReplicas": max(0, replicas - available),
        }
        now = self.wall()
        stamp = kit.rfc3339(now)
        rs_name = new_now["metadata"]["name"] if new_now is not None else ""
        again: list[float] = []

        def change(obj: dict[str, Any]) -> bool:
            if obj["metadata"].get("uid") != deployment["metadata"]["uid"]:
                return False
            status = obj.setdefault("status", {})
            before = copy.deepcopy(status)
            previous = {k: int(status.get(k) or 0) for k in figures}
            for field, value in figures.items():
                if value:
                    status[field] = value
                else:
                    status.pop(field, None)
            status["observedGeneration"] = deployment["metadata"].get("generation", 1)
            conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
            if available >= replicas - max_unavailable(deployment):
                kit.set_condition(conditions, "Available", "True", "MinimumReplicasAvailable",
                                  "Deployment has minimum availability.", stamp, update_time=True)
            else:
                kit.set_condition(conditions, "Available", "False", "MinimumReplicasUnavailable",
                                  "Deployment does not have minimum availability.", stamp, update_time=True)
            self._progress(deployment, status, previous, rs_name, created, now, again)
            if not conditions:
                status.pop("conditions")
            return bool(status != before)

        await self.mutate(self.deploy_info, _key(deployment), change, "status")
        return min(again) if again else None

    @staticmethod
    def _progress(deployment: dict[str, Any], status: dict[str, Any], previous: dict[str, int], rs_name: str,
                  created: bool, now: float, again: list[float]) -> None:
        """The Progressing condition, as kube's deployment controller keeps it."""
        spec = deployment.get("spec") or {}
        conditions: list[dict[str, Any]] = status["conditions"]
        stamp = kit.rfc3339(now)
        if spec.get("paused"):
            kit.set_condition(conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused",
                              stamp, update_time=True)
            return
        current = next((c for c in conditions if c.get("type") == "Progressing"), None)
        if current is not None and current.get("reason") == "DeploymentPaused":
            kit.set_condition(conditions, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed",
                              stamp, update_time=True)
            current = next((c for c in conditions if c.get("type") == "Progressing"), None)
        if not rs_name:
            return
        if complete(deployment, status):
            kit.set_condition(conditions, "Progressing", "True", "NewReplicaSetAvailable",
                              f'ReplicaSet "{rs_name}" has successfully progressed.', stamp, update_time=True)
            return
        if created:
            kit.set_condition(conditions, "Progressing", "True", "NewReplicaSetCreated",
                              f'Created new replica set "{rs_name}"', stamp, update_time=True)
            return
        old_before = previous["replicas"] - previous["updatedReplicas"]
        old_now = int(status.get("replicas", 0)) - int(status.get("updatedReplicas", 0))
        progressed = (int(status.get("updatedReplicas", 0)) > previous["updatedReplicas"]
                      or int(status.get("readyReplicas", 0)) > previous["readyReplicas"]
                      or int(status.get("availableReplicas", 0)) > previous["availableReplicas"]
                      or old_now < old_before)
        timed_out = current is not None and current.get("reason") == "ProgressDeadlineExceeded"
        if progressed or current is None or (current.get("reason") == "NewReplicaSetAvailable"):
            message = f'ReplicaSet "{rs_name}" is progressing.'
            if not kit.set_condition(conditions, "Progressing", "True", "ReplicaSetUpdated", message, stamp,
                                     update_time=True):
                for cond in conditions:
                    if cond.get("type") == "Progressing":
                        cond["lastUpdateTime"] = stamp
            timed_out = False
        deadline = spec.get("progressDeadlineSeconds")
        if deadline is None or timed_out:
            return
        progressing = next((c for c in conditions if c.get("type") == "Progressing"), None)
        updated_at = kit.parse_time((progressing or {}).get("lastUpdateTime")) or now
        left = updated_at + int(deadline) - now
        if left <= 0:
            kit.set_condition(conditions, "Progressing", "False", "ProgressDeadlineExceeded",
                              f'ReplicaSet "{rs_name}" has timed out progressing.', stamp, update_time=True)
        else:
            again.append(left + 1.0)


def _key(obj: dict[str, Any]) -> Key:
    gr = DEPLOY_GR if obj.get("kind") == "Deployment" else RS_GR
    return Key(gr, obj["metadata"]["namespace"], obj["metadata"]["name"])
