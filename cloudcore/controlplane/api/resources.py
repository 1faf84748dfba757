"""Which resources the control plane serves: built-in kinds and those CustomResourceDefinitions add.

A `ResourceInfo` says everything the API layer needs about one resource in one served version:
its names (plural, singular, kind, short names), scope, verbs, subresources, the field selectors it
supports and how to read them from an object, and for custom resources the CRD's schema.
`Registry` indexes them by (group, version, plural), by store key (`gr`) and by short name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

ALL_VERBS: Final = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
ALL_CATEGORY: Final = ("all",)

FieldReader = Callable[[Mapping[str, Any]], str]


def path_reader(path: str) -> FieldReader:
    """Read a dotted path (`spec.nodeName`) from an object as a string ("" when absent)."""
    parts = path.split(".")

    def read(obj: Mapping[str, Any]) -> str:
        value: Any = obj
        for part in parts:
            if not isinstance(value, Mapping):
                return ""
            value = value.get(part)
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return read


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    categories: tuple[str, ...] = ()
    # field selectors beyond metadata.name / metadata.namespace, with how to read each
    selectable: Mapping[str, FieldReader] = field(default_factory=dict)
    # custom resources: the CRD's schema for this version and the version objects are stored at
    crd_schema: Mapping[str, Any] | None = None
    storage_version: str = ""
    crd_name: str = ""
    printer_columns: tuple[Mapping[str, Any], ...] = ()

    @property
    def gr(self) -> str:
        """Store key prefix: `pods`, `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def storage_api_version(self) -> str:
        """apiVersion objects are stored with: the CRD's storage version for custom resources."""
        version = self.storage_version or self.version
        return f"{self.group}/{version}" if self.group else version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def is_custom(self) -> bool:
        return bool(self.crd_name)

    def field_values(self, obj: Mapping[str, Any]) -> dict[str, str]:
        return {name: read(obj) for name, read in self.selectable.items()}


def _fields(*paths: str) -> dict[str, FieldReader]:
    return {path: path_reader(path) for path in paths}


_POD_FIELDS: Final = _fields("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName")
_EVENT_FIELDS: Final = _fields("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type")


def _core(plural: str, kind: str, namespaced: bool = True, short: tuple[str, ...] = (),
          sub: Iterable[str] = (), categories: tuple[str, ...] = (),
          selectable: Mapping[str, FieldReader] | None = None) -> ResourceInfo:
    return ResourceInfo("", "v1", plural, kind, kind.lower(), namespaced, short, frozenset(sub), categories,
                        selectable or {})


BUILTIN: Final[tuple[ResourceInfo, ...]] = (
    _core("namespaces", "Namespace", False, ("ns",), ("status", "finalize"), selectable=_fields("status.phase")),
    _core("nodes", "Node", False, ("no",), ("status",), selectable=_fields("spec.unschedulable")),
    _core("pods", "Pod", True, ("po",), ("status", "binding", "log", "exec"), ALL_CATEGORY, _POD_FIELDS),
    _core("configmaps", "ConfigMap", True, ("cm",)),
    _core("secrets", "Secret", True, (), selectable=_fields("type")),
    _core("services", "Service", True, ("svc",), ("status",), ALL_CATEGORY),
    _core("endpoints", "Endpoints", True, ("ep",)),
    _core("events", "Event", True, ("ev",), selectable=_EVENT_FIELDS),
    _core("serviceaccounts", "ServiceAccount", True, ("sa",)),
    ResourceInfo("apps", "v1", "deployments", "Deployment", "deployment", True, ("deploy",),
                 frozenset({"status", "scale"}), ALL_CATEGORY),
    ResourceInfo("apps", "v1", "replicasets", "ReplicaSet", "replicaset", True, ("rs",),
                 frozenset({"status", "scale"}), ALL_CATEGORY, _fields("status.replicas")),
    ResourceInfo("apps", "v1", "daemonsets", "DaemonSet", "daemonset", True, ("ds",), frozenset({"status"}),
                 ALL_CATEGORY),
    ResourceInfo("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", "endpointslice", True),
    ResourceInfo("coordination.k8s.io", "v1", "leases", "Lease", "lease", True),
    ResourceInfo("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                 "customresourcedefinition", False, ("crd", "crds"), frozenset({"status"})),
)

CRD_GR: Final = "customresourcedefinitions.apiextensions.k8s.io"

# Group preference order in discovery, as kube-apiserver lists them.
_GROUP_ORDER: Final = ("", "apps", "events.k8s.io", "autoscaling", "coordination.k8s.io", "discovery.k8s.io",
                       "apiextensions.k8s.io")


class Registry:
    """Resources by (group, version, plural) and by store key; CRDs come and go at runtime."""

    def __init__(self, builtin: Iterable[ResourceInfo] = BUILTIN) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceInfo] = {}
        self._builtin = tuple(builtin)
        self._custom: dict[str, tuple[ResourceInfo, ...]] = {}
        self.generation = 0  # bumped on every change: discovery and OpenAPI caches key on it
        self._rebuild()

    def _rebuild(self) -> None:
        infos = [*self._builtin, *(info for infos in self._custom.values() for info in infos)]
        self._by_gvr = {(i.group, i.version, i.plural): i for i in infos}
        self.generation += 1

    def get(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_gvr.get((group, version, plural))

    def all(self) -> list[ResourceInfo]:
        return list(self._by_gvr.values())

    def by_gr(self, gr: str) -> ResourceInfo | None:
        """The storage-version info of a store key prefix (used by controllers and the GC)."""
        for info in self._by_gvr.values():
            if info.gr == gr and (not info.is_custom or info.version == info.storage_version):
                return info
        return None

    def for_kind(self, api_version: str, kind: str) -> ResourceInfo | None:
        group, _, version = api_version.rpartition("/")
        for info in self._by_gvr.values():
            if info.group == group and info.version == version and info.kind == kind:
                return info
        return None

    def group_versions(self) -> dict[str, list[str]]:
        """{group: [versions, preferred first]} in discovery order."""
        found: dict[str, list[str]] = {}
        for info in self._by_gvr.values():
            versions = found.setdefault(info.group, [])
            if info.version not in versions:
                versions.append(info.version)
        order = {group: i for i, group in enumerate(_GROUP_ORDER)}
        return dict(sorted(found.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))

    def resources_of(self, group: str, version: str) -> list[ResourceInfo]:
        return [i for i in self._by_gvr.values() if i.group == group and i.version == version]

    def set_crd(self, crd_name: str, infos: tuple[ResourceInfo, ...]) -> None:
        """Serve (or stop serving, with an empty tuple) the versions a CRD defines."""
        if infos:
            self._custom[crd_name] = infos
        else:
            self._custom.pop(crd_name, None)
        self._rebuild()


def infos_from_crd(crd: Mapping[str, Any]) -> tuple[ResourceInfo, ...]:
    """The ResourceInfos for every served version of a CRD object."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    versions = spec.get("versions", [])
    storage = next((v["name"] for v in versions if v.get("storage")), versions[0]["name"] if versions else "")
    infos = []
    for version in versions:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        infos.append(ResourceInfo(
            group=spec.get("group", ""), version=version["name"], plural=names.get("plural", ""),
            kind=names.get("kind", ""), singular=names.get("singular") or names.get("kind", "").lower(),
            namespaced=spec.get("scope") == "Namespaced", short_names=tuple(names.get("shortNames") or ()),
            subresources=frozenset(k for k in ("status", "scale") if k in subresources),
            categories=tuple(names.get("categories") or ()),
            selectable=_fields(*(f["jsonPath"].lstrip(".") for f in version.get("selectableFields") or ())),
            crd_schema=(version.get("schema") or {}).get("openAPIV3Schema") or {},
            storage_version=storage, crd_name=crd.get("metadata", {}).get("name", ""),
            printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
        ))
    return tuple(infos)
