"""Edge autonomy, real processes in a netns pair: while the link is cut the edge's MetaServer keeps
answering kubectl (list and watch) from SQLite, also after edgecore restarts cut off; after the heal
the node is Ready again within one status interval and what changed in the cloud meanwhile is applied,
with nothing restarted."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.fixtures.cloud_edge import NODE_GRACE, STATUS_INTERVAL, CloudEdge

pytestmark = pytest.mark.timeout(300)

NAMESPACE = "offline"


def service(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE},
                       "spec": {"ports": [{"port": 80}]}})


def edge_services(rig: CloudEdge) -> set[str]:
    listed = rig.edge_kubectl("get", "services", "-n", NAMESPACE, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    return {item["metadata"]["name"] for item in json.loads(listed.stdout)["items"]}


def watch_lines(rig: CloudEdge, seconds: float) -> list[str]:
    """What `kubectl get -w` prints against the edge in `seconds` (then it is stopped)."""
    argv = ["get", "services", "-n", NAMESPACE, "-w", "--no-headers", f"--request-timeout={seconds:g}s"]
    try:
        return rig.edge_kubectl(*argv, timeout=seconds + 10).stdout.splitlines()
    except subprocess.TimeoutExpired as exc:
        return (exc.stdout or b"").decode().splitlines() if isinstance(exc.stdout, bytes) else []


def test_the_edge_serves_offline_restarts_offline_and_catches_up_after_the_heal(cloud_edge: CloudEdge) -> None:
    rig = cloud_edge
    rig.wait_node_ready("True", timeout=30)
    rig.plane.kubectl("create", "namespace", NAMESPACE)
    for name in ("a", "b"):
        rig.plane.kubectl("apply", "-f", "-", input_text=service(name))
    rig.wait_in_sync("services", NAMESPACE, "service")
    edge_pid = rig.edge.proc.pid if rig.edge.proc else None

    rig.partition()
    rig.edge.wait_log('"disconnected from cloudcore"', timeout=30)
    assert edge_services(rig) == {"a", "b"}
    assert {line.split()[0] for line in watch_lines(rig, 3)} == {"a", "b"}  # a watch starts with what is stored
    rig.plane.kubectl("apply", "-f", "-", input_text=service("c"))  # changes the edge cannot see yet
    rig.plane.kubectl("delete", "service", "a", "-n", NAMESPACE)
    assert "the cloud is unreachable" in rig.edge_kubectl("delete", "service", "b", "-n", NAMESPACE).stderr

    rig.edge.stop()  # restarted while cut off: it starts and serves from SQLite
    rig.start_edge(connected=False)
    edge_pid = rig.edge.proc.pid if rig.edge.proc else None
    assert edge_services(rig) == {"a", "b"}
    rig.wait_node_ready("Unknown", timeout=NODE_GRACE + 20)

    reconnects = rig.edge.log_count('"connected to cloudcore"')
    rig.heal()
    rig.edge.wait_log('"connected to cloudcore"', count=reconnects + 1, timeout=60)
    began = time.monotonic()
    assert rig.wait_node_ready("True", timeout=30) <= STATUS_INTERVAL
    rig.wait_in_sync("services", NAMESPACE, "service")
    assert edge_services(rig) == {"b", "c"}
    assert time.monotonic() - began < 30
    assert rig.edge.proc is not None and rig.edge.proc.pid == edge_pid and rig.edge.running() and rig.cloud.running()
