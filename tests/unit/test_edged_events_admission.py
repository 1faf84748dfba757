"""Node admission (host port conflicts, kubelet's NodePorts predicate) and the rejection that survives a
restart through the pod's own status; the cloud's checks of the events a node reports (pure parts)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudcore.edgecontroller.events import edge_event, repeat_patch
from cloudcore.edgecontroller.kubeapi import UNREACHABLE, KubeError
from cloudcore.edgecontroller.messages import Refused
from common.resource import CloudResource
from edgecore.edged.pods.admission import NODE_PORTS, NODE_PORTS_MESSAGE, HostPort, admit, conflicts, host_ports
from edgecore.edged.pods.spec import PodSpec, Rejection, parse_pod


def pod(name: str, *ports: dict[str, Any], host_network: bool = False, status: dict[str, Any] | None = None
        ) -> PodSpec:
    return parse_pod({
        "metadata": {"uid": f"uid-{name}", "name": name, "namespace": "default"},
        "spec": {"hostNetwork": host_network, "containers": [{"name": "app", "image": "i", "ports": list(ports)}]},
        **({"status": status} if status else {}),
    })


def test_host_ports_of_a_pod() -> None:
    assert host_ports(pod("a", {"containerPort": 80, "hostPort": 8080}, {"containerPort": 81})) == [
        HostPort("TCP", "0.0.0.0", 8080)]
    assert host_ports(pod("h", {"containerPort": 80, "protocol": "UDP"}, host_network=True)) == [
        HostPort("UDP", "0.0.0.0", 80)]


@pytest.mark.parametrize(("first", "second", "clash"), [
    ({"hostPort": 8080}, {"hostPort": 8080}, True),
    ({"hostPort": 8080}, {"hostPort": 8081}, False),
    ({"hostPort": 8080}, {"hostPort": 8080, "protocol": "UDP"}, False),
    ({"hostPort": 8080, "hostIP": "10.0.0.1"}, {"hostPort": 8080, "hostIP": "10.0.0.2"}, False),
    ({"hostPort": 8080, "hostIP": "10.0.0.1"}, {"hostPort": 8080, "hostIP": "10.0.0.1"}, True),
    ({"hostPort": 8080}, {"hostPort": 8080, "hostIP": "10.0.0.2"}, True),  # 0.0.0.0 takes every address
    ({"hostPort": 8080, "hostIP": "10.0.0.1"}, {"hostPort": 8080, "hostIP": "0.0.0.0"}, True),
])
def test_port_conflicts(first: dict[str, Any], second: dict[str, Any], clash: bool) -> None:
    a = pod("a", {"containerPort": 80, **first})
    b = pod("b", {"containerPort": 80, **second})
    assert bool(conflicts(b, [a])) is clash


def test_a_host_network_pod_holds_its_container_ports() -> None:
    a = pod("a", {"containerPort": 9000}, host_network=True)
    b = pod("b", {"containerPort": 80, "hostPort": 9000})
    assert admit(b, [a]) == Rejection(reason=NODE_PORTS, message=NODE_PORTS_MESSAGE)
    assert admit(a, [a]) is None  # a pod never conflicts with itself
    assert admit(pod("c", {"containerPort": 9000}), [a]) is None


def test_kubelets_reason_and_message() -> None:
    assert NODE_PORTS == "NodePorts"
    assert NODE_PORTS_MESSAGE.startswith("Predicate NodePorts failed")


def test_a_rejection_in_the_pods_status_is_kept_on_reload() -> None:
    rejected = pod("r", status={"phase": "Failed", "reason": "NodePorts",
                                "message": f"Pod was rejected: {NODE_PORTS_MESSAGE}"})
    assert rejected.rejected == Rejection(reason="NodePorts", message=NODE_PORTS_MESSAGE)
    failed = pod("f", status={"phase": "Failed", "reason": "", "message": "container exited"})
    assert failed.rejected is None and pod("p", status={"phase": "Running"}).rejected is None


# ---- the cloud's checks ------------------------------------------------------------------------------

RES = CloudResource(node="edge-1", namespace="shop", type="event", name="web.17a")


def event(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web.17a", "namespace": "shop", "resourceVersion": "9", "uid": "x"},
        "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web", "uid": "u"},
        "reason": "Failed", "message": "m", "type": "Warning", "count": 3, "lastTimestamp": "t",
        "source": {"component": "kubelet", "host": "somebody-else"},
    }
    body.update(changes)
    return body


def test_an_edge_event_is_written_with_the_nodes_identity() -> None:
    written = edge_event(RES, event())
    assert written["source"] == {"component": "kubelet", "host": "edge-1"}
    assert written["reportingInstance"] == "edge-1"
    assert written["metadata"] == {"name": "web.17a", "namespace": "shop"}  # server-owned fields dropped
    assert repeat_patch(written) == {"count": 3, "lastTimestamp": "t", "message": "m"}
    node_event = edge_event(CloudResource("edge-1", "default", "event", "edge-1.1"), event(
        metadata={}, involvedObject={"kind": "Node", "name": "edge-1", "uid": "edge-1"}))
    assert node_event["metadata"] == {"name": "edge-1.1", "namespace": "default"}


@pytest.mark.parametrize("bad", [
    event(kind="Pod"),
    event(metadata={"name": "other", "namespace": "shop"}),
    event(metadata={"name": "web.17a", "namespace": "elsewhere"}),
    event(involvedObject=None),
    event(involvedObject={"kind": "Pod", "namespace": "elsewhere", "name": "web"}),
    event(involvedObject={"kind": "Node", "name": "edge-2"}),
    event(involvedObject={"kind": "Secret", "namespace": "shop", "name": "s"}),
])
def test_events_a_node_may_not_write_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(Refused):
        edge_event(RES, bad)


def test_only_passing_api_failures_are_worth_a_retry() -> None:
    assert KubeError(UNREACHABLE, "Unreachable", "x").transient
    assert KubeError(503, "ServiceUnavailable", "x").transient and KubeError(429, "TooMany", "x").transient
    assert not any(KubeError(code, "", "x").transient for code in (400, 403, 404, 409, 422))
