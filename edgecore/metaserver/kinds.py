"""The resources MetaServer serves, each tied to the type token of its `meta` rows, and the discovery
documents that list them.

Synced kinds: those the node gets from the cloud by itself (pods, configmaps, ...). Their API facts
(names, scope, field selectors, printer) come from the control plane's built-in `ResourceInfo`s, so both
API servers describe a kind the same way; MetaServer trims what it does not serve (pods/log, bindings,
deletecollection).

Remote kinds: every other resource the cloud's discovery lists (deployments, namespaces, custom
resources, ...), read through CloudCore's dynamiccontroller and cached in the same table. Their store
type is the lowercase kind, as the dynamiccontroller names their resource messages
(`<ns|null>/<lowercase kind>/<name>`). Since a type token says nothing about group or version, each type
serves one resource: a synced kind keeps its own; for the others the first in discovery order wins (the
core group, then the cloud's groups in its order, each group's preferred version first). So
`events.events.k8s.io` is not served (core `events` has the type `event`), nor a second version of a kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cloudcore.controlplane.api import discovery
from cloudcore.controlplane.api.resources import BUILTIN, Registry, ResourceInfo
from common.application import Key
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
_BUILTIN: Final = {(info.group, info.version, info.plural): info for info in BUILTIN}

GVR = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ServedKind:
    info: ResourceInfo
    store_type: str
    remote: bool = False  # not synced by the node: read through the cloud's dynamiccontroller

    def namespace_token(self, namespace: str) -> str:
        """The namespace part of a `meta` key: `null` for cluster-scoped objects (upstream's token)."""
        return namespace if self.info.namespaced else NAMESPACE_CLUSTER_SCOPED

    def key(self, namespace: str, name: str) -> str:
        return f"{self.namespace_token(namespace)}/{self.store_type}/{name}"

    def cloud_key(self, namespace: str, name: str = "") -> Key:
        """The Application Key of a request: a collection (`namespace` "" = all) or one object."""
        info = self.info
        return Key(info.group, info.version, info.plural, namespace if info.namespaced else "", name)

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
    """The served kinds by (group, version, plural): the synced ones, and the remote ones of the cloud's
    discovery bundle (`use_discovery`), with the discovery documents listing both."""

    def __init__(self) -> None:
        synced = [ServedKind(dataclasses.replace(info, subresources=info.subresources & _SUBRESOURCES),
                             _STORE_TYPES[(info.group, info.plural)])
                  for info in BUILTIN if (info.group, info.plural) in _STORE_TYPES]
        self.registry = Registry(kind.info for kind in synced)
        self._synced = {_gvr(k.info): k for k in synced}
        self._remote: dict[GVR, ServedKind] = {}
        self._cloud_groups: list[Mapping[str, Any]] = []
        self._cloud_entries: dict[str, list[Mapping[str, Any]]] = {}  # groupVersion -> the cloud's resources

    def get(self, group: str, version: str, plural: str) -> ServedKind | None:
        gvr = (group, version, plural)
        return self._synced.get(gvr) or self._remote.get(gvr)

    def use_discovery(self, bundle: Mapping[str, Any] | None) -> None:
        """Serve the remote kinds of the cloud's discovery bundle (None: none)."""
        groups = [g for g in (bundle or {}).get("groups") or []
                  if isinstance(g, Mapping) and g.get("name") and g.get("versions")]
        entries: dict[str, list[Mapping[str, Any]]] = {}
        for found in (bundle or {}).get("resources") or []:
            if isinstance(found, Mapping) and isinstance(found.get("resources"), list):
                entries[str(found.get("groupVersion"))] = [e for e in found["resources"] if isinstance(e, Mapping)]
        taken = {kind.store_type for kind in self._synced.values()}
        remote: dict[GVR, ServedKind] = {}
        for group, version in _discovery_order(groups):
            listed = entries.get(f"{group}/{version}" if group else version, [])
            names = {str(e.get("name")) for e in listed}
            for entry in listed:
                kind = _remote_kind(group, version, entry, names)
                if kind is not None and kind.store_type not in taken:
                    taken.add(kind.store_type)
                    remote[_gvr(kind.info)] = kind
        self._cloud_groups, self._cloud_entries, self._remote = groups, entries, remote

    # -- discovery documents --------------------------------------------------------------------------
    def group_list(self) -> dict[str, Any]:
        found = discovery.api_group_list(self.registry)
        by_name = {g["name"]: g for g in found["groups"]}
        groups = [_group(cloud, by_name.pop(str(cloud["name"]), None)) for cloud in self._cloud_groups]
        return {**found, "groups": [*groups, *by_name.values()]}

    def group(self, name: str) -> dict[str, Any] | None:
        found = next((g for g in self.group_list()["groups"] if g["name"] == name), None)
        return None if found is None else {"kind": "APIGroup", "apiVersion": "v1", **found}

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        group_version = f"{group}/{version}" if group else version
        cloud = self._cloud_entries.get(group_version)
        local = discovery.api_resource_list(self.registry, group, version)
        if local is None and cloud is None:
            return None
        entries = {str(e["name"]): _served_entry(e) for e in cloud or []
                   if self._serves(group, version, str(e.get("name")))}
        for entry in local["resources"] if local is not None else []:
            if "/" not in entry["name"]:
                entry["verbs"] = list(SERVED_VERBS)
            entries[entry["name"]] = entry
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": [entries[name] for name in sorted(entries)]}

    def _serves(self, group: str, version: str, name: str) -> bool:
        """Whether a cloud discovery entry (`plural` or `plural/sub`) is a remote kind served here."""
        plural, _, sub = name.partition("/")
        kind = self._remote.get((group, version, plural))
        return kind is not None and (not sub or sub in kind.info.subresources)


def _gvr(info: ResourceInfo) -> GVR:
    return info.group, info.version, info.plural


def _discovery_order(groups: list[Mapping[str, Any]]) -> Iterator[tuple[str, str]]:
    yield "", "v1"
    for group in groups:
        preferred = (group.get("preferredVersion") or {}).get("version")
        versions = [str(v.get("version")) for v in group.get("versions") or [] if isinstance(v, Mapping)]
        for version in sorted(versions, key=lambda v: v != preferred):
            yield str(group["name"]), version


def _remote_kind(group: str, version: str, entry: Mapping[str, Any], names: set[str]) -> ServedKind | None:
    plural, kind = str(entry.get("name") or ""), str(entry.get("kind") or "")
    if not plural or not kind or "/" in plural:
        return None
    subresources = frozenset(sub for sub in _SUBRESOURCES if f"{plural}/{sub}" in names)
    info = _BUILTIN.get((group, version, plural))
    if info is not None:  # the control plane's facts: Table columns, field selectors
        info = dataclasses.replace(info, subresources=subresources)
    else:
        info = ResourceInfo(group, version, plural, kind, str(entry.get("singularName") or kind.lower()),
                            bool(entry.get("namespaced")), tuple(entry.get("shortNames") or ()), subresources,
                            tuple(entry.get("categories") or ()))
    return ServedKind(info, kind.lower(), remote=True)


def _served_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A cloud discovery entry with the verbs MetaServer serves (no deletecollection)."""
    if "/" in str(entry.get("name")):
        return dict(entry)
    return {**entry, "verbs": [verb for verb in SERVED_VERBS if verb in (entry.get("verbs") or ())]}


def _group(cloud: Mapping[str, Any], synced: Mapping[str, Any] | None) -> dict[str, Any]:
    """A cloud APIGroup, with the versions of the synced kinds of that group it may lack."""
    versions = [dict(v) for v in cloud.get("versions") or [] if isinstance(v, Mapping)]
    known = {v.get("version") for v in versions}
    versions += [v for v in (synced or {}).get("versions", []) if v["version"] not in known]
    preferred = cloud.get("preferredVersion") if isinstance(cloud.get("preferredVersion"), Mapping) else None
    return {"name": cloud["name"], "versions": versions, "preferredVersion": dict(preferred or versions[0])}
