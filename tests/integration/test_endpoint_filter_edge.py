"""The node-group endpoint filter seen from a real edge: control plane, cloudcore and edgecore each their own
process (tests/e2e/test_metaserver_restart.py's rig); the edge's MetaServer lists only its group's endpoints,
and a node moving between groups changes that listing within 10 s (the re-filtered views get through
CloudHub's queue and the edge's store, which both keep only newer resourceVersions)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import kubernetes

from cloudcore.edgecontroller.topology import ANNOTATION_SERVICE_TOPOLOGY, LABEL_BELONGING_TO, LABEL_SERVICE_NAME
from tests.e2e.test_metaserver_restart import NODE, Rig, cloud_and_edge

NS = "epf-edge"
OTHER = "epf-edge-other"  # an endpoint host without an edgecore
MOVE_DEADLINE = 10.0
STEP = 30.0


def apply(rig: Rig, obj: dict[str, object]) -> None:
    rig.plane.kubectl("apply", "-f", "-", input_text=json.dumps(obj))


def edge_slice_ips(rig: Rig) -> list[str] | None:
    api = kubernetes.client.DiscoveryV1Api(rig.api.api_client)
    items = api.list_namespaced_endpoint_slice(NS, _request_timeout=STEP).items
    found = [s for s in items if s.metadata is not None and s.metadata.name == "web-1"]
    return None if not found else sorted(e.addresses[0] for e in found[0].endpoints or [])


def edge_endpoints_ips(rig: Rig) -> list[str] | None:
    items = rig.api.list_namespaced_endpoints(NS, _request_timeout=STEP).items
    found = [e for e in items if e.metadata is not None and e.metadata.name == "web"]
    return None if not found else sorted(a.ip for s in found[0].subsets or [] for a in s.addresses or [])


def wait_for(read: Callable[[], object], expected: object, what: str, timeout: float) -> None:
    """Poll `read` until it returns `expected`; the assertion names the last value read."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = read()
        if last == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}; last read {last!r}, expected {expected!r}")


def label(rig: Rig, node: str, group: str) -> None:
    rig.plane.kubectl("label", "node", node, f"{LABEL_BELONGING_TO}={group}", "--overwrite")


def test_the_edges_metaserver_lists_only_its_groups_endpoints_and_follows_moves(tmp_path: Path) -> None:
    with cloud_and_edge(tmp_path) as rig:
        rig.plane.kubectl("create", "namespace", NS)
        apply(rig, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": OTHER}})
        label(rig, NODE, "hangzhou")
        label(rig, OTHER, "beijing")
        apply(rig, {"apiVersion": "v1", "kind": "Service", "metadata": {
            "name": "web", "namespace": NS, "annotations": {ANNOTATION_SERVICE_TOPOLOGY: "range-nodegroup"}},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})
        apply(rig, {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                    "metadata": {"name": "web-1", "namespace": NS, "labels": {LABEL_SERVICE_NAME: "web"}},
                    "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": NODE},
                                  {"addresses": ["10.0.0.2"], "nodeName": OTHER},
                                  {"addresses": ["10.0.0.3"]}],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
        apply(rig, {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": NS},
                    "subsets": [{"addresses": [{"ip": "10.0.0.1", "nodeName": NODE},
                                               {"ip": "10.0.0.2", "nodeName": OTHER}],
                                 "ports": [{"port": 80, "protocol": "TCP"}]}]})
        wait_for(lambda: edge_slice_ips(rig), ["10.0.0.1"], "the edge's own group's endpoint slice", STEP)
        wait_for(lambda: edge_endpoints_ips(rig), ["10.0.0.1"], "the edge's own group's Endpoints", STEP)

        label(rig, OTHER, "hangzhou")  # the other node joins the edge's group
        wait_for(lambda: edge_slice_ips(rig), ["10.0.0.1", "10.0.0.2"], "the joined node's endpoint", MOVE_DEADLINE)
        wait_for(lambda: edge_endpoints_ips(rig), ["10.0.0.1", "10.0.0.2"], "the joined node's address",
                 MOVE_DEADLINE)

        label(rig, NODE, "beijing")  # the edge itself moves away: alone in its group, its own endpoint only
        wait_for(lambda: edge_slice_ips(rig), ["10.0.0.1"], "only its own endpoint once alone in its group",
                 MOVE_DEADLINE)
