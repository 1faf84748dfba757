"""Discovery documents: /version, /api, /apis, /apis/<group>, and each group-version's resource list.

Served as legacy (unaggregated) discovery; kubectl asks for the aggregated form first and falls back
to these when the response is plain `application/json`.
"""

from __future__ import annotations

from typing import Any, Final

from cloudcore.controlplane.api.resources import ALL_VERBS, Registry, ResourceInfo

SERVER_VERSION: Final = {
    "major": "1", "minor": "30", "gitVersion": "v1.30.7", "gitCommit": "kubeedge-py", "gitTreeState": "clean",
    "buildDate": "2026-11-24T00:00:00Z", "goVersion": "python3", "compiler": "cpython", "platform": "linux/amd64",
}

_SUBRESOURCE_KINDS: Final = {"status": None, "scale": ("autoscaling", "v1", "Scale"), "binding": ("", "v1", "Binding"),
                             "log": ("", "v1", "Pod"), "exec": ("", "v1", "PodExecOptions"), "finalize": None}
_SUBRESOURCE_VERBS: Final = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"],
                             "binding": ["create"], "log": ["get"], "exec": ["create", "get"],
                             "finalize": ["update"]}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _group(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in registry.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = registry.group_versions().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def _resource_entry(info: ResourceInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": info.plural, "singularName": info.singular, "namespaced": info.namespaced,
                             "kind": info.kind, "verbs": list(ALL_VERBS)}
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    if info.is_custom:
        entry["storageVersionHash"] = info.crd_name
    return entry


def _subresource_entry(info: ResourceInfo, sub: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": f"{info.plural}/{sub}", "singularName": "", "namespaced": info.namespaced,
                             "kind": info.kind, "verbs": _SUBRESOURCE_VERBS[sub]}
    target = _SUBRESOURCE_KINDS[sub]
    if target is not None:
        group, version, kind = target
        entry.update({"kind": kind, "version": version})
        if group:
            entry["group"] = group
    return entry


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    infos = registry.resources_of(group, version)
    if not infos:
        return None
    resources: list[dict[str, Any]] = []
    for info in sorted(infos, key=lambda i: i.plural):
        resources.append(_resource_entry(info))
        resources.extend(_subresource_entry(info, sub) for sub in sorted(info.subresources))
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources}
