"""Which ConfigMaps and Secrets each edge node needs: references out of pod specs, counted per node (pure).

A pod references a ConfigMap or Secret through volumes (`configMap`, `secret`, `projected` sources),
container `env[].valueFrom` and `envFrom` (containers, init and ephemeral containers alike), and for
Secrets `imagePullSecrets`. Optional references count too: the object may appear later and the pod
then wants it. The tracker keeps, per object, how many pods on each node use it, so it answers in
O(1) "does node N use it" (node authorization of edge queries) and "which nodes use it" (fan-out of a
change), and reports the moment a node starts or stops using an object.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from common.constants import ResourceType


class ObjectRef(NamedTuple):
    type: str  # ResourceType.CONFIGMAP or ResourceType.SECRET
    namespace: str
    name: str


def pod_references(pod: dict[str, Any]) -> frozenset[ObjectRef]:
    """Every ConfigMap and Secret the pod names, in the pod's namespace."""
    namespace = str((pod.get("metadata") or {}).get("namespace") or "")
    spec = pod.get("spec") or {}
    found = {ObjectRef(kind, namespace, name) for kind, name in _names(spec) if name}
    return frozenset(found)


def _names(spec: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for pull in spec.get("imagePullSecrets") or []:
        yield ResourceType.SECRET, _name(pull)
    for volume in spec.get("volumes") or []:
        yield from _volume_names(volume)
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            yield from _container_names(container)


def _volume_names(volume: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if "configMap" in volume:
        yield ResourceType.CONFIGMAP, _name(volume["configMap"])
    if "secret" in volume:
        yield ResourceType.SECRET, str((volume["secret"] or {}).get("secretName") or "")
    for source in (volume.get("projected") or {}).get("sources") or []:
        if "configMap" in source:
            yield ResourceType.CONFIGMAP, _name(source["configMap"])
        if "secret" in source:
            yield ResourceType.SECRET, _name(source["secret"])


def _container_names(container: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for env in container.get("env") or []:
        value_from = env.get("valueFrom") or {}
        if "configMapKeyRef" in value_from:
            yield ResourceType.CONFIGMAP, _name(value_from["configMapKeyRef"])
        if "secretKeyRef" in value_from:
            yield ResourceType.SECRET, _name(value_from["secretKeyRef"])
    for env_from in container.get("envFrom") or []:
        if "configMapRef" in env_from:
            yield ResourceType.CONFIGMAP, _name(env_from["configMapRef"])
        if "secretRef" in env_from:
            yield ResourceType.SECRET, _name(env_from["secretRef"])


def _name(reference: Any) -> str:
    return str(reference.get("name") or "") if isinstance(reference, dict) else ""


class Change(NamedTuple):
    """A node started (`started`) or stopped using an object."""

    node: str
    ref: ObjectRef
    started: bool


class ReferenceTracker:
    """Per-node reference counts of ConfigMaps/Secrets, fed with each pod's node and references."""

    def __init__(self) -> None:
        self._pods: dict[str, tuple[str, frozenset[ObjectRef]]] = {}  # pod key -> (node, refs)
        self._users: dict[ObjectRef, dict[str, int]] = {}  # object -> {node: pods using it}

    def __len__(self) -> int:
        return len(self._users)

    def set_pod(self, pod_key: str, node: str, refs: frozenset[ObjectRef]) -> list[Change]:
        """Record the pod's current node and references; the node-level changes this makes."""
        previous = self._pods.get(pod_key)
        if previous == (node, refs):
            return []
        changes = self.remove_pod(pod_key)
        self._pods[pod_key] = (node, refs)
        for ref in refs:
            counts = self._users.setdefault(ref, {})
            counts[node] = counts.get(node, 0) + 1
            if counts[node] == 1:
                changes.append(Change(node, ref, started=True))
        return _net(changes)

    def remove_pod(self, pod_key: str) -> list[Change]:
        previous = self._pods.pop(pod_key, None)
        if previous is None:
            return []
        node, refs = previous
        changes = []
        for ref in refs:
            counts = self._users[ref]
            counts[node] -= 1
            if counts[node] == 0:
                del counts[node]
                changes.append(Change(node, ref, started=False))
            if not counts:
                del self._users[ref]
        return changes

    def nodes_using(self, ref: ObjectRef) -> frozenset[str]:
        return frozenset(self._users.get(ref, ()))

    def uses(self, node: str, ref: ObjectRef) -> bool:
        return node in self._users.get(ref, ())

    def used(self, ref: ObjectRef) -> bool:
        return ref in self._users

    def pods_on(self, node: str) -> list[str]:
        return [key for key, (pod_node, _) in self._pods.items() if pod_node == node]


def _net(changes: list[Change]) -> list[Change]:
    """A pod update that keeps a reference reports a stop then a start for it: neither happened."""
    stops = {(c.node, c.ref) for c in changes if not c.started}
    starts = {(c.node, c.ref) for c in changes if c.started}
    both = stops & starts
    return [c for c in changes if (c.node, c.ref) not in both]
