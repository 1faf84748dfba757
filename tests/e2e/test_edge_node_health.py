"""Node health across a flap, real processes in a netns pair: edged registers the node, it is Ready while
connected, turns Unknown when the link is cut past the grace period, and is Ready again within one status
interval of the edge reconnecting, with no restart of anything (upstream's most reported edge problem)."""

from __future__ import annotations

import json
import time

from tests.fixtures.cloud_edge import NODE_GRACE, STATUS_INTERVAL, CloudEdge


def ready(rig: CloudEdge) -> str:
    result = rig.plane.kubectl("get", "node", rig.node, "-o", "json", check=False)
    if result.returncode != 0:
        return "absent"
    conditions = json.loads(result.stdout)["status"].get("conditions") or []
    return next((c["status"] for c in conditions if c["type"] == "Ready"), "none")


def wait_ready(rig: CloudEdge, want: str, timeout: float) -> float:
    """Seconds until the node's Ready condition is `want`."""
    began = time.monotonic()
    state = ""
    while time.monotonic() - began < timeout:
        state = ready(rig)
        if state == want:
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"node Ready stayed {state!r}, not {want!r}, for {timeout} s\n"
                         f"{rig.edge.log.read_text()[-2000:]}")


def test_edge_node_registers_and_is_ready_again_within_one_status_interval_after_a_flap(cloud_edge: CloudEdge) -> None:
    rig = cloud_edge
    wait_ready(rig, "True", timeout=30)
    node = json.loads(rig.plane.kubectl("get", "node", rig.node, "-o", "json").stdout)
    assert {"node-role.kubernetes.io/edge", "node-role.kubernetes.io/agent"} <= set(node["metadata"]["labels"])
    assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.30.7-kubeedge-")
    assert {"type": "InternalIP", "address": rig.pair.edge_ip} in node["status"]["addresses"]

    rig.partition()
    wait_ready(rig, "Unknown", timeout=NODE_GRACE + 20)
    reconnects = rig.edge.log_count('"connected to cloudcore"')
    rig.heal()
    rig.edge.wait_log('"connected to cloudcore"', count=reconnects + 1, timeout=60)
    assert wait_ready(rig, "True", timeout=30) <= STATUS_INTERVAL
    assert rig.edge.running() and rig.cloud.running()
