"""What reaches an edge node, with real processes (control plane, cloudcore, edgecore in a netns pair): its
pod and the ConfigMap/Secret that pod uses land in the edge SQLite and are served by MetaServer, a
change of that ConfigMap follows, and what no pod of this node uses (another node's Secret, an unused
ConfigMap) never reaches it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.fixtures.cloud_edge import CloudEdge

NAMESPACE = "apps"


def apply(rig: CloudEdge, obj: dict[str, object]) -> None:
    rig.plane.kubectl("apply", "-f", "-", input_text=json.dumps(obj))


def pod(name: str, node: str, configmap: str, secret: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"nodeName": node, "containers": [{
                "name": "app", "image": "docker.io/local/busybox:1.0",
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}],
                "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"}]}],
                "volumes": [{"name": "conf", "configMap": {"name": configmap}}]}}


def edge_keys(rig: CloudEdge) -> set[str]:
    return {key for kind in ("pod", "configmap", "secret") for key in rig.edge_objects(kind)
            if key.startswith(f"{NAMESPACE}/")}


def wait_edge(rig: CloudEdge, predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"edge state not reached in {timeout} s: {sorted(edge_keys(rig))}")


def test_a_node_gets_its_pods_and_what_they_use_and_nothing_else(cloud_edge: CloudEdge) -> None:
    rig = cloud_edge
    rig.wait_node_ready("True", timeout=30)
    rig.plane.kubectl("create", "namespace", NAMESPACE)
    for name, data in (("used", {"mode": "a"}), ("unused", {"mode": "x"})):
        apply(rig, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NAMESPACE},
                    "data": data})
    for name in ("mine", "theirs"):
        apply(rig, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
                    "data": {"token": "c2VjcmV0"}})
    apply(rig, pod("web", rig.node, "used", "mine"))
    apply(rig, pod("elsewhere", "another-node", "unused", "theirs"))

    expected = {f"{NAMESPACE}/pod/web", f"{NAMESPACE}/configmap/used", f"{NAMESPACE}/secret/mine"}
    wait_edge(rig, lambda: edge_keys(rig) >= expected)
    listed = json.loads(rig.edge_kubectl("get", "configmaps", "-n", NAMESPACE, "-o", "json").stdout)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["used"]

    rig.plane.kubectl("patch", "configmap", "used", "-n", NAMESPACE, "--type=merge", "-p", '{"data":{"mode":"b"}}')

    def changed() -> bool:
        shown = rig.edge_kubectl("get", "configmap", "used", "-n", NAMESPACE, "-o", "jsonpath={.data.mode}")
        return shown.stdout == "b"

    wait_edge(rig, changed)
    assert edge_keys(rig) == expected  # never the other node's pod, Secret or ConfigMap
    refused = rig.edge_kubectl("get", "secret", "theirs", "-n", NAMESPACE)
    assert refused.returncode != 0 and "NotFound" in refused.stderr


def test_the_kubernetes_endpointslice_points_edge_pods_at_their_metaserver(cloud_edge: CloudEdge) -> None:
    rig = cloud_edge
    cloud = json.loads(rig.plane.kubectl("get", "endpointslice", "kubernetes", "-n", "default", "-o", "json").stdout)
    assert cloud["ports"][0]["port"] == 6443
    shown: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not shown:
        result = rig.edge_kubectl("get", "endpointslice", "kubernetes", "-n", "default", "-o", "json")
        shown = json.loads(result.stdout) if result.returncode == 0 else {}
        time.sleep(0.3)
    assert shown["endpoints"][0]["addresses"] == ["127.0.0.1"] and shown["ports"][0]["port"] == 10550
