"""Workloads through the control plane's controllers with real kubectl: apply, rollout status, scale,
set image, service endpoints, cascading deletion. Two hollow nodes stand in for kubelets."""

from __future__ import annotations

import itertools
import json
import textwrap
from collections.abc import Iterator

import pytest

from tests.fixtures.controlplane import ControlPlaneProcess
from tests.fixtures.hollow_node import HollowNode, api_client, wait_for

_counter = itertools.count()


@pytest.fixture(scope="module")
def nodes(controlplane: ControlPlaneProcess, run_id: str) -> Iterator[list[HollowNode]]:
    api = api_client(str(controlplane.kubeconfig))
    started = [HollowNode(api, f"hollow-{run_id}-{i}", i + 1).start() for i in range(2)]
    yield started
    for node in started:
        node.stop()


@pytest.fixture
def ns(controlplane: ControlPlaneProcess, run_id: str) -> str:
    name = f"w{run_id}-{next(_counter)}"
    controlplane.kubectl("create", "namespace", name)
    return name


APP = textwrap.dedent("""
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: web-config}
    data: {greeting: hello}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, labels: {app: web}}
    spec:
      replicas: 3
      selector: {matchLabels: {app: web}}
      strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers:
          - name: c
            image: docker.io/local/busybox:1.0
            ports: [{name: http, containerPort: 8080}]
            envFrom: [{configMapRef: {name: web-config}}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      selector: {app: web}
      ports: [{port: 80, targetPort: http}]
""")


def pods_of(controlplane: ControlPlaneProcess, ns: str, selector: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = json.loads(controlplane.kubectl("get", "pods", "-n", ns, "-l", selector,
                                                                     "-o", "json").stdout)["items"]
    return items


def test_deployment_rolls_out_scales_and_updates(controlplane: ControlPlaneProcess, nodes: list[HollowNode],
                                                 ns: str) -> None:
    kubectl = controlplane.kubectl
    applied = kubectl("apply", "-n", ns, "-f", "-", input_text=APP).stdout
    assert "deployment.apps/web created" in applied and "service/web created" in applied
    rollout = kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", timeout=90).stdout
    assert 'deployment "web" successfully rolled out' in rollout
    table = kubectl("get", "deployment", "web", "-n", ns).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE"] and table[1].split()[:4] == [
        "web", "3/3", "3", "3"]
    pods = kubectl("get", "pods", "-n", ns, "-l", "app=web", "--no-headers").stdout.splitlines()
    assert len(pods) == 3 and all(" Running " in f" {line} " for line in pods)
    nodes_used = {str(p["spec"]["nodeName"]) for p in pods_of(controlplane, ns, "app=web")}  # type: ignore[index]
    assert nodes_used <= {n.name for n in nodes} and len(nodes_used) == 2  # spread by least-requested

    assert "deployment.apps/web scaled" in kubectl("scale", "deployment", "web", "-n", ns, "--replicas=5").stdout
    kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", timeout=90)
    wait_for(lambda: len(pods_of(controlplane, ns, "app=web")) == 5)

    kubectl("set", "image", "deployment/web", "-n", ns, "c=docker.io/local/busybox:2.0")
    rollout = kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=90s", timeout=120).stdout
    assert "successfully rolled out" in rollout
    def images() -> set[str]:  # old pods linger as Terminating until their node confirms, as in Kubernetes
        return {p["spec"]["containers"][0]["image"] for p in pods_of(controlplane, ns, "app=web")}  # type: ignore[index]

    wait_for(lambda: images() == {"docker.io/local/busybox:2.0"})
    replicasets = kubectl("get", "rs", "-n", ns, "--no-headers").stdout.splitlines()
    assert sorted(int(line.split()[1]) for line in replicasets) == [0, 5]

    endpoints = wait_for(lambda: [line for line in kubectl("get", "endpoints", "web", "-n", ns, "--no-headers")
                                  .stdout.splitlines() if ":8080" in line])
    assert "10.244." in endpoints[0]
    slices = json.loads(kubectl("get", "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=web",
                                "-o", "json").stdout)["items"]
    assert len(slices) == 1 and len(slices[0]["endpoints"]) == 5 and slices[0]["ports"][0]["port"] == 8080


def test_cascading_deletion_background_and_orphan(controlplane: ControlPlaneProcess, nodes: list[HollowNode],
                                                  ns: str) -> None:
    kubectl = controlplane.kubectl
    kubectl("apply", "-n", ns, "-f", "-", input_text=APP)
    kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", timeout=90)
    assert 'deployment.apps "web" deleted' in kubectl("delete", "deployment", "web", "-n", ns).stdout
    wait_for(lambda: not pods_of(controlplane, ns, "app=web")
             and not kubectl("get", "rs", "-n", ns, "--no-headers").stdout.strip())

    kubectl("apply", "-n", ns, "-f", "-", input_text=APP)
    kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", timeout=90)
    kubectl("delete", "deployment", "web", "-n", ns, "--cascade=orphan")
    wait_for(lambda: "web" not in kubectl("get", "deployments", "-n", ns, "--no-headers").stdout)
    orphans = kubectl("get", "rs", "-n", ns, "-o", "json").stdout
    assert all(not rs["metadata"].get("ownerReferences") for rs in json.loads(orphans)["items"])
    assert len(pods_of(controlplane, ns, "app=web")) == 3


def test_namespace_deletion_removes_its_content(controlplane: ControlPlaneProcess, nodes: list[HollowNode],
                                                ns: str) -> None:
    kubectl = controlplane.kubectl
    kubectl("apply", "-n", ns, "-f", "-", input_text=APP)
    kubectl("delete", "namespace", ns, "--wait=true", "--timeout=60s", timeout=90)
    missing = kubectl("get", "namespace", ns, check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr
