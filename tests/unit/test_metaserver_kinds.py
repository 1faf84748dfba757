"""MetaServer's served kinds with the cloud's discovery (pure): which remote kinds are served and under
which store type, and the merged discovery documents kubectl reads."""

from __future__ import annotations

from typing import Any

from cloudcore.controlplane.api import discovery
from cloudcore.controlplane.api.resources import Registry, ResourceInfo
from edgecore.metaserver.kinds import Kinds

VERBS = ("get", "list", "watch", "create", "deletecollection")


def entry(name: str, kind: str, namespaced: bool = True, verbs: tuple[str, ...] = VERBS) -> dict[str, Any]:
    return {"name": name, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": list(verbs)}


def group(name: str, *versions: str) -> dict[str, Any]:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def bundle() -> dict[str, Any]:
    return {"kind": "DiscoveryBundle",
            "groups": [group("apps", "v1"), group("events.k8s.io", "v1"), group("example.com", "v2", "v1"),
                       group("coordination.k8s.io", "v1")],
            "resources": [
                {"groupVersion": "v1", "resources": [
                    entry("pods", "Pod"), entry("pods/log", "Pod"), entry("pods/status", "Pod"),
                    entry("namespaces", "Namespace", False), entry("namespaces/status", "Namespace", False),
                    entry("namespaces/finalize", "Namespace", False), entry("events", "Event")]},
                {"groupVersion": "apps/v1", "resources": [entry("deployments", "Deployment"),
                                                          entry("deployments/scale", "Scale")]},
                {"groupVersion": "events.k8s.io/v1", "resources": [entry("events", "Event")]},
                {"groupVersion": "example.com/v1", "resources": [entry("widgets", "Widget")]},
                {"groupVersion": "example.com/v2", "resources": [entry("widgets", "Widget"),
                                                                 entry("gadgets", "Gadget", False, ("create",))]},
                {"groupVersion": "coordination.k8s.io/v1", "resources": [entry("leases", "Lease")]},
            ]}


def test_without_the_cloud_only_synced_kinds_are_served() -> None:
    kinds = Kinds()
    assert kinds.get("apps", "v1", "deployments") is None
    pods = kinds.get("", "v1", "pods")
    assert pods is not None and not pods.remote and pods.store_type == "pod"
    assert kinds.group_list() == discovery.api_group_list(kinds.registry)
    assert kinds.resource_list("apps", "v1") is None


def test_remote_kinds_take_the_lowercase_kind_as_store_type_one_resource_each() -> None:
    kinds = Kinds()
    kinds.use_discovery(bundle())
    deployments = kinds.get("apps", "v1", "deployments")
    assert deployments is not None and deployments.remote and deployments.store_type == "deployment"
    assert deployments.info.subresources == frozenset()  # scale is not served; no status listed
    assert deployments.key("dyn", "web") == "dyn/deployment/web"
    assert str(deployments.cloud_key("dyn")) == "/apps/v1/deployments/dyn"
    namespaces = kinds.get("", "v1", "namespaces")
    assert namespaces is not None and namespaces.key("", "dyn") == "null/namespace/dyn"
    assert namespaces.info.subresources == frozenset({"status"}) and "status.phase" in namespaces.info.selectable
    assert str(namespaces.cloud_key("ignored", "dyn")) == "/core/v1/namespaces/null/dyn"
    # synced kinds stay local, whatever the cloud lists
    pods, leases = kinds.get("", "v1", "pods"), kinds.get("coordination.k8s.io", "v1", "leases")
    assert pods is not None and not pods.remote and leases is not None and not leases.remote
    # one resource per store type: core events win over events.k8s.io, the preferred version over others
    assert kinds.get("", "v1", "events") is not None and kinds.get("events.k8s.io", "v1", "events") is None
    assert kinds.get("example.com", "v2", "widgets") is not None and kinds.get("example.com", "v1", "widgets") is None
    gadgets = kinds.get("example.com", "v2", "gadgets")
    assert gadgets is not None and not gadgets.info.namespaced and gadgets.info.kind == "Gadget"


def test_discovery_documents_merge_synced_and_remote_kinds() -> None:
    kinds = Kinds()
    kinds.use_discovery(bundle())
    core = kinds.resource_list("", "v1")
    assert core is not None
    by_name = {e["name"]: e for e in core["resources"]}
    assert "pods/log" not in by_name and "namespaces/finalize" not in by_name
    assert {"pods", "pods/status", "namespaces", "namespaces/status", "events", "nodes", "secrets"} <= set(by_name)
    assert by_name["namespaces"]["verbs"] == ["create", "get", "list", "watch"]  # no deletecollection
    assert by_name["pods"]["verbs"] == ["create", "delete", "get", "list", "patch", "update", "watch"]
    apps = kinds.resource_list("apps", "v1")
    assert apps is not None and [e["name"] for e in apps["resources"]] == ["deployments"]
    shadowed = kinds.resource_list("events.k8s.io", "v1")
    assert shadowed is not None and shadowed["resources"] == []
    groups = [g["name"] for g in kinds.group_list()["groups"]]
    assert groups == ["apps", "events.k8s.io", "example.com", "coordination.k8s.io", "discovery.k8s.io"]
    example = kinds.group("example.com")
    assert example is not None and example["kind"] == "APIGroup" and example["preferredVersion"]["version"] == "v2"


def test_a_cloud_registry_bundles_and_serves_its_custom_resources() -> None:
    """The control plane's discovery functions build a bundle as the cloud's API server answers it."""
    registry = Registry()
    registry.set_crd("widgets.example.com", (ResourceInfo("example.com", "v1", "widgets", "Widget", "widget", True,
                                                          crd_name="widgets.example.com", storage_version="v1"),))
    lists = [discovery.api_resource_list(registry, g, v) for g, vs in registry.group_versions().items() for v in vs]
    kinds = Kinds()
    kinds.use_discovery({"groups": discovery.api_group_list(registry)["groups"], "resources": lists})
    widgets = kinds.get("example.com", "v1", "widgets")
    assert widgets is not None and widgets.store_type == "widget"
    assert {"apps", "example.com"} <= {g["name"] for g in kinds.group_list()["groups"]}
    kinds.use_discovery(None)  # a cloud that stops listing them: no longer served
    assert kinds.get("example.com", "v1", "widgets") is None
