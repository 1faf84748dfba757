"""Node health across a flap, real processes in a netns pair: edged registers the node, it is Ready while
connected, turns Unknown when the link is cut past the grace period, and is Ready again within one status
interval of the edge reconnecting, with no restart of anything (upstream's most reported edge problem)."""

from __future__ import annotations

import json

from tests.fixtures.cloud_edge import NODE_GRACE, STATUS_INTERVAL, CloudEdge


def test_edge_node_registers_and_is_ready_again_within_one_status_interval_after_a_flap(cloud_edge: CloudEdge) -> None:
    rig = cloud_edge
    rig.wait_node_ready("True", timeout=30)
    node = json.loads(rig.plane.kubectl("get", "node", rig.node, "-o", "json").stdout)
    assert {"node-role.kubernetes.io/edge", "node-role.kubernetes.io/agent"} <= set(node["metadata"]["labels"])
    assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.30.7-kubeedge-")
    assert {"type": "InternalIP", "address": rig.pair.edge_ip} in node["status"]["addresses"]

    rig.partition()
    rig.wait_node_ready("Unknown", timeout=NODE_GRACE + 20)
    reconnects = rig.edge.log_count('"connected to cloudcore"')
    rig.heal()
    rig.edge.wait_log('"connected to cloudcore"', count=reconnects + 1, timeout=60)
    assert rig.wait_node_ready("True", timeout=30) <= STATUS_INTERVAL
    assert rig.edge.running() and rig.cloud.running()
