"""The Kubernetes kinds the edgecontroller moves, and the few facts it needs about each (pure, no I/O).

A `Kind` ties the upstream resource type token of a message (`pod`, `configmap`, ...; ref/protocol.md
2.2) to its API group/version/plural, so one generic client and one informer serve every kind.
Objects are plain JSON dicts exactly as the API server sent them (camelCase, unknown fields kept), so
the edge receives what a Go client would have marshalled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from common.constants import NAMESPACE_CLUSTER_SCOPED, ResourceType

Object = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    type: str  # the resource type token in message resources
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str = "") -> str:
        """`/api/v1/pods`, or `/api/v1/namespaces/<ns>/pods` when a namespace is given."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        scope = f"/namespaces/{namespace}" if namespace and self.namespaced else ""
        return f"{base}{scope}/{self.plural}"

    def object_path(self, namespace: str, name: str, subresource: str = "") -> str:
        tail = f"/{subresource}" if subresource else ""
        return f"{self.collection_path(namespace)}/{name}{tail}"


POD: Final = Kind(ResourceType.POD, "Pod", "", "v1", "pods")
CONFIGMAP: Final = Kind(ResourceType.CONFIGMAP, "ConfigMap", "", "v1", "configmaps")
SECRET: Final = Kind(ResourceType.SECRET, "Secret", "", "v1", "secrets")
SERVICE: Final = Kind(ResourceType.SERVICE, "Service", "", "v1", "services")
ENDPOINTS: Final = Kind(ResourceType.ENDPOINTS, "Endpoints", "", "v1", "endpoints")
ENDPOINTSLICE: Final = Kind(ResourceType.ENDPOINTSLICE, "EndpointSlice", "discovery.k8s.io", "v1", "endpointslices")
NODE: Final = Kind(ResourceType.NODE, "Node", "", "v1", "nodes", namespaced=False)
LEASE: Final = Kind(ResourceType.LEASE, "Lease", "coordination.k8s.io", "v1", "leases")

# Sent to every edge node as they change (the edge's service discovery needs them all).
BROADCAST_KINDS: Final = (SERVICE, ENDPOINTS, ENDPOINTSLICE)
BY_TYPE: Final = {k.type: k for k in (POD, CONFIGMAP, SECRET, SERVICE, ENDPOINTS, ENDPOINTSLICE, NODE, LEASE)}


def meta(obj: Object) -> dict[str, Any]:
    found = obj.get("metadata")
    return found if isinstance(found, dict) else {}


def name_of(obj: Object) -> str:
    return str(meta(obj).get("name") or "")


def namespace_of(obj: Object) -> str:
    return str(meta(obj).get("namespace") or "")


def rv_of(obj: Object) -> str:
    return str(meta(obj).get("resourceVersion") or "")


def uid_of(obj: Object) -> str:
    return str(meta(obj).get("uid") or "")


def cache_key(namespace: str, name: str) -> str:
    """Informer cache key: `<ns>/<name>`, or `<name>` for cluster-scoped objects (client-go's form)."""
    return f"{namespace}/{name}" if namespace else name


def key_of(obj: Object) -> str:
    return cache_key(namespace_of(obj), name_of(obj))


def resource_namespace(kind: Kind, obj: Object) -> str:
    """The namespace token of the object's message resource (`null` for cluster-scoped, ref 2.1)."""
    return namespace_of(obj) if kind.namespaced else NAMESPACE_CLUSTER_SCOPED


def with_type_meta(kind: Kind, obj: Object) -> Object:
    """The object with apiVersion/kind set (list items come without them); a shallow copy only if needed."""
    if obj.get("apiVersion") == kind.api_version and obj.get("kind") == kind.kind:
        return obj
    return {**obj, "apiVersion": kind.api_version, "kind": kind.kind}


def is_newer(rv: str, than: str) -> bool:
    """Whether resourceVersion `rv` is newer than `than`.

    RVs are opaque to clients, but every real API server (etcd revisions) and ours issue increasing
    integers, and upstream compares them as uint64 too (ref/protocol.md 4.3). Non-numeric RVs
    count as newer when they differ, so an unexpected server never freezes the cache.
    """
    if rv.isdigit() and than.isdigit():
        return int(rv) > int(than)
    return rv != than
