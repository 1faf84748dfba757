"""EdgeApplication controller against a real control plane process: the control plane's scheduler,
deployment/replicaset controllers and garbage collector run there; hollow nodes (tests/fixtures/hollow_node.py)
register Ready nodes and report bound pods Running and Ready, so workloadStatus reaches Available.
Harness: tests/integration/test_nodegroup_controller.py. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from cloudcore.controllermanager.keys import BELONGING_TO, DEPLOYMENT, EDGEAPPLICATION, LAST_APPLIED, LAST_CONTAINED
from cloudcore.controllermanager.overriders import label_target_suffix
from cloudcore.edgecontroller.kinds import CONFIGMAP, SERVICE
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from tests.fixtures.controlplane import ControlPlaneProcess
from tests.fixtures.hollow_node import HollowNode, api_client
from tests.integration.test_nodegroup_controller import (
    Harness,
    eventually,
    make_group,
    manager,
    node_labels,
    plane,
)

__all__ = ["plane"]  # the module-scoped control plane fixture, shared
NS = "default"


@pytest.fixture(scope="module")
def hollow(plane: ControlPlaneProcess) -> Iterator[list[HollowNode]]:
    api = api_client(str(plane.kubeconfig))
    nodes = [HollowNode(api, name, index, labels={"site": site})
             for index, (name, site) in enumerate([("hz-1", "hz"), ("hz-2", "hz"), ("bj-1", "bj")], start=10)]
    for node in nodes:
        node.start()
    yield nodes
    for node in nodes:
        node.stop()


def web(image: str = "nginx:1.25", name: str = "web", node_selector: bool = True) -> dict[str, Any]:
    """A Deployment template; its nodeSelector is replaced for group targets (kept for label targets)."""
    pod: dict[str, Any] = {"containers": [{"name": "web", "image": image}]}
    if node_selector:
        pod["nodeSelector"] = {"ignored": "by-groups"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": pod}}}


def service(name: str = "web-svc") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


def edgeapp(name: str, manifests: list[Any], groups: list[dict[str, Any]] | None = None,
            labels: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    scope: dict[str, Any] = {"targetNodeGroups": groups or []}
    if labels:
        scope["targetNodeLabels"] = labels
    return {"apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "EdgeApplication",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"workloadTemplate": {"manifests": manifests}, "workloadScope": scope}}


async def get_or_none(kube: KubeJSON, path: str) -> dict[str, Any] | None:
    try:
        return await kube.get(path)
    except KubeError as exc:
        if exc.not_found:
            return None
        raise


async def app_status(kube: KubeJSON, name: str) -> dict[str, Any]:
    return dict((await kube.get(EDGEAPPLICATION.object_path(NS, name))).get("status") or {})


async def groups_ready(h: Harness) -> None:
    for group, site in (("hangzhou", "hz"), ("beijing", "bj")):
        with contextlib.suppress(KubeError):
            await make_group(h.kube, group, match_labels={"site": site})

    async def labelled() -> bool:
        return (await node_labels(h.kube, "hz-2")).get(BELONGING_TO) == "hangzhou" and (
            await node_labels(h.kube, "bj-1")).get(BELONGING_TO) == "beijing"

    await eventually(labelled, "hollow nodes in hangzhou and beijing")


def owned_by(obj: dict[str, Any], app: dict[str, Any]) -> bool:
    return any(r["kind"] == "EdgeApplication" and r["uid"] == app["metadata"]["uid"] and r.get("controller")
               for r in obj["metadata"].get("ownerReferences") or [])


async def test_generates_per_group_deployments_services_and_status(plane: ControlPlaneProcess,
                                                                   hollow: list[HollowNode]) -> None:
    async with manager(plane) as h:
        await groups_ready(h)
        spec = edgeapp("hostname", [web(), service(), configmap("hostname-conf")], groups=[
            {"name": "hangzhou", "overriders": {"replicas": 3}},
            {"name": "beijing", "overriders": {"imageOverriders": [
                {"component": "Tag", "operator": "replace", "value": "1.26"}]}},
        ])
        app = await h.kube.create(EDGEAPPLICATION.collection_path(NS), spec)

        hz = await eventually(lambda: get_or_none(h.kube, DEPLOYMENT.object_path(NS, "web-hangzhou")), "web-hangzhou")
        bj = await eventually(lambda: get_or_none(h.kube, DEPLOYMENT.object_path(NS, "web-beijing")), "web-beijing")
        assert hz["spec"]["replicas"] == 3 and bj["spec"]["replicas"] == 1
        assert hz["spec"]["template"]["spec"]["nodeSelector"] == {BELONGING_TO: "hangzhou"}
        assert bj["spec"]["template"]["spec"]["nodeSelector"] == {BELONGING_TO: "beijing"}
        assert hz["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
        assert bj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
        assert await get_or_none(h.kube, DEPLOYMENT.object_path(NS, "web")) is None  # never the template itself
        svc = await eventually(lambda: get_or_none(h.kube, SERVICE.object_path(NS, "web-svc")), "web-svc")
        assert svc["metadata"]["annotations"]["apps.kubeedge.io/service-topology"] == "range-nodegroup"
        conf = await eventually(lambda: get_or_none(h.kube, CONFIGMAP.object_path(NS, "hostname-conf")), "cm")
        for obj in (hz, bj, svc, conf):
            assert owned_by(obj, app)
            applied = json.loads(obj["metadata"]["annotations"][LAST_APPLIED])
            assert applied["metadata"]["name"] == obj["metadata"]["name"]
        assert json.loads(hz["metadata"]["annotations"][LAST_APPLIED])["spec"]["replicas"] == 3

        async def contained() -> list[dict[str, str]]:
            found = (await h.kube.get(EDGEAPPLICATION.object_path(NS, "hostname")))["metadata"].get("annotations")
            refs: list[dict[str, str]] = json.loads((found or {}).get(LAST_CONTAINED) or "[]")
            return refs

        assert {(c["kind"], c["name"]) for c in await eventually(contained, "last-contained-resources")} == {
            ("Deployment", "web-hangzhou"), ("Deployment", "web-beijing"), ("Service", "web-svc"),
            ("ConfigMap", "hostname-conf")}

        # pods land only in their group; then workloadStatus says Available
        async def all_available() -> list[dict[str, Any]]:
            workload = (await app_status(h.kube, "hostname")).get("workloadStatus") or []
            deployments = [w for w in workload if w["identifier"]["kind"] == "Deployment"]
            return workload if deployments and all(w["conditions"] == "Available" for w in deployments) else []

        workload = await eventually(all_available, "every Deployment Available", timeout=40)
        assert [(w["identifier"]["ordinal"], w["identifier"]["name"]) for w in workload] == [
            (0, "web-beijing"), (0, "web-hangzhou"), (1, "web-svc"), (2, "hostname-conf")]
        assert workload[0]["identifier"] == {"ordinal": 0, "group": "apps", "version": "v1", "kind": "Deployment",
                                             "resource": "deployments", "namespace": NS, "name": "web-beijing"}
        pods = json.loads(plane.kubectl("get", "pods", "-n", NS, "-l", "app=web", "-o", "json").stdout)["items"]
        placed = {p["spec"]["nodeName"] for p in pods if p["spec"]["nodeSelector"][BELONGING_TO] == "hangzhou"}
        assert placed <= {"hz-1", "hz-2"} and placed
        assert {p["spec"]["nodeName"] for p in pods
                if p["spec"]["nodeSelector"][BELONGING_TO] == "beijing"} == {"bj-1"}
        condition = (await app_status(h.kube, "hostname"))["conditions"][0]
        assert (condition["type"], condition["status"], condition["reason"]) == ("Applied", "True", "Applied")

        # update: the new image rolls through each group's Deployment; a dropped manifest and target go away
        changed = {**spec, "spec": {**spec["spec"]}}
        changed["spec"]["workloadTemplate"] = {"manifests": [web("nginx:1.27"), service()]}
        changed["spec"]["workloadScope"] = {"targetNodeGroups": [spec["spec"]["workloadScope"]["targetNodeGroups"][0]]}
        await h.kube.patch(EDGEAPPLICATION.object_path(NS, "hostname"), {"spec": changed["spec"]})

        async def rolled() -> bool:
            current = await h.kube.get(DEPLOYMENT.object_path(NS, "web-hangzhou"))
            return bool(current["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
                        and current["spec"]["replicas"] == 3)

        await eventually(rolled, "web-hangzhou patched to nginx:1.27")

        async def dropped() -> bool:
            return (await get_or_none(h.kube, CONFIGMAP.object_path(NS, "hostname-conf")) is None
                    and await get_or_none(h.kube, DEPLOYMENT.object_path(NS, "web-beijing")) is None)

        await eventually(dropped, "the ConfigMap and web-beijing deleted")

        async def new_pods_running() -> bool:
            pods = json.loads(plane.kubectl("get", "pods", "-n", NS, "-l", "app=web", "-o", "json").stdout)["items"]
            live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            return len(live) == 3 and all(p["spec"]["containers"][0]["image"] == "nginx:1.27" for p in live)

        await eventually(new_pods_running, "the rolling update of web-hangzhou done", timeout=60)

        # delete: everything it made goes
        await h.kube.delete(EDGEAPPLICATION.object_path(NS, "hostname"))

        async def all_gone() -> bool:
            return (await get_or_none(h.kube, DEPLOYMENT.object_path(NS, "web-hangzhou")) is None
                    and await get_or_none(h.kube, SERVICE.object_path(NS, "web-svc")) is None)

        await eventually(all_gone, "the generated Deployment and Service deleted")


async def test_label_target_names_and_affinity(plane: ControlPlaneProcess, hollow: list[HollowNode]) -> None:
    async with manager(plane) as h:
        selector = {"matchLabels": {"site": "hz"}}
        await h.kube.create(EDGEAPPLICATION.collection_path(NS), edgeapp(
            "by-labels", [web(name="lbl", node_selector=False)],
            labels=[{"labelSelector": selector, "overriders": {"replicas": 2}}]))
        name = f"lbl-{label_target_suffix({'site': 'hz'})}"
        made = await eventually(lambda: get_or_none(h.kube, DEPLOYMENT.object_path(NS, name)), name)
        assert made["spec"]["replicas"] == 2
        terms = made["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms == [{"matchExpressions": [{"key": "site", "operator": "In", "values": ["hz"]}]}]

        async def placed() -> set[str]:
            pods = json.loads(plane.kubectl("get", "pods", "-n", NS, "-l", "app=lbl", "-o", "json").stdout)["items"]
            nodes = {p["spec"].get("nodeName") for p in pods}
            return nodes if len(pods) == 2 and None not in nodes else set()

        assert await eventually(placed, "label-target pods bound", timeout=30) <= {"hz-1", "hz-2"}
        await h.kube.delete(EDGEAPPLICATION.object_path(NS, "by-labels"))
        await eventually(lambda: _absent(h.kube, DEPLOYMENT.object_path(NS, name)), f"{name} deleted")


async def _absent(kube: KubeJSON, path: str) -> bool:
    return await get_or_none(kube, path) is None


async def test_a_manifest_without_apiversion_is_refused_by_the_api(plane: ControlPlaneProcess) -> None:
    """The CRD marks manifests as embedded resources, so the API itself refuses one without apiVersion/kind."""
    refused = plane.kubectl("apply", "-f", "-", check=False, input_text=json.dumps(
        edgeapp("no-apiversion", [{"kind": "ConfigMap", "metadata": {"name": "x"}}])))
    assert refused.returncode != 0
    assert "spec.workloadTemplate.manifests[0].apiVersion" in refused.stderr


async def events_for(kube: KubeJSON, name: str) -> dict[str, str]:
    found = await kube.get("/api/v1/namespaces/default/events")
    return {e["reason"]: e["message"] for e in found.get("items") or []
            if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == "EdgeApplication"}


@pytest.mark.parametrize(("case", "manifests", "groups", "reason", "fragment"), [
    ("refused", [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Name"}}], [], "ApplyFailed",
     "manifests[0] ConfigMap Not_A_Name"),
    ("no-name", [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}], [], "InvalidManifest",
     "metadata.name is missing"),
    ("unknown-kind", [{"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}}], [], "InvalidManifest",
     "the API serves no kind Gizmo in v1"),
    ("bad-component", [web(name="bc")], [{"name": "hangzhou", "overriders": {"imageOverriders": [
        {"component": "Host", "operator": "replace", "value": "x"}]}}], "UnknownOverrider",
     "unknown component 'Host'"),
    ("bad-operator", [web(name="bo")], [{"name": "hangzhou", "overriders": {"envOverriders": [
        {"containerName": "web", "operator": "upsert", "value": []}]}}], "UnknownOverrider",
     "envOverriders[0]: unknown operator 'upsert'"),
    ("no-group", [web(name="ng")], [{"name": "atlantis"}], "NodeGroupNotFound", "NodeGroup atlantis does not exist"),
    ("too-long", [web(name="a" * 250)], [{"name": "hangzhou"}], "NameTooLong", "over 253"),
    ("bad-predicate", [web(name="bp")], [{"name": "hangzhou", "overriders": {"imageOverriders": [
        {"predicate": {"path": "/spec/template/spec/containers/3/image"}, "component": "Tag",
         "operator": "replace", "value": "x"}]}}], "OverrideFailed", "does not exist in the manifest"),
])
async def test_bad_input_gets_a_condition_and_an_event_and_spares_the_rest(
        plane: ControlPlaneProcess, hollow: list[HollowNode], case: str, manifests: list[Any],
        groups: list[dict[str, Any]], reason: str, fragment: str) -> None:
    async with manager(plane) as h:
        await groups_ready(h)
        bad = f"bad-{case}"
        good_cm = f"good-cm-{case}"
        await h.kube.create(EDGEAPPLICATION.collection_path(NS), edgeapp(bad, [*manifests, configmap(good_cm)],
                                                                         groups=groups))
        await h.kube.create(EDGEAPPLICATION.collection_path(NS), edgeapp(f"fine-{case}", [configmap(f"fine-{case}")]))

        async def reported() -> dict[str, Any]:
            conditions = (await app_status(h.kube, bad)).get("conditions") or []
            return conditions[0] if conditions and conditions[0]["status"] == "False" else {}

        condition = await eventually(reported, f"a False condition on {bad}")
        assert condition["type"] == "Applied" and condition["reason"] == reason
        assert fragment in condition["message"]
        events = await eventually(lambda: events_for(h.kube, bad), f"an Event on {bad}")
        assert reason in events and fragment in events[reason]
        # the valid part of the same app is applied, and another app is unaffected
        assert await eventually(lambda: get_or_none(h.kube, CONFIGMAP.object_path(NS, good_cm)), good_cm)

        async def fine() -> bool:
            conditions = (await app_status(h.kube, f"fine-{case}")).get("conditions") or []
            return bool(conditions) and conditions[0]["status"] == "True"

        await eventually(fine, "the other app Applied")
        assert await get_or_none(h.kube, CONFIGMAP.object_path(NS, f"fine-{case}")) is not None
        for name in (bad, f"fine-{case}"):
            await h.kube.delete(EDGEAPPLICATION.object_path(NS, name))
        await asyncio.sleep(0)
