"""The resources MetaServer serves: the kinds the node syncs from the cloud, each tied to its store type.

The API facts (names, scope, field selectors, printer) come from the control plane's built-in
`ResourceInfo`s, so both API servers describe a kind the same way; this module only picks the kinds
the edge store holds, maps each to the type token of its `meta` rows (`pod`, `endpointslice`, ...),
and trims what MetaServer does not serve (pods/log, bindings, deletecollection).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cloudcore.controlplane.api import discovery
from cloudcore.controlplane.api.resources import BUILTIN, Registry, ResourceInfo
from common.constants import NAMESPACE_CLUSTER_SCOPED, ResourceType

# (group, plural) -> the store's type token (the resource type of the cloud's messages).
_STORE_TYPES: Final = {
    ("", "pods"): ResourceType.POD,
    ("", "configmaps"): ResourceType.CONFIGMAP,
    ("", "secrets"): ResourceType.SECRET,
    ("", "services"): ResourceType.SERVICE,
    ("", "endpoints"): ResourceType.ENDPOINTS,
    ("", "nodes"): ResourceType.NODE,
    ("discovery.k8s.io", "endpointslices"): ResourceType.ENDPOINTSLICE,
    ("coordination.k8s.io", "leases"): ResourceType.LEASE,
}
# Writes are forwarded to the cloud, which may serve status updates; nothing else below a resource.
_SUBRESOURCES: Final = frozenset({"status"})
SERVED_VERBS: Final = ("create", "delete", "get", "list", "patch", "update", "watch")
BASE_FIELDS: Final = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True, slots=True)
class ServedKind:
    info: ResourceInfo
    store_type: str

    def namespace_token(self, namespace: str) -> str:
        """The namespace part of a `meta` key: `null` for cluster-scoped objects (upstream's token)."""
        return namespace if self.info.namespaced else NAMESPACE_CLUSTER_SCOPED

    def key(self, namespace: str, name: str) -> str:
        return f"{self.namespace_token(namespace)}/{self.store_type}/{name}"

    def fields(self, obj: Mapping[str, Any]) -> dict[str, str]:
        """The values field selectors match, as the control plane's store computes them."""
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        return {"metadata.name": str(meta.get("name") or ""), "metadata.namespace": str(meta.get("namespace") or ""),
                **self.info.field_values(obj)}

    def with_type_meta(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Objects answered to queries may lack apiVersion/kind; API clients need them."""
        obj.setdefault("apiVersion", self.info.api_version)
        obj.setdefault("kind", self.info.kind)
        return obj


class Kinds:
    """The served kinds by (group, version, plural), and the discovery documents that list them."""

    def __init__(self) -> None:
        served = [ServedKind(dataclasses.replace(info, subresources=info.subresources & _SUBRESOURCES),
                             _STORE_TYPES[(info.group, info.plural)])
                  for info in BUILTIN if (info.group, info.plural) in _STORE_TYPES]
        self.registry = Registry(kind.info for kind in served)
        self._by_gvr = {(k.info.group, k.info.version, k.info.plural): k for k in served}

    def get(self, group: str, version: str, plural: str) -> ServedKind | None:
        return self._by_gvr.get((group, version, plural))

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        found = discovery.api_resource_list(self.registry, group, version)
        if found is None:
            return None
        for entry in found["resources"]:
            if "/" not in entry["name"]:
                entry["verbs"] = list(SERVED_VERBS)
        return found
